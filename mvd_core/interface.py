"""The contract between `mvd_core` and a backend.

Only NumPy arrays, Python scalars and the config dataclasses cross it. A backend never opens an
image file, never draws a random batch and never computes a metric: it computes the network,
its losses and its updates.

Canonical names
---------------
Parameter names returned by :meth:`Backend.state` are the torch ``state_dict`` names of the
torch backend's ``MVDNet`` (see ``mvd_backends.torch.network``); every backend maps its own
names onto them in its ``convert.py``. Forward taps (see :data:`TAP_NAMES`) are the same strings
in every backend.

The contract layer (written once, here and in :mod:`mvd_core.model.spec`, run by every backend)
-------------------------------------------------------------------------------------------
* **Inputs**: a :class:`Batch` checks its own shapes, dtypes and modality codes; a backend calls
  :func:`check_batch` (label range, >= 2 identities for the triplet loss) before any loss and
  :func:`check_images` in :meth:`Backend.extract_features`.
* **Weights**: a backend never reads a weights file. Core computes the initial canonical
  parameters (:func:`mvd_core.weights.pretrained.initial_params`: the seeded
  :func:`~mvd_core.model.spec.init_params` with the ``model.pretrain`` trunks overlaid) and the
  backend loads that one dict through :meth:`Backend.load_state`, whose check is
  :func:`mvd_core.model.spec.check_state` (the one "missing / unexpected / mis-shaped / wrong
  dtype" report, :func:`~mvd_core.model.spec.check_arrays`).
* **Errors**: bad input raises a :class:`mvd_core.errors.MvdError` subclass (one line at the
  CLI, exit 2); anything else is a programming error.
* **Feature extraction** is batched once, by :mod:`mvd_core.eval.features` (``eval.batch_size``
  images per call); a backend computes the chunk it is given (it may pad it to a shape it has
  already compiled).
* **Side effects**: :meth:`Backend.loss_terms` and :meth:`Backend.gradients` leave every state
  as they found it -- parameters, BatchNorm running statistics, the dropout RNG stream (they
  draw the masks the next ``train_step`` will draw), the optimiser state and step count -- so
  they can be called anywhere between steps (``tests/test_backend_contract.py`` checks it bit
  for bit on every backend). ``forward(train=True)`` is the framework's train mode: it moves
  the running statistics and advances the RNG, as a training forward does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import LossConfig

#: modality codes carried by a Batch (``sub`` in the public codes: 1 = infrared)
VISIBLE = 0
THERMAL = 1

#: the four observations and four representations of SPEC §2
OBSERVATIONS = ("v_obs", "i_obs", "v_ms_obs", "i_ms_obs")
REPRESENTATIONS = ("v_rep", "i_rep", "v_ms_rep", "i_ms_rep")

#: every tap `Backend.forward` returns: "<obs>.feat" (BN-neck feature), "<obs>.logits",
#: "<rep>.z" (VIB code), "<rep>.logits", and "feat" (the test feature, SPEC §2)
TAP_NAMES = tuple(
    [f"{o}.{k}" for o in OBSERVATIONS for k in ("feat", "logits")]
    + [f"{r}.{k}" for r in REPRESENTATIONS for k in ("z", "logits")]
    + ["feat"]
)

#: loss-term names `train_step` / `loss_terms` may return (absent terms are not returned);
#: "total" is always present
LOSS_TERMS = ("id", "tri", "cml", "vsd", "vcd", "total")


#: the ``modality`` strings of :meth:`Backend.extract_features`
MODALITIES = ("visible", "thermal")


@dataclass(frozen=True)
class Batch:
    """One training batch, visible and thermal images together (checked on construction:
    :class:`~mvd_core.errors.DataError` naming what is wrong).

    images:   float (B, 3, H, W), B >= 1, already normalised (ImageNet mean/std)
    labels:   integer (B,), training labels 0..C-1 (the range is checked by :func:`check_batch`)
    modality: integer (B,), VISIBLE (0) or THERMAL (1) per sample
    """

    images: np.ndarray
    labels: np.ndarray
    modality: np.ndarray

    def __post_init__(self) -> None:
        from mvd_core.errors import DataError

        shape = np.shape(self.images)
        if len(shape) != 4 or shape[1] != 3 or shape[0] < 1:
            raise DataError(f"Batch.images: expected (B, 3, H, W) with B >= 1, got {shape}")
        b = shape[0]
        if np.shape(self.labels) != (b,) or np.shape(self.modality) != (b,):
            raise DataError(
                f"Batch.labels/modality: expected shape ({b},), got "
                f"{np.shape(self.labels)} and {np.shape(self.modality)}"
            )
        if np.asarray(self.images).dtype.kind != "f":
            raise DataError(f"Batch.images: expected floating point, got {np.asarray(self.images).dtype}")
        for name in ("labels", "modality"):
            dt = np.asarray(getattr(self, name)).dtype
            if dt.kind not in "iu":
                raise DataError(f"Batch.{name}: expected integers, got {dt}")
        bad = np.setdiff1d(np.asarray(self.modality), (VISIBLE, THERMAL))
        if bad.size:
            raise DataError(
                f"Batch.modality: expected {VISIBLE} (visible) or {THERMAL} (thermal), got {bad[:5].tolist()}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_batch(batch: Batch, num_classes: int, loss: LossConfig) -> None:
    """What a backend checks before a loss is computed on ``batch`` (train_step, loss_terms,
    gradients): it is a :class:`Batch`, its labels lie in 0..num_classes-1, and a batch for the
    triplet loss holds at least two identities (an anchor needs a negative). Raises
    :class:`~mvd_core.errors.DataError`."""
    from mvd_core.errors import DataError
    from mvd_core.model.losses import preset_weights

    if not isinstance(batch, Batch):
        raise TypeError(f"expected a mvd_core.interface.Batch, got {type(batch).__name__}")
    labels = np.asarray(batch.labels)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"batch labels: expected 0..{num_classes - 1}, got {lo}..{hi}")
    if "tri" in preset_weights(loss.preset) and np.unique(labels).size < 2:
        raise DataError(
            "batch: the triplet loss needs at least two identities per batch (an anchor needs "
            "a negative), got one"
        )


def check_images(images: np.ndarray, modality: str) -> np.ndarray:
    """The input of :meth:`Backend.extract_features`: float32 (N, 3, H, W) images and a
    modality of :data:`MODALITIES`; returns the images as a contiguous float32 array. Raises
    :class:`~mvd_core.errors.DataError`."""
    from mvd_core.errors import DataError

    if modality not in MODALITIES:
        raise DataError(f"modality: {modality!r} is not one of {', '.join(MODALITIES)}")
    shape = np.shape(images)
    if len(shape) != 4 or shape[1] != 3:
        raise DataError(f"images: expected (N, 3, H, W), got {shape}")
    return np.ascontiguousarray(images, dtype=np.float32)


@runtime_checkable
class Backend(Protocol):
    """What `mvd_core` needs from a framework. Implementations: `mvd_backends.torch.backend.
    TorchBackend` and `mvd_backends.mindspore.backend.MindSporeBackend`.

    Construction: ``Backend(cfg, num_classes, device, seed)`` where ``cfg`` is the whole resolved
    :class:`mvd_core.config.Config` (model, loss and optim sections are used), ``device`` a
    normalised device string (see :mod:`mvd_core.devices`) and ``seed`` seeds the framework RNG
    and the parameter initialisation.
    """

    name: str

    def train_step(self, batch: Batch, lr: float) -> dict[str, float]:
        """One forward+backward+update at base learning rate ``lr`` (the backend applies the
        per-group multipliers of ``cfg.optim``). Returns the loss terms (LOSS_TERMS) as floats."""
        ...

    def forward(self, batch: Batch, train: bool) -> dict[str, np.ndarray]:
        """All taps (TAP_NAMES) for ``batch``; ``train`` picks BatchNorm batch statistics (and
        dropout, if ``cfg.model.dropout`` > 0) vs eval mode. No parameter update (BatchNorm
        running statistics do move in train mode, as in the frameworks)."""
        ...

    def loss_terms(self, batch: Batch) -> dict[str, float]:
        """Loss terms in train mode, with no side effect at all (module doc, "Side effects")."""
        ...

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """Gradient of the total loss w.r.t. every trainable parameter (canonical names), in
        train mode, with no side effect at all (module doc, "Side effects")."""
        ...

    def extract_features(self, images: np.ndarray, modality: str) -> np.ndarray:
        """Eval-mode test features (N, D) float32 of normalised images (N, 3, H, W), in one
        chunk (the caller batches: :func:`mvd_core.eval.features.extract`); ``modality`` is
        "visible" or "thermal" (:func:`check_images`)."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """All parameters and buffers, canonical (torch state_dict) names."""
        ...

    def load_state(self, params: dict[str, np.ndarray], strict: bool = True) -> None:
        """Load canonical-named float32 arrays, checked by :func:`mvd_core.model.spec.check_state`
        (:class:`~mvd_core.errors.CheckpointError` naming every unexpected, mis-shaped or
        wrongly typed entry, and with ``strict`` every missing one; ``strict=False`` loads a
        subset and keeps the rest)."""
        ...

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue the optimiser exactly (moments, step counts)."""
        ...

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...

    def rng_state(self) -> dict[str, np.ndarray]:
        """The framework RNG state (dropout), for exact resume."""
        ...

    def load_rng_state(self, state: dict[str, np.ndarray]) -> None: ...


#: the public method names every backend exposes (checked by the conformance test)
BACKEND_METHODS = (
    "train_step",
    "forward",
    "loss_terms",
    "gradients",
    "extract_features",
    "state",
    "load_state",
    "optimizer_state",
    "load_optimizer_state",
    "rng_state",
    "load_rng_state",
)
