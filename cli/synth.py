"""`mvd synth`: synthetic visible–infrared data in the real SYSU-MM01 / RegDB / LLCM layouts."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import cli_errors


class Layout(str, enum.Enum):
    sysu = "sysu"
    regdb = "regdb"
    llcm = "llcm"


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


@cli_errors
def synth(
    layout: Annotated[Layout, typer.Option("--layout", "-l", help="On-disk layout to write: sysu | regdb | llcm.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create (replaced only if an earlier `mvd synth` wrote it).")],
    ids: Annotated[
        Optional[int], typer.Option("--ids", help="Number of identities (default: 60 sysu, 40 regdb, 40 llcm).")
    ] = None,
    images_per_cam: Annotated[
        Optional[int],
        typer.Option("--images-per-cam", "-k", help="Images per camera and id (sysu, default 5; llcm, default 2) or per modality and id (regdb, default 10)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the output is a pure function of the options.")] = 0,
) -> None:
    """Write a synthetic data set in the real on-disk layout, so readers, `mvd prepare`, training and evaluation all run their real code paths on it.

    Each identity has a fixed appearance: body proportions (height, build, head, legs), shirt colour and pattern (solid, stripes, checks, band, two-tone), sleeve length, trousers or shorts, shoes, skin, hair colour and length, a bag. Each image varies view (front, back, side), pose, scale, position, background and clutter, occluders, illumination, blur and noise. Thermal images are a separate rendering of the same person from a per-identity heat signature (hot skin, clothing by insulation, cold bag) over a cool background, blurred and noisier: one channel replicated to three, not the grey RGB image.

    sysu: cam1..cam6/<pid:04d>/<k:04d>.jpg (visible 1,2,4,5; infrared 3,6) and exp/{train,val,test}_id.txt (60/10/30 % of the ids). regdb: Visible/<pid>/*.bmp and Thermal/<pid>/*.bmp (co-registered pairs) and idx/{train,test}_{visible,thermal}_{1..10}.txt. llcm: test_vis/cam1..9/<pid:04d>/*.jpg, test_nir/cam{1,2,4..9}/<pid:04d>/*.jpg, idx/test_id.txt and idx/train_{vis,nir}.txt (relpath label; images under train_vis/, train_nir/), the layout LLCM's public code reads. Deterministic for a seed; defaults are small (seconds) yet enough for the demo to learn.
    """
    from mvd_core.data.synth import synth_llcm, synth_regdb, synth_sysu

    if layout is Layout.sysu:
        info = synth_sysu(out, ids=60 if ids is None else ids,
                          images_per_cam=5 if images_per_cam is None else images_per_cam, seed=seed)
        s = info.splits
        typer.echo(
            f"wrote synthetic SYSU-MM01 to {out}: {info.ids} ids ({len(s['train'])} train, "
            f"{len(s['val'])} val, {len(s['test'])} test), {info.images} images"
        )
    elif layout is Layout.llcm:
        info = synth_llcm(out, ids=40 if ids is None else ids,
                          images_per_cam=2 if images_per_cam is None else images_per_cam, seed=seed)
        s = info.splits
        typer.echo(f"wrote synthetic LLCM to {out}: {info.ids} ids ({len(s['train'])} train, "
                   f"{len(s['test'])} test), {info.images} images")
    else:
        info = synth_regdb(out, ids=40 if ids is None else ids,
                           images_per_modality=10 if images_per_cam is None else images_per_cam, seed=seed)
        typer.echo(f"wrote synthetic RegDB to {out}: {info.ids} ids, {info.images} images, 10 trials")
