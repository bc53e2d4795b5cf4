"""The training / evaluation driver, written once for every backend.

    data (mvd_core.data) → sampler/loader → Backend.train_step(batch, lr) → logs, checkpoints
    → Backend.extract_features → mvd_core.protocols → report

Run folder ``<run.out>/<run.tag>/``: ``config.yaml`` (fully resolved), ``log.jsonl`` (one line
per step, plus evaluation lines), ``checkpoints/last.safetensors`` (after every
``run.ckpt_every`` epochs and at the end), ``checkpoints/best.safetensors`` (only with
``run.val_ids`` > 0: best validation mAP — never selected on the test set), ``report.json`` and
``report.txt`` (the final test-protocol evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core import __version__
from mvd_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mvd_core.config import Config, atomic_write_text, from_dict, save_config, to_dict
from mvd_core.errors import MvdError
from mvd_core.interface import Backend
from mvd_core.registry import create_backend
from mvd_core.schedule import lr_at

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path
    epochs_done: int
    steps: list[dict[str, float]] = field(default_factory=list)  # per-step log records
    report: Any = None  # mvd_core.protocols report of the final evaluation (or None)
    best_checkpoint: Path | None = None


# --------------------------------------------------------------------------- run folders

def run_dir_for(cfg: Config) -> Path:
    tag = cfg.run.tag or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.run.out) / tag


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A run folder (→ its checkpoints/last.safetensors) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.safetensors"
    if not p.is_file():
        raise MvdError(f"{path}: no checkpoint there (expected a run folder or a .safetensors file)")
    return p


def config_from_checkpoint(ckpt: Checkpoint, caller: Config | None = None) -> Config:
    """The run's own resolved config; the caller's backend/device/mode/out win (a run trained on
    one backend may continue or be evaluated on the other)."""
    if "config" not in ckpt.meta:
        if caller is None:
            raise MvdError(f"{ckpt.meta.get('source')}: checkpoint has no config; pass --config")
        return caller
    cfg = from_dict(ckpt.meta["config"], f"{ckpt.meta.get('source')} (config)")
    if caller is not None:
        run = dataclasses.replace(
            cfg.run,
            backend=caller.run.backend,
            device=caller.run.device,
            ms_mode=caller.run.ms_mode,
            amp=caller.run.amp,
        )
        cfg = dataclasses.replace(cfg, run=run)
    return cfg


# --------------------------------------------------------------------------- logging

class _Progress:
    """Console progress: a live line on a terminal, a log line every `every` steps otherwise."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, every: int) -> None:
        self.total_epochs = total_epochs
        self.steps = steps_per_epoch
        self.every = max(1, every)
        self.tty = sys.stderr.isatty()

    def update(self, epoch: int, step: int, lr: float, losses: dict[str, float], ips: float) -> None:
        terms = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        width = 20
        done = int(width * step / max(1, self.steps))
        line = (
            f"epoch {epoch}/{self.total_epochs} [{'#' * done}{'.' * (width - done)}] "
            f"{step}/{self.steps} lr {lr:.2e} {terms} {ips:.0f} img/s"
        )
        if self.tty:
            sys.stderr.write("\r" + line[:200])
            sys.stderr.flush()
            if step == self.steps:
                sys.stderr.write("\n")
        elif step % self.every == 0 or step == self.steps:
            log.info(line)


class _JsonLog:
    def __init__(self, path: Path, truncate_after: int | None) -> None:
        self.path = path
        if truncate_after is not None and path.exists():
            # resuming: drop step records past the checkpoint (they will be re-done)
            keep = []
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("global_step", 0) <= truncate_after:
                    keep.append(line)
            atomic_write_text(path, "".join(k + "\n" for k in keep))
        self.f = open(path, "a")

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


# --------------------------------------------------------------------------- evaluation

def extract(backend: Backend, imageset: Any, modality: str, cfg: Config) -> np.ndarray:
    """Test features of every image of an ImageSet, streamed in chunks (never all in memory)."""
    from mvd_core.data.datasets import load_images
    from mvd_core.data.transforms import test_images

    n = len(imageset)
    chunk = max(1, cfg.eval.batch_size)
    feats: list[np.ndarray] = []
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        raw = load_images(imageset, idx, cfg.data.height, cfg.data.width)
        feats.append(backend.extract_features(test_images(raw, cfg.data.height, cfg.data.width), modality))
    if not feats:
        raise MvdError(f"{imageset!r}: no images to extract features from")
    return np.concatenate(feats, axis=0)


