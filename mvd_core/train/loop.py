"""The training loop (run → epoch → step) and its two cadence policies.

The loop only trains: it draws batches from the loader, calls ``Backend.train_step``, logs each
step, and at each epoch's end asks the policies whether to evaluate and checkpoint. Loading data,
building the backend and the run folder are the driver's job (:mod:`mvd_core.train.driver`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mvd_core import __version__
from mvd_core.config import Config, to_dict
from mvd_core.errors import MvdError
from mvd_core.train.runlog import ConsoleProgress, RunLog
from mvd_core.train.schedule import lr_at
from mvd_core.weights.checkpoint import Checkpoint, save_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.data.base import TestSet
    from mvd_core.data.loader import TrainLoader
    from mvd_core.interface import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalPolicy:
    """When to evaluate during training (``eval.every`` epochs; 0 = never during training).

    With a validation split (``run.val_ids``): validate every ``every`` epochs and at the last
    epoch of this invocation; the best validation mAP selects ``best.safetensors``. Without one:
    a one-trial test evaluation every ``every`` epochs, for monitoring only (nothing is selected
    on the test set); the final epoch is left to the full final evaluation.
    """

    every: int
    final_epoch: int  # schedule.epochs
    stop_epoch: int  # the last epoch this invocation trains
    has_val: bool

    def due(self, epoch: int) -> str | None:
        periodic = self.every > 0 and epoch % self.every == 0
        if self.has_val:
            return "val" if periodic or epoch == self.stop_epoch else None
        return "test-monitor" if periodic and epoch != self.final_epoch else None


@dataclass(frozen=True)
class CheckpointPolicy:
    """``last.safetensors`` every ``every`` epochs and at the last epoch of this invocation."""

    every: int
    stop_epoch: int

    def due(self, epoch: int) -> bool:
        return epoch % max(1, self.every) == 0 or epoch == self.stop_epoch


@dataclass
class LoopState:
    epoch: int  # the last epoch completed
    global_step: int
    best_val_map: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def make_checkpoint(backend: Backend, cfg: Config, state: LoopState) -> Checkpoint:
    meta = {
        "epoch": state.epoch,
        "global_step": state.global_step,
        "best_val_map": state.best_val_map,
        "config": to_dict(cfg),
        "backend": backend.name,
        "mvd_version": __version__,
    }
    return Checkpoint(
        params=backend.state(), optimizer=backend.optimizer_state(), rng=backend.rng_state(), meta=meta
    )


def summary(report: Any) -> dict[str, float]:
    return {k: float(v) for k, v in report.mean.items()}


def fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in values.items())


@dataclass
class Loop:
    backend: Backend
    cfg: Config
    loader: TrainLoader
    runlog: RunLog
    ckpt_dir: Path
    val_set: TestSet | None = None
    on_step: Callable[[dict[str, float]], None] | None = None
    #: multi-process: only rank 0 checkpoints and evaluates (mvd_core.train.distributed)
    is_main: bool = True

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.safetensors"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.safetensors"

    def run(self, state: LoopState, stop_epoch: int) -> LoopState:
        """Train epochs ``state.epoch + 1 .. stop_epoch``."""
        cfg = self.cfg
        evals = EvalPolicy(cfg.eval.every, cfg.schedule.epochs, stop_epoch, self.val_set is not None)
        ckpts = CheckpointPolicy(cfg.run.ckpt_every, stop_epoch)
        progress = ConsoleProgress(cfg.schedule.epochs, self.loader.steps_per_epoch, cfg.run.log_every)
        for epoch in range(state.epoch + 1, stop_epoch + 1):
            self.train_epoch(epoch, state, progress)
            state.epoch = epoch
            check = getattr(self.backend, "check_replicas", None)
            if check is not None:  # multi-process: every rank holds the same model (collective)
                check()
            if not self.is_main:
                continue
            if ckpts.due(epoch):  # before evaluating: an evaluation failure loses no training
                save_checkpoint(self.last_path, make_checkpoint(self.backend, cfg, state))
            kind = evals.due(epoch)
            if kind is not None:
                self.evaluate(kind, state)
        return state

    def train_epoch(self, epoch: int, state: LoopState, progress: ConsoleProgress) -> None:
        lr = lr_at(epoch, self.cfg.schedule, self.cfg.optim)
        t_prev = time.perf_counter()
        batches = self.loader.epoch(epoch)
        try:
            for step, batch in enumerate(batches, start=1):
                losses = self.backend.train_step(batch, lr)
                state.global_step += 1
                now = time.perf_counter()
                ips = len(batch) / max(now - t_prev, 1e-9)
                t_prev = now
                for k, v in losses.items():
                    if not np.isfinite(v):
                        raise MvdError(f"loss {k} is {v} at epoch {epoch} step {step}: training diverged")
                rec = {"epoch": epoch, "step": step, "global_step": state.global_step, "lr": lr,
                       "images_per_s": round(ips, 1), **losses}
                self.runlog.write(rec)
                state.history.append(rec)
                if self.on_step is not None:
                    self.on_step(rec)
                progress.update(epoch, step, lr, losses, ips)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def evaluate(self, kind: str, state: LoopState) -> None:
        from mvd_core.data.sets import direction_of, load_test
        from mvd_core.eval.features import evaluate_backend

        cfg = self.cfg
        if kind == "val":
            assert self.val_set is not None
            rep = evaluate_backend(self.backend, self.val_set, cfg)
        else:
            rep = evaluate_backend(self.backend, load_test(cfg.data, direction_of(cfg)), cfg, trials=1)
        values = summary(rep)
        self.runlog.write({"epoch": state.epoch, "global_step": state.global_step, "eval": kind, **values})
        what = "validation" if kind == "val" else "test (monitoring only)"
        log.info("epoch %d %s: %s", state.epoch, what, fmt(values))
        if kind == "val" and values["mAP"] > state.best_val_map:
            state.best_val_map = values["mAP"]
            save_checkpoint(self.best_path, make_checkpoint(self.backend, cfg, state))
