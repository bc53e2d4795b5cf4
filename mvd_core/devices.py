"""Device names: MindSpore's CPU|GPU|Ascend and torch's cpu|cuda|cuda:N, mapped per backend."""

from __future__ import annotations

import os
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


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def cpu_threads(requested: int = 0, workers: int = 0) -> int:
    """How many compute threads a CPU backend uses (both frameworks honour the same number).

    ``requested`` > 0 (``run.threads`` / ``--threads``) wins; else ``$OMP_NUM_THREADS`` when set;
    else the usable cores minus the loader's ``workers`` threads, at least 1.

    Why not all cores: OpenMP (torch) and MindSpore's pool spin at barriers. When their threads
    share the cores with any other busy thread -- the loader's workers, a second process -- a
    thread that is descheduled mid-step holds the whole team at the barrier, and a 0.2 s step
    was measured to take ~30 s on a 2-core machine with 2 torch threads and one busy thread
    beside them; one thread per free core removes the stall.
    """
    if requested > 0:
        return int(requested)
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, available_cores() - max(0, int(workers)))
