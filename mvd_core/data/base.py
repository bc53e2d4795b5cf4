"""The containers every reader returns (:class:`ImageSet`, :class:`TrainSet`, :class:`TestSet`,
index arrays over images), image loading on demand and the helpers the readers share.

Images are not decoded when an index is built: an :class:`ImageSet` holds either an image array
(possibly a ``np.memmap``) or absolute file paths, and :func:`load_images` decodes/resizes rows on
demand. Bad input raises :class:`~mvd_core.errors.DataError` naming the file (and line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.data.imageio import read_resized, resize
from mvd_core.errors import DataError

VISIBLE = "visible"
THERMAL = "thermal"
MODALITIES = (VISIBLE, THERMAL)


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
    visible test set as gallery candidates, the trial draw done by ``mvd_core.eval.protocols``),
    ``"llcm"`` (every query-modality test image; the other modality's test images as gallery
    candidates, drawn per trial) or ``"regdb"`` (the given query and gallery as is)."""

    query: ImageSet
    gallery: ImageSet
    protocol: str
    name: str
    #: the RegDB split this test set comes from (None: SYSU-MM01 or a validation split)
    trial: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("sysu", "regdb", "llcm"):
            raise ValueError(f"TestSet.protocol: expected sysu|regdb|llcm, got {self.protocol!r}")
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


# --------------------------------------------------------------------------------- shared by the readers


def read_text_file(path: Path, missing: str) -> str:
    """The text of a data set's index file; a missing file is one DataError naming it with
    ``missing`` (what was expected), an unreadable one names the reason."""
    if not path.is_file():
        raise DataError(f"{path}: missing {missing}")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


@dataclass(frozen=True)
class IndexFile:
    """One ``relative/path label`` index file (RegDB's ``idx/*.txt``, LLCM's training lists):
    the images as written (``rels``) and under the root (``paths``), their labels and the line
    each came from."""

    path: Path
    rels: tuple[str, ...]
    paths: tuple[str, ...]
    labels: np.ndarray
    lines: tuple[int, ...]


def read_index_file(root: Path, path: Path, missing: str) -> IndexFile:
    """Lines ``relative/path label`` (blank lines skipped), paths relative to ``root``; every
    image must exist. A bad line is one :class:`DataError` naming the file and line; a missing
    file names it, with ``missing`` (what was expected)."""
    text = read_text_file(path, missing)
    rroot = root.resolve()
    rels: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        fields = s.split()
        if len(fields) != 2:
            got = "1 field (no label)" if len(fields) == 1 else f"{len(fields)} fields"
            raise DataError(f"{path}:{lineno}: expected 'relative/path label', got {got}: {s!r}")
        rel, lab = fields
        try:
            label = int(lab)
        except ValueError:
            raise DataError(f"{path}:{lineno}: label {lab!r} is not an integer") from None
        if label < 0:
            raise DataError(f"{path}:{lineno}: label {label} is negative")
        if not (rroot / rel).is_file():
            raise DataError(f"{path}:{lineno}: image {rel} not found under {rroot}")
        rels.append(rel)
        labels.append(label)
        lines.append(lineno)
    if not rels:
        raise DataError(f"{path}: empty split (no image lines)")
    return IndexFile(path, tuple(rels), tuple(str(rroot / r) for r in rels),
                     np.asarray(labels, np.int64), tuple(lines))


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: missing folder ({what})")
