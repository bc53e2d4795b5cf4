"""`mvd prepare sysu`: the SYSU-MM01 preprocessing cache (four .npy files + a manifest)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import cli_errors


class PrepareDataset(str, enum.Enum):
    sysu = "sysu"
    manifest = "manifest"


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


@cli_errors
def prepare(
    dataset: Annotated[PrepareDataset, typer.Argument(help="Data set to preprocess (sysu | manifest).")],
    root: Annotated[Path, typer.Option("--root", "-r", help="SYSU-MM01 raw folder (cam1..cam6, exp/), or the manifest CSV.")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Where to write the cache (default: --root).")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip unreadable images (listed at the end) instead of failing.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the cache is up to date.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Decoding threads.")] = 2,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    height: Annotated[int, typer.Option("--height", help="manifest: cached image height (the run's data.height).")] = 288,
    width: Annotated[int, typer.Option("--width", help="manifest: cached image width (the run's data.width).")] = 144,
) -> None:
    """sysu: resize every SYSU-MM01 training image (train + val ids) to 144x288 with Lanczos and
    write train_{rgb,ir}_resized_{img,label}.npy plus mvd_cache_manifest.json (counts, ids,
    cameras, checksums). manifest: cache every image of a manifest CSV at --height x --width.
    Written atomically; re-running is safe (an up-to-date cache is left alone)."""
    from mvd_core.data.sysu import prepare_sysu
    from mvd_core.progress import Bar

    if dataset is PrepareDataset.manifest:  # your own data (mvd_core.data.manifest)
        from mvd_core.data.manifest import prepare_manifest

        folder, fresh = prepare_manifest(root, out, height, width, progress=progress, force=force)
        typer.echo(f"{folder}: manifest cache {'is up to date' if fresh else 'written'} ({height}x{width})")
        return
    bar = Bar("prepare sysu") if progress else None
    try:
        res = prepare_sysu(root, out, skip_bad=skip_bad, progress=bar, force=force, workers=workers)
    finally:
        if bar is not None:
            bar.close()
    if res.up_to_date:
        typer.echo(f"{res.out}: cache is up to date ({res.counts['rgb']} visible + {res.counts['ir']} thermal images)")
    else:
        typer.echo(
            f"wrote {res.out}: {res.num_ids} ids, {res.counts['rgb']} visible + {res.counts['ir']} "
            "thermal images at 288x144"
        )
    if res.skipped:
        typer.echo(f"skipped {len(res.skipped)} unreadable image(s):", err=True)
        for p in res.skipped:
            typer.echo(f"  {p}", err=True)
