"""LLCM (Zhang & Wang, CVPR 2023: the low-light cross-modality benchmark) in the on-disk layout
its public code reads → index arrays and test sets.

What the public code (github.com/ZYK100/LLCM, read at the commits named) says -- facts, with the
lines they come from; this module follows them:

* **Training lists** -- ``DEEN/data_loader.py`` (35328778) ``LLCMData`` (L89-139): the visible
  list is ``<root>/idx/train_vis.txt`` and the infrared list ``<root>/idx/train_nir.txt``
  (L92-93), read by ``load_data`` (L185-192): one image per line, ``relative/path label``, split
  on one space, the label an integer; each image is opened as ``<root> + path`` (L101), so paths
  are relative to the data set root. ``DEEN/train.py`` (06850e2b) builds the training set from
  these two lists only (L162-166) and takes the number of classes as the number of distinct
  visible labels (L179; ``DEEN/test.py`` hard-codes 713, L59). Nothing in the code reads a
  camera or person id of a *training* image, so the training folders are not pinned down.
* **Test ids** -- ``DEEN/data_manager.py`` (35328778) ``process_query_llcm`` (L70-99) and
  ``process_gallery_llcm`` (L102-132): ``<root>/idx/test_id.txt``, of which only the **first
  line** is read, comma-separated integers (L80-83), formatted ``%04d``.
* **Test images** -- the same functions: ``<root>/test_vis/cam{1..9}/<id:04d>/`` (mode 1 =
  visible, L71-72, L106-107) and ``<root>/test_nir/cam{1,2,4,5,6,7,8,9}/<id:04d>/`` (mode 2 =
  infrared; there is **no infrared camera 3**, L73-74, L108-109); ids in ascending order, cameras
  in that order, a folder that does not exist is skipped, its files sorted by name (L85-90). The
  camera is the one digit after the first ``cam`` in the path and the person id the four digits
  after that (L95, L128) -- i.e. the ``camN`` and ``<id:04d>`` folder names.
* **Query** -- every image of the query modality's cameras (``process_query_llcm``, L85-90).
* **Gallery per trial** -- ``random.seed(trial)`` (L104), then for each id (ascending) and each
  camera of the gallery modality (in the order above) that has a folder for that id, one
  ``random.choice`` of its sorted files (L118-123): single-shot, one image per (identity,
  camera), like SYSU-MM01's AGW draw. ``DEEN/test.py`` (078c9459) runs 10 trials, seeds 0..9
  (L199-200) with the query features extracted once (L198); ``AGW/test.py`` (b995c706) the same.
* **Directions** -- ``test_mode = [1, 2]`` = gallery mode 1, query mode 2: "IR to VIS" (the
  default, ``DEEN/test.py`` L60, ``DEEN/train.py`` L67); ``[2, 1]``: "VIS to IR" (visible
  queries, the infrared draw as gallery). ``DEEN/README.md``'s LLCM table has two groups of
  Rank/mAP columns, not labelled by direction in the table.
  (``DEEN/test.py``'s ``[2, 1]`` branch, L222-234, puts the drawn gallery in the query role of
  its distance matrix; ``AGW/test.py`` does not; here both directions are query x drawn gallery.)
* **Metric** -- ``eval_llcm`` (``AGW/eval_metrics.py`` d62fc3a9 L6-84; DEEN imports the same
  name, DEEN/test.py L11): for each query the gallery images with the query's person id *and*
  camera number are removed (L32; camera numbers are shared across the two modalities), the
  reported CMC is on the ranked list with repeated identities removed (L38-45, returned L84),
  mAP and mINP on the full remaining list (L47-73); queries without a remaining true match are
  skipped (L48-50); the CMC rows of skipped queries (all zero) are summed too, but every mean
  divides by the number of valid queries (L64, L78, L81), so they change nothing. Here:
  ``protocol="llcm"`` of :func:`mvd_core.eval.metrics.evaluate`. (``DEEN/eval_metrics.py`` was
  not among the stored files read; the AGW copy is the one cited.)

What this reader adds (not from the code): the training image's camera is the number of a
``camN`` folder in its path when there is one (else -1); its person id is the file's label. A
bad line, a missing image or folder is a one-line :class:`~mvd_core.errors.DataError` naming the
file (and line). ``test_nir/cam3`` (if present) is ignored, as the public code ignores it.
"""

from __future__ import annotations

import logging
import os
import re
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
    read_text_file,
)
from mvd_core.errors import DataError

log = logging.getLogger(__name__)

#: index files (under ``<root>/idx``) of the training lists, per modality
LLCM_TRAIN_FILES: dict[str, str] = {VISIBLE: "train_vis.txt", THERMAL: "train_nir.txt"}
#: test folders per modality and their cameras, in the public code's order
LLCM_TEST_FOLDERS: dict[str, str] = {VISIBLE: "test_vis", THERMAL: "test_nir"}
LLCM_CAMS: dict[str, tuple[int, ...]] = {VISIBLE: (1, 2, 3, 4, 5, 6, 7, 8, 9), THERMAL: (1, 2, 4, 5, 6, 7, 8, 9)}
LLCM_TEST_ID_FILE = "idx/test_id.txt"

_CAM_DIR = re.compile(r"^cam(\d+)$")


