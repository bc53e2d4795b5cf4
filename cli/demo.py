"""`mvd demo`: synthesise data in the SYSU-MM01 layout, train tiny MVD on CPU, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mvd_cli.common import BackendName, SetOpt, cli_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@cli_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the data, the run and the report.")] = Path("out/demo"),
    backend: Annotated[BackendName, typer.Option("--backend", "-b")] = BackendName.torch,
    device: Annotated[str, typer.Option("--device", "-d")] = "cpu",
    sets: SetOpt = None,
) -> None:
    """Synthesise a small SYSU-MM01-layout data set, train the tiny recipe with id+tri+kldiv,
    evaluate all-search single-shot over 10 trials and print the table."""
    from mvd_core.demo import run_demo

    res = run_demo(out, backend.value, device, list(sets or []))
    typer.echo(res.report.to_table())
    typer.echo(
        f"chance Rank-1 with {res.test_ids} test identities: {100 * res.chance_rank1:.2f}%"
    )
    typer.echo(f"run folder and report: {res.run_dir}")
    from mvd_cli.report import echo_html_report

    echo_html_report(res.run_dir)
