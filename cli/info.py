"""`mvd info`: versions, which backends import, which devices each sees."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mvd_cli.common import cli_errors


def register(app: typer.Typer) -> None:
    app.command("info")(info)


@cli_errors
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Python, NumPy and each backend's framework version; which backends import; their devices
    and the precisions each trains in there."""
    from mvd_core.sysinfo import collect

    data = collect()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"mvd        {data['mvd']}")
    typer.echo(f"python     {data['python']}")
    typer.echo(f"numpy      {data['numpy']}")
    for name, b in data["backends"].items():
        if b["available"]:
            typer.echo(f"{name:<10} {b['version']}  devices: {', '.join(b['devices'])}")
            amp = "; ".join(f"run.amp on {d}: {', '.join(v)}" for d, v in b["amp"].items())
            typer.echo(f"{'':<10} run.precision: {', '.join(b['precisions'])}" + (f"; {amp}" if amp else ""))
        else:
            typer.echo(f"{name:<10} not available ({b['error']}); install {b['extra']}")
