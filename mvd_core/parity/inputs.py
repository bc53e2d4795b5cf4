"""The seeded inputs of the parity checks (`mvd parity`, the AMP check): a batch laid out as
the sampler lays it out and a small identity-structured test set."""

from __future__ import annotations

import numpy as np

from mvd_core.config import Config
from mvd_core.interface import THERMAL, VISIBLE, Batch

#: initial residual-branch gain (``model.residual_gain``) of the seeded parity weights
RESIDUAL_GAIN = 0.1


def make_batch(rng: np.random.Generator, cfg: Config, batch: int, num_classes: int) -> Batch:
    """A seeded batch laid out as the sampler lays it out: ids × pos visible, then thermal."""
    if batch < 8 or batch % 4:
        raise ValueError(f"batch: expected a multiple of 4, at least 8, got {batch}")
    pos = 2
    ids = batch // (2 * pos)
    if ids > num_classes:
        raise ValueError(f"batch: {ids} identities per batch but only {num_classes} classes")
    chosen = rng.choice(num_classes, ids, replace=False)
    labels = np.concatenate([np.repeat(chosen, pos), np.repeat(chosen, pos)]).astype(np.int64)
    modality = np.concatenate([np.full(ids * pos, VISIBLE), np.full(ids * pos, THERMAL)]).astype(np.int64)
    images = rng.standard_normal((batch, 3, cfg.data.height, cfg.data.width), dtype=np.float32)
    # thermal samples look like thermal images: one channel repeated
    images[modality == THERMAL] = images[modality == THERMAL][:, :1].repeat(3, axis=1)
    return Batch(images=images, labels=labels, modality=modality)


def make_test_set(rng: np.random.Generator, cfg: Config, ids: int = 8, per_id: int = 4):
    """Identity-structured images (a per-identity template plus noise) so that features
    cluster by identity and the metrics are meaningful; returns (q_imgs, q_pids, g_imgs, g_pids)."""
    h, w = cfg.data.height, cfg.data.width
    templates = rng.standard_normal((ids, 3, h, w), dtype=np.float32)
    pids = np.repeat(np.arange(ids), per_id)

    def draw() -> np.ndarray:
        return (templates[pids] + 0.6 * rng.standard_normal((len(pids), 3, h, w), dtype=np.float32)).astype(np.float32)

    q = draw()
    q = q[:, :1].repeat(3, axis=1)  # thermal-like queries
    return q, pids, draw(), pids.copy()
