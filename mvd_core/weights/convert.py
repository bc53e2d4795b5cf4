"""`mvd convert`: parameters between file formats, by explicit name maps, never by guessing.

Formats by file suffix:

* ``.safetensors`` — framework-free. A whole MVD model: an mvd checkpoint (``param/`` keys) or a
  plain file of canonical names; a bare ResNet-50: torchvision names.
* ``.npz`` — framework-free, plain names (read with ``allow_pickle=False``).
* ``.pth`` / ``.pt`` / ``.bin`` — torch state dict (needs torch; read with ``weights_only=True``).
* ``.ckpt`` — MindSpore checkpoint (needs mindspore; MindSpore parameter names).

Kinds: ``mvd`` (a whole MVD network, canonical names) and ``resnet50`` (a bare ResNet-50 used to
seed the three trunks, torchvision names). Every read is checked strictly against the expected
names and shapes (the MVD architecture is inferred from the tensors themselves); any missing,
unexpected or mis-shaped tensor is an error naming it. Writes are atomic.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from mvd_core.config import ModelConfig
from mvd_core.errors import MvdError
from mvd_core.io import atomic_path, atomic_write_bytes
from mvd_core.model.spec import check_state, model_spec, trunk_blocks, trunk_spec
from mvd_core.registry import weight_converter, weight_suffixes

KINDS = ("mvd", "resnet50")
#: framework-free formats, then each backend's own (the backend table's weight suffixes)
SUFFIXES = (".safetensors", ".npz", *weight_suffixes())


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in SUFFIXES:
        raise MvdError(f"{path}: unknown format {s!r} (expected one of {', '.join(SUFFIXES)})")
    return s


def _converter(path: Path):
    return weight_converter(_suffix(path), str(path))


def infer_model_config(params: dict[str, np.ndarray], source: str = "weights") -> tuple[ModelConfig, int]:
    """The architecture (width, depth, CAM, VIB sizes) and class count a canonical state implies."""
    try:
        width = int(params["v.trunk.conv1.weight"].shape[0])
        classes = int(params["v.classifier.weight"].shape[0])
        h1 = int(params["v.vib.encoder.0.weight"].shape[0])
        h2 = int(params["v.vib.encoder.3.weight"].shape[0])
        z = int(params["v.vib.encoder.6.weight"].shape[0])
        hc = int(params["v.vib.classifier.0.weight"].shape[0])
        blocks = trunk_blocks(k.removeprefix("v.trunk.") for k in params if k.startswith("v.trunk."))
    except KeyError as e:
        raise MvdError(f"{source}: not an MVD model: missing: {e.args[0]}") from None
    cfg = ModelConfig(
        width=width, blocks=blocks, cam="v.cam2.gamma" in params, vib_hidden=(h1, h2), vib_dim=z,
        vib_cls_hidden=hc,
    )
    return cfg, classes


def check_mvd(params: dict[str, np.ndarray], source: str) -> None:
    cfg, classes = infer_model_config(params, source)
    try:
        check_state(params, model_spec(cfg, classes), f"{source} (MVD, width {cfg.width})")
    except ValueError as e:
        raise MvdError(str(e)) from None


def check_resnet50(params: dict[str, np.ndarray], source: str) -> None:
    conv1 = params.get("conv1.weight")
    if conv1 is None or np.ndim(conv1) != 4:
        raise MvdError(f"{source}: not a ResNet-50: missing: conv1.weight")
    blocks = trunk_blocks(params)
    try:
        check_state(params, trunk_spec(int(conv1.shape[0]), blocks=blocks),
                    f"{source} (ResNet, blocks {list(blocks)})")
    except ValueError as e:
        raise MvdError(str(e)) from None


def read_params(path: str | os.PathLike[str], kind: str = "mvd") -> dict[str, np.ndarray]:
    """Read and strictly check ``kind`` parameters from ``path`` (canonical / torchvision names)."""
    p = Path(path)
    if kind not in KINDS:
        raise MvdError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not p.is_file():
        raise MvdError(f"{p}: no such file")
    s = _suffix(p)
    if kind == "resnet50":
        from mvd_core.weights.pretrained import read_resnet50

        params = read_resnet50(p)
        check_resnet50(params, str(p))
        return params
    if s == ".safetensors":
        from mvd_core.weights.checkpoint import load_checkpoint

        params = load_checkpoint(p).params
    elif s == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                params = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise MvdError(f"{p}: not a readable .npz file ({e})") from None
    else:
        try:
            params = _converter(p).read_state(p)
        except (ValueError, KeyError) as e:
            raise MvdError(str(e)) from None
    check_mvd(params, str(p))
    return params


def write_params(params: dict[str, np.ndarray], path: str | os.PathLike[str], kind: str = "mvd") -> Path:
    """Write checked ``kind`` parameters to ``path`` in the format its suffix names (atomic)."""
    p = Path(path)
    s = _suffix(p)
    (check_mvd if kind == "mvd" else check_resnet50)(params, "parameters to write")
    if s == ".safetensors":
        from safetensors.numpy import save

        blob = save({k: np.ascontiguousarray(v) for k, v in params.items()}, metadata={"kind": kind})
        atomic_write_bytes(p, blob)
    elif s == ".npz":
        with atomic_path(p, suffix=".npz") as tmp:  # np.savez appends .npz to other names
            np.savez(tmp, **params)
    else:
        conv = _converter(p)
        (conv.write_state if kind == "mvd" else conv.write_resnet50)(params, p)
    return p


@dataclasses.dataclass(frozen=True)
class ConvertResult:
    src: Path
    dst: Path
    kind: str
    tensors: int
    parameters: int


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], kind: str = "mvd") -> ConvertResult:
    params = read_params(src, kind)
    out = write_params(params, dst, kind)
    return ConvertResult(Path(src), out, kind, len(params), int(sum(v.size for v in params.values())))
