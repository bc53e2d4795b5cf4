"""`mvd report RUN`: one self-contained HTML page for a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import cli_errors


def register(app: typer.Typer) -> None:
    app.command("report")(report)


@cli_errors
def report(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file (default: RUN/report.html).")] = None,
) -> None:
    """Write the run's HTML report: loss/lr curves, CMC curves, per-trial tables, ranked lists of
    the best and worst queries, parity table; images inline (no network needed)."""
    from mvd_core.eval.report_html import write_run_report

    typer.echo(f"report: {write_run_report(run, out)}")


def echo_html_report(run_dir: Path) -> None:
    """Write the run's HTML report at the end of `mvd train` / `mvd demo` and print its path;
    a report that cannot be drawn is a warning, never a failed run."""
    import logging

    from mvd_core.errors import MvdError
    from mvd_core.eval.report_html import write_run_report

    try:
        typer.echo(f"html report: {write_run_report(run_dir)}")
    except (MvdError, ImportError, OSError) as e:
        logging.getLogger("mvd").warning("%s: no HTML report (%s)", run_dir, e)
