"""TrainLoader: exact determinism per (seed, epoch, step) whatever the workers, bit-for-bit resume,
capped epochs, batch layout, clean shutdown, errors reaching the consumer."""

from __future__ import annotations

import dataclasses
import gc
import threading
from pathlib import Path

import numpy as np
import pytest

from mvd_core.config import DataConfig
from mvd_core.data.base import TrainSet, load_images
from mvd_core.data.loader import TrainLoader, materialise
from mvd_core.data.sets import load_train
from mvd_core.data.synth import synth_sysu
from mvd_core.errors import ConfigError, DataError
from mvd_core.interface import Batch

CFG = DataConfig(height=32, width=16, num_ids=3, num_pos=2, pad=2, workers=2, prefetch=3)


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> TrainSet:
    root = tmp_path_factory.mktemp("loader") / "sysu"
    synth_sysu(root, ids=10, images_per_cam=2, seed=5)
    return load_train(dataclasses.replace(CFG, root=str(root)))


def _equal(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.images, y.images) and np.array_equal(x.labels, y.labels)
        and np.array_equal(x.modality, y.modality) for x, y in zip(a, b)
    )


def _pool_threads(loader: TrainLoader) -> set[threading.Thread]:
    pool = loader._pool
    return set() if pool is None else set(pool._threads)


def test_batch_layout(train: TrainSet) -> None:
    with TrainLoader(train, CFG, seed=0) as loader:
        b = next(iter(loader.epoch(1)))
    n, k = CFG.num_ids, CFG.num_pos
    assert isinstance(b, Batch) and len(b) == 2 * n * k == loader.batch_size
    assert b.images.shape == (2 * n * k, 3, 32, 16) and b.images.dtype == np.float32
    assert b.labels.dtype == np.int64 and b.modality.dtype == np.int64
    assert b.modality.tolist() == [0] * (n * k) + [1] * (n * k)
    np.testing.assert_array_equal(b.labels[: n * k], b.labels[n * k:])
    assert len(set(b.labels.tolist())) == n
    assert np.all((b.labels >= 0) & (b.labels < train.num_classes))


def test_same_seed_same_batches_whatever_the_workers(train: TrainSet) -> None:
    runs = []
    for workers, prefetch in ((0, 1), (1, 1), (2, 3), (2, 8)):
        cfg = dataclasses.replace(CFG, workers=workers, prefetch=prefetch)
        with TrainLoader(train, cfg, seed=7, steps_per_epoch=6) as loader:
            runs.append(list(loader.epoch(2)))
    assert all(_equal(runs[0], r) for r in runs[1:])
    with TrainLoader(train, CFG, seed=7, steps_per_epoch=6) as loader:
        assert not _equal(runs[0], list(loader.epoch(3)))  # another epoch
    with TrainLoader(train, CFG, seed=8, steps_per_epoch=6) as loader:
        assert not _equal(runs[0], list(loader.epoch(2)))  # another seed


def test_resume_equals_tail_and_cap_is_prefix(train: TrainSet) -> None:
    with TrainLoader(train, CFG, seed=3) as full_loader:
        full = list(full_loader.epoch(4))
        assert len(full) == full_loader.steps_per_epoch == full_loader.sampler.steps_per_epoch
        for start in (0, 1, len(full) - 1, len(full)):
            assert _equal(list(full_loader.epoch(4, start_step=start)), full[start:])
        one = full_loader.batch(4, 2)
        assert _equal([one], [full[2]])
    with TrainLoader(train, CFG, seed=3, steps_per_epoch=3) as capped:
        assert capped.steps_per_epoch == 3
        assert _equal(list(capped.epoch(4)), full[:3])
        assert _equal(list(capped.epoch(4, start_step=1)), full[1:3])
        with pytest.raises(ValueError):
            capped.epoch(4, start_step=4)
    with TrainLoader(train, CFG, seed=3, steps_per_epoch=10**6) as big:
        assert big.steps_per_epoch == big.sampler.steps_per_epoch  # a cap never lengthens


def test_steps_per_epoch_formula(train: TrainSet) -> None:
    with TrainLoader(train, dataclasses.replace(CFG, workers=0), seed=0) as loader:
        nv, nt = len(train.visible), len(train.thermal)
        assert loader.steps_per_epoch == max(nv, nt) // (CFG.num_ids * CFG.num_pos) + 1
    with TrainLoader(train, dataclasses.replace(CFG, workers=0, sampler="pt"), seed=0) as loader:
        assert loader.steps_per_epoch == train.num_classes // CFG.num_ids  # drop_last
        seen = set()
        for b in loader.epoch(1):
            seen |= set(b.labels.tolist())
        used = train.num_classes // CFG.num_ids * CFG.num_ids  # the c mod num_ids tail is unused
        assert len(seen) == used and seen <= set(range(train.num_classes))


def test_early_stop_is_clean(train: TrainSet) -> None:
    loader = TrainLoader(train, dataclasses.replace(CFG, prefetch=4), seed=0)
    gen = loader.epoch(1)
    next(gen)
    gen.close()  # queued batches cancelled, nothing hangs
    gen2 = loader.epoch(1)
    next(gen2)
    del gen2  # dropped without close: garbage collection closes it
    gc.collect()
    threads = _pool_threads(loader)
    assert threads and all(t.name.startswith("mvd-loader") for t in threads)
    loader.close()
    assert not any(t.is_alive() for t in threads)
    loader.close()  # idempotent
    with pytest.raises(RuntimeError):
        loader.epoch(1)


def test_preloads_small_sets_and_reads_large_ones_lazily(train: TrainSet) -> None:
    pre = materialise(train.visible, 32, 16)
    assert pre.size == (32, 16) and pre.paths is None
    np.testing.assert_array_equal(pre.images, load_images(train.visible, np.arange(len(train.visible)), 32, 16))
    lazy = materialise(train.visible, 32, 16, budget=0)
    assert lazy is train.visible
    cfg = dataclasses.replace(CFG, workers=0)
    with TrainLoader(train, cfg, seed=1, steps_per_epoch=2) as a, \
            TrainLoader(train, cfg, seed=1, steps_per_epoch=2, preload_bytes=0) as b:
        assert b.visible.paths is not None
        assert _equal(list(a.epoch(1)), list(b.epoch(1)))


def test_worker_error_reaches_the_consumer(tmp_path: Path) -> None:
    root = tmp_path / "s"
    synth_sysu(root, ids=4, images_per_cam=1, seed=0)
    ts = load_train(dataclasses.replace(CFG, root=str(root)))
    for p in ts.visible.paths:
        Path(p).write_bytes(b"broken")
    cfg = dataclasses.replace(CFG, num_ids=2, workers=2)
    with TrainLoader(ts, cfg, seed=0, preload_bytes=0) as loader:
        with pytest.raises(DataError, match="not an image"):
            list(loader.epoch(1))
        threads = _pool_threads(loader)
    assert threads and not any(t.is_alive() for t in threads)


def test_bad_arguments(train: TrainSet) -> None:
    with pytest.raises(ConfigError, match="seed"):
        TrainLoader(train, CFG, seed=-1)
    with pytest.raises(ConfigError, match="num_ids"):
        TrainLoader(train, dataclasses.replace(CFG, num_ids=train.num_classes + 1), seed=0)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        TrainLoader(train, CFG, seed=0, steps_per_epoch=-1)
