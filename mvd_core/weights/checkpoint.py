"""Framework-free checkpoints: one safetensors file holding parameters, optimiser state, RNG
states and a JSON header (epoch, step, resolved config, backend, versions).

Tensor keys are prefixed: ``param/<canonical name>``, ``optim/<canonical optimiser key>``,
``rng/<key>``. The same file is read by either backend (names are canonical). No pickle, ever.
Files are written through :mod:`mvd_core.io` (temp file, fsync, rename), so a crash never leaves
a half-written checkpoint.

Every checkpoint read is validated completely before any backend sees it (:func:`validate`):
metadata types (``epoch``/``global_step`` non-negative integers, ``config`` a mapping that loads,
``backend`` a name), the parameters against the model spec of the checkpoint's own config (names,
shapes, dtype float32; a BatchNorm ``num_batches_tracked`` is accepted as an int64 scalar and
dropped), the optimiser state layout of its ``optim.name`` (``adam.step`` int64 scalar, float32
moments shaped as their parameters) and the RNG layout of its backend. Any problem is one
:class:`~mvd_core.errors.CheckpointError` line naming the file and the tensor or field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core import __version__, registry
from mvd_core.errors import CheckpointError
from mvd_core.io import atomic_write_bytes
from mvd_core.weights import optim_state

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
            raise CheckpointError(f"{p}: no checkpoints/last.safetensors in this run folder")
        p = cand
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        with safe_open(str(p), framework="np") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        raise CheckpointError(f"{p}: not a readable safetensors checkpoint ({e})") from None
    if header.get("format") != FORMAT:
        if any(k.startswith(_PREFIXES) for k in tensors):
            raise CheckpointError(f"{p}: unknown checkpoint format {header.get('format')!r}")
        plain = Checkpoint(params=tensors, meta={"source": str(p)})
        validate(plain, str(p))
        return plain
    parts: list[dict[str, np.ndarray]] = [{}, {}, {}]
    try:
        scalars = set(json.loads(header.get("scalars", "[]")))
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: corrupt checkpoint header") from None
    for k, v in tensors.items():
        if k in scalars:
            v = v.reshape(())
        for i, prefix in enumerate(_PREFIXES):
            if k.startswith(prefix):
                parts[i][k[len(prefix):]] = v
                break
        else:
            raise CheckpointError(f"{p}: unexpected tensor {k!r} (expected param/, optim/ or rng/ keys)")
    try:
        meta = json.loads(header.get("mvd", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: corrupt checkpoint header") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{p}: corrupt checkpoint header (metadata is not a mapping)")
    meta["source"] = str(p)
    ckpt = Checkpoint(params=parts[0], optimizer=parts[1], rng=parts[2], meta=meta)
    validate(ckpt, str(p))
    return ckpt


# --------------------------------------------------------------------------- validation

#: metadata fields and their types (bool is never an integer here)
_META_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "global_step": (int,),
    "best_val_map": (int, float),
    "config": (dict,),
    "backend": (str,),
    "mvd_version": (str,),
}
_BN_COUNTER = "num_batches_tracked"


def _listed(items: list[str]) -> str:
    return ", ".join(items[:6]) + (" ..." if len(items) > 6 else "")


def _check_meta(meta: dict[str, Any], src: str) -> None:
    for key, types in _META_TYPES.items():
        if key not in meta:
            continue
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, types):
            want = " or ".join({int: "an integer", float: "a number", dict: "a mapping",
                                str: "a string"}[t] for t in types)
            raise CheckpointError(f"{src}: metadata field {key!r}: expected {want}, got {v!r}")
        if key in ("epoch", "global_step") and v < 0:
            raise CheckpointError(f"{src}: metadata field {key!r}: expected >= 0, got {v!r}")


def _check_tensor(a: np.ndarray, dtype: str, shape: tuple[int, ...] | None, what: str, src: str) -> None:
    if str(a.dtype) != dtype:
        raise CheckpointError(f"{src}: {what}: expected dtype {dtype}, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise CheckpointError(f"{src}: {what}: expected shape {tuple(shape)}, got {tuple(a.shape)}")


def _strip_bn_counters(params: dict[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        if k.endswith("." + _BN_COUNTER):
            _check_tensor(np.asarray(v), "int64", None, f"tensor param/{k}", src)
            if np.ndim(v) not in (0, 1) or np.size(v) != 1:
                raise CheckpointError(f"{src}: tensor param/{k}: expected a scalar, got shape {np.shape(v)}")
            continue
        out[k] = v
    return out


def _expected_optimizer(name: str, spec: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return optim_state.layout(name, spec)  # the one layout


#: optional optimiser entries (torch fp16 AMP's GradScaler)
_OPT_OPTIONAL = optim_state.OPTIONAL


def validate(ckpt: Checkpoint, src: str) -> None:
    """Check ``ckpt`` read from ``src`` completely (see the module docstring); CheckpointError
    naming ``src`` and the first wrong tensor or field. ``num_batches_tracked`` counters are
    dropped from ``ckpt.params`` once checked."""
    from mvd_core.model.spec import check_state, model_spec

    _check_meta(ckpt.meta, src)
    ckpt.params = _strip_bn_counters(ckpt.params, src)
    wrong = [f"{k}: expected float32, got {np.asarray(v).dtype}"
             for k, v in ckpt.params.items() if np.asarray(v).dtype != np.float32]
    if wrong:
        raise CheckpointError(f"{src}: wrong dtype: {_listed(wrong)}")
    cfg = None
    if "config" in ckpt.meta:
        from mvd_core.config import from_dict

        cfg = from_dict(ckpt.meta["config"], f"{src} (config)")
    spec = None
    if cfg is not None and "v.classifier.weight" in ckpt.params:
        classes = int(np.shape(ckpt.params["v.classifier.weight"])[0])
        try:
            spec = model_spec(cfg.model, classes)
        except ValueError as e:
            raise CheckpointError(f"{src}: {e}") from None
        check_state(ckpt.params, spec, f"{src} (parameters)", strict=True)
    elif cfg is not None:
        raise CheckpointError(f"{src}: missing tensor param/v.classifier.weight (not an MVD model)")
    if ckpt.optimizer:
        if cfg is not None and spec is not None:
            exp = _expected_optimizer(cfg.optim.name, spec)
            missing = [k for k in exp if k not in ckpt.optimizer]
            unexpected = [k for k in ckpt.optimizer if k not in exp and k not in _OPT_OPTIONAL]
            if missing:
                raise CheckpointError(
                    f"{src}: optimizer state (optim.name={cfg.optim.name}) missing: {_listed(missing)}")
            if unexpected:
                raise CheckpointError(
                    f"{src}: optimizer state (optim.name={cfg.optim.name}) unexpected: {_listed(unexpected)}")
        else:
            exp = {}
        for k, v in ckpt.optimizer.items():
            a = np.asarray(v)
            if k in exp:
                dtype, shape = exp[k]
            elif k in _OPT_OPTIONAL:
                dtype, shape = _OPT_OPTIONAL[k]
            elif k.endswith(".step"):
                dtype, shape = "int64", ()
            else:
                dtype, shape = "float32", None
            _check_tensor(a, dtype, shape, f"tensor optim/{k}", src)
    backend = ckpt.meta.get("backend")
    # RNG layouts per backend: mvd_core.registry.BACKENDS[...].rng_layout
    layout = registry.BACKENDS[backend].rng_layout if isinstance(backend, str) and backend in registry.BACKENDS else None
    if layout is not None and (ckpt.rng or "config" in ckpt.meta):
        keys = {k.rstrip("?"): (k.endswith("?"), v) for k, v in layout.items()}
        missing = [k for k, (opt, _) in keys.items() if not opt and k not in ckpt.rng]
        unexpected = [k for k in ckpt.rng if k not in keys]
        if missing or unexpected:
            what = f"missing {_listed(missing)}" if missing else f"unexpected {_listed(unexpected)}"
            raise CheckpointError(f"{src}: rng state of a {backend} run: {what}")
        for k, v in ckpt.rng.items():
            dtype, ndim = keys[k][1]
            a = np.asarray(v)
            _check_tensor(a, dtype, None, f"tensor rng/{k}", src)
            if a.ndim != ndim:
                raise CheckpointError(f"{src}: tensor rng/{k}: expected {ndim} dimension(s), got shape {a.shape}")
