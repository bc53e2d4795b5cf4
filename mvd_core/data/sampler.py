"""Identity sampling (SPEC §4), driven only by the ``np.random.Generator`` it is given.

Each batch holds ``num_ids`` distinct identities × (``num_pos`` visible + ``num_pos`` thermal)
images, listed id by id: visible indices ``[id0 × K, id1 × K, …]`` and thermal indices in the
same id order, so ``labels`` of the two halves are equal.

* ``kind="ms"`` (the MindSpore port / the public ``IdentitySampler``): per batch, ``num_ids`` ids
  drawn without replacement from all ids; per id, ``num_pos`` images of each modality drawn
  *with* replacement. ``steps_per_epoch = max(#visible, #thermal) // (num_ids · num_pos) + 1``.
* ``kind="pt"`` (the paper code's ``CamRandomIdentitySampler`` + ``DataLoader(drop_last=True)``):
  each epoch is a random permutation of the ids, every id contributing ``num_pos`` visible and
  ``num_pos`` thermal images; the loader cuts that list into batches of ``num_ids`` ids and drops
  the short remainder, so ``steps_per_epoch = C // num_ids`` and the last ``C mod num_ids`` ids of
  the permutation are unused that epoch (SYSU-MM01, 395 ids × 16 per batch: 24 batches, 11 ids
  unused; RegDB, 206 ids × 8 — the paper's ``regdb.py`` batch of 64: 25 batches, 6 unused). Per
  id, ``num_pos`` images of each modality without replacement when it has that many, else with.
  (The paper code interleaves visible/thermal within an id; here the batch layout is the
  toolkit's — every loss and BatchNorm statistic is invariant to the order within a batch.)
"""

from __future__ import annotations

import numpy as np

from mvd_core.data.base import TrainSet
from mvd_core.errors import ConfigError

SAMPLERS = ("ms", "pt")


class IdentitySampler:
    """Per-epoch batch plans for ``train``; see the module docstring."""

    def __init__(self, train: TrainSet, num_ids: int, num_pos: int, kind: str = "ms") -> None:
        if kind not in SAMPLERS:
            raise ConfigError(f"data.sampler: expected ms|pt, got {kind!r}")
        if num_pos < 1:
            raise ConfigError(f"data.num_pos: expected at least 1, got {num_pos}")
        if not 1 <= num_ids <= train.num_classes:
            raise ConfigError(
                f"data.num_ids: expected 1..{train.num_classes} identities per batch "
                f"({train.name} has {train.num_classes}), got {num_ids}"
            )
        self.kind, self.num_ids, self.num_pos = kind, int(num_ids), int(num_pos)
        self.num_classes = train.num_classes
        self.n_visible, self.n_thermal = len(train.visible), len(train.thermal)
        self._vis_pos = _positions(train.visible.labels, self.num_classes)
        self._th_pos = _positions(train.thermal.labels, self.num_classes)

    @property
    def batch_size(self) -> int:
        """Images per batch, both modalities: ``2 · num_ids · num_pos``."""
        return 2 * self.num_ids * self.num_pos

    @property
    def steps_per_epoch(self) -> int:
        if self.kind == "ms":
            return max(self.n_visible, self.n_thermal) // (self.num_ids * self.num_pos) + 1
        return self.num_classes // self.num_ids

    def _ids_per_batch(self, rng: np.random.Generator) -> list[np.ndarray]:
        c, n = self.num_classes, self.num_ids
        if self.kind == "ms":
            return [rng.choice(c, size=n, replace=False) for _ in range(self.steps_per_epoch)]
        perm = rng.permutation(c)
        return [perm[i * n:(i + 1) * n] for i in range(c // n)]  # drop_last: the tail is unused

    def _images(self, pos: list[np.ndarray], ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = self.num_pos
        parts = []
        for i in ids.tolist():
            cand = pos[i]
            replace = self.kind == "ms" or cand.shape[0] < k
            parts.append(rng.choice(cand, size=k, replace=replace))
        return np.concatenate(parts).astype(np.int64)

    def epoch_indices(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """One epoch: per batch ``(visible indices, thermal indices)``, each ``num_ids · num_pos``
        long, id-major, the same ids in the same order in both."""
        plan = []
        for ids in self._ids_per_batch(rng):
            v = self._images(self._vis_pos, ids, rng)
            t = self._images(self._th_pos, ids, rng)
            plan.append((v, t))
        return plan


def _positions(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of each label's images, ascending."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(num_classes)]
