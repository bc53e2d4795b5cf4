"""`mvd extract`: test features (and image paths) of any images with a trained model."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import BackendOpt, DeviceOpt, SetOpt, cli_errors


class Modality(str, enum.Enum):
    visible = "visible"
    thermal = "thermal"


ResumeOpt = Annotated[Path, typer.Option("--resume", help="Run folder or checkpoint file.")]
FlipOpt = Annotated[bool, typer.Option("--flip", help="Mean feature of each image and its mirror.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Images per forward (default: the run's eval.batch_size).")]


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)


@cli_errors
def extract(
    resume: ResumeOpt,
    images: Annotated[str, typer.Option("--images", help="A folder, a glob pattern, a list file (one path per line) or one image.")],
    modality: Annotated[Modality, typer.Option("--modality", help="visible | thermal")],
    out: Annotated[Path, typer.Option("--out", help="Output file: .safetensors, .npz or .npy (+ .paths.txt).")],
    flip: FlipOpt = False,
    batch_size: BatchOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="Recipe or YAML for a checkpoint without a config.")] = None,
    sets: SetOpt = None,
) -> None:
    """Extract L2-normalised test features of images; writes them with the image paths."""
    from mvd_core.api import FEATURE_SUFFIXES, load_model, resolve_images, save_features
    from mvd_core.errors import MvdError

    if out.suffix.lower() not in FEATURE_SUFFIXES:
        raise MvdError(f"--out {out}: expected a .safetensors, .npz or .npy file name")
    paths = resolve_images(images)
    model = load_model(resume, backend.value if backend else None, device, config, list(sets or []))
    feats = model.extract(paths, modality.value, flip=flip, batch_size=batch_size, progress=True)
    meta = {"checkpoint": str(model.source), "backend": model.backend.name, "modality": modality.value,
            "flip": flip, "feat_norm": model.cfg.model.feat_norm}
    save_features(out, feats, paths, meta)
    typer.echo(f"{feats.shape[0]} x {feats.shape[1]} features: {out}")
