"""Device names: MindSpore's CPU|GPU|Ascend and torch's cpu|cuda|cuda:N, mapped per backend."""

from __future__ import annotations

import re

from mvd_core.errors import MvdError

ACCEPTED = "CPU, GPU, Ascend, cpu, cuda, cuda:N"


def normalize_device(backend: str, device: str) -> str:
    """The device string the backend's framework expects.

    torch: ``cpu``, ``cuda``, ``cuda:N`` (``GPU``/``GPU:N`` map to ``cuda``/``cuda:N``);
    mindspore: ``CPU``, ``GPU``, ``GPU:N``, ``Ascend``, ``Ascend:N`` (``cuda[:N]`` maps to GPU).
    """
    d = device.strip()
    low = d.lower()
    m = re.fullmatch(r"(cpu|gpu|cuda|ascend|npu)(?::(\d+))?", low)
    if not m:
        raise MvdError(f"--device {device!r}: unknown device (expected one of {ACCEPTED})")
    kind, idx = m.group(1), m.group(2)
    if kind == "cpu" and idx is not None:
        raise MvdError(f"--device {device!r}: the CPU takes no index (expected {ACCEPTED})")
    suffix = f":{idx}" if idx is not None else ""
    if backend == "torch":
        if kind in ("ascend", "npu"):
            raise MvdError(
                f"--device {device!r}: Ascend is not supported by the torch backend "
                "(use --backend mindspore --device Ascend)"
            )
        return "cpu" if kind == "cpu" else f"cuda{suffix}"
    if backend == "mindspore":
        if kind == "cpu":
            return "CPU"
        if kind in ("gpu", "cuda"):
            return f"GPU{suffix}"
        return f"Ascend{suffix}"
    raise MvdError(f"--backend {backend!r}: unknown backend (expected torch, mindspore)")


def split_device(device: str) -> tuple[str, int]:
    """``"GPU:1"`` → ("GPU", 1); ``"cuda"`` → ("cuda", 0)."""
    kind, _, idx = device.partition(":")
    return kind, int(idx) if idx else 0
