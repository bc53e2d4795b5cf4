"""`mvd train`: train MVD with either backend through the shared driver."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import (
    BackendOpt,
    ConfigOpt,
    DeviceOpt,
    MsModeOpt,
    SetOpt,
    amp_support,
    build_config,
    choice_enum,
    choice_option,
    cli_errors,
    explicit_overrides,
    flag_settings,
)
from mvd_core.registry import describe_suffixes

# choice options generated from the config's fields (mvd_core.config.Choice)
Dataset = choice_enum("data.dataset")
Optim = choice_enum("optim.name")
LossFunc = choice_enum("loss.preset")
SysuMode = choice_enum("eval.sysu_mode")
RegdbMode = choice_enum("eval.regdb_mode")
Amp = choice_enum("run.amp")
DatasetOpt = choice_option("data.dataset", "--dataset", more="Any case (the seed's SYSU, RegDB).", case_sensitive=False)
OptimOpt = choice_option("optim.name", "--optim")
LossFuncOpt = choice_option("loss.preset", "--loss-func")
SysuModeOpt = choice_option("eval.sysu_mode", "--sysu-mode", "--sysu_mode")
RegdbModeOpt = choice_option("eval.regdb_mode", "--regdb-mode", "--regdb_mode")
AmpOpt = choice_option("run.amp", "--amp", more=f"Per backend and device: {amp_support()}.")

PRETRAIN_HELP = f"ResNet-50 weights (torchvision names): .safetensors, .npz or {describe_suffixes()}."

#: the options that each set one config key (the seed README's flags and a few more): the
#: parameter name -> the key; applied as typed values, before --set
CONFIG_FLAGS = {
    "dataset": "data.dataset", "data_path": "data.root", "optim": "optim.name", "lr": "optim.lr",
    "pretrain": "model.pretrain", "ckpt": "run.tag", "epochs": "schedule.epochs",
    "warmup_steps": "schedule.warmup", "start_decay": "schedule.start_decay",
    "end_decay": "schedule.end_decay", "loss_func": "loss.preset", "trial": "data.trial",
    "sysu_mode": "eval.sysu_mode", "regdb_mode": "eval.regdb_mode", "seed": "run.seed",
    "val_ids": "run.val_ids", "amp": "run.amp", "out": "run.out", "nproc": "run.nproc",
    "channels_last": "run.channels_last",
}


def register(app: typer.Typer) -> None:
    app.command("train")(train)


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
    dataset: DatasetOpt = None,
    data_path: Annotated[Optional[Path], typer.Option("--data-path", help="Data set root (raw layout).")] = None,
    optim: OptimOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate.")] = None,
    pretrain: Annotated[Optional[Path], typer.Option("--pretrain", help=PRETRAIN_HELP)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", "-r", help="Continue a run (its folder or checkpoint): it keeps its own config, backend and device unless given explicitly.")] = None,
    ckpt: Annotated[Optional[str], typer.Option("--ckpt", help="Run tag: outputs go to <out>/<TAG>/.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "--epoch", help="Epochs in total (with --resume: extend the run to N).")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="Warm-up epochs.")] = None,
    start_decay: Annotated[Optional[int], typer.Option("--start-decay")] = None,
    end_decay: Annotated[Optional[int], typer.Option("--end-decay")] = None,
    loss_func: LossFuncOpt = None,
    trial: Annotated[Optional[int], typer.Option("--trial", help="RegDB split 1..10.")] = None,
    sysu_mode: SysuModeOpt = None,
    regdb_mode: RegdbModeOpt = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    val_ids: Annotated[Optional[int], typer.Option("--val-ids", help="Hold out N training ids for validation and a 'best' checkpoint.")] = None,
    amp: AmpOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder holding run folders (default runs).")] = None,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", help="Stop after this epoch as an interruption would (the schedule stays the full one); continue later with --resume.")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="Train in N local worker processes on the framework's own engine (torchrun / msrun); see README.")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="torch: NHWC memory format (fast CPU bf16 kernels with --amp bf16).")] = False,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write the run's report.html at the end (mvd report; ~3 s of matplotlib).")] = True,
) -> None:
    """Train MVD (any recipe, either backend); evaluate on the test protocol at the end."""
    given = {k: v for k, v in locals().items() if k in CONFIG_FLAGS}  # the options as typer parsed them
    from mvd_core.train.distributed import serve_if_scheduler
    from mvd_core.train.driver import train as run_train

    serve_if_scheduler("mindspore")  # msrun's scheduler process joins the cluster and exits
    given["channels_last"] = given["channels_last"] or None  # a switch: only when on
    extra = flag_settings(CONFIG_FLAGS, given)
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
