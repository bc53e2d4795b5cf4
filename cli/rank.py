"""`mvd rank`: ranked lists (JSON) and ranked-list pictures for query and gallery images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import BackendOpt, DeviceOpt, SetOpt, cli_errors
from mvd_cli.extract import BatchOpt, FlipOpt, Modality, ResumeOpt


def register(app: typer.Typer) -> None:
    app.command("rank")(rank)


@cli_errors
def rank(
    resume: ResumeOpt,
    query: Annotated[str, typer.Option("--query", help="Query images: folder, glob, list file or one image.")],
    gallery: Annotated[str, typer.Option("--gallery", help="Gallery images: folder, glob or list file.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for ranking.json and the pictures.")],
    top: Annotated[int, typer.Option("--top", help="Gallery items per query.")] = 10,
    query_modality: Annotated[Modality, typer.Option("--query-modality")] = Modality.thermal,
    gallery_modality: Annotated[Modality, typer.Option("--gallery-modality")] = Modality.visible,
    pictures: Annotated[int, typer.Option("--pictures", help="Ranked-list pictures for the first N queries (0: none, -1: all).")] = 20,
    ids: Annotated[Optional[Path], typer.Option("--ids", help="Manifest CSV giving identity/camera of the images (path,identity,camera,modality,split).")] = None,
    flip: FlipOpt = False,
    rerank: Annotated[bool, typer.Option("--rerank", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3).")] = False,
    batch_size: BatchOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="Recipe or YAML for a checkpoint without a config.")] = None,
    sets: SetOpt = None,
) -> None:
    """Rank the gallery for every query; frames are green/red when identities are known
    (SYSU-MM01 or RegDB paths, or --ids MANIFEST)."""
    from mvd_core.api import load_model
    from mvd_core.config import atomic_write_text
    from mvd_core.errors import MvdError
    from mvd_core.eval.rankviz import ranking_pictures, save_picture

    if top < 1:
        raise MvdError(f"--top {top}: expected a positive number of gallery items")
    model = load_model(resume, backend.value if backend else None, device, config, list(sets or []))
    ranking = model.rank(query, gallery, top=top, query_modality=query_modality.value,
                         gallery_modality=gallery_modality.value, flip=flip, rerank=rerank,
                         batch_size=batch_size, progress=True, manifest=ids)
    out.mkdir(parents=True, exist_ok=True)
    data = ranking.to_dict()
    data.update({"checkpoint": str(model.source), "flip": flip, "rerank": rerank})
    atomic_write_text(out / "ranking.json", json.dumps(data, indent=1) + "\n")
    n = ranking.indices.shape[0] if pictures < 0 else min(pictures, ranking.indices.shape[0])
    for q, pic in ranking_pictures(ranking, range(n)):
        save_picture(pic, out / f"rank_{q:05d}.png")
    typer.echo(f"{ranking.indices.shape[0]} queries ranked, {n} pictures: {out / 'ranking.json'}")
