"""SYSU-MM01 (SPEC §6): the raw folder and the preprocessed cache, read and written here.

Readers
-------
* **SYSU-MM01 raw folder** ``ROOT/cam{1..6}/{pid:04d}/*.jpg`` + ``ROOT/exp/{train,val,test}_id.txt``
  (each one comma-separated line of ids). Training = train ∪ val ids, labels ``0..C-1`` in
  ascending id order; visible = cameras 1, 2, 4, 5, thermal = cameras 3, 6. Images are listed
  id-major, then camera, then sorted file name (the public preprocessing's order). A (camera, id)
  folder may be missing (the real data set has gaps); an id must have at least one visible and one
  thermal image.
* **SYSU-MM01 preprocessed cache** (``mvd prepare sysu`` or the public codes' ``pre_process_sysu``):
  ``train_rgb_resized_img.npy`` / ``train_ir_resized_img.npy`` (uint8 N×288×144×3), read
  memory-mapped, and ``train_{rgb,ir}_resized_label.npy``. With our manifest
  (``mvd_cache_manifest.json``) the original person ids and cameras are restored; a cache written
  by the public codes carries neither, so ``pids = labels`` and ``cams = -1`` (unknown).

SYSU keeps its camera numbers 1..6.

Cache writer (``mvd prepare sysu``)
-----------------------------------
Writes into ``out`` (default: the data root):

* ``train_rgb_resized_img.npy`` / ``train_ir_resized_img.npy``: uint8 N×288×144×3, every training
  (train ∪ val) image of the visible (1, 2, 4, 5) / infrared (3, 6) cameras, Lanczos-resized to
  144 wide × 288 high, in the public preprocessing's order (id-major, then camera, then file);
* ``train_rgb_resized_label.npy`` / ``train_ir_resized_label.npy``: int64 labels 0..C-1 (ascending id);
* ``mvd_cache_manifest.json``: counts, the ids (label i ↔ ids[i]), per-(id, camera) run lengths
  (which restore each image's pid and camera), size, skipped files, a fingerprint of the source
  listing and a SHA-256 of every .npy file.

Nothing is half-written: arrays are streamed (no writable memory map: a full disk is an ENOSPC
error naming the file, never a SIGBUS) into temp files in ``out``, reserved up front with
``posix_fallocate``, and renamed into place at the end; on any error the temp files are removed and earlier outputs are left as they were. Re-running
is safe and cheap: when the manifest's fingerprint (source files, sizes, options) matches and the
files are intact in size, nothing is redone (``force=True`` redoes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core import __version__
from mvd_core.config import DataConfig
from mvd_core.data.base import (
    THERMAL,
    VISIBLE,
    ImageSet,
    TestSet,
    TrainSet,
    _require_dir,
    read_text_file,
)
from mvd_core.data.imageio import IMAGE_SUFFIXES, ProgressFn, progress_callback, read_resized
from mvd_core.errors import DataError
from mvd_core.io import StagedFile, atomic_write_text, make_dirs, named_oserror, remove_stale_temps

log = logging.getLogger(__name__)

#: SYSU-MM01 cameras per modality
SYSU_VISIBLE_CAMS: tuple[int, ...] = (1, 2, 4, 5)
SYSU_THERMAL_CAMS: tuple[int, ...] = (3, 6)
#: the customary preprocessed size (height, width)
SYSU_CACHE_SIZE: tuple[int, int] = (288, 144)
#: the customary cache file names
SYSU_CACHE_FILES: dict[str, str] = {
    "rgb_img": "train_rgb_resized_img.npy",
    "rgb_label": "train_rgb_resized_label.npy",
    "ir_img": "train_ir_resized_img.npy",
    "ir_label": "train_ir_resized_label.npy",
}
#: our manifest next to the cache (counts, ids, cameras, sizes, checksums)
SYSU_MANIFEST = "mvd_cache_manifest.json"
SYSU_SPLITS = ("train", "val", "test")



# --------------------------------------------------------------------------------- SYSU raw


def read_id_file(path: Path) -> list[int]:
    """Ids of a SYSU-MM01 ``exp/*_id.txt`` file (comma-separated ints, one line in the real
    data; blank lines and surrounding spaces are tolerated)."""
    text = read_text_file(path, "id file (expected comma-separated person ids)")
    ids: list[int] = []
    seen: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        for tok in line.split(","):
            tok = tok.strip()
            if tok == "" and line.strip().endswith(","):
                continue  # a trailing comma
            try:
                pid = int(tok)
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: expected comma-separated integer ids, got {tok!r}"
                ) from None
            if pid < 0:
                raise DataError(f"{path}:{lineno}: person id {pid} is negative")
            if pid in seen:
                raise DataError(f"{path}:{lineno}: person id {pid} listed twice")
            seen[pid] = lineno
            ids.append(pid)
    if not ids:
        raise DataError(f"{path}: empty split (no ids)")
    return ids


def sysu_split_ids(root: str | os.PathLike[str]) -> dict[str, list[int]]:
    """``{"train": [...], "val": [...], "test": [...]}`` from ``ROOT/exp``."""
    root = Path(root)
    _require_dir(root, "SYSU-MM01 root")
    _require_dir(root / "exp", "SYSU-MM01 id files exp/{train,val,test}_id.txt")
    return {s: read_id_file(root / "exp" / f"{s}_id.txt") for s in SYSU_SPLITS}


def check_sysu_cams(root: Path) -> None:
    for c in range(1, 7):
        _require_dir(root / f"cam{c}", "SYSU-MM01 camera folder: cam1..cam6/<pid:04d>/*.jpg")


def _list_images(folder: Path) -> list[str]:
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file()]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES))


@dataclass(frozen=True)
class SysuIndex:
    """Paths/pids/cams of one modality of a SYSU-MM01 split, in reading order."""

    paths: tuple[str, ...]
    pids: np.ndarray
    cams: np.ndarray


def sysu_scan(root: Path, ids: Sequence[int], cams: Sequence[int], id_major: bool = True) -> SysuIndex:
    """Images of ``ids`` in ``cams``: id-major (training order) or camera-major (test order)."""
    root = Path(root).resolve()
    paths: list[str] = []
    pids: list[int] = []
    cam_list: list[int] = []
    pairs = [(p, c) for p in ids for c in cams] if id_major else [(p, c) for c in cams for p in ids]
    for pid, cam in pairs:
        folder = root / f"cam{cam}" / f"{pid:04d}"
        names = _list_images(folder)
        paths.extend(str(folder / n) for n in names)
        pids.extend([pid] * len(names))
        cam_list.extend([cam] * len(names))
    return SysuIndex(tuple(paths), np.asarray(pids, np.int64), np.asarray(cam_list, np.int64))


def sysu_train_ids(root: Path) -> tuple[list[int], dict[str, list[int]]]:
    """Sorted train ∪ val ids (label i ↔ id i) and the split lists."""
    splits = sysu_split_ids(root)
    overlap = set(splits["train"]) & set(splits["val"])
    if overlap:
        log.warning("%s: %d ids are in both train and val; counted once", root / "exp", len(overlap))
    return sorted(set(splits["train"]) | set(splits["val"])), splits


def load_sysu_raw_train(root: str | os.PathLike[str]) -> TrainSet:
    """The SYSU-MM01 training set from the raw folder (path-based ImageSets)."""
    root = Path(root)
    ids, _ = sysu_train_ids(root)
    check_sysu_cams(root)
    vis = sysu_scan(root, ids, SYSU_VISIBLE_CAMS)
    th = sysu_scan(root, ids, SYSU_THERMAL_CAMS)
    id_files = f"{root / 'exp' / 'train_id.txt'}, {root / 'exp' / 'val_id.txt'}"
    for what, part in (("visible (cam1,2,4,5)", vis), ("thermal (cam3,6)", th)):
        if not part.paths:
            raise DataError(f"{id_files}: empty split: no {what} training images under {root}")
        missing = sorted(set(ids) - set(part.pids.tolist()))
        if missing:
            raise DataError(
                f"{id_files}: ids {missing[:10]} have no {what} images under {root} "
                "(every training id needs both modalities)"
            )
    lut = {pid: i for i, pid in enumerate(ids)}
    sets = []
    for part, mod in ((vis, VISIBLE), (th, THERMAL)):
        labels = np.asarray([lut[p] for p in part.pids.tolist()], np.int64)
        sets.append(ImageSet(pids=part.pids, labels=labels, cams=part.cams, modality=mod, paths=part.paths))
    ts = TrainSet(sets[0], sets[1], len(ids), f"SYSU-MM01 train ({root})")
    log.info("SYSU-MM01 raw %s: %d ids, %d visible + %d thermal training images",
             root, len(ids), len(vis.paths), len(th.paths))
    return ts


def load_sysu_test(root: str | os.PathLike[str]) -> TestSet:
    """SYSU-MM01 test candidates: query = every thermal (cam 3, 6) image of the test ids, gallery =
    every visible (cam 1, 2, 4, 5) image of the test ids; camera-major, then id, then file (the
    public test code's order). ``labels = pids``."""
    root = Path(root)
    test_ids = sorted(sysu_split_ids(root)["test"])
    check_sysu_cams(root)
    q = sysu_scan(root, test_ids, SYSU_THERMAL_CAMS, id_major=False)
    g = sysu_scan(root, test_ids, SYSU_VISIBLE_CAMS, id_major=False)
    id_file = root / "exp" / "test_id.txt"
    if not q.paths:
        raise DataError(f"{id_file}: empty split: no thermal (cam3,6) test images under {root}")
    if not g.paths:
        raise DataError(f"{id_file}: empty split: no visible (cam1,2,4,5) test images under {root}")
    query = ImageSet(pids=q.pids, labels=q.pids, cams=q.cams, modality=THERMAL, paths=q.paths)
    gallery = ImageSet(pids=g.pids, labels=g.pids, cams=g.cams, modality=VISIBLE, paths=g.paths)
    return TestSet(query, gallery, "sysu", f"SYSU-MM01 test ({root})")


# --------------------------------------------------------------------------------- SYSU cache


def find_sysu_cache(cfg: DataConfig) -> Path | None:
    """The folder holding the four cache files: ``cfg.cache`` if set (all four required), else
    ``cfg.root`` if all four are there, else None (read the raw folder)."""
    if cfg.cache:
        folder = Path(cfg.cache)
        _require_dir(folder, "data.cache: SYSU-MM01 preprocessed .npy folder")
        for name in SYSU_CACHE_FILES.values():
            if not (folder / name).is_file():
                raise DataError(f"{folder / name}: missing cache file (run `mvd prepare sysu`)")
        return folder
    folder = Path(cfg.root)
    present = [n for n in SYSU_CACHE_FILES.values() if (folder / n).is_file()]
    if len(present) == len(SYSU_CACHE_FILES):
        return folder
    if present:
        missing = [n for n in SYSU_CACHE_FILES.values() if n not in present]
        raise DataError(
            f"{folder / missing[0]}: incomplete SYSU-MM01 cache ({len(present)} of 4 files); "
            "re-run `mvd prepare sysu` or remove the others"
        )
    return None


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing cache file") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """Our cache manifest, or None if there is none."""
    path = folder / SYSU_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _runs_to_arrays(runs: list[list[int]], n: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        r = np.asarray(runs, dtype=np.int64).reshape(-1, 3)
    except (ValueError, TypeError):
        raise DataError(f"{path}: 'runs' must be [[pid, cam, count], ...]") from None
    if int(r[:, 2].sum()) != n:
        raise DataError(f"{path}: runs count {int(r[:, 2].sum())} images, the cache holds {n}")
    return np.repeat(r[:, 0], r[:, 2]), np.repeat(r[:, 1], r[:, 2])


def load_sysu_cache(folder: str | os.PathLike[str]) -> TrainSet:
    """The SYSU-MM01 training set from the preprocessed cache, images memory-mapped."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    parts = []
    labels_all = []
    for key, mod in (("rgb", VISIBLE), ("ir", THERMAL)):
        img_path = folder / SYSU_CACHE_FILES[f"{key}_img"]
        lab_path = folder / SYSU_CACHE_FILES[f"{key}_label"]
        imgs = _load_npy(img_path, mmap=True)
        if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.dtype != np.uint8:
            raise DataError(f"{img_path}: expected uint8 N×H×W×3 images, got {imgs.dtype} {imgs.shape}")
        labels = np.asarray(_load_npy(lab_path, mmap=False))
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{lab_path}: expected a 1-D integer label array, got {labels.dtype} {labels.shape}")
        if labels.shape[0] != imgs.shape[0]:
            raise DataError(f"{lab_path}: {labels.shape[0]} labels for {imgs.shape[0]} images in {img_path.name}")
        if labels.size == 0:
            raise DataError(f"{img_path}: empty split (no images)")
        if labels.min() < 0:
            raise DataError(f"{lab_path}: negative label {int(labels.min())}")
        labels = labels.astype(np.int64)
        labels_all.append(labels)
        parts.append((mod, imgs, labels, img_path, lab_path))
    num_classes = int(max(int(lab.max()) for lab in labels_all)) + 1
    mpath = folder / SYSU_MANIFEST
    n_ids = len(manifest["ids"]) if isinstance(manifest, dict) and isinstance(manifest.get("ids"), list) else None
    for _mod, _imgs, labels, _img_path, lab_path in parts:
        if n_ids is not None and int(labels.max()) >= n_ids:  # name the label file at fault
            raise DataError(
                f"{lab_path}: label {int(labels.max())} out of range: {mpath.name} lists "
                f"{n_ids} ids (expected labels 0..{n_ids - 1})"
            )
    sets = []
    for mod, imgs, labels, img_path, _lab_path in parts:
        if manifest is not None:
            key = "rgb" if mod == VISIBLE else "ir"
            try:
                ids = np.asarray(manifest["ids"], dtype=np.int64)
                runs = manifest["runs"][key]
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{mpath}: expected 'ids' and 'runs' ({key}) entries") from None
            if ids.shape[0] != num_classes:
                raise DataError(f"{mpath}: {ids.shape[0]} ids but labels go up to {num_classes - 1} in {img_path.name}")
            pids, cams = _runs_to_arrays(runs, imgs.shape[0], mpath)
            if not np.array_equal(ids[labels], pids):
                raise DataError(f"{mpath}: ids/runs disagree with {img_path.name}'s labels (stale manifest?)")
        else:
            pids, cams = labels, np.full(labels.shape, -1, np.int64)
        sets.append(ImageSet(pids=pids, labels=labels, cams=cams, modality=mod, images=imgs))
    ts = TrainSet(sets[0], sets[1], num_classes, f"SYSU-MM01 train (cache {folder})")
    log.info("SYSU-MM01 cache %s: %d ids, %d visible + %d thermal images (memory-mapped)",
             folder, num_classes, len(sets[0]), len(sets[1]))
    return ts


# --------------------------------------------------------------------------------- SYSU cache writer


MANIFEST_FORMAT = "mvd-sysu-cache"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare_sysu`` did."""

    out: Path
    counts: dict[str, int]
    num_ids: int
    skipped: tuple[str, ...] = ()
    up_to_date: bool = False
    files: dict[str, str] = field(default_factory=dict)


def _fingerprint(root: Path, parts: dict[str, SysuIndex], ids: list[int], extra: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"ids": ids, **extra}, sort_keys=True).encode())
    for key, part in parts.items():
        h.update(key.encode())
        for p in part.paths:
            try:
                size = os.stat(p).st_size
            except OSError:
                size = -1
            h.update(f"{os.path.relpath(p, root)}\t{size}\n".encode())
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _npy_header(descr: str, shape: tuple[int, ...], length: int | None = None) -> bytes:
    """A .npy (format 1.0) header for a C-order array, padded to ``length`` bytes (default: the
    next multiple of 64, as NumPy writes it); a smaller count fits the length of a larger one."""
    shp = tuple(int(x) for x in shape)
    d = "{'descr': " + repr(descr) + ", 'fortran_order': False, 'shape': " + repr(shp) + ", }"
    fixed = 10  # magic (6) + version (2) + header length (2)
    if length is None:
        length = -(-(fixed + len(d) + 1) // 64) * 64
    pad = length - fixed - len(d) - 1
    if pad < 0:
        raise ValueError(f"npy header for {shape} does not fit {length} bytes")
    text = (d + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _runs(pids: np.ndarray, cams: np.ndarray) -> list[list[int]]:
    """[[pid, cam, count], ...] run lengths of consecutive (pid, cam)."""
    if pids.size == 0:
        return []
    change = np.flatnonzero((pids[1:] != pids[:-1]) | (cams[1:] != cams[:-1])) + 1
    starts = np.concatenate([[0], change])
    counts = np.diff(np.concatenate([starts, [pids.size]]))
    return [[int(pids[s]), int(cams[s]), int(c)] for s, c in zip(starts, counts)]


def _up_to_date(out: Path, fingerprint: str) -> dict[str, Any] | None:
    try:
        m = read_manifest(out)
    except DataError:
        return None
    if not m or m.get("fingerprint") != fingerprint or m.get("format") != MANIFEST_FORMAT:
        return None
    files = m.get("files", {})
    for name in SYSU_CACHE_FILES.values():
        p = out / name
        if not p.is_file() or name not in files or p.stat().st_size != files[name].get("bytes"):
            return None
    return m


def _decode_all(paths: tuple[str, ...], workers: int) -> Iterator[tuple[int, np.ndarray | DataError]]:
    """(index, image or the DataError) in order, decoded by ``workers`` threads."""
    h, w = SYSU_CACHE_SIZE

    def one(p: str) -> np.ndarray | DataError:
        try:
            return read_resized(p, h, w)
        except DataError as e:
            return e

    if workers <= 1:
        for i, p in enumerate(paths):
            yield i, one(p)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mvd-prepare") as pool:
        chunk = 256
        for start in range(0, len(paths), chunk):
            for j, r in enumerate(pool.map(one, paths[start:start + chunk])):
                yield start + j, r


def verify_sysu_cache(folder: str | os.PathLike[str]) -> None:
    """Check every cache file against the manifest's SHA-256; DataError naming a mismatch."""
    folder = Path(folder)
    m = read_manifest(folder)
    if m is None:
        raise DataError(f"{folder / SYSU_MANIFEST}: no manifest to verify against")
    for name, meta in m.get("files", {}).items():
        p = folder / name
        if not p.is_file():
            raise DataError(f"{p}: missing cache file")
        if sha256_file(p) != meta.get("sha256"):
            raise DataError(f"{p}: checksum differs from {SYSU_MANIFEST} (modified or stale)")


def prepare_sysu(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    progress: bool | ProgressFn | None = True,
    *,
    force: bool = False,
    workers: int = 2,
) -> PrepareResult:
    """Build the SYSU-MM01 training cache of the raw folder ``root`` in ``out`` (default
    ``root``); see the module docstring.

    ``skip_bad``: leave out images that cannot be decoded (reported in the log, the result and
    the manifest) instead of failing on the first one. ``progress``: True = a bar on stderr, or a
    ``(done, total)`` callback. Raises DataError (naming the file) on bad input; then nothing in
    ``out`` has changed.
    """
    root = Path(root)
    out = Path(out) if out is not None else root
    ids, splits = sysu_train_ids(root)
    check_sysu_cams(root)
    parts = {
        "rgb": sysu_scan(root, ids, SYSU_VISIBLE_CAMS),
        "ir": sysu_scan(root, ids, SYSU_THERMAL_CAMS),
    }
    id_files = f"{root / 'exp' / 'train_id.txt'}, {root / 'exp' / 'val_id.txt'}"
    for key, part in parts.items():
        if not part.paths:
            what = "visible (cam1,2,4,5)" if key == "rgb" else "thermal (cam3,6)"
            raise DataError(f"{id_files}: empty split: no {what} training images under {root}")
    h, w = SYSU_CACHE_SIZE
    fp = _fingerprint(root, parts, ids, {"height": h, "width": w, "skip_bad": skip_bad})
    if not force:
        m = _up_to_date(out, fp)
        if m is not None:
            log.info("%s: SYSU-MM01 cache is up to date (%s); nothing to do", out, SYSU_MANIFEST)
            return PrepareResult(out, dict(m["counts"]), len(m["ids"]), tuple(m.get("skipped", ())),
                                 True, {k: str(out / k) for k in SYSU_CACHE_FILES.values()})
    make_dirs(out)
    remove_stale_temps(out, recursive=False)  # leftovers of a killed earlier run
    total = sum(len(p.paths) for p in parts.values())
    report = progress_callback(progress, "prepare sysu")
    lut = {pid: i for i, pid in enumerate(ids)}
    staged_files: list[StagedFile] = []
    img_bytes = h * w * 3
    skipped: list[str] = []
    staged: dict[str, StagedFile] = {}
    counts: dict[str, int] = {}
    runs: dict[str, list[list[int]]] = {}
    done = 0
    current = out
    try:
        # stage and reserve both image arrays first: a full disk fails now, with ENOSPC naming
        # the file, not after decoding (and never as SIGBUS: no writable memory map is used)
        img_stage: dict[str, tuple[StagedFile, bytes]] = {}
        for key, part in parts.items():
            name = SYSU_CACHE_FILES[f"{key}_img"]
            current = out / name
            sf = StagedFile(current)
            staged_files.append(sf)
            header = _npy_header("|u1", (len(part.paths), h, w, 3))
            sf.reserve(len(header) + len(part.paths) * img_bytes)
            img_stage[key] = (sf, header)
        for key, part in parts.items():
            name = SYSU_CACHE_FILES[f"{key}_img"]
            current = out / name
            sf, header = img_stage[key]
            n = len(part.paths)
            good = np.ones(n, bool)
            with sf.open("wb") as f:
                f.write(header)
                for i, res in _decode_all(part.paths, workers):
                    if isinstance(res, DataError):
                        if not skip_bad:
                            raise res
                        good[i] = False
                        skipped.append(part.paths[i])
                        log.warning("skipping unreadable image: %s", res)
                    else:
                        f.write(np.ascontiguousarray(res, dtype=np.uint8).tobytes())
                    done += 1
                    if report is not None:
                        report(done, total)
                kept = int(good.sum())
                if kept != n:  # same header length, the real count; drop the reserved tail
                    f.flush()
                    f.truncate(len(header) + kept * img_bytes)
                    f.seek(0)
                    f.write(_npy_header("|u1", (kept, h, w, 3), len(header)))
            pids, cams = part.pids[good], part.cams[good]
            missing = sorted(set(ids) - set(pids.tolist()))
            if missing:
                raise DataError(
                    f"{id_files}: after skipping unreadable images, ids {missing[:10]} have no "
                    f"{'visible' if key == 'rgb' else 'thermal'} image left"
                )
            labels = np.asarray([lut[p] for p in pids.tolist()], np.int64)
            current = out / SYSU_CACHE_FILES[f"{key}_label"]
            lab = StagedFile(current)
            staged_files.append(lab)
            with lab.open("wb") as f:
                np.save(f, labels, allow_pickle=False)
            staged[name] = sf
            staged[SYSU_CACHE_FILES[f"{key}_label"]] = lab
            counts[key] = int(labels.size)
            runs[key] = _runs(pids, cams)
        current = out
        files = {name: {"bytes": sf.tmp.stat().st_size, "sha256": sha256_file(sf.tmp)}
                 for name, sf in staged.items()}
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "mvd_version": __version__,
            "source": str(root.resolve()),
            "fingerprint": fp,
            "height": h,
            "width": w,
            "resize": "lanczos",
            "ids": ids,
            "splits": {"train": len(splits["train"]), "val": len(splits["val"])},
            "counts": counts,
            "runs": runs,
            "skipped": skipped,
            "files": files,
        }
        # commit: drop the old manifest first so a crash between renames never leaves a manifest
        # vouching for a mix of old and new arrays
        current = out / SYSU_MANIFEST
        (out / SYSU_MANIFEST).unlink(missing_ok=True)
        for name, sf in staged.items():
            current = out / name
            sf.commit()
        current = out / SYSU_MANIFEST
        atomic_write_text(out / SYSU_MANIFEST, json.dumps(manifest, indent=1) + "\n")
    except OSError as e:
        raise named_oserror(e, current) from None
    finally:
        for sf in staged_files:
            sf.discard()  # a no-op for the committed ones
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))
    log.info("SYSU-MM01 cache in %s: %d ids, %d visible + %d thermal images",
             out, len(ids), counts["rgb"], counts["ir"])
    return PrepareResult(out, counts, len(ids), tuple(skipped), False,
                         {k: str(out / k) for k in SYSU_CACHE_FILES.values()})
