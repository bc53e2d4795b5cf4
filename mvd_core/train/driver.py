"""The training / evaluation driver, written once for every backend.

    data (mvd_core.data) → loader → training.Loop (Backend.train_step) → runlog, checkpoints
    → features (Backend.extract_features) → protocols.evaluate → report

Run folder ``<run.out>/<run.tag>/``: ``config.yaml`` (fully resolved), ``log.jsonl`` (one
record per step and per evaluation, time-stamped), ``checkpoints/last.safetensors``,
``checkpoints/best.safetensors`` (only with ``run.val_ids`` > 0: best validation mAP — never
selected on the test set), ``report.{json,txt}`` (the final test evaluation) and, from
``mvd eval``, ``eval-<protocol>.{json,txt}`` per protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mvd_core.config import Config, apply_overrides, atomic_write_text, save_config
from mvd_core.errors import MvdError
from mvd_core.registry import create_backend
from mvd_core.train.loop import Loop, LoopState, fmt, make_checkpoint, summary
from mvd_core.train.resume import (  # noqa: F401 - re-exported: the driver's public API
    checkpoint_config,
    plan_resume,
    resolve_checkpoint,
    run_dir_of,
)
from mvd_core.train.rundir import RunLock, check_run_dir, check_tag
from mvd_core.train.runlog import RunLog
from mvd_core.weights.checkpoint import Checkpoint, load_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.data.base import TestSet, TrainSet
    from mvd_core.eval.protocols import Report
    from mvd_core.interface import Backend

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path
    epochs_done: int
    steps: list[dict[str, Any]] = field(default_factory=list)  # this invocation's step records
    report: Report | None = None  # the final test evaluation (None if not reached)
    best_checkpoint: Path | None = None
    #: the resumed run had already finished: nothing was trained or evaluated
    already_complete: bool = False


# --------------------------------------------------------------------------- run folders

def run_dir_for(cfg: Config) -> Path:
    tag = cfg.run.tag or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.run.out) / tag


def _new_run_dir(cfg: Config) -> Path:
    if cfg.run.tag:
        check_tag(cfg.run.tag)  # one plain name: never outside run.out, never run.out itself
    run_dir = run_dir_for(cfg)
    if (run_dir / "checkpoints" / "last.safetensors").exists():
        raise MvdError(f"{run_dir}: a run with this tag exists; use --resume {run_dir} or another --ckpt tag")
    check_run_dir(run_dir)  # fail at once (file on the path, read-only, in use, not empty)
    return run_dir


# --------------------------------------------------------------------------- data and model

def load_data(cfg: Config) -> tuple[TrainSet, TestSet | None]:
    """The training set and, with ``run.val_ids`` > 0, the validation split carved from it."""
    from mvd_core.data.sets import load_train
    from mvd_core.data.splits import carve_validation

    train_set = load_train(cfg.data)
    if cfg.run.val_ids > 0:
        return carve_validation(train_set, cfg.run.val_ids, cfg.run.seed)
    return train_set, None


def build_backend(cfg: Config, num_classes: int, ckpt: Checkpoint | None = None) -> Backend:
    """The backend of ``cfg``, restored exactly from ``ckpt`` (parameters, optimiser, RNG)."""
    backend = create_backend(cfg, num_classes)
    if ckpt is not None:
        backend.load_state(ckpt.params, strict=True)
        backend.load_optimizer_state(ckpt.optimizer)
        if ckpt.meta.get("backend", backend.name) == backend.name:
            backend.load_rng_state(ckpt.rng)
        else:  # parameters and optimiser state are canonical; a framework's RNG state is not
            log.warning(
                "continuing a %s run on %s: its dropout RNG restarts from run.seed (the run goes "
                "on exactly but for the dropout masks)", ckpt.meta.get("backend"), backend.name,
            )
    return backend


def _best_val_map(run_dir: Path, ckpt: Checkpoint) -> float:
    """The best validation mAP so far: ``best.safetensors`` has the latest word (``last`` is
    written before its epoch's validation)."""
    best = run_dir / "checkpoints" / "best.safetensors"
    if best.exists():
        return float(load_checkpoint(best).meta.get("best_val_map", -1.0))
    return float(ckpt.meta.get("best_val_map", -1.0))


# --------------------------------------------------------------------------- training

def train(
    cfg: Config | None = None,
    *,
    resume: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    recipe: str | None = None,
    device: str | None = None,
    max_epochs: int | None = None,
    evaluate_at_end: bool = True,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` from scratch, or continue the run at ``resume``.

    A resumed run keeps its own config; ``overrides`` (``section.key=value``), ``recipe`` (an
    explicit ``--config``) and ``device`` are the user's explicit choices, checked by
    :func:`mvd_core.train.resume.plan_resume`. For a fresh run ``overrides`` apply on ``cfg``.
    ``max_epochs`` stops after that epoch as an interruption would (the schedule stays the full
    ``schedule.epochs`` one); resume continues from there.
    """
    from mvd_core.data.loader import TrainLoader
    from mvd_core.train.distributed import NullLock, current

    dist = current()  # multi-process (mvd_core.train.distributed): rank 0 alone writes the run folder
    main = dist.is_main
    ckpt: Checkpoint | None = None
    if resume is not None:
        if cfg is not None:
            raise MvdError("train: pass either a config (new run) or resume= (a run's own config)")
        plan = plan_resume(resume, overrides, recipe=recipe, device=device)
        cfg, ckpt, run_dir = plan.cfg, plan.checkpoint, plan.run_dir
        if main:
            check_run_dir(run_dir, resume=True)  # in use by another process: fail at once
        state = LoopState(plan.epochs_done, plan.global_step, _best_val_map(run_dir, ckpt))
        log.info("resuming %s after epoch %d (global step %d)", run_dir, state.epoch, state.global_step)
    else:
        if cfg is None:
            raise MvdError("train: a config is needed for a new run")
        cfg = apply_overrides(cfg, list(overrides))
        run_dir = _new_run_dir(cfg) if main else run_dir_for(cfg)
        state = LoopState(0, 0)
    epochs = cfg.schedule.epochs
    stop = min(epochs, max_epochs) if max_epochs is not None else epochs
    ck_dir = run_dir / "checkpoints"
    if ckpt is not None and state.epoch >= stop and (run_dir / "report.json").exists():
        log.info("%s: the run is complete (%d of %d epochs); nothing to do", run_dir, state.epoch, epochs)
        best = ck_dir / "best.safetensors"
        return TrainResult(run_dir, ck_dir / "last.safetensors", state.epoch,
                           best_checkpoint=best if best.exists() else None, already_complete=True)

    train_set, val_set = load_data(cfg)  # config and data checked before the folder is made
    backend = build_backend(cfg, train_set.num_classes, ckpt)
    loader = TrainLoader(train_set, cfg.data, cfg.run.seed, cfg.schedule.steps_per_epoch,
                         rank=dist.rank, world=dist.world_size)
    # one process per run folder for the whole train/resume; a fresh folder must be empty
    try:
        lock = (RunLock(run_dir, create=True, resume=ckpt is not None) if main else NullLock()).acquire()
    except BaseException:
        loader.close()
        raise
    runlog = None
    try:
        if main:
            save_config(cfg, run_dir / "config.yaml")
        log.info(
            "run %s: %s backend on %s, %d classes, %d visible + %d thermal images, %d steps/epoch",
            run_dir, backend.name, cfg.run.device, train_set.num_classes,
            len(train_set.visible), len(train_set.thermal), loader.steps_per_epoch,
        )
        runlog = RunLog(run_dir / "log.jsonl" if main else Path(os.devnull),
                        resume_step=state.global_step if ckpt is not None and main else None)
        loop = Loop(backend, cfg, loader, runlog, ck_dir, val_set, on_step, is_main=main)
        loop.run(state, stop)
        if main and not loop.last_path.exists():  # a resumed run with nothing left to train
            from mvd_core.weights.checkpoint import save_checkpoint

            save_checkpoint(loop.last_path, make_checkpoint(backend, cfg, state))
        report = None
        if evaluate_at_end and state.epoch == epochs and main:
            report = final_evaluation(backend, cfg, run_dir, runlog, state)
    except BaseException:
        if runlog is not None:
            runlog.close()
            runlog = None
        lock.discard_if_unsaved()  # a fresh run that failed before its first checkpoint
        raise
    finally:
        loader.close()
        if runlog is not None:
            runlog.close()
        lock.release()
    return TrainResult(
        run_dir=run_dir,
        last_checkpoint=loop.last_path,
        epochs_done=state.epoch,
        steps=state.history,
        report=report,
        best_checkpoint=loop.best_path if loop.best_path.exists() else None,
    )


def final_evaluation(backend: Backend, cfg: Config, run_dir: Path, runlog: RunLog, state: LoopState) -> Report:
    """The full test protocol of the run's data set (``report.{json,txt}`` in the run folder)."""
    from mvd_core.data.sets import direction_of, load_test
    from mvd_core.eval.features import evaluate_backend

    test_set = load_test(cfg.data, direction_of(cfg))
    report = evaluate_backend(backend, test_set, cfg)
    write_report(report, run_dir, "report")
    values = summary(report)
    runlog.write({"epoch": state.epoch, "global_step": state.global_step, "eval": "test", **values})
    log.info("final test evaluation (%s, %d trials): %s", report.name, len(report.rows), fmt(values))
    return report


def write_report(report: Report, folder: Path, stem: str) -> Path:
    """``<folder>/<stem>.json`` and ``.txt`` (atomically), and the per-query data in
    ``<stem>.npz`` (:mod:`mvd_core.eval.evaldata`); returns the JSON path."""
    from mvd_core.eval.evaldata import write_eval_npz

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    report.write_json(path)
    atomic_write_text(folder / f"{stem}.txt", report.to_table() + "\n")
    write_eval_npz(report, folder / f"{stem}.npz")
    return path


# --------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_checkpoint` produced: one report per protocol, in order."""

    reports: dict[str, Report]
    checkpoint: Path
    cfg: Config
    #: where the reports belong: the checkpoint's run folder, or the folder of a loose file
    folder: Path

    def write(self, folder: Path | None = None) -> list[Path]:
        out = folder if folder is not None else self.folder
        return [write_report(r, out, f"eval-{key}") for key, r in self.reports.items()]


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    backend: str | None = None,
    device: str | None = None,
    ms_mode: str | None = None,
    config: Config | None = None,
    sysu_modes: Iterable[str] | None = None,
    shots: Iterable[str] = ("single",),
    regdb_modes: Iterable[str] = ("v2t", "t2v"),
    flip: bool = False,
    rerank: bool = False,
) -> Evaluation:
    """Load a checkpoint (run folder or file) and run every requested protocol of its data set.

    The run's own resolved config is used (``config`` only for a bare parameter file, which
    carries none), then ``overrides`` (data location, eval settings, ...), then the
    backend/device/mode given here (a checkpoint is framework-free: a torch-trained run
    evaluates on MindSpore and vice versa). SYSU-MM01: ``sysu_modes`` (default all and indoor)
    × ``shots``; RegDB: the run's trial (or ``data.trial`` overridden), ``regdb_modes``.
    ``flip``: test features = the mean raw feature of each image and its mirror, then the
    normalisation (:mod:`mvd_core.eval.testtime`); ``rerank``: k-reciprocal re-ranking.
    """
    from mvd_core.data.sets import direction_of, load_test
    from mvd_core.devices import normalize_device
    from mvd_core.eval.features import evaluate_backend_all

    ck_path = resolve_checkpoint(checkpoint)
    ckpt = read_model_file(ck_path)
    cfg = checkpoint_config(ckpt, ck_path)
    if cfg is None:
        if config is None:
            raise MvdError(f"{ck_path}: the checkpoint carries no config; pass --config RECIPE (the recipe it was trained with)")
        cfg = config
    elif config is not None and config.recipe != cfg.recipe:
        log.warning("%s carries its own config (recipe %s); --config %s is not used", ck_path, cfg.recipe, config.recipe)
    cfg = apply_overrides(cfg, list(overrides))
    run = cfg.run
    if backend is not None and backend != run.backend:
        # speed settings of the training backend do not carry over to another framework
        given = " ".join(overrides)
        keep = {k: getattr(run, k) for k in ("amp", "channels_last") if f"run.{k}=" in given}
        run = dataclasses.replace(run, backend=backend, amp=keep.get("amp", "none"),
                                  channels_last=keep.get("channels_last", False))
    if ms_mode is not None:
        run = dataclasses.replace(run, ms_mode=ms_mode)
    dev = normalize_device(run.backend, device if device is not None else run.device)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(run, device=dev))
    if flip:
        from mvd_core.eval.testtime import TestTimeFeatures, raw_feature_config

        raw = create_backend(raw_feature_config(cfg), _num_classes(ckpt.params, ck_path))
        raw.load_state(ckpt.params, strict=True)
        model: Any = TestTimeFeatures(raw, cfg.model.feat_norm, flip=True)
    else:
        model = create_backend(cfg, _num_classes(ckpt.params, ck_path))
        model.load_state(ckpt.params, strict=True)
    test_set = load_test(cfg.data, direction_of(cfg))
    modes = tuple(sysu_modes) if sysu_modes is not None else ("all", "indoor")
    reports = evaluate_backend_all(model, test_set, cfg, sysu_modes=modes, shots=tuple(shots),
                                   regdb_modes=tuple(regdb_modes), rerank=rerank)
    if flip or rerank:  # its own report files and names, next to the plain ones
        tags = [t for t, on in (("flip", flip), ("rerank", rerank)) if on]
        reports = {f"{k}-{'-'.join(tags)}": dataclasses.replace(r, name=f"{r.name} ({', '.join(tags)})")
                   for k, r in reports.items()}
    for key, rep in reports.items():
        log.info("%s: %s", key, fmt(summary(rep)))
    run_dir = run_dir_of(ck_path)
    return Evaluation(reports, ck_path, cfg, run_dir if run_dir is not None else ck_path.parent)


def read_model_file(path: Path) -> Checkpoint:
    """A checkpoint of record (``.safetensors``), or bare MVD parameters in another format
    ``mvd convert`` writes (``.npz``, torch ``.pth``/``.pt``, MindSpore ``.ckpt``)."""
    if path.suffix == ".safetensors":
        return load_checkpoint(path)
    from mvd_core.weights.convert import read_params

    return Checkpoint(params=read_params(path, "mvd"), meta={"source": str(path)})


def _num_classes(params: dict[str, np.ndarray], source: Path) -> int:
    try:
        return int(params["v.classifier.weight"].shape[0])
    except KeyError:
        raise MvdError(f"{source}: no tensor v.classifier.weight: not an MVD model checkpoint") from None
