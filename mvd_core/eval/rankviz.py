"""Ranked-list pictures (Pillow): the query, then its top-K gallery images, each framed green
(same identity), red (another identity) or grey (identity unknown), with rank and distance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

GREEN = (30, 170, 60)
RED = (210, 40, 40)
GREY = (150, 150, 150)
QUERY = (40, 90, 200)
BORDER = 4  # frame width, pixels
GAP = 6  # space between tiles; a wider gap after the query
LABEL_H = 14  # text band under each tile


def _font() -> Any:
    return ImageFont.load_default()


def _tile(img: np.ndarray, height: int, width: int, colour: tuple[int, int, int], label: str) -> Image.Image:
    """One framed, labelled thumbnail."""
    thumb = Image.fromarray(np.ascontiguousarray(img)).resize((width, height), Image.BILINEAR)
    tile = Image.new("RGB", (width + 2 * BORDER, height + 2 * BORDER + LABEL_H), (255, 255, 255))
    frame = Image.new("RGB", (width + 2 * BORDER, height + 2 * BORDER), colour)
    frame.paste(thumb, (BORDER, BORDER))
    tile.paste(frame, (0, 0))
    draw = ImageDraw.Draw(tile)
    draw.text((2, height + 2 * BORDER + 1), label, fill=(0, 0, 0), font=_font())
    return tile


def tile_origin(position: int, width: int) -> int:
    """x of the left edge of tile ``position`` (0 = the query) in a :func:`ranked_list_picture`
    of thumbnails ``width`` wide."""
    tw = width + 2 * BORDER
    return 0 if position == 0 else tw + 3 * GAP + (position - 1) * (tw + GAP)


def ranked_list_picture(
    query: np.ndarray,
    gallery: Sequence[np.ndarray],
    *,
    matches: Sequence[bool | None] | None = None,
    distances: Sequence[float] | None = None,
    query_label: str = "query",
    height: int = 128,
    width: int = 64,
) -> Image.Image:
    """The query (blue frame) then the ranked gallery images (uint8 H×W×3 arrays)."""
    k = len(gallery)
    tiles = [_tile(query, height, width, QUERY, query_label)]
    for r in range(k):
        m = None if matches is None else matches[r]
        colour = GREY if m is None else (GREEN if m else RED)
        label = f"#{r + 1}" + ("" if distances is None else f" {distances[r]:.2f}")
        tiles.append(_tile(gallery[r], height, width, colour, label))
    tw, th = tiles[0].size
    total = len(tiles) * tw + k * GAP + 2 * GAP
    canvas = Image.new("RGB", (total, th), (255, 255, 255))
    x = 0
    for i, t in enumerate(tiles):
        canvas.paste(t, (x, 0))
        x += tw + (3 * GAP if i == 0 else GAP)
    return canvas


def image_of(imageset: Any, i: int) -> np.ndarray:
    """Image ``i`` of an ImageSet as uint8 (H, W, 3) (decoded from its file, or its array row)."""
    from mvd_core.data.imageio import read_image

    if imageset.paths is not None:
        return read_image(imageset.paths[i])
    return np.asarray(imageset.images[i])


def ranking_pictures(ranking: Any, queries: Sequence[int] | None = None,
                     height: int = 128, width: int = 64) -> list[tuple[int, Image.Image]]:
    """(query index, picture) for ``queries`` (default: all) of a :class:`mvd_core.api.Ranking`."""
    matches = ranking.matches
    out = []
    rows = range(ranking.indices.shape[0]) if queries is None else queries
    for q in rows:
        idx = ranking.indices[q].tolist()
        pid = int(ranking.query.pids[q])
        pic = ranked_list_picture(
            image_of(ranking.query, q),
            [image_of(ranking.gallery, g) for g in idx],
            matches=None if matches is None else matches[q].tolist(),
            distances=ranking.distances[q].tolist(),
            query_label=f"q{q}" + (f" id {pid}" if pid >= 0 else ""),
            height=height, width=width,
        )
        out.append((int(q), pic))
    return out


def save_picture(pic: Image.Image, path: str | os.PathLike[str]) -> Path:
    """PNG, written atomically."""
    import io

    from mvd_core.config import atomic_write_bytes

    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
