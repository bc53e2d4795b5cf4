"""The validation split: training identities held out as a query/gallery test set."""

from __future__ import annotations

import numpy as np

from mvd_core.data.base import ImageSet, TestSet, TrainSet
from mvd_core.errors import DataError


def carve_validation(train: TrainSet, n_ids: int, seed: int) -> tuple[TrainSet, TestSet]:
    """Hold out ``n_ids`` training identities (drawn with ``default_rng([seed, 7])``).

    Returns the remaining training set (labels renumbered ``0..C'-1`` keeping their order) and a
    validation TestSet of the held-out ids: thermal query → visible gallery, protocol "regdb"
    (``labels = pids``).
    """
    c = train.num_classes
    if not 1 <= n_ids < c:
        raise DataError(f"run.val_ids: expected 1..{c - 1} held-out ids (the training set has {c}), got {n_ids}")
    rng = np.random.default_rng([seed, 7])
    held = np.sort(rng.choice(c, size=n_ids, replace=False))
    keep = np.setdiff1d(np.arange(c), held)
    new_label = np.full(c, -1, np.int64)
    new_label[keep] = np.arange(keep.shape[0])

    def split(part: ImageSet) -> tuple[ImageSet, ImageSet]:
        is_held = np.isin(part.labels, held)
        tr_idx = np.flatnonzero(~is_held)
        va_idx = np.flatnonzero(is_held)
        tr = part.subset(tr_idx, labels=new_label[part.labels[tr_idx]])
        va = part.subset(va_idx, labels=part.pids[va_idx])
        return tr, va

    vtr, vva = split(train.visible)
    ttr, tva = split(train.thermal)
    rest = TrainSet(vtr, ttr, int(keep.shape[0]), f"{train.name} minus {n_ids} validation ids")
    val = TestSet(tva, vva, "regdb", f"{train.name}: validation ({n_ids} ids, thermal->visible)")
    return rest, val
