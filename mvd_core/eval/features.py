"""Test features of a data set through a backend, in chunks (the one place that batches
feature extraction), and the evaluation of a backend on a test set."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from mvd_core.errors import MvdError

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import Config
    from mvd_core.data.base import ImageSet, TestSet
    from mvd_core.eval.protocols import Report
    from mvd_core.interface import Backend

log = logging.getLogger(__name__)


def extract(backend: Backend, imageset: ImageSet, modality: str, cfg: Config,
            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Test features of every image of an ImageSet, streamed in chunks of ``eval.batch_size``
    (never all images in memory at once); ``progress(done, total)`` after every chunk."""
    from mvd_core.data.base import load_images
    from mvd_core.data.transforms import test_images

    n = len(imageset)
    if n == 0:
        raise MvdError(f"{imageset!r}: no images to extract features from")
    chunk = max(1, cfg.eval.batch_size)
    h, w = cfg.data.height, cfg.data.width
    feats: list[np.ndarray] = []
    for start in range(0, n, chunk):
        raw = load_images(imageset, np.arange(start, min(n, start + chunk)), h, w, cfg.data.resize)
        feats.append(backend.extract_features(test_images(raw, h, w, cfg.data.resize), modality))
        if progress is not None:
            progress(min(n, start + chunk), n)
    return np.concatenate(feats, axis=0)


def testset_features(backend: Backend, testset: TestSet, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(query features, gallery features) of a test set, each in its own modality (a progress
    bar on a terminal: :mod:`mvd_core.progress`)."""
    from mvd_core.progress import Bar

    t0 = time.perf_counter()
    qf = extract(backend, testset.query, testset.query.modality, cfg, Bar("features: query"))
    gf = extract(backend, testset.gallery, testset.gallery.modality, cfg, Bar("features: gallery"))
    log.info("features: %d query, %d gallery in %.1f s", len(qf), len(gf), time.perf_counter() - t0)
    return qf, gf


def evaluate_backend(backend: Backend, testset: TestSet, cfg: Config, trials: int | None = None,
                     rerank: bool = False) -> Report:
    """The test set's own protocol under ``cfg.eval`` (``trials`` overrides ``eval.trials``;
    ``rerank``: k-reciprocal re-ranking)."""
    from mvd_core.eval.protocols import evaluate

    qf, gf = testset_features(backend, testset, cfg)
    return evaluate(testset, qf, gf, cfg.eval, trials=trials, rerank=rerank)


def evaluate_backend_all(
    backend: Backend,
    testset: TestSet,
    cfg: Config,
    *,
    sysu_modes: Iterable[str] = ("all", "indoor"),
    shots: Iterable[str] = ("single",),
    regdb_modes: Iterable[str] = ("v2t", "t2v"),
    rerank: bool = False,
) -> dict[str, Report]:
    """Every requested protocol of the test set from one feature extraction (see
    :func:`mvd_core.eval.protocols.evaluate_all`), keyed by report name."""
    from mvd_core.eval.protocols import evaluate_all

    qf, gf = testset_features(backend, testset, cfg)
    reports = evaluate_all(testset, qf, gf, cfg.eval, sysu_modes=tuple(sysu_modes), shots=tuple(shots),
                           rerank=rerank)
    if testset.protocol in ("regdb", "llcm"):  # regdb-v2t-trial1, llcm-v2t: the direction
        keep = tuple(regdb_modes)
        reports = {k: r for k, r in reports.items() if k.split("-")[1] in keep}
    return reports
