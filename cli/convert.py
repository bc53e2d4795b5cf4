"""`mvd convert`: torch state dict ⇄ framework-free safetensors ⇄ MindSpore checkpoint."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from mvd_cli.common import cli_errors


class Kind(str, enum.Enum):
    mvd = "mvd"
    resnet50 = "resnet50"


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)


@cli_errors
def convert(
    src: Annotated[Path, typer.Argument(help="Input: .safetensors | .npz | .pth/.pt | .ckpt")],
    dst: Annotated[Path, typer.Argument(help="Output; its suffix picks the format.")],
    kind: Annotated[Kind, typer.Option("--kind", help="mvd: a whole MVD model; resnet50: a bare ResNet-50 (torchvision names).")] = Kind.mvd,
) -> None:
    """Convert parameters between formats by explicit name maps (strict, bit-exact)."""
    from mvd_core.weights.convert import convert as run

    r = run(src, dst, kind.value)
    typer.echo(f"{r.src} -> {r.dst}: {r.tensors} tensors, {r.parameters:,} values ({r.kind})")
