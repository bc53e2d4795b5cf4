"""ImageNet-pretrained ResNet-50 weights from a user-given file, into all three MVD trunks.

Nothing is downloaded. Accepted files (torchvision parameter names unless stated):

* ``.safetensors`` / ``.npz`` — framework-free (``mvd convert`` writes these); read with NumPy
  (``allow_pickle=False``);
* ``.pth`` / ``.pt`` / ``.bin`` — a torchvision-format state dict, read by the torch backend's
  ``convert.read_torchvision_resnet50`` with ``weights_only=True`` (needs torch);
* ``.ckpt`` — a MindSpore checkpoint of a ResNet-50, read by the MindSpore backend's
  ``convert.read_mindspore_resnet50`` (needs mindspore).

``fc.*`` (the ImageNet classifier) and ``num_batches_tracked`` are dropped; every other name
must match a torchvision ResNet-50 at the model's width exactly (missing, unexpected or
mis-shaped names are an error naming them).

:func:`initial_params` is the one place a model's starting weights are made (the way timm's
builder loads weights into a model): every backend loads its result through ``load_state``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvd_core.errors import CheckpointError
from mvd_core.model.spec import BLOCKS, BRANCHES, check_state, init_params, model_spec, trunk_spec
from mvd_core.registry import describe_suffixes, suffix_backend, weight_converter

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import ModelConfig

log = logging.getLogger(__name__)


def clean_resnet50_names(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip a DataParallel ``module.`` prefix; drop ``fc.*`` and ``num_batches_tracked``."""
    out = {}
    for k, v in params.items():
        if k.startswith("module."):
            k = k[len("module.") :]
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        out[k] = np.asarray(v, dtype=np.float32)
    return out


def read_resnet50(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A ResNet-50's parameters in torchvision names (float32), whatever the file format."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: pretrained weights file not found")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            raw = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - any parse failure is bad input
            raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    elif suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{p}: not a readable .npz file ({e})") from None
    elif (backend := suffix_backend(suffix)) is not None:  # the backend table's weight suffixes
        reader = getattr(weight_converter(suffix, str(p)), backend.resnet50_reader)
        raw = reader(p)  # a bad file: CheckpointError
    else:
        raise CheckpointError(
            f"{p}: unknown weights format {suffix!r} "
            f"(expected .safetensors, .npz or {describe_suffixes()})"
        )
    return clean_resnet50_names(raw)


def load_trunk_params(
    path: str | os.PathLike[str], width: int = 64, blocks: tuple[int, ...] = BLOCKS,
) -> dict[str, np.ndarray]:
    """The file's ResNet weights (ResNet-50: ``blocks`` (3, 4, 6, 3)) as canonical MVD names
    for the v, i and s trunks, checked against the model's width and depth."""
    params = read_resnet50(path)
    check_state(params, trunk_spec(width, blocks=blocks),
                f"{path} (ResNet, width {width}, blocks {list(blocks)})")
    return {f"{b}.trunk.{k}": v for b in BRANCHES for k, v in params.items()}


def initial_params(model: ModelConfig, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """A model's starting weights, canonical names, checked: the seeded NumPy initialisation of
    :func:`~mvd_core.model.spec.model_spec` (the same bits on every backend) with, if
    ``model.pretrain`` names a file, its ResNet weights in all three trunks."""
    spec = model_spec(model, num_classes)
    params = init_params(spec, seed)
    if model.pretrain:
        trunk = load_trunk_params(model.pretrain, model.width, model.blocks)
        params.update(trunk)
        log.info("loaded %d pretrained trunk tensors from %s", len(trunk), model.pretrain)
    check_state(params, spec, f"{model.pretrain or 'initial parameters'}")
    return params
