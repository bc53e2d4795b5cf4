"""The training loader: sampler → images → transforms → :class:`~mvd_core.interface.Batch`, with
background prefetch.

Determinism. Epoch ``e``'s batch plan comes from ``np.random.default_rng([seed, e, 1])`` (the
:class:`~mvd_core.data.sampler.IdentitySampler`), and batch ``s`` (0-based) of that epoch is
augmented with its own ``np.random.default_rng([seed, e, 2, s])``. A batch is therefore a pure
function of ``(seed, epoch, step)``: whichever worker thread builds it and whenever, and
``epoch(e, start_step=s)`` yields exactly the tail of ``epoch(e)`` (bit-for-bit resume). A capped
epoch (``steps_per_epoch``) is the prefix of the full plan.

Multi-process (``world`` > 1, :mod:`mvd_core.train.distributed`): the sampler plans ``num_ids · world``
identities per step from the same shared generator on every rank, and rank ``r`` takes the
``r``-th block of ``num_ids`` of them (disjoint within a step), augmented with
``np.random.default_rng([seed, e, 2, s, r])``. ``world`` = 1 is the single-process loader.

Batch layout: the ``num_ids · num_pos`` visible images first, then the thermal ones in the same
id order; ``labels`` aligned; ``modality`` 0 (visible) / 1 (thermal).

Images. A training set whose stored images already have the configured size (e.g. the
memory-mapped SYSU cache at 288×144) is read in place. Otherwise (files, or arrays of another
size) the whole set is decoded and resized once into memory if that takes at most
``preload_bytes`` (default 2 GiB: the synthetic sets, RegDB, the SYSU cache at smaller sizes);
larger sets are decoded batch by batch in the workers.

Prefetch: ``cfg.workers`` threads (0 = build batches in the consumer's thread) keep up to
``cfg.prefetch`` batches in flight. Pillow and NumPy release the GIL in their heavy loops.
Stopping early is clean: closing the epoch's generator (``close()``, garbage collection, or
leaving a ``with`` block over the loader) cancels the queued batches; ``TrainLoader.close()``
stops the threads.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

import numpy as np

from mvd_core.config import DataConfig
from mvd_core.data.base import ImageSet, TrainSet, load_images
from mvd_core.data.sampler import IdentitySampler
from mvd_core.data.transforms import TrainTransform
from mvd_core.errors import ConfigError
from mvd_core.interface import THERMAL, VISIBLE, Batch

log = logging.getLogger(__name__)

#: decode a whole training set into memory when it needs at most this many bytes
PRELOAD_BYTES = 2 << 30


def materialise(
    imageset: ImageSet, height: int, width: int, budget: int = PRELOAD_BYTES, resize_method: str = "lanczos"
) -> ImageSet:
    """``imageset`` as is if its stored images are ``height×width``; else decoded + resized into
    memory when that fits ``budget`` bytes; else as is (decoded per batch)."""
    if imageset.size == (height, width):
        return imageset
    need = len(imageset) * height * width * 3
    if need > budget:
        log.info("%r: %.1f GiB at %dx%d exceeds the preload budget; decoding per batch "
                 "(for SYSU-MM01, `mvd prepare sysu` writes a memory-mapped cache)",
                 imageset, need / 2**30, height, width)
        return imageset
    images = load_images(imageset, np.arange(len(imageset)), height, width, resize_method)
    log.debug("preloaded %r at %dx%d (%.0f MiB)", imageset, height, width, need / 2**20)
    return ImageSet(pids=imageset.pids, labels=imageset.labels, cams=imageset.cams,
                    modality=imageset.modality, images=images)


class TrainLoader:
    """Ready training batches for ``train`` under ``cfg`` (see the module docstring).

    ``steps_per_epoch``: 0 = the sampler's; > 0 caps it. Use as a context manager or call
    :meth:`close` at the end.
    """

    def __init__(
        self,
        train: TrainSet,
        cfg: DataConfig,
        seed: int,
        steps_per_epoch: int = 0,
        *,
        preload_bytes: int = PRELOAD_BYTES,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"run.seed: expected a non-negative integer, got {seed!r}")
        if steps_per_epoch < 0:
            raise ConfigError(f"schedule.steps_per_epoch: expected >= 0, got {steps_per_epoch}")
        if cfg.workers < 0 or cfg.prefetch < 0:
            raise ConfigError(f"data.workers/data.prefetch: expected >= 0, got {cfg.workers}/{cfg.prefetch}")
        self.cfg, self.seed = cfg, int(seed)
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"distributed: rank {rank} of {world} processes (expected 0 <= rank < world)")
        if cfg.num_ids * world > train.num_classes:
            raise ConfigError(
                f"data.num_ids: {cfg.num_ids} identities per rank x {world} ranks exceeds the "
                f"{train.num_classes} identities of {train.name}"
            )
        self.rank, self.world = int(rank), int(world)
        self.sampler = IdentitySampler(train, cfg.num_ids * world, cfg.num_pos, cfg.sampler)
        full = self.sampler.steps_per_epoch
        self.steps_per_epoch = min(full, steps_per_epoch) if steps_per_epoch > 0 else full
        self.num_classes = train.num_classes
        self.height, self.width = cfg.height, cfg.width
        if cfg.resize != "lanczos" and train.visible.images is not None:
            log.warning("data.resize=%s: %s holds images already resized (the SYSU cache: Lanczos to "
                        "288x144); the PT code resizes the raw files -- read the raw folder for it",
                        cfg.resize, train.name)
        self.visible = materialise(train.visible, cfg.height, cfg.width, preload_bytes, cfg.resize)
        self.thermal = materialise(train.thermal, cfg.height, cfg.width, preload_bytes, cfg.resize)
        self.tf_visible = TrainTransform(cfg, "visible")
        self.tf_thermal = TrainTransform(cfg, "thermal")
        self.workers, self.prefetch = int(cfg.workers), max(1, int(cfg.prefetch))
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # ------------------------------------------------------------------ batches

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size // self.world

    def plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Epoch ``epoch``'s ``(visible indices, thermal indices)`` per step (capped)."""
        if epoch < 0:
            raise ValueError(f"epoch: expected >= 0, got {epoch}")
        rng = np.random.default_rng([self.seed, epoch, 1])
        plan = self.sampler.epoch_indices(rng)[: self.steps_per_epoch]
        if self.world == 1:
            return plan
        n = self.cfg.num_ids * self.cfg.num_pos  # id-major: rank r's ids are one block
        lo, hi = self.rank * n, (self.rank + 1) * n
        return [(v[lo:hi], t[lo:hi]) for v, t in plan]

    def make_batch(self, epoch: int, step: int, vis_idx: np.ndarray, th_idx: np.ndarray) -> Batch:
        """Build the batch of ``(epoch, step)`` from its planned indices (pure function)."""
        key = [self.seed, epoch, 2, step] + ([self.rank] if self.world > 1 else [])
        rng = np.random.default_rng(key)
        nv, nt = vis_idx.shape[0], th_idx.shape[0]
        out = np.empty((nv + nt, 3, self.height, self.width), np.float32)
        raw_v = load_images(self.visible, vis_idx, self.height, self.width, self.cfg.resize)
        for i in range(nv):
            self.tf_visible(raw_v[i], rng, out[i])
        raw_t = load_images(self.thermal, th_idx, self.height, self.width, self.cfg.resize)
        for i in range(nt):
            self.tf_thermal(raw_t[i], rng, out[nv + i])
        labels = np.concatenate([self.visible.labels[vis_idx], self.thermal.labels[th_idx]]).astype(np.int64)
        modality = np.concatenate([np.full(nv, VISIBLE, np.int64), np.full(nt, THERMAL, np.int64)])
        return Batch(images=out, labels=labels, modality=modality)

    def batch(self, epoch: int, step: int) -> Batch:
        """Batch ``step`` (0-based) of ``epoch``, built in the calling thread."""
        plan = self.plan(epoch)
        if not 0 <= step < len(plan):
            raise IndexError(f"step: expected 0..{len(plan) - 1}, got {step}")
        return self.make_batch(epoch, step, *plan[step])

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches ``start_step .. steps_per_epoch-1`` (0-based) of ``epoch``, prefetched."""
        if self._closed:
            raise RuntimeError("TrainLoader is closed")
        plan = self.plan(epoch)
        if not 0 <= start_step <= len(plan):
            raise ValueError(f"start_step: expected 0..{len(plan)}, got {start_step}")
        return self._iterate(epoch, plan, start_step)

    def _iterate(self, epoch: int, plan: list[tuple[np.ndarray, np.ndarray]], start: int) -> Iterator[Batch]:
        steps = iter(range(start, len(plan)))
        if self.workers == 0:
            for s in steps:
                yield self.make_batch(epoch, s, *plan[s])
            return
        pool = self._get_pool()
        pending: deque[Future[Batch]] = deque()

        def submit() -> None:
            s = next(steps, None)
            if s is not None:
                pending.append(pool.submit(self.make_batch, epoch, s, *plan[s]))

        try:
            for _ in range(self.prefetch):
                submit()
            while pending:
                batch = pending.popleft().result()
                submit()
                yield batch
        finally:
            for f in pending:
                f.cancel()
            wait_futures(list(pending))

    # ------------------------------------------------------------------ lifecycle

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mvd-loader")
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (queued batches are cancelled). Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            try:
                pool.shutdown(wait=False, cancel_futures=True)
            except Exception:  # noqa: BLE001 - at interpreter exit the stdlib may be half torn down
                pass
