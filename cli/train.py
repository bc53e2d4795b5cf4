"""`mvd train`: train MVD with either backend through the shared driver."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import (
    BackendOpt,
    ConfigOpt,
    DeviceOpt,
    MsModeOpt,
    SetOpt,
    build_config,
    cli_errors,
    explicit_overrides,
)


class Dataset(str, enum.Enum):
    SYSU = "SYSU"
    RegDB = "RegDB"


class Optim(str, enum.Enum):
    adam = "adam"
    sgd = "sgd"


class LossFunc(str, enum.Enum):
    id = "id"
    id_tri = "id+tri"
    id_tri_kldiv = "id+tri+kldiv"
    mvd_pt = "mvd-pt"


class SysuMode(str, enum.Enum):
    all = "all"
    indoor = "indoor"


class RegdbMode(str, enum.Enum):
    v2t = "v2t"
    t2v = "t2v"


class Amp(str, enum.Enum):
    none = "none"
    bf16 = "bf16"
    fp16 = "fp16"


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def seed_flag_overrides(
    dataset: Optional[Dataset] = None,
    data_path: Optional[Path] = None,
    optim: Optional[Optim] = None,
    lr: Optional[float] = None,
    pretrain: Optional[Path] = None,
    ckpt: Optional[str] = None,
    epochs: Optional[int] = None,
    warmup_steps: Optional[int] = None,
    start_decay: Optional[int] = None,
    end_decay: Optional[int] = None,
    loss_func: Optional[LossFunc] = None,
    trial: Optional[int] = None,
    sysu_mode: Optional[SysuMode] = None,
    regdb_mode: Optional[RegdbMode] = None,
    seed: Optional[int] = None,
    val_ids: Optional[int] = None,
    amp: Optional[Amp] = None,
    out: Optional[Path] = None,
) -> list[str]:
    """The seed README's flags as `section.key=value` overrides (applied before --set)."""
    o: list[str] = []
    if dataset is not None:
        o.append(f"data.dataset={dataset.value.lower()}")
    if data_path is not None:
        o.append(f"data.root={data_path}")
    if optim is not None:
        o.append(f"optim.name={optim.value}")
    if lr is not None:
        o.append(f"optim.lr={lr!r}")
    if pretrain is not None:
        o.append(f"model.pretrain={pretrain}")
    if ckpt is not None:
        o.append(f"run.tag={ckpt}")
    if epochs is not None:
        o.append(f"schedule.epochs={epochs}")
    if warmup_steps is not None:
        o.append(f"schedule.warmup={warmup_steps}")
    if start_decay is not None:
        o.append(f"schedule.start_decay={start_decay}")
    if end_decay is not None:
        o.append(f"schedule.end_decay={end_decay}")
    if loss_func is not None:
        o.append(f"loss.preset={loss_func.value}")
    if trial is not None:
        o.append(f"data.trial={trial}")
    if sysu_mode is not None:
        o.append(f"eval.sysu_mode={sysu_mode.value}")
    if regdb_mode is not None:
        o.append(f"eval.regdb_mode={regdb_mode.value}")
    if seed is not None:
        o.append(f"run.seed={seed}")
    if val_ids is not None:
        o.append(f"run.val_ids={val_ids}")
    if amp is not None:
        o.append(f"run.amp={amp.value}")
    if out is not None:
        o.append(f"run.out={out}")
    return o


def _launch_workers(config, sets, backend, device, ms_mode, extra, resume) -> bool:  # noqa: ANN001
    """``run.nproc`` > 1 in a single process: re-run this command line in that many workers
    under the framework's launcher (mvd_core.train.distributed.launch) and report; True if it did."""
    import sys
    import time

    from mvd_core.train.distributed import current, launch

    if current().enabled:
        return False  # a worker: train
    if resume is not None:
        from mvd_core.train.resume import plan_resume

        plan = plan_resume(resume, explicit_overrides(sets, backend, ms_mode, extra), recipe=config, device=device)
        cfg, run_dir = plan.cfg, plan.run_dir
    else:
        cfg = build_config(config, sets, backend, device, ms_mode, extra)
        run_dir = None
    if cfg.run.nproc <= 1:
        return False
    argv = sys.argv[1:]
    if argv[:1] != ["train"]:
        raise typer.BadParameter("--nproc: run it from the mvd command line (mvd train --nproc N ...)")
    argv = list(argv)
    if run_dir is None:
        tag = cfg.run.tag or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not cfg.run.tag:  # every worker must name the same run folder
            argv += ["--ckpt", tag]
        run_dir = Path(cfg.run.out) / tag
    logs = run_dir.parent / f"{run_dir.name}-workers"  # msrun's per-worker log files
    launch(cfg.run.backend, cfg.run.nproc, argv, logs)
    typer.echo(f"run folder: {run_dir}")
    typer.echo(f"last checkpoint: {run_dir / 'checkpoints' / 'last.safetensors'}")
    report = run_dir / "report.txt"
    if report.exists():
        typer.echo(report.read_text().rstrip())
    return True


