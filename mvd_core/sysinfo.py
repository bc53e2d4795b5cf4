"""What this machine offers: versions, importable backends, their devices (for `mvd info`).

Every backend comes from the backend table (:data:`mvd_core.registry.BACKENDS`); its framework
is imported only when asked (:func:`collect`), and the framework calls live in the backend's
``info`` module (``version()``, ``list_devices()``).
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from mvd_core import __version__, registry


def collect() -> dict[str, Any]:
    out: dict[str, Any] = {
        "mvd": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "backends": {},
    }
    for name, f in registry.BACKENDS.items():
        try:
            registry.import_framework(name)
        except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
            out["backends"][name] = {"available": False, "error": f"{type(e).__name__}: {e}",
                                     "extra": f.extra}
            continue
        info = registry.backend_info(name)
        devices = info.list_devices()
        amp = {}
        for d in devices:
            dev = f.device(d.split(" ")[0].partition(":")[0])
            if dev is not None:
                amp.setdefault(dev.name, list(dev.amp))
        out["backends"][name] = {
            "available": True,
            "version": info.version(),
            "devices": devices,
            "precisions": list(f.precisions),
            "amp": amp,
            "extra": f.extra,
        }
    return out