def read_llcm_list(root: Path, path: Path) -> tuple[IndexFile, np.ndarray]:
    """One training list ``idx/train_{vis,nir}.txt`` and its images' cameras (the number of a
    ``camN`` folder in the path, else -1)."""
    x = read_index_file(root, path, "LLCM index file (expected idx/train_vis.txt and idx/train_nir.txt)")
    cams = [next((int(m.group(1)) for part in Path(rel).parts[:-1] if (m := _CAM_DIR.match(part))), -1)
            for rel in x.rels]
    return x, np.asarray(cams, np.int64)


def load_llcm_train(root: str | os.PathLike[str]) -> TrainSet:
    """The LLCM training lists: labels relabelled ``0..C-1`` by ascending file label; every
    label needs an image in both lists."""
    root = Path(root)
    _require_dir(root, "LLCM root")
    v, v_cams = read_llcm_list(root, root / "idx" / LLCM_TRAIN_FILES[VISIBLE])
    t, t_cams = read_llcm_list(root, root / "idx" / LLCM_TRAIN_FILES[THERMAL])
    uniq = np.unique(np.concatenate([v.labels, t.labels]))
    for a, b in ((v, t), (t, v)):
        missing = np.setdiff1d(uniq, a.labels)
        if missing.size:
            raise DataError(
                f"{a.path}: labels {missing[:10].tolist()} appear in {b.path.name} but have no image "
                "here (every training id needs both modalities)"
            )
    vis = ImageSet(pids=v.labels, labels=np.searchsorted(uniq, v.labels), cams=v_cams, modality=VISIBLE, paths=v.paths)
    th = ImageSet(pids=t.labels, labels=np.searchsorted(uniq, t.labels), cams=t_cams, modality=THERMAL, paths=t.paths)
    ts = TrainSet(vis, th, int(uniq.shape[0]), f"LLCM train ({root})")
    log.info("LLCM %s: %d ids, %d visible + %d infrared training images", root, ts.num_classes, len(vis), len(th))
    return ts


def read_llcm_test_ids(root: Path) -> list[int]:
    """The ids of the first line of ``idx/test_id.txt`` (comma-separated), ascending."""
    path = root / LLCM_TEST_ID_FILE
    lines = read_text_file(path, "LLCM test id file (one line of comma-separated ids)").splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        raise DataError(f"{path}:1: expected comma-separated test ids, got an empty line")
    ids: list[int] = []
    for tok in first.split(","):
        tok = tok.strip()
        if not tok.isdigit():
            raise DataError(f"{path}:1: test id {tok!r} is not a non-negative integer")
        ids.append(int(tok))
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"{path}:1: test ids {dup[:10]} are listed twice")
    return sorted(ids)


def _test_images(root: Path, modality: str, ids: list[int]) -> ImageSet:
    """Every test image of ``modality``: ids ascending, then cameras in :data:`LLCM_CAMS` order,
    then file names sorted (the public code's order)."""
    base = root / LLCM_TEST_FOLDERS[modality]
    _require_dir(base, f"LLCM {modality} test images, {LLCM_TEST_FOLDERS[modality]}/cam<N>/<id:04d>/")
    paths: list[str] = []
    pids: list[int] = []
    cams: list[int] = []
    rbase = base.resolve()
    for pid in ids:
        for cam in LLCM_CAMS[modality]:
            folder = rbase / f"cam{cam}" / f"{pid:04d}"
            if not folder.is_dir():
                continue
            files = sorted(p.name for p in folder.iterdir() if p.is_file())
            if not files:
                raise DataError(f"{folder}: empty folder (the public code draws one of its files)")
            paths += [str(folder / f) for f in files]
            pids += [pid] * len(files)
            cams += [cam] * len(files)
    if not paths:
        raise DataError(f"{base}: no image of the test ids in cam<N>/<id:04d>/ (empty split)")
    return ImageSet(pids=pids, labels=pids, cams=cams, modality=modality, paths=tuple(paths))


def load_llcm_test(root: str | os.PathLike[str], mode: str = "t2v") -> TestSet:
    """The LLCM test set; ``t2v`` ("IR to VIS", the public default): infrared queries, the
    visible test images as gallery candidates; ``v2t``: the reverse. The per-trial gallery draw
    is :func:`mvd_core.eval.protocols.llcm_gallery_indices`."""
    root = Path(root)
    _require_dir(root, "LLCM root")
    if mode not in ("v2t", "t2v"):
        raise DataError(f"eval.llcm_mode: expected t2v or v2t, got {mode!r}")
    ids = read_llcm_test_ids(root)
    vis = _test_images(root, VISIBLE, ids)
    nir = _test_images(root, THERMAL, ids)
    for part in (vis, nir):
        absent = sorted(set(ids) - set(part.pids.tolist()))
        if absent:
            log.warning("LLCM %s: test ids %s have no %s image", root, absent[:10], part.modality)
    arrow = "visible->thermal" if mode == "v2t" else "thermal->visible"  # TestSet.reversed()'s words
    q, g = (vis, nir) if mode == "v2t" else (nir, vis)
    log.info("LLCM %s test: %d ids, %d visible + %d infrared images", root, len(ids), len(vis), len(nir))
    return TestSet(q, g, "llcm", f"LLCM {arrow}")
