"""mvd_core: the framework-free half of mvd (data, sampling, metrics, configs, driver).

Subpackages by layer: ``model`` (canonical parameters, init, the losses), ``data`` (readers,
synthetic data, sampling, transforms, loader), ``train`` (driver, loop, run folder, logs),
``eval`` (metrics, protocols, reports), ``weights`` (checkpoints, conversion, pretrained,
export), ``parity`` (cross-framework comparison); config, interface, registry, io, devices,
sysinfo and the Python API stay at the top.

Importing this package never imports torch or mindspore.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "Model"]


def __getattr__(name: str):  # PEP 562: the API module is imported on first use only
    if name in ("load_model", "Model"):
        from mvd_core import api

        return getattr(api, name)
    raise AttributeError(f"module 'mvd_core' has no attribute {name!r}")
