"""MindSpore ↔ canonical (torch ``state_dict``) parameter names, and MindSpore checkpoints.

The one explicit name map of this backend. The module paths are the same in both frameworks
(the MindSpore network mirrors the torch one attribute for attribute); only the leaf names of
BatchNorm layers differ:

    canonical (torch)        MindSpore
    <bn>.weight         ↔    <bn>.gamma
    <bn>.bias           ↔    <bn>.beta
    <bn>.running_mean   ↔    <bn>.moving_mean
    <bn>.running_var    ↔    <bn>.moving_variance
    <conv>.weight       ↔    <conv>.weight           (O, I, kh, kw) in both
    <dense>.weight/bias ↔    <dense>.weight/bias     (out, in) in both
    <b>.cam{k}.gamma    ↔    <b>.cam{k}.gamma        (CAM's scalar; not a BatchNorm)

A module is a BatchNorm layer iff its last path components match :data:`BN_MODULE` — the
BatchNorm positions of a torchvision ResNet-50 (``bn1..3``, ``downsample.1``) and of the MVD
heads (``bnneck``, ``vib.encoder.1/4``, ``vib.classifier.1``). BatchNorm momentum: MindSpore's
is 1 − torch's (0.1 → 0.9); it is a constructor argument, not a parameter.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import numpy as np

from mvd_core.errors import CheckpointError
from mvd_core.model.spec import check_arrays, trunk_blocks, trunk_spec

log = logging.getLogger(__name__)

#: canonical BatchNorm leaf name → MindSpore leaf name
_BN_TO_MS: dict[str, str] = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
_BN_FROM_MS: dict[str, str] = {v: k for k, v in _BN_TO_MS.items()}

#: module paths that are BatchNorm layers (matched against the module path, without the leaf)
BN_MODULE = re.compile(
    r"(?:^|\.)(?:bn\d+|downsample\.1|bnneck|vib\.encoder\.[14]|vib\.classifier\.1)$"
)
#: checkpoint entries a ResNet-50 file may carry that are not trunk parameters (ImageNet head)
RESNET_IGNORED = re.compile(r"^(?:fc|classifier|end_point)\.(?:weight|bias)$")


def _split(name: str) -> tuple[str, str]:
    module, _, leaf = name.rpartition(".")
    return module, leaf


def is_bn_module(module: str) -> bool:
    return BN_MODULE.search(module) is not None


def _map_bn_leaf(name: str, table: Mapping[str, str], what: str) -> str:
    module, leaf = _split(name)
    if not is_bn_module(module):
        return name
    if leaf not in table:
        raise KeyError(f"{name}: unknown {what}BatchNorm entry {leaf!r}")
    return f"{module}.{table[leaf]}"


def ms_name(canonical: str) -> str:
    """Canonical name → MindSpore parameter name."""
    return _map_bn_leaf(canonical, _BN_TO_MS, "")


def canonical_name(ms_key: str) -> str:
    """MindSpore parameter name → canonical name."""
    return _map_bn_leaf(ms_key, _BN_FROM_MS, "MindSpore ")


def _rename(params: Mapping[str, object], rename, src: str, dst: str) -> dict[str, object]:  # noqa: ANN001
    out: dict[str, object] = {}
    for k, v in params.items():
        n = rename(k)
        if n in out:
            raise CheckpointError(f"{k}: two {src} names map to the {dst} name {n}")
        out[n] = v
    return out


def ms_to_canonical(params: Mapping[str, object]) -> dict[str, object]:
    """Rename a MindSpore-named dict to canonical names (values untouched, order kept)."""
    return _rename(params, canonical_name, "MindSpore", "canonical")


def canonical_to_ms(params: Mapping[str, object]) -> dict[str, object]:
    """Rename a canonical-named dict to MindSpore names (values untouched, order kept)."""
    return _rename(params, ms_name, "canonical", "MindSpore")


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(params: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write ``{name: array}`` (names as given) as a MindSpore ``.ckpt``, atomically (temp file
    in the same folder, then rename)."""
    import mindspore as ms

    from mvd_core.io import atomic_path

    items = [
        {"name": k, "data": ms.Tensor(np.ascontiguousarray(np.asarray(v)))}
        for k, v in params.items()
    ]
    # MindSpore appends .ckpt to other names and leaves the file 0400: the writer gives it
    # 0o666 & ~umask like every other output
    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint(items, str(tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every entry of a MindSpore ``.ckpt`` as NumPy arrays (names as stored)."""
    import mindspore as ms

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: MindSpore checkpoint not found")
    try:
        raw = ms.load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise CheckpointError(f"{path}: cannot read as a MindSpore checkpoint ({e})") from None
    return {k: np.asarray(v.asnumpy()) for k, v in raw.items()}


def save_mindspore_resnet50(
    params: Mapping[str, np.ndarray], path: str | os.PathLike[str]
) -> None:
    """Write a bare ResNet-50 given in torchvision names as a MindSpore checkpoint with
    MindSpore names (``bn1.gamma``, ``layer1.0.downsample.1.moving_mean``, ...)."""
    save_checkpoint(canonical_to_ms(params), path)  # type: ignore[arg-type]


def read_mindspore_resnet50(
    path: str | os.PathLike[str], width: int | None = None
) -> dict[str, np.ndarray]:
    """Read a MindSpore checkpoint of a bare ResNet-50 (torchvision-like structure: ``conv1``,
    ``bn1``, ``layer{1..4}.{k}.conv{1..3}/bn{1..3}/downsample.{0,1}``, MindSpore BatchNorm names)
    into torchvision names, float32, in :func:`mvd_core.model.spec.trunk_spec` order.

    Strict: the ImageNet head (``fc.*``) is dropped; any other missing, unexpected or
    mis-shaped entry raises CheckpointError naming it (in MindSpore names). ``width`` defaults to the one ``conv1.weight``
    implies (64 for the real ResNet-50).
    """
    raw = load_checkpoint(path)
    conv1 = raw.get("conv1.weight")
    if width is None:
        if conv1 is None or conv1.ndim != 4:
            raise CheckpointError(f"{path}: not a ResNet-50 checkpoint: missing: conv1.weight")
        width = int(conv1.shape[0])
    names = []
    for key in raw:
        try:
            names.append(canonical_name(key))
        except KeyError:
            pass
    spec = trunk_spec(width, blocks=trunk_blocks(names))  # the file's own depth
    out: dict[str, np.ndarray] = {}  # canonical names; a name with no canonical form as is
    for key, value in raw.items():
        if RESNET_IGNORED.match(key):
            continue
        try:
            name = canonical_name(key)
        except KeyError:
            name = key
        out[name] = value.astype(np.float32)

    def label(name: str) -> str:  # the message shows MindSpore names
        try:
            return ms_name(name)
        except KeyError:
            return name

    check_arrays(out, {k: s.shape for k, s in spec.items()}, f"{path}: not a MindSpore "
                 f"ResNet-50 at width {width}", dtypes=None, label=label)
    log.info("read %d MindSpore ResNet-50 tensors from %s", len(out), path)
    return {k: out[k] for k in spec}


# --------------------------------------------------------------------------------------------
# files (the same four names in every backend's convert.py; used by `mvd convert`)
# --------------------------------------------------------------------------------------------


def read_state(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A whole MVD model from a MindSpore checkpoint (MindSpore names) → canonical arrays."""
    return {k: np.asarray(v) for k, v in ms_to_canonical(load_checkpoint(path)).items()}


def write_state(params: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Canonical arrays → a MindSpore checkpoint with MindSpore names (atomically)."""
    save_checkpoint(canonical_to_ms(params), path)  # type: ignore[arg-type]


def read_resnet50(path: str | os.PathLike[str], width: int | None = None) -> dict[str, np.ndarray]:
    """A bare ResNet-50 in this framework's file format → torchvision names."""
    return read_mindspore_resnet50(path, width)


def write_resnet50(params: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """A bare ResNet-50 (torchvision names) → a MindSpore checkpoint."""
    save_mindspore_resnet50(params, path)