def evaluate_backend(backend: Backend, testset: Any, cfg: Config, trials: int | None = None) -> Any:
    """Run the test set's protocol (SYSU-MM01: trials 0..N-1 over one feature extraction;
    RegDB / validation: the given split) and return the report."""
    from mvd_core import protocols

    q, g = testset.query, testset.gallery
    qmod = "thermal" if testset.protocol == "sysu" else getattr(testset, "query_modality", "visible")
    gmod = "visible" if testset.protocol == "sysu" else getattr(testset, "gallery_modality", "thermal")
    t0 = time.perf_counter()
    qf = extract(backend, q, qmod, cfg)
    gf = extract(backend, g, gmod, cfg)
    log.info("features: %d query, %d gallery in %.1f s", len(qf), len(gf), time.perf_counter() - t0)
    if testset.protocol == "sysu":
        n = cfg.eval.trials if trials is None else trials
        return protocols.run_sysu(
            qf, q.pids, q.cams, gf, g.pids, g.cams,
            mode=cfg.eval.sysu_mode, shot=cfg.eval.shot, trials=range(n), metric=cfg.eval.metric,
        )
    return protocols.run_regdb(qf, q.pids, q.cams, gf, g.pids, g.cams, trial=cfg.data.trial,
                               metric=cfg.eval.metric, name=testset.name)


def _report_summary(report: Any) -> dict[str, float]:
    return {k: float(v) for k, v in report.mean().items()}


# --------------------------------------------------------------------------- training

def _checkpoint(backend: Backend, cfg: Config, epoch: int, global_step: int, extra: dict) -> Checkpoint:
    meta = {
        "epoch": epoch,
        "global_step": global_step,
        "config": to_dict(cfg),
        "backend": backend.name,
        "mvd_version": __version__,
        **extra,
    }
    return Checkpoint(
        params=backend.state(),
        optimizer=backend.optimizer_state(),
        rng=backend.rng_state(),
        meta=meta,
    )


