"""RegDB (SPEC §6) in its real on-disk layout → index arrays.

* **RegDB** ``ROOT/idx/{train,test}_{visible,thermal}_{trial}.txt``, lines ``relative/path label``
  (e.g. ``Visible/285/male_back_v_05528_285.bmp 0``). The person id (``pid``) is the image's
  parent folder number (the real layout's ``Visible/<pid>/``); the file's label is the split's
  relabelled id. Within one split, visible and thermal files must give each folder one label and
  each label one folder ("a label that disagrees with the folder's pid" is an error naming the
  file and line). If the folders are not numbers, the file labels are used as pids.

RegDB visible images get camera 1 and thermal images camera 2 (so no "same camera" rule can
ever remove a cross-modal match).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvd_core.data.base import (
    THERMAL,
    VISIBLE,
    ImageSet,
    IndexFile,
    TestSet,
    TrainSet,
    _require_dir,
    read_index_file,
)
from mvd_core.errors import DataError

log = logging.getLogger(__name__)

#: RegDB camera codes
REGDB_VISIBLE_CAM = 1
REGDB_THERMAL_CAM = 2


def regdb_idx_path(root: Path, split: str, modality: str, trial: int) -> Path:
    return root / "idx" / f"{split}_{modality}_{trial}.txt"


def read_regdb_idx(root: Path, path: Path) -> IndexFile:
    """One RegDB index file (:func:`~mvd_core.data.base.read_index_file`)."""
    return read_index_file(
        root, path, "RegDB index file (expected idx/{train,test}_{visible,thermal}_<trial>.txt)")


def _folders(x: IndexFile) -> tuple[int | None, ...]:
    """Each image's parent folder as a person id (None when the folder is not a number)."""
    return tuple(int(p) if (p := Path(rel).parent.name).isdigit() else None for rel in x.rels)


def _regdb_pids(files: Sequence[IndexFile]) -> list[np.ndarray]:
    """Folder pids of the files of one split, checking folder↔label is one-to-one across them."""
    folders = [_folders(x) for x in files]
    use_folders = all(f is not None for fs in folders for f in fs)
    label_of: dict[int, tuple[int, str]] = {}
    pid_of: dict[int, tuple[int, str]] = {}
    out = []
    for x, fs in zip(files, folders, strict=True):
        if not use_folders:
            out.append(x.labels.copy())
            continue
        for folder, label, lineno in zip(fs, x.labels.tolist(), x.lines):
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
        out.append(np.asarray(fs, np.int64))
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
