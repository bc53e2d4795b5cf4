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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass

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


@dataclass(frozen=True)
class Batch:
    """One training batch, visible and thermal images together.

    images:   float32 (B, 3, H, W), already normalised (ImageNet mean/std)
    labels:   int64 (B,), training labels 0..C-1
    modality: int64 (B,), VISIBLE (0) or THERMAL (1) per sample
    """

    images: np.ndarray
    labels: np.ndarray
    modality: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"Batch.images: expected (B, 3, H, W), got {self.images.shape}")
        b = self.images.shape[0]
        if self.labels.shape != (b,) or self.modality.shape != (b,):
            raise ValueError(
                f"Batch.labels/modality: expected shape ({b},), got "
                f"{self.labels.shape} and {self.modality.shape}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


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
        """Loss terms in train mode, without any update."""
        ...

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """Gradient of the total loss w.r.t. every trainable parameter (canonical names), in
        train mode, without any update."""
        ...

    def extract_features(self, images: np.ndarray, modality: str) -> np.ndarray:
        """Eval-mode test features (N, D) float32 of normalised images (N, 3, H, W);
        ``modality`` is "visible" or "thermal"."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """All parameters and buffers, canonical (torch state_dict) names."""
        ...

    def load_state(self, params: dict[str, np.ndarray], strict: bool = True) -> None:
        """Load canonical-named arrays; strict: any missing, unexpected or mis-shaped name is an
        error naming it."""
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
