"""`mvd export`: the test-feature network of a trained run as ONNX or MINDIR."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import BackendOpt, DeviceOpt, SetOpt, cli_errors
from mvd_cli.extract import ResumeOpt


class Format(str, enum.Enum):
    onnx = "onnx"
    mindir = "mindir"


def register(app: typer.Typer) -> None:
    app.command("export")(export)


@cli_errors
def export(
    resume: ResumeOpt,
    fmt: Annotated[Format, typer.Option("--format", help="onnx (torch: dynamic batch; MindSpore: fixed) | mindir (MindSpore).")],
    out: Annotated[Path, typer.Option("--out", help="Output file (.onnx or .mindir).")],
    batch: Annotated[Optional[int], typer.Option("--batch", help="Fixed batch size (torch default: dynamic; MindSpore default 1).")] = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="Recipe or YAML for a checkpoint without a config.")] = None,
    sets: SetOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Run the ONNX file in onnxruntime against the backend on seeded images (max |diff| <= 1e-5).")] = False,
) -> None:
    """Export images (normalised float32 N x 3 x H x W) -> L2-normalised test features."""
    from mvd_core.weights.export import export_model

    path = export_model(resume, fmt.value, out, backend=backend.value if backend else None,
                        device=device, batch=batch, config=config, overrides=list(sets or []),
                        check=check)
    typer.echo(f"exported: {path}" + (" (onnxruntime check passed)" if check else ""))
