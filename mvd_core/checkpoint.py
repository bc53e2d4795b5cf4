"""Framework-free checkpoints: one safetensors file holding parameters, optimiser state, RNG
states and a JSON header (epoch, step, resolved config, backend, versions).

Tensor keys are prefixed: ``param/<canonical name>``, ``optim/<canonical optimiser key>``,
``rng/<key>``. The same file is read by either backend (names are canonical). No pickle, ever.
Files are written to a temp file in the target folder and renamed, so a crash never leaves a
half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core import __version__
from mvd_core.config import atomic_write_bytes
from mvd_core.errors import MvdError

FORMAT = "mvd-checkpoint-1"
_PREFIXES = ("param/", "optim/", "rng/")


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    rng: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", 0))

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    from safetensors.numpy import save

    path = Path(path)
    tensors: dict[str, np.ndarray] = {}
    scalars: list[str] = []  # safetensors stores 0-d arrays as shape (1,): remember which
    for prefix, part in zip(_PREFIXES, (ckpt.params, ckpt.optimizer, ckpt.rng)):
        for k, v in part.items():
            a = np.asarray(v)
            if a.ndim == 0:
                scalars.append(prefix + k)
            tensors[prefix + k] = np.ascontiguousarray(a)
    meta = dict(ckpt.meta)
    meta.setdefault("mvd_version", __version__)
    meta.pop("source", None)
    header = {"format": FORMAT, "mvd": json.dumps(meta, sort_keys=True),
              "scalars": json.dumps(scalars)}
    atomic_write_bytes(path, save(tensors, metadata=header))
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (or a plain safetensors file of
    canonical parameter names, which is read as parameters only)."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        cand = p / "checkpoints" / "last.safetensors"
        if not cand.is_file():
            raise MvdError(f"{p}: no checkpoints/last.safetensors in this run folder")
        p = cand
    if not p.is_file():
        raise MvdError(f"{p}: checkpoint not found")
    try:
        with safe_open(str(p), framework="np") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        raise MvdError(f"{p}: not a readable safetensors checkpoint ({e})") from None
    if header.get("format") != FORMAT:
        if any(k.startswith(_PREFIXES) for k in tensors):
            raise MvdError(f"{p}: unknown checkpoint format {header.get('format')!r}")
        return Checkpoint(params=tensors, meta={"source": str(p)})
    parts: list[dict[str, np.ndarray]] = [{}, {}, {}]
    try:
        scalars = set(json.loads(header.get("scalars", "[]")))
    except json.JSONDecodeError:
        raise MvdError(f"{p}: corrupt checkpoint header") from None
    for k, v in tensors.items():
        if k in scalars:
            v = v.reshape(())
        for i, prefix in enumerate(_PREFIXES):
            if k.startswith(prefix):
                parts[i][k[len(prefix):]] = v
                break
        else:
            raise MvdError(f"{p}: unexpected tensor {k!r} (expected param/, optim/ or rng/ keys)")
    try:
        meta = json.loads(header.get("mvd", "{}"))
    except json.JSONDecodeError:
        raise MvdError(f"{p}: corrupt checkpoint header") from None
    meta["source"] = str(p)
    return Checkpoint(params=parts[0], optimizer=parts[1], rng=parts[2], meta=meta)
