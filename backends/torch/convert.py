"""Torch ↔ canonical parameter names (SPEC: canonical = torch ``state_dict`` names).

The torch backend's names *are* the canonical names, so the map is the identity except for
``num_batches_tracked`` (a torch-only BatchNorm counter, unused with a fixed momentum), which is
dropped on the way out and left alone on the way in. It is written out anyway so that every
backend owns one explicit map in the same file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mvd_core.errors import CheckpointError
from mvd_core.model.spec import check_arrays, trunk_blocks, trunk_spec

log = logging.getLogger(__name__)

#: torch-only state entries that have no canonical counterpart
TORCH_ONLY_SUFFIXES = ("num_batches_tracked",)


def is_torch_only(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in TORCH_ONLY_SUFFIXES


def torch_name(canonical: str) -> str:
    """Canonical name → torch state_dict name (identity)."""
    return canonical


def canonical_name(torch_key: str) -> str:
    """Torch state_dict name → canonical name (identity; torch-only keys are not canonical)."""
    if is_torch_only(torch_key):
        raise KeyError(f"{torch_key}: a torch-only entry has no canonical name")
    return torch_key


def torch_to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A torch state dict → canonical float32 NumPy arrays (``num_batches_tracked`` dropped)."""
    out: dict[str, np.ndarray] = {}
    for k, v in state_dict.items():
        if is_torch_only(k):
            continue
        out[canonical_name(k)] = v.detach().to("cpu", torch.float32).numpy().copy()
    return out


def canonical_to_torch(params: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Canonical arrays → a torch state dict (float32 CPU tensors; no ``num_batches_tracked``,
    so load it with :meth:`MVDNet.load_state_dict(..., strict=False)` and check the missing keys,
    or through :meth:`TorchBackend.load_state`)."""
    return {
        torch_name(k): torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in params.items()
    }


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (or {{'state_dict': ...}}), got {type(obj).__name__}"
        )
    return obj


def _read_state_dict(path: str, what: str) -> Mapping[str, torch.Tensor]:
    """A state dict of tensors from a torch file (``weights_only=True``: no pickle code runs)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {what} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise CheckpointError(f"{path}: cannot read as a torch state dict ({e})") from None
    sd = _unwrap(obj, path)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {bad[0]}: expected a tensor, got {type(sd[bad[0]]).__name__}")
    return sd


def read_torchvision_resnet50(
    path: str | os.PathLike[str], width: int | None = None
) -> dict[str, np.ndarray]:
    """Read a torchvision-format ResNet-50 state dict (``.pt``/``.pth``) as float32 NumPy arrays
    under torchvision names (no ``fc``), checked strictly against
    :func:`mvd_core.model.spec.trunk_spec` at base width ``width`` (None: the file's own
    width, read from ``conv1.weight``; the caller then checks it against the model's).

    Accepts a bare state dict or ``{"state_dict": ...}``; strips a ``module.`` prefix
    (DataParallel); drops ``fc.*`` and ``num_batches_tracked``. Anything else missing,
    unexpected or mis-shaped raises CheckpointError naming it. Loaded with ``weights_only=True``:
    no pickle code runs.
    """
    path = os.fspath(path)
    sd = _read_state_dict(path, "pretrained ResNet-50 file")
    if width is None:
        conv1 = sd.get("conv1.weight", sd.get("module.conv1.weight"))
        width = int(conv1.shape[0]) if isinstance(conv1, torch.Tensor) and conv1.ndim == 4 else 64
    # the file's own depth (ResNet-50, -101, ...): the caller checks it against the model's
    spec = trunk_spec(width, blocks=trunk_blocks(k.removeprefix("module.") for k in sd))
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        name = key.removeprefix("module.")
        if name.startswith("fc.") or is_torch_only(name):
            continue
        out[name] = value.detach().to(torch.float32).numpy().copy()
    check_arrays(out, {k: s.shape for k, s in spec.items()}, f"{path}: not a torchvision "
                 f"ResNet-50 at width {width}", dtypes=None)
    log.info("read %d torchvision ResNet-50 tensors from %s", len(out), path)
    return {k: out[k] for k in spec}


# --------------------------------------------------------------------------------------------
# files (the same four names in every backend's convert.py; used by `mvd convert`)
# --------------------------------------------------------------------------------------------


def _save_atomic(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    from mvd_core.io import atomic_writer

    with atomic_writer(path) as f:
        torch.save(dict(tensors), f)


def read_state(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A whole MVD model from a torch state dict file (``weights_only=True``) → canonical
    arrays (a ``module.`` prefix is stripped; ``num_batches_tracked`` dropped)."""
    path = os.fspath(path)
    sd = _read_state_dict(path, "torch state dict")
    return torch_to_canonical({k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()})


def write_state(params: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Canonical arrays → a torch state dict file (atomically)."""
    _save_atomic(canonical_to_torch(params), path)


def read_resnet50(path: str | os.PathLike[str], width: int | None = None) -> dict[str, np.ndarray]:
    """A bare ResNet-50 in this framework's file format → torchvision names."""
    return read_torchvision_resnet50(path, width)


def write_resnet50(params: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """A bare ResNet-50 (torchvision names) → a torchvision-format state dict file."""
    _save_atomic({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}, path)
