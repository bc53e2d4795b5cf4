"""`mvd eval`: the full test protocol (SYSU-MM01 trials or RegDB) for a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import BackendOpt, ConfigOpt, DeviceOpt, MsModeOpt, SetOpt, cli_errors
from mvd_cli.train import RegdbMode, SysuMode


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


@cli_errors
def evaluate(
    resume: Annotated[Path, typer.Option("--resume", help="Checkpoint file or run folder to evaluate.")],
    config: ConfigOpt = "mvd-ms",
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    sets: SetOpt = None,
    ms_mode: MsModeOpt = None,
    data_path: Annotated[Optional[Path], typer.Option("--data-path", help="Data set root (default: the run's).")] = None,
    sysu_mode: Annotated[Optional[SysuMode], typer.Option("--sysu-mode")] = None,
    regdb_mode: Annotated[Optional[RegdbMode], typer.Option("--regdb-mode")] = None,
    trial: Annotated[Optional[int], typer.Option("--trial", help="RegDB split 1..10.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="SYSU-MM01 trials (default 10).")] = None,
    multi_shot: Annotated[bool, typer.Option("--multi-shot", help="SYSU-MM01 multi-shot gallery.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON here.")] = None,
) -> None:
    """Evaluate a checkpoint: prints the mean ± std table and writes JSON."""
    from mvd_core.config import atomic_write_text
    from mvd_core.driver import evaluate_checkpoint, resolve_checkpoint

    extra: list[str] = []
    if data_path is not None:
        extra.append(f"data.root={data_path}")
    if sysu_mode is not None:
        extra.append(f"eval.sysu_mode={sysu_mode.value}")
    if regdb_mode is not None:
        extra.append(f"eval.regdb_mode={regdb_mode.value}")
    if trial is not None:
        extra.append(f"data.trial={trial}")
    if trials is not None:
        extra.append(f"eval.trials={trials}")
    if multi_shot:
        extra.append("eval.shot=multi")
    from mvd_core.config import load_config

    report = evaluate_checkpoint(
        resume,
        extra + list(sets or []),
        backend=backend.value if backend is not None else None,
        device=device,
        ms_mode=ms_mode.value if ms_mode is not None else None,
        fallback=load_config(config),
    )
    typer.echo(report.to_table())
    ck = resolve_checkpoint(resume)
    out = json_out if json_out is not None else ck.parent.parent / "eval.json"
    report.write_json(out)
    atomic_write_text(Path(out).with_suffix(".txt"), report.to_table() + "\n")
    typer.echo(f"report: {out}")