@cli_errors
def train(
    config: ConfigOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    sets: SetOpt = None,
    ms_mode: MsModeOpt = None,
    dataset: Annotated[Optional[Dataset], typer.Option("--dataset", help="SYSU | RegDB")] = None,
    data_path: Annotated[Optional[Path], typer.Option("--data-path", help="Data set root (raw layout).")] = None,
    optim: Annotated[Optional[Optim], typer.Option("--optim")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate.")] = None,
    pretrain: Annotated[Optional[Path], typer.Option("--pretrain", help="ResNet-50 weights: torchvision .pth, .safetensors/.npz, or MindSpore .ckpt.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", "-r", help="Continue a run (its folder or checkpoint): it keeps its own config, backend and device unless given explicitly.")] = None,
    ckpt: Annotated[Optional[str], typer.Option("--ckpt", help="Run tag: outputs go to <out>/<TAG>/.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "--epoch", help="Epochs in total (with --resume: extend the run to N).")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="Warm-up epochs.")] = None,
    start_decay: Annotated[Optional[int], typer.Option("--start-decay")] = None,
    end_decay: Annotated[Optional[int], typer.Option("--end-decay")] = None,
    loss_func: Annotated[Optional[LossFunc], typer.Option("--loss-func")] = None,
    trial: Annotated[Optional[int], typer.Option("--trial", help="RegDB split 1..10.")] = None,
    sysu_mode: Annotated[Optional[SysuMode], typer.Option("--sysu-mode", "--sysu_mode")] = None,
    regdb_mode: Annotated[Optional[RegdbMode], typer.Option("--regdb-mode", "--regdb_mode")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    val_ids: Annotated[Optional[int], typer.Option("--val-ids", help="Hold out N training ids for validation and a 'best' checkpoint.")] = None,
    amp: Annotated[Optional[Amp], typer.Option("--amp", help="Mixed precision (see README for what each backend and device supports).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder holding run folders (default runs).")] = None,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", help="Stop after this epoch as an interruption would (the schedule stays the full one); continue later with --resume.")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="Train in N local worker processes on the framework's own engine (torchrun / msrun); see README.")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="torch: NHWC memory format (fast CPU bf16 kernels with --amp bf16).")] = False,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write the run's report.html at the end (mvd report; ~3 s of matplotlib).")] = True,
) -> None:
    """Train MVD (any recipe, either backend); evaluate on the test protocol at the end."""
    from mvd_core.train.distributed import serve_if_scheduler
    from mvd_core.train.driver import train as run_train

    serve_if_scheduler("mindspore")  # msrun's scheduler process joins the cluster and exits
    extra = seed_flag_overrides(
        dataset, data_path, optim, lr, pretrain, ckpt, epochs, warmup_steps, start_decay,
        end_decay, loss_func, trial, sysu_mode, regdb_mode, seed, val_ids, amp, out,
    )
    if channels_last:
        extra.append("run.channels_last=true")
    if nproc is not None:
        extra.append(f"run.nproc={nproc}")
    if _launch_workers(config, sets, backend, device, ms_mode, extra, resume):
        return
    from mvd_core.train.distributed import current

    worker = current()
    if not worker.is_main:  # ranks > 0 train silently; rank 0 logs and reports
        import logging

        logging.getLogger().setLevel(logging.WARNING)
    if resume is not None:
        result = run_train(
            resume=resume, overrides=explicit_overrides(sets, backend, ms_mode, extra),
            recipe=config, device=device, max_epochs=stop_after,
        )
    else:
        cfg = build_config(config, sets, backend, device, ms_mode, extra)
        result = run_train(cfg, max_epochs=stop_after)
    if not worker.is_main:
        return
    if result.already_complete:
        typer.echo(
            f"run {result.run_dir} is complete ({result.epochs_done} epochs): nothing to do "
            "(pass --epochs N to extend it)"
        )
        return
    typer.echo(f"run folder: {result.run_dir}")
    typer.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        typer.echo(f"best checkpoint (validation): {result.best_checkpoint}")
    if result.report is not None:
        from mvd_cli.report import echo_html_report

        typer.echo(result.report.to_table())
        if html:
            echo_html_report(result.run_dir)
    else:
        typer.echo(f"stopped after epoch {result.epochs_done}; continue with: mvd train --resume {result.run_dir}")
