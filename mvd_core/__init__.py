"""mvd_core: the framework-free half of mvd (data, sampling, metrics, configs, driver).

Importing this package never imports torch or mindspore.
"""

__version__ = "0.1.0"
