"""The optimiser state every backend saves and loads: one framework-free layout and its check.

Keys (``<param>`` = every *trainable* canonical parameter of :func:`mvd_core.model.spec.model_spec`,
in spec order), so that a MindSpore run resumes on torch and vice versa:

    adam:  "adam.step"           int64   ()       updates taken (Adam's t)
           "adam.m.<param>"      float32 <shape>  first moment
           "adam.v.<param>"      float32 <shape>  second moment
    sgd:   "sgd.momentum.<param>" float32 <shape> momentum buffer
    optional (torch fp16 AMP): "amp.scale" float32 (), "amp.growth_tracker" int64 ()

Before the first step every slot is zeros and the step 0 (torch's lazily created state is
equivalent: Adam at t = 0, SGD's first ``buf = grad`` = ``0·momentum + grad``). A backend keeps
its state however it likes (torch per tensor, MindSpore in one flat buffer per group) and maps
it to and from this layout with :func:`split_flat` / :func:`join_flat`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mvd_core.errors import CheckpointError, MvdError
from mvd_core.model.spec import ParamSpec, check_arrays

#: optimiser name → its per-parameter slots (the key is "<name>.<slot>.<param>")
SLOTS: dict[str, tuple[str, ...]] = {"adam": ("m", "v"), "sgd": ("momentum",)}
#: optimiser name → its scalar entries: key → (dtype, shape)
SCALARS: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {
    "adam": {"adam.step": ("int64", ())},
    "sgd": {},
}
#: entries a state may hold or not (torch's fp16 GradScaler); other backends ignore them
OPTIONAL: dict[str, tuple[str, tuple[int, ...]]] = {
    "amp.scale": ("float32", ()),
    "amp.growth_tracker": ("int64", ()),
}
#: the groups, in the order the backends lay out their trainable parameters
GROUPS = ("trunk", "head")


def _check_name(name: str) -> None:
    if name not in SLOTS:
        raise MvdError(f"optim.name: {name!r} is not one of {', '.join(SLOTS)}")


def slot_key(name: str, slot: str, param: str) -> str:
    """The key of one parameter's slot, e.g. ``slot_key("adam", "m", "v.trunk.conv1.weight")``."""
    return f"{name}.{slot}.{param}"


def trainable(spec: Mapping[str, ParamSpec]) -> list[str]:
    """The trainable parameters, group by group (trunk first), spec order within a group."""
    return [k for g in GROUPS for k, s in spec.items() if s.trainable and s.group == g]


def layout(name: str, spec: Mapping[str, ParamSpec]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every required key of optimiser ``name``'s state → (dtype, shape); optional ones aside."""
    _check_name(name)
    out = dict(SCALARS[name])
    for k, s in spec.items():
        if s.trainable:
            for slot in SLOTS[name]:
                out[slot_key(name, slot, k)] = ("float32", tuple(s.shape))
    return out


def zeros(name: str, spec: Mapping[str, ParamSpec]) -> dict[str, np.ndarray]:
    """The state before the first step."""
    return {k: np.zeros(shape, dtype) for k, (dtype, shape) in layout(name, spec).items()}


def check(state: Mapping[str, Any], name: str, spec: Mapping[str, ParamSpec], source: str) -> None:
    """One :class:`CheckpointError` naming every missing, unexpected, mis-shaped or wrongly typed
    key of ``state`` against optimiser ``name``'s layout (``source`` names who is loading it);
    the :data:`OPTIONAL` keys may be present or not."""
    want = layout(name, spec)
    present_optional = {k: v for k, v in OPTIONAL.items() if k in state}
    want.update(present_optional)
    check_arrays(
        state,
        {k: shape for k, (_, shape) in want.items()},
        f"{source}: optimizer state (optim.name={name})",
        dtypes={k: dtype for k, (dtype, _) in want.items()},
        error=CheckpointError,
    )


def step_of(state: Mapping[str, Any]) -> int:
    """Adam's t of a checked state (0 for SGD, which has none)."""
    return int(np.asarray(state["adam.step"])) if "adam.step" in state else 0


def join_flat(
    state: Mapping[str, Any], name: str, slot: str, params: Sequence[str]
) -> np.ndarray:
    """``params``' ``slot`` arrays of a checked state, raveled and concatenated (float32)."""
    parts = [np.asarray(state[slot_key(name, slot, k)], np.float32).ravel() for k in params]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def split_flat(
    flat: np.ndarray, name: str, slot: str, params: Sequence[str], spec: Mapping[str, ParamSpec]
) -> dict[str, np.ndarray]:
    """The inverse of :func:`join_flat`: one float32 array per parameter, its spec shape."""
    flat = np.asarray(flat, np.float32).ravel()
    sizes = [int(np.prod(spec[k].shape, dtype=np.int64)) for k in params]
    if sum(sizes) != flat.size:
        raise ValueError(f"split_flat: {flat.size} values for {sum(sizes)} parameter entries")
    out, start = {}, 0
    for k, n in zip(params, sizes, strict=True):
        out[slot_key(name, slot, k)] = flat[start : start + n].reshape(spec[k].shape).copy()
        start += n
    return out
