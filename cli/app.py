"""The `mvd` command: one typer app; each command lives in its own module with `register(app)`."""

from __future__ import annotations

import importlib
from typing import Annotated, Optional

import typer

from mvd_core import __version__

#: command modules (cli/<name>.py), registered in this order; each has `register(app)`
COMMANDS = ("info", "train", "eval", "demo", "synth", "prepare", "convert", "parity",
            "extract", "rank", "report", "export")

app = typer.Typer(
    name="mvd",
    help="Multi-view Variational Distillation for visible-infrared person re-identification "
    "(PyTorch and MindSpore backends).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mvd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from mvd_cli.common import setup_logging

    setup_logging(verbose)


for _name in COMMANDS:
    importlib.import_module(f"mvd_cli.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
