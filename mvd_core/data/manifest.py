"""Your own data: a manifest CSV (``data.dataset: manifest``, ``data.root``: the CSV file, or a
folder holding ``manifest.csv``) read into the same TrainSet / TestSet as SYSU-MM01 and RegDB,
so the same sampler, loader, training loop and evaluation run on it.

Format: a header line naming the columns ``path,identity,camera,modality,split`` (any order,
extra columns ignored), then one image per line:

* ``path``: the image file, absolute or relative to the CSV's folder;
* ``identity``: a non-negative integer person id;
* ``camera``: an integer camera number (``-1`` = unknown);
* ``modality``: ``visible`` or ``thermal`` (also ``rgb``/``ir``/``infrared``);
* ``split``: ``train``, ``query``, ``gallery`` or ``test`` — ``test`` images go to the query or
  the gallery by modality, following ``eval.regdb_mode`` (``v2t``: visible queries, thermal
  gallery; ``t2v`` the reverse); ``query``/``gallery`` are taken as written.

Training uses the ``train`` rows (labels ``0..C-1`` in ascending identity order; every identity
needs both modalities). Evaluation: queries against the gallery with nothing excluded and the
standard CMC (RegDB's protocol), one row. Any bad line is one error naming ``file:line`` and
what was expected; images are checked to exist when the manifest is read.

``mvd prepare manifest --root CSV`` decodes and resizes every image once into a cache
(:func:`prepare_manifest`); training then reads the memory-mapped array instead of the files
when the cache is up to date (same CSV bytes, image files, size and resize filter).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvd_core.errors import DataError

log = logging.getLogger(__name__)

COLUMNS = ("path", "identity", "camera", "modality", "split")
SPLITS = ("train", "query", "gallery", "test")
_MODALITY = {"visible": "visible", "rgb": "visible", "thermal": "thermal", "ir": "thermal",
             "infrared": "thermal"}
#: the file looked for when data.root is a folder
DEFAULT_NAME = "manifest.csv"


@dataclass(frozen=True)
class ManifestRows:
    """The parsed manifest, one entry per image, in file order."""

    source: Path
    paths: tuple[str, ...]
    pids: np.ndarray
    cams: np.ndarray
    modality: tuple[str, ...]
    split: tuple[str, ...]
    lines: tuple[int, ...]


def manifest_path(root: str | os.PathLike[str]) -> Path:
    p = Path(root)
    if p.is_dir():
        p = p / DEFAULT_NAME
    if not p.is_file():
        raise DataError(f"{p}: manifest not found (data.root: a CSV file or a folder with {DEFAULT_NAME})")
    return p


def read_manifest_csv(root: str | os.PathLike[str]) -> ManifestRows:
    """Parse and check every line (see the module docstring)."""
    path = manifest_path(root)
    base = path.parent
    paths, pids, cams, mods, splits, lines = [], [], [], [], [], []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file (expected a CSV manifest)") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}:1: empty file (expected a header line {','.join(COLUMNS)})")
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                        f"(expected {','.join(COLUMNS)})")
    col = {c: names.index(c) for c in COLUMNS}
    for n, row in enumerate(reader, start=2):
        if not row or all(not x.strip() for x in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) < len(names):
            raise DataError(f"{path}:{n}: {len(row)} fields, expected {len(names)} ({','.join(names)})")
        get = {c: row[i].strip() for c, i in col.items()}
        for key, lo in (("identity", 0), ("camera", -1)):
            try:
                value = int(get[key])
            except ValueError:
                raise DataError(f"{path}:{n}: {key} {get[key]!r}: expected an integer") from None
            if value < lo:
                raise DataError(f"{path}:{n}: {key} {value}: expected >= {lo}")
        mod = _MODALITY.get(get["modality"].lower())
        if mod is None:
            raise DataError(f"{path}:{n}: modality {get['modality']!r}: expected visible or thermal")
        split = get["split"].lower()
        if split not in SPLITS:
            raise DataError(f"{path}:{n}: split {get['split']!r}: expected one of {', '.join(SPLITS)}")
        if not get["path"]:
            raise DataError(f"{path}:{n}: empty path")
        img = Path(get["path"]) if os.path.isabs(get["path"]) else base / get["path"]
        if not img.is_file():
            raise DataError(f"{path}:{n}: {get['path']}: image file not found")
        paths.append(os.path.normpath(img))
        pids.append(int(get["identity"]))
        cams.append(int(get["camera"]))
        mods.append(mod)
        splits.append(split)
        lines.append(n)
    if not paths:
        raise DataError(f"{path}: no image lines after the header")
    return ManifestRows(path, tuple(paths), np.array(pids, np.int64), np.array(cams, np.int64),
                        tuple(mods), tuple(splits), tuple(lines))


def _imageset(rows: ManifestRows, idx: np.ndarray, modality: str, labels: np.ndarray | None = None,
              images: np.ndarray | None = None):
    from mvd_core.data.base import ImageSet, RowView

    pids = rows.pids[idx]
    common = dict(pids=pids, labels=pids if labels is None else labels, cams=rows.cams[idx], modality=modality)
    if images is not None:  # the prepared cache: rows of one memory-mapped array
        return ImageSet(**common, images=RowView(images, idx))
    return ImageSet(**common, paths=tuple(rows.paths[i] for i in idx.tolist()))


def load_manifest_train(root: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None,
                        size: tuple[int, int] | None = None, resize: str = "lanczos"):
    """The ``train`` rows as a TrainSet (labels 0..C-1 by ascending identity). With ``size``
    (height, width), images come from an up-to-date ``mvd prepare manifest`` cache (``cache``,
    or next to the CSV) when there is one."""
    from mvd_core.data.base import TrainSet

    rows = read_manifest_csv(root)
    images = _cached_images(rows, cache, size[0], size[1], resize) if size is not None else None
    split = np.array(rows.split)
    mod = np.array(rows.modality)
    train = split == "train"
    if not train.any():
        raise DataError(f"{rows.source}: no train rows (split=train)")
    uniq = np.unique(rows.pids[train])
    parts = []
    for m in ("visible", "thermal"):
        idx = np.flatnonzero(train & (mod == m))
        have = np.unique(rows.pids[idx])
        lacking = np.setdiff1d(uniq, have)
        if lacking.size:
            first = int(np.flatnonzero(train & np.isin(rows.pids, lacking[:1]))[0])
            raise DataError(f"{rows.source}:{rows.lines[first]}: identity {int(lacking[0])} has train "
                            f"images but no {m} one (every training identity needs both modalities"
                            f"; {lacking.size} such)")
        parts.append(_imageset(rows, idx, m, np.searchsorted(uniq, rows.pids[idx]), images))
    ts = TrainSet(parts[0], parts[1], int(uniq.shape[0]), f"manifest {rows.source}")
    log.info("manifest %s: %d ids, %d visible + %d thermal training images",
             rows.source, ts.num_classes, len(parts[0]), len(parts[1]))
    return ts


def load_manifest_test(root: str | os.PathLike[str], mode: str = "v2t"):
    """Query and gallery (``query``/``gallery`` rows, and ``test`` rows by modality)."""
    from mvd_core.data.base import TestSet

    if mode not in ("v2t", "t2v"):
        raise DataError(f"eval.regdb_mode: expected v2t or t2v, got {mode!r}")
    rows = read_manifest_csv(root)
    split = np.array(rows.split)
    mod = np.array(rows.modality)
    qmod, gmod = ("visible", "thermal") if mode == "v2t" else ("thermal", "visible")
    q = (split == "query") | ((split == "test") & (mod == qmod))
    g = (split == "gallery") | ((split == "test") & (mod == gmod))
    out = []
    for what, sel in (("query", q), ("gallery", g)):
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            raise DataError(f"{rows.source}: no {what} images (split={what}, or split=test with the "
                            f"{qmod if what == 'query' else gmod} modality for eval.regdb_mode={mode})")
        kinds = sorted(set(mod[idx].tolist()))
        if len(kinds) > 1:
            first = int(idx[mod[idx] != mod[idx[0]]][0])
            raise DataError(f"{rows.source}:{rows.lines[first]}: a {mod[first]} {what} image among "
                            f"{mod[idx[0]]} ones (the {what} must be one modality)")
        out.append(_imageset(rows, idx, kinds[0]))
    arrow = f"{out[0].modality}->{out[1].modality}"
    return TestSet(out[0], out[1], "regdb", f"manifest {rows.source.name} {arrow}")


# --------------------------------------------------------------------------------- cache

#: the cache files (`mvd prepare manifest`), next to the CSV unless --out says otherwise
CACHE_IMAGES = "manifest_images.npy"
CACHE_INDEX = "manifest_cache.json"


def _fingerprint(rows: ManifestRows, height: int, width: int, resize: str) -> str:
    """The CSV's bytes, every image's size and mtime, the image size and the resize filter."""
    import hashlib

    h = hashlib.sha256(rows.source.read_bytes())
    for p in rows.paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(f"{height}x{width}:{resize}".encode())
    return h.hexdigest()


def prepare_manifest(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                     height: int = 288, width: int = 144, resize: str = "lanczos",
                     progress: object = None, force: bool = False) -> tuple[Path, bool]:
    """Decode and resize every image of the manifest once into ``manifest_images.npy``
    (uint8 N x height x width x 3, manifest line order) + ``manifest_cache.json``; both written
    through temp files and renamed. Returns (cache folder, whether it was already up to date)."""
    import json

    from mvd_core.data.imageio import progress_callback, read_resized
    from mvd_core.io import atomic_path, atomic_write_text

    rows = read_manifest_csv(root)
    folder = Path(out) if out is not None else rows.source.parent
    folder.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(rows, height, width, resize)
    index = folder / CACHE_INDEX
    if not force and index.exists() and (folder / CACHE_IMAGES).exists():
        try:
            if json.loads(index.read_text()).get("fingerprint") == fp:
                return folder, True
        except json.JSONDecodeError:
            pass
    report = progress_callback(progress, "prepare manifest")  # type: ignore[arg-type]
    n = len(rows.paths)
    with atomic_path(folder / CACHE_IMAGES) as tmp:  # mvd_core.io: temp file, fsync, rename
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, height, width, 3))
        for i, p in enumerate(rows.paths):
            try:
                arr[i] = read_resized(p, height, width, resize)
            except DataError as e:
                raise DataError(f"{rows.source}:{rows.lines[i]}: {e}") from None
            if report is not None:
                report(i + 1, n)
        arr.flush()
        del arr
    atomic_write_text(index, json.dumps({
        "fingerprint": fp, "manifest": str(rows.source), "count": n, "height": height,
        "width": width, "resize": resize, "paths": list(rows.paths)}, indent=1) + "\n")
    log.info("manifest cache %s: %d images at %dx%d", folder, n, height, width)
    return folder, False


def _cached_images(rows: ManifestRows, cache: str | os.PathLike[str] | None, height: int,
                   width: int, resize: str) -> np.ndarray | None:
    """The cache's image array (memory-mapped) if one is up to date for this manifest and size;
    None if there is none. An explicitly given cache that is stale is an error."""
    import json

    folder = Path(cache) if cache else rows.source.parent
    index = folder / CACHE_INDEX
    if not index.exists():
        if cache:
            raise DataError(f"{index}: no manifest cache there (run: mvd prepare manifest --root {rows.source} --out {folder})")
        return None
    try:
        meta = json.loads(index.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{index}: corrupt manifest cache index (re-run mvd prepare manifest)") from None
    if meta.get("fingerprint") != _fingerprint(rows, height, width, resize):
        if cache:
            raise DataError(f"{index}: stale for {rows.source} at {height}x{width} ({resize}); "
                            "re-run mvd prepare manifest")
        log.info("%s: stale manifest cache, reading the images", index)
        return None
    try:
        arr = np.load(folder / CACHE_IMAGES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{folder / CACHE_IMAGES}: not a readable cache ({e})") from None
    if arr.shape != (len(rows.paths), height, width, 3) or arr.dtype != np.uint8:
        raise DataError(f"{folder / CACHE_IMAGES}: shape {arr.shape} {arr.dtype}, expected "
                        f"({len(rows.paths)}, {height}, {width}, 3) uint8 (re-run mvd prepare manifest)")
    return arr
