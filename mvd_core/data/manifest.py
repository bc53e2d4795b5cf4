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


def _imageset(rows: ManifestRows, idx: np.ndarray, modality: str, labels: np.ndarray | None = None):
    from mvd_core.data.datasets import ImageSet

    pids = rows.pids[idx]
    return ImageSet(pids=pids, labels=pids if labels is None else labels, cams=rows.cams[idx],
                    modality=modality, paths=tuple(rows.paths[i] for i in idx.tolist()))


def load_manifest_train(root: str | os.PathLike[str]):
    """The ``train`` rows as a TrainSet (labels 0..C-1 by ascending identity)."""
    from mvd_core.data.datasets import TrainSet

    rows = read_manifest_csv(root)
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
        parts.append(_imageset(rows, idx, m, np.searchsorted(uniq, rows.pids[idx])))
    ts = TrainSet(parts[0], parts[1], int(uniq.shape[0]), f"manifest {rows.source}")
    log.info("manifest %s: %d ids, %d visible + %d thermal training images",
             rows.source, ts.num_classes, len(parts[0]), len(parts[1]))
    return ts


def load_manifest_test(root: str | os.PathLike[str], mode: str = "v2t"):
    """Query and gallery (``query``/``gallery`` rows, and ``test`` rows by modality)."""
    from mvd_core.data.datasets import TestSet

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
