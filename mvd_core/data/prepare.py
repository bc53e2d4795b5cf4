"""``mvd prepare sysu``: the customary SYSU-MM01 preprocessing cache, written safely.

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core import __version__
from mvd_core.data.datasets import (
    SYSU_CACHE_FILES,
    SYSU_CACHE_SIZE,
    SYSU_MANIFEST,
    SYSU_THERMAL_CAMS,
    SYSU_VISIBLE_CAMS,
    SysuIndex,
    check_sysu_cams,
    read_manifest,
    sysu_scan,
    sysu_train_ids,
)
from mvd_core.data.imageio import ProgressFn, progress_callback, read_resized
from mvd_core.errors import DataError
from mvd_core.io import StagedFile, atomic_write_text, make_dirs, named_oserror, remove_stale_temps

log = logging.getLogger(__name__)

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
