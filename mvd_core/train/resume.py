"""What a resumed run is: its own checkpoint and config, changed only where the user says so.

Rules (README, "Resuming a run"):

* the run keeps its own backend, device, mode and whole config; a setting the user passes
  explicitly (a flag or ``--set``) wins and is logged;
* ``schedule.epochs`` may grow (the run is extended: epochs after the checkpoint follow the new
  schedule) but not drop below the epochs already done;
* settings that would change the model or the data it learns from (``model.*``, ``loss.*``,
  the data set, split, image size, sampler and augmentation, seed, validation ids, the recipe)
  are refused, as are the run's location (``run.tag``/``run.out``: the run folder is the one
  resumed);
* everything else — where the data lies and how it is read, evaluation, optimiser and schedule
  settings, device and threads, logging and checkpoint cadence — may change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvd_core.config import Config, apply_overrides, from_dict, to_dict
from mvd_core.errors import ConfigError, MvdError
from mvd_core.weights.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

#: config keys (or ``section.`` prefixes) a resumed run may change
MUTABLE_ON_RESUME: tuple[str, ...] = (
    "data.root", "data.cache", "data.workers", "data.prefetch",
    "eval.", "optim.", "schedule.",
    "run.backend", "run.device", "run.ms_mode", "run.amp", "run.channels_last", "run.nproc",
    "run.threads", "run.log_every", "run.ckpt_every",
)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A run folder (→ its ``checkpoints/last.safetensors``) or a model file."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.safetensors"
    if not p.is_file():
        raise MvdError(f"{path}: no checkpoint there (expected a run folder or a model file: "
                       ".safetensors, .npz, .pth, .ckpt)")
    return p


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>`` next to the run's
    ``config.yaml``), or None for a loose checkpoint file."""
    parent = checkpoint.parent
    if parent.name == "checkpoints" and (parent.parent / "config.yaml").is_file():
        return parent.parent
    return None


def checkpoint_config(ckpt: Checkpoint, source: Path) -> Config | None:
    """The resolved config a checkpoint carries (None for a bare parameter file)."""
    if "config" not in ckpt.meta:
        return None
    return from_dict(ckpt.meta["config"], f"{source} (config)")


def _flat(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {"recipe": cfg.recipe}
    for sec, values in to_dict(cfg).items():
        if isinstance(values, dict):
            out.update({f"{sec}.{k}": v for k, v in values.items()})
    return out


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``key -> (old, new)`` for every setting that differs."""
    a, b = _flat(old), _flat(new)
    return {k: (a.get(k), b[k]) for k in b if a.get(k) != b[k]}


def _mutable(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MUTABLE_ON_RESUME)


@dataclass(frozen=True)
class ResumePlan:
    checkpoint_path: Path
    checkpoint: Checkpoint
    run_dir: Path
    cfg: Config
    start_epoch: int  # the first epoch this invocation trains
    global_step: int
    changed: dict[str, tuple[Any, Any]]

    @property
    def epochs_done(self) -> int:
        return self.start_epoch - 1


def plan_resume(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    recipe: str | None = None,
    device: str | None = None,
) -> ResumePlan:
    """Load the run at ``path`` and apply the user's explicit ``overrides`` under the rules above.

    ``recipe``: a ``--config`` the user gave explicitly (must name the run's own recipe);
    ``device``: an explicit ``--device`` (normalised for the resulting backend).
    """
    from mvd_core.devices import normalize_device

    ck_path = resolve_checkpoint(path)
    run_dir = run_dir_of(ck_path)
    if run_dir is None:
        raise MvdError(f"{ck_path}: not inside a run folder (<run>/checkpoints/); pass the run folder to --resume")
    ckpt = load_checkpoint(ck_path)
    own = checkpoint_config(ckpt, ck_path)
    if own is None:
        raise MvdError(f"{ck_path}: the checkpoint carries no config, so the run cannot be resumed")
    if recipe is not None and Path(recipe).stem != own.recipe:
        raise ConfigError(
            f"--config {recipe}: the run at {run_dir} was trained with recipe {own.recipe!r}; "
            "a resumed run keeps its recipe (start a new run to change it)"
        )
    cfg = apply_overrides(own, list(overrides))
    if device is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=device))
    dev = normalize_device(cfg.run.backend, cfg.run.device)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=dev))
    changed = changed_keys(own, cfg)
    if own.run.backend != cfg.run.backend and "run.device" in changed:
        old, new = changed["run.device"]
        if normalize_device(cfg.run.backend, str(old)) == new:  # the same device, renamed
            del changed["run.device"]
    for key, (old, new) in changed.items():
        if not _mutable(key):
            raise ConfigError(
                f"{key}: a resumed run cannot change it ({old!r} -> {new!r}): it would change the "
                "model, its data or the run's folder; start a new run instead"
            )
    done = ckpt.epoch
    if cfg.schedule.epochs < done:
        raise ConfigError(
            f"schedule.epochs={cfg.schedule.epochs}: the run at {run_dir} has already trained "
            f"{done} epochs (expected --epochs >= {done})"
        )
    for key, (old, new) in changed.items():
        log.info("resume: %s %r -> %r (given explicitly)", key, old, new)
    if "schedule.epochs" in changed and cfg.schedule.epochs > own.schedule.epochs:
        log.info(
            "resume: extending the run from %d to %d epochs; epochs %d.. follow the new schedule",
            own.schedule.epochs, cfg.schedule.epochs, done + 1,
        )
    return ResumePlan(
        checkpoint_path=ck_path,
        checkpoint=ckpt,
        run_dir=run_dir,
        cfg=cfg,
        start_epoch=done + 1,
        global_step=int(ckpt.meta.get("global_step", 0)),
        changed=changed,
    )
