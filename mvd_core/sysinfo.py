"""What this machine offers: versions, importable backends, their devices (for `mvd info`).

Frameworks are imported here only when asked (collect()), never at module import.
"""

from __future__ import annotations

import importlib
import platform
from typing import Any

import numpy as np

from mvd_core import __version__


def _torch_devices(torch: Any) -> list[str]:
    devs = ["cpu"]
    try:
        if torch.cuda.is_available():
            devs += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver must not break `mvd info`
        pass
    return devs


def _mindspore_devices(ms: Any) -> list[str]:
    devs = ["CPU"]
    for target in ("GPU", "Ascend"):
        try:
            ok = ms.hal.is_available(target)
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            devs.append(target)
    return devs


def collect() -> dict[str, Any]:
    out: dict[str, Any] = {
        "mvd": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "backends": {},
    }
    for name, module, lister in (
        ("torch", "torch", _torch_devices),
        ("mindspore", "mindspore", _mindspore_devices),
    ):
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            out["backends"][name] = {"available": False, "error": f"{type(e).__name__}: {e}"}
            continue
        out["backends"][name] = {
            "available": True,
            "version": getattr(mod, "__version__", "?"),
            "devices": lister(mod),
        }
    return out
