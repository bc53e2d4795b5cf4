"""`mvd demo`: synthesise data in the SYSU-MM01 layout, train the tiny MVD on CPU, evaluate it
against its own untrained initialisation; `--compare`: id+tri vs id+tri+kldiv over seeds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mvd_cli.common import BackendName, SetOpt, cli_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@cli_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the data, the runs and the reports.")] = Path("out/demo"),
    backend: Annotated[BackendName, typer.Option("--backend", "-b")] = BackendName.torch,
    device: Annotated[str, typer.Option("--device", "-d")] = "cpu",
    sets: SetOpt = None,
    compare: Annotated[
        bool,
        typer.Option("--compare", help="Train id+tri and id+tri+kldiv on the same data and seeds "
                     "and show both (mean ± std over --seeds); ~6x the demo's time."),
    ] = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds 0..N-1 for --compare.")] = 3,
) -> None:
    """Synthesise a SYSU-MM01-layout data set (96 test identities), evaluate the untrained tiny
    MVD, train it with id+tri+kldiv for a few CPU minutes, evaluate all-search single-shot over
    10 trials; print the table and a summary against chance and the untrained network."""
    from mvd_core import demo as D

    # four evaluations of 10 trials each: one line per evaluation, not per trial (-v shows them)
    proto = logging.getLogger("mvd_core.eval.protocols")
    if proto.getEffectiveLevel() == logging.INFO:
        proto.setLevel(logging.WARNING)
    if compare:
        res = D.run_compare(out, backend.value, device, list(sets or []), seeds=list(range(seeds)))
        typer.echo(D.compare_table(res))
        return
    result = D.run_demo(out, backend.value, device, list(sets or []))
    typer.echo(result.report.to_table())
    typer.echo(D.summary(result))
    from mvd_cli.report import echo_html_report  # the run's report.html (issue 17)

    echo_html_report(result.run_dir)
