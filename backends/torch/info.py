"""What this machine's torch offers (`mvd info`, through mvd_core.registry): version, devices."""

from __future__ import annotations

import torch


def version() -> str:
    return str(torch.__version__)


def list_devices() -> list[str]:
    """``cpu`` and every CUDA device this process sees, with its name (``cuda:0 (NVIDIA H200)``)."""
    devs = ["cpu"]
    try:
        if torch.cuda.is_available():
            devs += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver must not break `mvd info`
        pass
    return devs
