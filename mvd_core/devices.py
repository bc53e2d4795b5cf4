"""Device names per backend, as the backend table (:data:`mvd_core.registry.BACKENDS`) lists
them: MindSpore's CPU|GPU|Ascend and torch's cpu|cuda|cuda:N, each accepting the other's names."""

from __future__ import annotations

import os
import re

from mvd_core import registry
from mvd_core.errors import MvdError


def accepted_devices() -> str:
    """``cpu, cuda, cuda:N (torch); CPU, GPU, Ascend, GPU:N, Ascend:N (mindspore)``."""
    return "; ".join(
        ", ".join([d.name for d in f.devices] + [f"{d.name}:N" for d in f.devices if d.indexed])
        + f" ({f.name})"
        for f in registry.BACKENDS.values()
    )


def normalize_device(backend: str, device: str) -> str:
    """The device string backend ``backend``'s framework expects: any name of a device kind
    the backend has (``GPU``/``cuda`` are one kind), with its ``:N`` index, mapped to the
    framework's own name (torch ``cuda:1``, MindSpore ``GPU:1``)."""
    m = re.fullmatch(r"([a-z]+)(?::(\d+))?", device.strip().lower())
    known = {a for f in registry.BACKENDS.values() for d in f.devices for a in d.aliases}
    if not m or m.group(1) not in known:
        raise MvdError(f"--device {device!r}: unknown device (expected one of {accepted_devices()})")
    kind, idx = m.group(1), m.group(2)
    facts = registry.facts(backend)
    dev = facts.device_for(kind)
    if dev is None:
        other = next(f for f in registry.BACKENDS.values() if f.device_for(kind) is not None)
        name = other.device_for(kind).name  # type: ignore[union-attr]
        raise MvdError(
            f"--device {device!r}: {name} is not supported by the {backend} backend "
            f"(use --backend {other.name} --device {name})"
        )
    if idx is not None and not dev.indexed:
        raise MvdError(f"--device {device!r}: the {dev.name} takes no index (expected {accepted_devices()})")
    return dev.name + (f":{idx}" if idx is not None else "")


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
