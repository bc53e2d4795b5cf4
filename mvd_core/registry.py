"""Backends by name, resolved lazily: importing mvd_core never imports a framework."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mvd_core.devices import normalize_device
from mvd_core.errors import BackendUnavailable, MvdError

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import Config
    from mvd_core.interface import Backend

#: name -> ("module:Class", framework module, pip extra)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("mvd_backends.torch.backend:TorchBackend", "torch", "mvd[torch]"),
    "mindspore": ("mvd_backends.mindspore.backend:MindSporeBackend", "mindspore", "mvd[mindspore]"),
}


#: name -> the ``run.precision`` values the backend can train in, and why not the others
PRECISIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("fp32", "fp64"), ""),
    "mindspore": (
        ("fp32",),
        "MindSpore 2.8 has no float64 Conv2D and no float64 train-mode BatchNorm kernels "
        "(CPU, GPU or Ascend), so the network cannot run in float64",
    ),
}


def check_precision(name: str, precision: str) -> None:
    """Raise :class:`MvdError` unless backend ``name`` supports ``run.precision=precision``."""
    allowed, why = PRECISIONS.get(name, (("fp32",), ""))
    if precision not in allowed:
        raise MvdError(
            f"run.precision={precision!r}: the {name} backend supports only "
            f"{', '.join(allowed)}" + (f" ({why})" if why else "")
        )


def backend_names() -> list[str]:
    return list(BACKENDS)


def _check_name(name: str) -> tuple[str, str, str]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise MvdError(
            f"--backend {name!r}: unknown backend (expected one of {', '.join(BACKENDS)})"
        ) from None


def framework_available(name: str) -> bool:
    """Whether the backend's framework can be imported (imports it when it can)."""
    _, framework, _ = _check_name(name)
    try:
        importlib.import_module(framework)
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def backend_class(name: str) -> type:
    target, framework, extra = _check_name(name)
    try:
        importlib.import_module(framework)
    except ImportError as e:
        raise BackendUnavailable(
            f"backend {name!r} needs {framework}, which is not installed ({e}); "
            f"install {extra}"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(cfg: Config, num_classes: int, device: str | None = None) -> Backend:
    """Build the backend ``cfg.run.backend`` on ``device`` (default ``cfg.run.device``)."""
    name = cfg.run.backend
    check_precision(name, cfg.run.precision)
    dev = normalize_device(name, device if device is not None else cfg.run.device)
    return backend_class(name)(cfg, num_classes, dev, cfg.run.seed)
