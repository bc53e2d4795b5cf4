"""SYSU-MM01 and RegDB in their real on-disk layouts (SPEC §6) → index arrays.

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
* **RegDB** ``ROOT/idx/{train,test}_{visible,thermal}_{trial}.txt``, lines ``relative/path label``
  (e.g. ``Visible/285/male_back_v_05528_285.bmp 0``). The person id (``pid``) is the image's
  parent folder number (the real layout's ``Visible/<pid>/``); the file's label is the split's
  relabelled id. Within one split, visible and thermal files must give each folder one label and
  each label one folder ("a label that disagrees with the folder's pid" is an error naming the
  file and line). If the folders are not numbers, the file labels are used as pids.

Camera codes: SYSU keeps its camera numbers 1..6; RegDB visible images get camera 1 and thermal
images camera 2 (so no "same camera" rule can ever remove a cross-modal match).

Images are not decoded when an index is built: an :class:`ImageSet` holds either an image array
(possibly a ``np.memmap``) or absolute file paths, and :func:`load_images` decodes/resizes rows on
demand. Bad input raises :class:`~mvd_core.errors.DataError` naming the file (and line).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.config import DataConfig
from mvd_core.data.imageio import IMAGE_SUFFIXES, read_resized, resize
from mvd_core.errors import DataError

log = logging.getLogger(__name__)

VISIBLE = "visible"
THERMAL = "thermal"
MODALITIES = (VISIBLE, THERMAL)

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

#: RegDB camera codes
REGDB_VISIBLE_CAM = 1
REGDB_THERMAL_CAM = 2


# --------------------------------------------------------------------------------- containers


class RowView:
    """Rows ``rows`` of a base image array (N×H×W×3, e.g. a memmap), without copying.

    Indexable like an array (``view[i]``, ``view[idx_array]``, ``view[a:b]``), with ``shape``,
    ``dtype``, ``ndim`` and ``len``; ``np.asarray(view)`` materialises it.
    """

    def __init__(self, base: Any, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if isinstance(base, RowView):
            rows, base = base.rows[rows], base.base
        self.base = base
        self.rows = rows
        self.rows.setflags(write=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.rows.shape[0]),) + tuple(self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return int(self.base.ndim)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            return self.base[(self.rows[key[0]],) + key[1:]]
        return self.base[self.rows[key]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = np.asarray(self.base[self.rows])
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"RowView({len(self)} of {self.base.shape[0]} rows, {self.dtype})"


def _int_array(name: str, value: Any) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"ImageSet.{name}: expected a 1-D integer array, got {a.dtype} {a.shape}")
    a = a.astype(np.int64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False, kw_only=True)
class ImageSet:
    """The images of one modality, in a fixed order.

    Exactly one of ``images`` (uint8 N×H×W×3 array, memmap or :class:`RowView`) and ``paths``
    (absolute file names) is given. ``pids``: original person ids; ``labels``: training labels
    ``0..C-1`` (test sets: equal to ``pids``); ``cams``: camera numbers (``-1`` = unknown);
    ``modality``: ``"visible"`` or ``"thermal"``. All int64, read-only, length N.
    """

    pids: np.ndarray
    labels: np.ndarray
    cams: np.ndarray
    modality: str
    images: Any = None
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("ImageSet: give exactly one of images and paths")
        if self.modality not in MODALITIES:
            raise ValueError(f"ImageSet.modality: expected visible|thermal, got {self.modality!r}")
        for name in ("pids", "labels", "cams"):
            object.__setattr__(self, name, _int_array(name, getattr(self, name)))
        n = len(self)
        if self.images is not None:
            shp = tuple(self.images.shape)
            if len(shp) != 4 or shp[3] != 3 or np.dtype(self.images.dtype) != np.uint8:
                raise ValueError(f"ImageSet.images: expected uint8 N×H×W×3, got {self.images.dtype} {shp}")
        else:
            object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))  # type: ignore[union-attr]
        for name in ("pids", "labels", "cams"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"ImageSet.{name}: expected length {n}, got {getattr(self, name).shape[0]}")

    def __len__(self) -> int:
        return int(self.images.shape[0]) if self.images is not None else len(self.paths or ())

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of the stored image array; None for a path-based set."""
        return None if self.images is None else (int(self.images.shape[1]), int(self.images.shape[2]))

    def subset(self, indices: Sequence[int] | np.ndarray, labels: np.ndarray | None = None) -> ImageSet:
        """The images at ``indices`` (in that order), optionally with new ``labels``.

        A memory-mapped (or already viewed) array is not copied: the result holds a :class:`RowView`.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"ImageSet.subset: index out of range for {len(self)} images")
        images, paths = None, None
        if self.images is not None:
            if isinstance(self.images, (np.memmap, RowView)):
                images = RowView(self.images, idx)
            else:
                images = np.ascontiguousarray(self.images[idx])
        else:
            assert self.paths is not None
            paths = tuple(self.paths[i] for i in idx.tolist())
        return ImageSet(
            pids=self.pids[idx],
            labels=self.labels[idx] if labels is None else labels,
            cams=self.cams[idx],
            modality=self.modality,
            images=images,
            paths=paths,
        )

    def __repr__(self) -> str:
        kind = f"array {self.size}" if self.images is not None else "paths"
        return (
            f"ImageSet({self.modality}, {len(self)} images, "
            f"{np.unique(self.pids).shape[0]} ids, {kind})"
        )


@dataclass(frozen=True, eq=False)
class TrainSet:
    """Training images of both modalities; labels ``0..num_classes-1``, every label present in
    both modalities."""

    visible: ImageSet
    thermal: ImageSet
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.visible.modality != VISIBLE or self.thermal.modality != THERMAL:
            raise ValueError("TrainSet: expected a visible and a thermal ImageSet")
        for part in (self.visible, self.thermal):
            lab = part.labels
            if lab.size == 0:
                raise DataError(f"{self.name}: no {part.modality} training images (empty split)")
            present = np.unique(lab)
            if present[0] != 0 or present[-1] != self.num_classes - 1 or present.shape[0] != self.num_classes:
                missing = np.setdiff1d(np.arange(self.num_classes), present)
                raise DataError(
                    f"{self.name}: {part.modality} labels must cover 0..{self.num_classes - 1}; "
                    f"labels {missing[:10].tolist()} have no {part.modality} image"
                )


@dataclass(frozen=True, eq=False)
class TestSet:
    """Query and gallery of one evaluation. ``protocol``: ``"sysu"`` (thermal query, the whole
    visible test set as gallery candidates, the trial draw done by ``mvd_core.protocols``) or
    ``"regdb"`` (the given query and gallery as is)."""

    query: ImageSet
    gallery: ImageSet
    protocol: str
    name: str
    #: the RegDB split this test set comes from (None: SYSU-MM01 or a validation split)
    trial: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("sysu", "regdb"):
            raise ValueError(f"TestSet.protocol: expected sysu|regdb, got {self.protocol!r}")
        for what, part in (("query", self.query), ("gallery", self.gallery)):
            if len(part) == 0:
                raise DataError(f"{self.name}: empty {what} (empty split)")

    @property
    def direction(self) -> str:
        """``v2t`` (visible query, thermal gallery) or ``t2v``."""
        return "v2t" if self.query.modality == VISIBLE else "t2v"

    def reversed(self) -> TestSet:
        """The same images with query and gallery swapped (RegDB's other direction)."""
        arrow = {"v2t": "thermal->visible", "t2v": "visible->thermal"}[self.direction]
        base = self.name.rsplit(" ", 1)[0] if self.name.endswith(("->thermal", "->visible")) else self.name
        return TestSet(self.gallery, self.query, self.protocol, f"{base} {arrow}", self.trial)

    @property
    def query_modality(self) -> str:
        return self.query.modality

    @property
    def gallery_modality(self) -> str:
        return self.gallery.modality


# --------------------------------------------------------------------------------- images


def load_images(
    imageset: ImageSet, indices: Sequence[int] | np.ndarray, height: int, width: int, resize_method: str = "lanczos"
) -> np.ndarray:
    """uint8 (len(indices), height, width, 3): the images at ``indices``, decoded and resized
    (``resize_method``: ``data.resize``, lanczos | bilinear) where needed (a stored array of the
    right size is just indexed)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(imageset)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"load_images: indices out of range for {n} images")
    out = np.empty((idx.shape[0], height, width, 3), dtype=np.uint8)
    if imageset.images is not None:
        if imageset.size == (height, width):
            if idx.size:
                out[...] = imageset.images[idx]
            return out
        for j, i in enumerate(idx.tolist()):
            out[j] = resize(np.asarray(imageset.images[i]), height, width, resize_method)
        return out
    paths = imageset.paths
    assert paths is not None
    for j, i in enumerate(idx.tolist()):
        out[j] = read_resized(paths[i], height, width, resize_method)
    return out


# --------------------------------------------------------------------------------- SYSU raw


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: missing folder ({what})")


def read_id_file(path: Path) -> list[int]:
    """Ids of a SYSU-MM01 ``exp/*_id.txt`` file (comma-separated ints, one line in the real
    data; blank lines and surrounding spaces are tolerated)."""
    if not path.is_file():
        raise DataError(f"{path}: missing id file (expected comma-separated person ids)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read id file ({e})") from None
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


# --------------------------------------------------------------------------------- RegDB


@dataclass(frozen=True)
class _IdxFile:
    path: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    folders: tuple[int | None, ...]
    lines: tuple[int, ...]


def regdb_idx_path(root: Path, split: str, modality: str, trial: int) -> Path:
    return root / "idx" / f"{split}_{modality}_{trial}.txt"


def read_regdb_idx(root: Path, path: Path) -> _IdxFile:
    """Lines ``relative/path label`` of one RegDB index file; every image must exist."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing RegDB index file (expected idx/{{train,test}}_{{visible,thermal}}_<trial>.txt)"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    rroot = root.resolve()
    paths: list[str] = []
    labels: list[int] = []
    folders: list[int | None] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        fields = s.split()
        if len(fields) == 1:
            raise DataError(f"{path}:{lineno}: expected 'relative/path label', got {s!r} (no label)")
        if len(fields) != 2:
            raise DataError(f"{path}:{lineno}: expected 'relative/path label', got {len(fields)} fields")
        rel, lab = fields
        try:
            label = int(lab)
        except ValueError:
            raise DataError(f"{path}:{lineno}: label {lab!r} is not an integer") from None
        if label < 0:
            raise DataError(f"{path}:{lineno}: label {label} is negative")
        full = rroot / rel
        if not full.is_file():
            raise DataError(f"{path}:{lineno}: image {rel} not found under {rroot}")
        parent = Path(rel).parent.name
        folders.append(int(parent) if parent.isdigit() else None)
        paths.append(str(full))
        labels.append(label)
        lines.append(lineno)
    if not paths:
        raise DataError(f"{path}: empty split (no image lines)")
    return _IdxFile(path, tuple(paths), np.asarray(labels, np.int64), tuple(folders), tuple(lines))


def _regdb_pids(files: Sequence[_IdxFile]) -> list[np.ndarray]:
    """Folder pids of the files of one split, checking folder↔label is one-to-one across them."""
    use_folders = all(f is not None for x in files for f in x.folders)
    label_of: dict[int, tuple[int, str]] = {}
    pid_of: dict[int, tuple[int, str]] = {}
    out = []
    for x in files:
        if not use_folders:
            out.append(x.labels.copy())
            continue
        for folder, label, lineno in zip(x.folders, x.labels.tolist(), x.lines):
            assert folder is not None
            where = f"{x.path}:{lineno}"
            if folder in label_of and label_of[folder][0] != label:
                raise DataError(
                    f"{where}: label {label} disagrees with the folder's pid {folder} "
                    f"(pid {folder} has label {label_of[folder][0]} at {label_of[folder][1]})"
                )
            if label in pid_of and pid_of[label][0] != folder:
                raise DataError(
                    f"{where}: label {label} disagrees with the folder's pid {folder} "
                    f"(label {label} belongs to pid {pid_of[label][0]} at {pid_of[label][1]})"
                )
            label_of.setdefault(folder, (label, where))
            pid_of.setdefault(label, (folder, where))
        out.append(np.asarray(x.folders, np.int64))
    return out


def load_regdb_train(root: str | os.PathLike[str], trial: int) -> TrainSet:
    """RegDB training split ``trial``: labels relabelled ``0..C-1`` by ascending file label."""
    root = Path(root)
    _require_dir(root, "RegDB root")
    if trial < 1:
        raise DataError(f"data.trial: expected a RegDB trial 1..10, got {trial}")
    v = read_regdb_idx(root, regdb_idx_path(root, "train", VISIBLE, trial))
    t = read_regdb_idx(root, regdb_idx_path(root, "train", THERMAL, trial))
    vp, tp = _regdb_pids([v, t])
    uniq = np.unique(np.concatenate([v.labels, t.labels]))
    for a, b in ((v, t), (t, v)):
        missing = np.setdiff1d(uniq, a.labels)
        if missing.size:
            raise DataError(
                f"{a.path}: labels {missing[:10].tolist()} appear in {b.path.name} but have no image "
                "here (every training id needs both modalities)"
            )
    vis = ImageSet(pids=vp, labels=np.searchsorted(uniq, v.labels), cams=np.full(len(vp), REGDB_VISIBLE_CAM),
                   modality=VISIBLE, paths=v.paths)
    th = ImageSet(pids=tp, labels=np.searchsorted(uniq, t.labels), cams=np.full(len(tp), REGDB_THERMAL_CAM),
                  modality=THERMAL, paths=t.paths)
    ts = TrainSet(vis, th, int(uniq.shape[0]), f"RegDB train trial {trial} ({root})")
    log.info("RegDB %s trial %d: %d ids, %d visible + %d thermal training images",
             root, trial, ts.num_classes, len(vis), len(th))
    return ts


def load_regdb_test(root: str | os.PathLike[str], trial: int, mode: str = "v2t") -> TestSet:
    """RegDB test split ``trial``; ``v2t``: visible query → thermal gallery, ``t2v``: reverse."""
    root = Path(root)
    _require_dir(root, "RegDB root")
    if mode not in ("v2t", "t2v"):
        raise DataError(f"eval.regdb_mode: expected v2t or t2v, got {mode!r}")
    v = read_regdb_idx(root, regdb_idx_path(root, "test", VISIBLE, trial))
    t = read_regdb_idx(root, regdb_idx_path(root, "test", THERMAL, trial))
    vp, tp = _regdb_pids([v, t])
    vis = ImageSet(pids=vp, labels=vp, cams=np.full(len(vp), REGDB_VISIBLE_CAM), modality=VISIBLE, paths=v.paths)
    th = ImageSet(pids=tp, labels=tp, cams=np.full(len(tp), REGDB_THERMAL_CAM), modality=THERMAL, paths=t.paths)
    arrow = "visible->thermal" if mode == "v2t" else "thermal->visible"
    q, g = (vis, th) if mode == "v2t" else (th, vis)
    return TestSet(q, g, "regdb", f"RegDB trial {trial} {arrow}", trial=trial)


# --------------------------------------------------------------------------------- entry points


def _root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DataError("data.root: not set (expected the data set folder, e.g. --set data.root=data/synth-sysu)")
    return Path(cfg.root)


def load_train(cfg: DataConfig) -> TrainSet:
    """The training set of ``cfg.dataset``: SYSU-MM01 from its cache (``cfg.cache``, or
    ``cfg.root`` when the four .npy files are there) or else its raw folder; RegDB split
    ``cfg.trial``. Images are resized to ``(cfg.height, cfg.width)`` when loaded."""
    if cfg.dataset == "sysu":
        if not cfg.cache:
            _root(cfg)
        cache = find_sysu_cache(cfg)
        if cache is not None:
            return load_sysu_cache(cache)
        return load_sysu_raw_train(_root(cfg))
    if cfg.dataset == "regdb":
        return load_regdb_train(_root(cfg), cfg.trial)
    if cfg.dataset == "manifest":  # your own data: a CSV (mvd_core.data.manifest)
        from mvd_core.data.manifest import load_manifest_train

        return load_manifest_train(_root(cfg), cfg.cache or None, (cfg.height, cfg.width), cfg.resize)
    raise DataError(f"data.dataset: expected sysu, regdb or manifest, got {cfg.dataset!r}")


def load_test(cfg: DataConfig, regdb_mode: str = "v2t") -> TestSet:
    """The test set of ``cfg.dataset`` (SYSU-MM01: always the raw folder ``cfg.root``; RegDB:
    split ``cfg.trial`` in direction ``regdb_mode``)."""
    if cfg.dataset == "sysu":
        return load_sysu_test(_root(cfg))
    if cfg.dataset == "regdb":
        return load_regdb_test(_root(cfg), cfg.trial, regdb_mode)
    if cfg.dataset == "manifest":
        from mvd_core.data.manifest import load_manifest_test

        return load_manifest_test(_root(cfg), regdb_mode)
    raise DataError(f"data.dataset: expected sysu, regdb or manifest, got {cfg.dataset!r}")


def carve_validation(train: TrainSet, n_ids: int, seed: int) -> tuple[TrainSet, TestSet]:
    """Hold out ``n_ids`` training identities (drawn with ``default_rng([seed, 7])``).

    Returns the remaining training set (labels renumbered ``0..C'-1`` keeping their order) and a
    validation TestSet of the held-out ids: thermal query → visible gallery, protocol "regdb"
    (``labels = pids``).
    """
    c = train.num_classes
    if not 1 <= n_ids < c:
        raise DataError(f"run.val_ids: expected 1..{c - 1} held-out ids (the training set has {c}), got {n_ids}")
    rng = np.random.default_rng([seed, 7])
    held = np.sort(rng.choice(c, size=n_ids, replace=False))
    keep = np.setdiff1d(np.arange(c), held)
    new_label = np.full(c, -1, np.int64)
    new_label[keep] = np.arange(keep.shape[0])

    def split(part: ImageSet) -> tuple[ImageSet, ImageSet]:
        is_held = np.isin(part.labels, held)
        tr_idx = np.flatnonzero(~is_held)
        va_idx = np.flatnonzero(is_held)
        tr = part.subset(tr_idx, labels=new_label[part.labels[tr_idx]])
        va = part.subset(va_idx, labels=part.pids[va_idx])
        return tr, va

    vtr, vva = split(train.visible)
    ttr, tva = split(train.thermal)
    rest = TrainSet(vtr, ttr, int(keep.shape[0]), f"{train.name} minus {n_ids} validation ids")
    val = TestSet(tva, vva, "regdb", f"{train.name}: validation ({n_ids} ids, thermal->visible)")
    return rest, val