def train(
    cfg: Config,
    *,
    resume: str | os.PathLike[str] | None = None,
    max_epochs: int | None = None,
    evaluate_at_end: bool = True,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` (or continue the run at ``resume`` exactly) and evaluate at the end.

    ``max_epochs`` stops after that many epochs in total (as an interruption would: the
    schedule is still the full ``schedule.epochs`` one).
    """
    from mvd_core.data.datasets import carve_validation, load_test, load_train
    from mvd_core.data.loader import TrainLoader

    start_epoch, global_step, ckpt = 1, 0, None
    best_map = -1.0
    if resume is not None:
        ck_path = resolve_checkpoint(resume)
        ckpt = load_checkpoint(ck_path)
        cfg = config_from_checkpoint(ckpt, cfg)
        run_dir = ck_path.parent.parent
        start_epoch = ckpt.epoch + 1
        global_step = int(ckpt.meta.get("global_step", 0))
        best_map = float(ckpt.meta.get("best_val_map", -1.0))
        log.info("resuming %s at epoch %d (global step %d)", ck_path, start_epoch, global_step)
    else:
        run_dir = run_dir_for(cfg)
        if (run_dir / "checkpoints" / "last.safetensors").exists():
            raise MvdError(f"{run_dir}: a run with this tag exists; use --resume {run_dir} or another --ckpt tag")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    train_set = load_train(cfg.data)
    val_set = None
    if cfg.run.val_ids > 0:
        train_set, val_set = carve_validation(train_set, cfg.run.val_ids, cfg.run.seed)
    backend = create_backend(cfg, train_set.num_classes)
    if ckpt is not None:
        backend.load_state(ckpt.params, strict=True)
        backend.load_optimizer_state(ckpt.optimizer)
        backend.load_rng_state(ckpt.rng)
    loader = TrainLoader(train_set, cfg.data, cfg.run.seed, cfg.schedule.steps_per_epoch)
    spe = loader.steps_per_epoch
    epochs = cfg.schedule.epochs
    last_epoch = min(epochs, max_epochs) if max_epochs is not None else epochs
    log.info(
        "run %s: %s backend on %s, %d classes, %d visible + %d thermal images, %d steps/epoch",
        run_dir, backend.name, cfg.run.device, train_set.num_classes,
        len(train_set.visible), len(train_set.thermal), spe,
    )
    jlog = _JsonLog(run_dir / "log.jsonl", truncate_after=global_step if ckpt is not None else None)
    if ckpt is None:
        jlog.f.truncate(0)
    progress = _Progress(epochs, spe, cfg.run.log_every)
    ck_dir = run_dir / "checkpoints"
    last_path = ck_dir / "last.safetensors"
    best_path = ck_dir / "best.safetensors"
    history: list[dict[str, float]] = []
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            lr = lr_at(epoch, cfg.schedule, cfg.optim)
            t_prev = time.perf_counter()
            batches: Iterator = loader.epoch(epoch)
            try:
                for step, batch in enumerate(batches, start=1):
                    losses = backend.train_step(batch, lr)
                    global_step += 1
                    now = time.perf_counter()
                    ips = len(batch) / max(now - t_prev, 1e-9)
                    t_prev = now
                    rec = {"epoch": epoch, "step": step, "global_step": global_step, "lr": lr, **losses}
                    for k, v in losses.items():
                        if not np.isfinite(v):
                            raise MvdError(f"loss {k} is {v} at epoch {epoch} step {step}: training diverged")
                    jlog.write(rec)
                    history.append(rec)
                    if on_step is not None:
                        on_step(rec)
                    progress.update(epoch, step, lr, losses, ips)
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()
            extra: dict[str, Any] = {"best_val_map": best_map}
            if val_set is not None and (
                (cfg.eval.every and epoch % cfg.eval.every == 0) or epoch == last_epoch
            ):
                rep = evaluate_backend(backend, val_set, cfg)
                summ = _report_summary(rep)
                jlog.write({"epoch": epoch, "global_step": global_step, "eval": "val", **summ})
                log.info("epoch %d validation: %s", epoch, _fmt(summ))
                if summ["mAP"] > best_map:
                    best_map = summ["mAP"]
                    extra["best_val_map"] = best_map
                    save_checkpoint(best_path, _checkpoint(backend, cfg, epoch, global_step, extra))
            elif val_set is None and cfg.eval.every and epoch % cfg.eval.every == 0 and epoch != last_epoch:
                test_set = load_test(cfg.data, cfg.eval.regdb_mode)
                rep = evaluate_backend(backend, test_set, cfg, trials=1)
                summ = _report_summary(rep)
                # monitoring only: nothing is selected on the test set
                jlog.write({"epoch": epoch, "global_step": global_step, "eval": "test-monitor", **summ})
                log.info("epoch %d test (monitoring only): %s", epoch, _fmt(summ))
            if epoch % max(1, cfg.run.ckpt_every) == 0 or epoch == last_epoch:
                save_checkpoint(last_path, _checkpoint(backend, cfg, epoch, global_step, extra))
    finally:
        loader.close()
        jlog.close()
    if not last_path.exists():  # resumed a run that was already complete
        save_checkpoint(last_path, _checkpoint(backend, cfg, epoch, global_step, {"best_val_map": best_map}))
    report = None
    if evaluate_at_end and last_epoch == epochs:
        test_set = load_test(cfg.data, cfg.eval.regdb_mode)
        report = evaluate_backend(backend, test_set, cfg)
        write_report(report, run_dir)
        log.info("final test evaluation (%s):\n%s", test_set.name, report.to_table())
    return TrainResult(
        run_dir=run_dir,
        last_checkpoint=last_path,
        epochs_done=epoch,
        steps=history,
        report=report,
        best_checkpoint=best_path if best_path.exists() else None,
    )


def _fmt(summary: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in summary.items())


def write_report(report: Any, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    report.write_json(folder / "report.json")
    atomic_write_text(folder / "report.txt", report.to_table() + "\n")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    backend: str | None = None,
    device: str | None = None,
    ms_mode: str | None = None,
    fallback: Config | None = None,
) -> Any:
    """Load a checkpoint (run folder or file) and run the full test protocol of its data set.

    The run's own resolved config is used, then ``overrides`` (``section.key=value``: data
    location, eval settings, ...), then the backend/device/mode given here (a checkpoint is
    framework-free: a torch-trained run evaluates on MindSpore and vice versa). ``fallback`` is
    the config for a bare parameter file that carries none.
    """
    from mvd_core.config import apply_overrides
    from mvd_core.data.datasets import load_test
    from mvd_core.devices import normalize_device

    ck_path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(ck_path)
    cfg = config_from_checkpoint(ckpt, None) if "config" in ckpt.meta else fallback
    if cfg is None:
        raise MvdError(f"{ck_path}: checkpoint carries no config; pass --config")
    cfg = apply_overrides(cfg, list(overrides))
    run = cfg.run
    if backend is not None:
        run = dataclasses.replace(run, backend=backend)
    if ms_mode is not None:
        run = dataclasses.replace(run, ms_mode=ms_mode)
    dev = normalize_device(run.backend, device if device is not None else run.device)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(run, device=dev))
    model = create_backend(cfg, _num_classes(ckpt.params))
    model.load_state(ckpt.params, strict=True)
    test_set = load_test(cfg.data, cfg.eval.regdb_mode)
    return evaluate_backend(model, test_set, cfg)


def _num_classes(params: dict[str, np.ndarray]) -> int:
    try:
        return int(params["v.classifier.weight"].shape[0])
    except KeyError:
        raise MvdError("checkpoint has no v.classifier.weight: not an MVD model") from None
