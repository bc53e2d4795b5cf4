"""Evaluation protocols (SPEC §5): SYSU-MM01 gallery draws and trials, RegDB trials, LLCM gallery
draws and trials (both directions), reports.

Typical use by a driver::

    report = run_sysu(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, mode="all")
    print(report.to_table()); report.write_json(out / "eval.json")

    rows = [(t, regdb_trial(vf, vp, tf, tp, direction="v2t")) for t, (vf, vp, tf, tp) in ...]
    report = Report.from_results(rows, name="RegDB visible->thermal")

SYSU-MM01: features of the whole test set are extracted once; each trial's gallery is an index
selection (:func:`sysu_gallery_indices`) into the visible test set, so a trial costs one column
selection of one distance matrix and one :func:`~mvd_core.eval.metrics.evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from mvd_core.errors import MvdError
from mvd_core.eval.metrics import DistanceMetric, EvalResult, distance
from mvd_core.eval.metrics import evaluate as evaluate_distances

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import EvalConfig
    from mvd_core.data.base import TestSet

__all__ = [
    "SYSU_QUERY_CAMS",
    "SYSU_GALLERY_CAMS",
    "SYSU_SHOTS",
    "SYSU_TRIALS",
    "REGDB_TRIALS",
    "REGDB_DIRECTIONS",
    "REPORT_COLUMNS",
    "SYSU_GALLERY_DRAWS",
    "SysuPermutations",
    "sysu_file_index",
    "find_sysu_permutations",
    "load_sysu_permutations",
    "sysu_gallery_indices",
    "sysu_draw_inputs",
    "run_sysu",
    "RegDBTrial",
    "regdb_trial",
    "run_regdb",
    "LLCM_TRIALS",
    "LLCM_DIRECTIONS",
    "llcm_gallery_indices",
    "run_llcm",
    "Report",
    "protocol_key",
    "evaluate",
    "evaluate_all",
]

log = logging.getLogger(__name__)

SysuMode = Literal["all", "indoor"]
SysuShot = Literal["single", "multi"]
SysuDraw = Literal["agw", "official", "seeded"]
RegDBDirection = Literal["v2t", "t2v"]

#: SYSU-MM01 query cameras (infrared).
SYSU_QUERY_CAMS: tuple[int, ...] = (3, 6)
#: SYSU-MM01 gallery cameras (visible) per search mode.
SYSU_GALLERY_CAMS: Mapping[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
#: Images drawn per (identity, camera) per shot setting (multi: up to this many).
SYSU_SHOTS: Mapping[str, int] = {"single": 1, "multi": 10}
#: SYSU-MM01 gallery draws (see :func:`sysu_gallery_indices`); the first is the default.
SYSU_GALLERY_DRAWS: tuple[str, ...] = ("agw", "official", "seeded")
#: Default SYSU-MM01 trials = seeds of the gallery draw (official: rows of its permutations).
SYSU_TRIALS: tuple[int, ...] = tuple(range(10))
#: RegDB trials (the split files idx/test_*_{t}.txt).
REGDB_TRIALS: tuple[int, ...] = tuple(range(1, 11))
#: RegDB directions: visible query -> thermal gallery, and the reverse.
REGDB_DIRECTIONS: tuple[str, ...] = ("v2t", "t2v")
#: LLCM trials = seeds of the gallery draw (the public test scripts: ``range(10)``).
LLCM_TRIALS: tuple[int, ...] = tuple(range(10))
#: LLCM directions: visible query -> infrared gallery ("VIS to IR"), and the reverse ("IR to VIS").
LLCM_DIRECTIONS: tuple[str, ...] = ("v2t", "t2v")
#: Columns of a report, in percent.
REPORT_COLUMNS: tuple[str, ...] = ("R1", "R5", "R10", "R20", "mAP", "mINP")

_REGDB_VISIBLE_CAM, _REGDB_THERMAL_CAM = 1, 2  # camera labels given to RegDB's two modalities


def _choice(name: str, value: object, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise MvdError(f"{name}: expected one of {allowed}, got {value!r}")
    return str(value)


def _labels(name: str, value: object, n: int | None = None) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1 or a.dtype.kind not in "biu" or (n is not None and a.shape[0] != n):
        want = "" if n is None else f" of length {n}"
        raise MvdError(
            f"{name}: expected a 1-D integer array{want}, got shape {a.shape} dtype {a.dtype}"
        )
    return a.astype(np.int64, copy=False)


def _rows(name: str, value: object) -> int:
    shape = np.shape(value)
    if len(shape) != 2:
        raise MvdError(f"{name}: expected a 2-D array of shape (num_images, dim), got {shape}")
    return int(shape[0])


def _rerank(q_feats: np.ndarray, g_feats: np.ndarray, qq_sq: np.ndarray | None = None) -> np.ndarray:
    """k-reciprocal re-ranked distances (defaults k1=20, k2=6, lambda=0.3; mvd_core.eval.rerank);
    ``qq_sq``: the queries' squared distances, shared by every trial."""
    from mvd_core.eval.rerank import k_reciprocal_rerank

    return k_reciprocal_rerank(q_feats, g_feats, qq_sq=qq_sq)


# --------------------------------------------------------------------------------------------
# the trial loop of the drawn-gallery protocols


def _drawn_trials(
    q_feats: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_feats: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    trials: Sequence[int],
    draw: Callable[[int], np.ndarray],
    cand: np.ndarray,
    *,
    protocol: str,
    label: str,
    metric: DistanceMetric,
    max_rank: int,
    chunk: int | None,
    rerank: bool,
) -> list[tuple[int, EvalResult]]:
    """Every query against each trial's gallery draw (``draw(trial)``: rows of the gallery, all
    among the candidate rows ``cand``, which are sorted): the query x candidate distances are
    computed once and each trial takes its columns (re-ranking: the query x query block once,
    each draw re-ranked); each result's per-query top-K are mapped back to rows of the whole
    gallery. The trial loop of the drawn-gallery protocols (SYSU-MM01, LLCM)."""
    g_feats = np.asarray(g_feats)
    if rerank:
        from mvd_core.eval.rerank import squared_distances

        qq_sq = squared_distances(q_feats, q_feats)
    else:
        dist = distance(q_feats, g_feats[cand], metric)
    rows: list[tuple[int, EvalResult]] = []
    for trial in trials:
        idx = draw(trial)
        result = evaluate_distances(
            _rerank(q_feats, g_feats[idx], qq_sq) if rerank else dist[:, np.searchsorted(cand, idx)],
            q_pids, g_pids[idx], q_cams, g_cams[idx],
            protocol=protocol, max_rank=max_rank, chunk=chunk,
        )
        if result.per_query is not None:  # top-K columns of this draw → rows of the whole set
            pq = result.per_query
            result = EvalResult(result.cmc, result.mAP, result.mINP, result.num_valid,
                                per_query=type(pq)(**{**vars(pq), "top": idx[pq.top]}))
        log.info("%s trial %s: R1 %.2f mAP %.2f", label, trial, 100 * result.cmc[0], 100 * result.mAP)
        rows.append((int(trial), result))
    return rows


# --------------------------------------------------------------------------------------------
# SYSU-MM01


def sysu_file_index(
    g_pids: np.ndarray, g_cams: np.ndarray, paths: Iterable[str] | None = None
) -> np.ndarray:
    """Each gallery image's 0-based position in its (identity, camera) folder's sorted file list
    (the order both public draws index). With ``paths``: the rank of the file name among the
    group's names; without: the order of appearance within the group (:func:`load_sysu_test`
    lists every folder's files sorted)."""
    g_pids = _labels("g_pids", g_pids)
    g_cams = _labels("g_cams", g_cams, g_pids.shape[0])
    n = g_pids.shape[0]
    if paths is None:
        order = np.lexsort((np.arange(n), g_cams, g_pids))
    else:
        names = [os.path.basename(str(p)) for p in paths]
        if len(names) != n:
            raise MvdError(f"paths: expected {n} gallery file names, got {len(names)}")
        rank = np.empty(n, np.int64)
        rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(n)
        order = np.lexsort((rank, g_cams, g_pids))
    p, c = g_pids[order], g_cams[order]
    new_group = np.r_[True, (p[1:] != p[:-1]) | (c[1:] != c[:-1])] if n else np.zeros(0, bool)
    group_start = np.flatnonzero(new_group)
    out = np.empty(n, np.int64)
    out[order] = np.arange(n) - group_start[np.cumsum(new_group) - 1]
    return out


@dataclass(frozen=True, eq=False)
class SysuPermutations:
    """The official SYSU-MM01 evaluation's fixed draws (``rand_perm_cam.mat``, variable
    ``rand_perm_cam``: a 6×1 cell, one per camera, of cells indexed by person id − 1, each a
    trials × n matrix whose rows are 1-based permutations of that person's n images in that
    camera). ``table[(cam, pid)]``: the 0-based (trials, n) array."""

    source: str
    table: Mapping[tuple[int, int], np.ndarray]

    def rows(self, cam: int, pid: int, n_images: int, trial: int) -> np.ndarray:
        """Trial ``trial``'s permutation (0-based file indices) of camera ``cam``, person ``pid``."""
        perm = self.table.get((cam, pid))
        if perm is None:
            raise MvdError(f"{self.source}: no permutation for camera {cam} person {pid} "
                           f"(the data set has {n_images} images there)")
        if perm.shape[1] != n_images:
            raise MvdError(f"{self.source}: camera {cam} person {pid}: a permutation of "
                           f"{perm.shape[1]} images, the data set has {n_images}")
        if not 0 <= trial < perm.shape[0]:
            raise MvdError(f"trial: expected 0..{perm.shape[0] - 1} (the {perm.shape[0]} trials of "
                           f"{self.source}), got {trial}")
        return perm[trial]


#: where :func:`find_sysu_permutations` looks under the data set root, in order
SYSU_PERM_LOCATIONS: tuple[str, ...] = ("exp", "evaluation/data_split", "evaluation", "data_split", ".")
SYSU_PERM_FILE = "rand_perm_cam.mat"


def find_sysu_permutations(root: str | os.PathLike[str], eval_dir: str | os.PathLike[str] = "") -> Path:
    """``<eval_dir>/rand_perm_cam.mat`` if ``eval_dir`` is given, else the first of
    :data:`SYSU_PERM_LOCATIONS` under the SYSU-MM01 ``root`` that has it."""
    folders = [Path(eval_dir)] if str(eval_dir) else [Path(root) / d for d in SYSU_PERM_LOCATIONS]
    for folder in folders:
        if (folder / SYSU_PERM_FILE).is_file():
            return folder / SYSU_PERM_FILE
    where = ", ".join(str(f) for f in folders)
    raise MvdError(f"{SYSU_PERM_FILE}: not found in {where} (eval.gallery_draw=official needs the "
                   "SYSU-MM01 evaluation files; set eval.sysu_eval_dir to their folder)")


def load_sysu_permutations(path: str | os.PathLike[str]) -> SysuPermutations:
    """Read ``rand_perm_cam.mat`` (scipy.io.loadmat; the official evaluation's file)."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise MvdError(f"{path}: file not found (expected the SYSU-MM01 rand_perm_cam.mat)") from None
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise MvdError(f"{path}: not a readable MAT file ({e})") from None
    cells = mat.get("rand_perm_cam")
    if cells is None or cells.dtype != object or cells.size < 6:
        raise MvdError(f"{path}: expected a variable rand_perm_cam, a 6x1 cell array (one per camera)")
    cells = cells.reshape(-1)
    table: dict[tuple[int, int], np.ndarray] = {}
    for cam in range(1, 7):
        people = np.asarray(cells[cam - 1])
        if people.dtype == object and people.size == 1 and np.asarray(people.reshape(-1)[0]).dtype == object:
            people = np.asarray(people.reshape(-1)[0])  # loadmat wraps a cell in a 1x1 cell
        if people.dtype != object:
            raise MvdError(f"{path}: rand_perm_cam{{{cam}}}: expected a cell array over persons")
        for index, entry in enumerate(people.reshape(-1)):
            perm = np.asarray(entry)
            if perm.size == 0:
                continue
            if perm.ndim != 2 or not np.all(np.sort(perm, axis=1) == np.arange(1, perm.shape[1] + 1)):
                raise MvdError(f"{path}: rand_perm_cam{{{cam}}}{{{index + 1}}}: expected trials x n "
                               f"rows, each a permutation of 1..n, got shape {perm.shape}")
            table[(cam, index + 1)] = perm.astype(np.int64) - 1
    return SysuPermutations(str(path), table)


def sysu_gallery_indices(
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    mode: SysuMode = "all",
    shot: SysuShot = "single",
    trial: int = 0,
    draw: SysuDraw = "agw",
    *,
    file_index: np.ndarray | None = None,
    perms: SysuPermutations | None = None,
) -> np.ndarray:
    """Indices into the visible test set forming one trial's gallery: for every (identity,
    camera) present among ``mode``'s cameras, one image (``single``) or up to 10 (``multi``).

    ``draw`` (``eval.gallery_draw``; the three give different per-trial galleries, SPEC §5):

    * ``agw`` — AGW's ``process_gallery_sysu`` (``data_manager.py``; the MVD test scripts use
      the same): ``random.seed(trial)``, then for each id in ascending order and each of the
      mode's cameras in order (1, 2, 4, 5 | 1, 2), ``random.choice`` over that folder's sorted
      files. Multi-shot: AGW draws ``np.random.choice(files, 10, replace=False)`` from NumPy's
      global, unseeded stream; here ``np.random.RandomState(trial)`` in the same order (all
      files when a folder has fewer than 10). Id-major order.
    * ``official`` — the data set's evaluation (``rand_perm_cam.mat``, ``perms``): camera by
      camera, person by person, the first 1 (10) entries of the trial's fixed permutation.
      Camera-major order. ``trial`` is the permutation row (0..9).
    * ``seeded`` — the toolkit's own: uniform without replacement, ``np.random.default_rng(trial)``
      keys drawn for every image whatever the mode, so an indoor draw is the all-search draw
      restricted to cameras 1 and 2. Ascending indices.

    ``file_index``: each image's position in its folder's sorted file list
    (:func:`sysu_file_index`; default: the order of appearance within each group). The same
    inputs and trial always give the same indices.
    """
    g_pids = _labels("g_pids", g_pids)
    g_cams = _labels("g_cams", g_cams, g_pids.shape[0])
    cams = SYSU_GALLERY_CAMS[_choice("mode", mode, SYSU_GALLERY_CAMS)]
    per_group = SYSU_SHOTS[_choice("shot", shot, SYSU_SHOTS)]
    draw = _choice("draw", draw, SYSU_GALLERY_DRAWS)  # type: ignore[assignment]
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or trial < 0:
        raise MvdError(f"trial: expected a non-negative integer seed, got {trial!r}")
    cand = np.flatnonzero(np.isin(g_cams, cams))
    if cand.shape[0] == 0:
        raise MvdError(f"g_cams: expected images from cameras {cams} ({mode} search), found none")
    if draw == "seeded":
        keys = np.random.default_rng(int(trial)).random(g_pids.shape[0])
        cand = cand[np.lexsort((keys[cand], g_cams[cand], g_pids[cand]))]  # by (pid, cam), shuffled
        p, c = g_pids[cand], g_cams[cand]
        new_group = np.r_[True, (p[1:] != p[:-1]) | (c[1:] != c[:-1])]
        group_start = np.flatnonzero(new_group)
        within = np.arange(cand.shape[0]) - group_start[np.cumsum(new_group) - 1]
        return np.sort(cand[within < per_group])
    fidx = sysu_file_index(g_pids, g_cams) if file_index is None else _labels(
        "file_index", file_index, g_pids.shape[0])
    cand = cand[np.lexsort((fidx[cand], g_cams[cand], g_pids[cand]))]  # groups in file order
    p, c = g_pids[cand], g_cams[cand]
    starts = np.flatnonzero(np.r_[True, (p[1:] != p[:-1]) | (c[1:] != c[:-1])])
    members = {(int(p[s]), int(c[s])): cand[s:e] for s, e in zip(starts, np.r_[starts[1:], cand.shape[0]])}
    for key, idx in members.items():
        if not np.array_equal(fidx[idx], np.arange(idx.shape[0])):
            raise MvdError(f"file_index: camera {key[1]} person {key[0]}: expected positions "
                           f"0..{idx.shape[0] - 1} in the folder's sorted file list")
    ids = sorted({k[0] for k in members})
    out: list[np.ndarray] = []
    if draw == "agw":
        py_rng = random.Random(int(trial))  # == random.seed(trial)
        np_rng = np.random.RandomState(int(trial))
        for pid in ids:
            for cam in cams:
                files = members.get((pid, cam))
                if files is None:
                    continue
                if per_group == 1:
                    out.append(files[[py_rng.choice(range(files.shape[0]))]])
                else:
                    k = min(per_group, files.shape[0])
                    out.append(files[np_rng.choice(files.shape[0], k, replace=False)])
        return np.concatenate(out)
    if perms is None:
        raise MvdError("perms: gallery_draw=official needs the SYSU-MM01 rand_perm_cam.mat "
                       "(load_sysu_permutations)")
    for cam in cams:
        for pid in ids:
            files = members.get((pid, cam))
            if files is not None:
                out.append(files[perms.rows(cam, pid, files.shape[0], int(trial))[:per_group]])
    return np.concatenate(out)


def sysu_draw_inputs(testset: TestSet, cfg: EvalConfig) -> dict[str, Any]:
    """The keyword arguments :func:`run_sysu` needs for ``cfg.gallery_draw`` on a SYSU-MM01
    test set: the gallery's file indices (from its paths) and, for ``official``, the data set's
    ``rand_perm_cam.mat`` (``cfg.sysu_eval_dir``, else found under the data set root)."""
    g = testset.gallery
    out: dict[str, Any] = {"gallery_draw": cfg.gallery_draw}
    if g.paths is not None:
        out["g_file_index"] = sysu_file_index(g.pids, g.cams, g.paths)
    if cfg.gallery_draw == "official":
        root = Path(g.paths[0]).parents[2] if g.paths else Path(".")
        out["perms"] = load_sysu_permutations(find_sysu_permutations(root, cfg.sysu_eval_dir))
    return out


def run_sysu(
    q_feats: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_feats: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    mode: SysuMode = "all",
    shot: SysuShot = "single",
    trials: Iterable[int] = SYSU_TRIALS,
    metric: DistanceMetric = "euclidean",
    *,
    gallery_draw: SysuDraw = "agw",
    g_file_index: np.ndarray | None = None,
    perms: SysuPermutations | None = None,
    max_rank: int = 20,
    chunk: int | None = None,
    rerank: bool = False,
) -> Report:
    """SYSU-MM01 evaluation over gallery-draw trials (SPEC §5).

    Args:
        q_feats, q_pids, q_cams: the infrared test images (cameras 3 and 6), features once.
        g_feats, g_pids, g_cams: the whole visible test set (cameras 1, 2, 4, 5), features once.
        mode: ``"all"`` (gallery cameras 1, 2, 4, 5) or ``"indoor"`` (1, 2).
        shot: ``"single"`` (1 image per identity and camera) or ``"multi"`` (up to 10).
        trials: seeds of the gallery draws (default 0..9; official: permutation rows).
        gallery_draw: ``agw`` | ``official`` | ``seeded``, see :func:`sysu_gallery_indices`
            (with ``g_file_index`` and, for ``official``, ``perms``; :func:`sysu_draw_inputs`
            builds both from a test set).
        metric: distance metric, see :func:`~mvd_core.eval.metrics.distance`.

    The query x candidate-gallery distance matrix is computed once; each trial selects its
    columns and calls :func:`~mvd_core.eval.metrics.evaluate` with ``protocol="sysu"`` (cam-3
    queries never see cam-2 images; CMC on the identity-de-duplicated list).
    """
    n_q = _rows("q_feats", q_feats)
    n_g = _rows("g_feats", g_feats)
    q_pids, q_cams = _labels("q_pids", q_pids, n_q), _labels("q_cams", q_cams, n_q)
    g_pids, g_cams = _labels("g_pids", g_pids, n_g), _labels("g_cams", g_cams, n_g)
    mode = _choice("mode", mode, SYSU_GALLERY_CAMS)  # type: ignore[assignment]
    shot = _choice("shot", shot, SYSU_SHOTS)  # type: ignore[assignment]
    gallery_draw = _choice("gallery_draw", gallery_draw, SYSU_GALLERY_DRAWS)  # type: ignore[assignment]
    for name, cams, allowed in (
        ("q_cams", q_cams, SYSU_QUERY_CAMS),
        ("g_cams", g_cams, SYSU_GALLERY_CAMS["all"]),
    ):
        bad = np.setdiff1d(cams, allowed)
        if bad.size:
            raise MvdError(f"{name}: expected SYSU-MM01 cameras {allowed}, got also {bad.tolist()}")
    trials = list(trials)
    if not trials:
        raise MvdError("trials: expected at least one trial seed")

    cand = np.flatnonzero(np.isin(g_cams, SYSU_GALLERY_CAMS[mode]))
    if cand.shape[0] == 0:
        raise MvdError(f"g_cams: no image from the {mode}-search cameras")

    def draw(trial: int) -> np.ndarray:
        return sysu_gallery_indices(g_pids, g_cams, mode, shot, trial, gallery_draw,
                                    file_index=g_file_index, perms=perms)

    rows = _drawn_trials(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, trials, draw, cand,
                         protocol="sysu", label=f"SYSU-MM01 {mode}/{shot}", metric=metric,
                         max_rank=max_rank, chunk=chunk, rerank=rerank)
    return Report.from_results(
        rows,
        name=f"SYSU-MM01 {mode}-search {shot}-shot",
        settings={
            "dataset": "sysu",
            "mode": mode,
            "shot": shot,
            "gallery_draw": gallery_draw,
            "metric": metric,
            "num_query": n_q,
            "max_rank": max_rank,
            **({"rerank": "k-reciprocal"} if rerank else {}),
        },
    )


# --------------------------------------------------------------------------------------------
# RegDB


class RegDBTrial(NamedTuple):
    """Features and labels of one RegDB trial (the test split files of that trial)."""

    visible_feats: np.ndarray
    visible_pids: np.ndarray
    thermal_feats: np.ndarray
    thermal_pids: np.ndarray


def regdb_trial(
    visible_feats: np.ndarray,
    visible_pids: np.ndarray,
    thermal_feats: np.ndarray,
    thermal_pids: np.ndarray,
    *,
    direction: RegDBDirection = "v2t",
    metric: DistanceMetric = "euclidean",
    max_rank: int = 20,
    chunk: int | None = None,
    rerank: bool = False,
) -> EvalResult:
    """One RegDB trial: ``"v2t"`` = visible queries against the thermal gallery, ``"t2v"`` the
    reverse; nothing excluded (``protocol="regdb"``)."""
    direction = _choice("direction", direction, REGDB_DIRECTIONS)  # type: ignore[assignment]
    v_pids = _labels("visible_pids", visible_pids, _rows("visible_feats", visible_feats))
    t_pids = _labels("thermal_pids", thermal_pids, _rows("thermal_feats", thermal_feats))
    v_cams = np.full(v_pids.shape[0], _REGDB_VISIBLE_CAM)
    t_cams = np.full(t_pids.shape[0], _REGDB_THERMAL_CAM)
    if direction == "v2t":
        q, qp, qc, g, gp, gc = visible_feats, v_pids, v_cams, thermal_feats, t_pids, t_cams
    else:
        q, qp, qc, g, gp, gc = thermal_feats, t_pids, t_cams, visible_feats, v_pids, v_cams
    return evaluate_distances(
        _rerank(q, g) if rerank else distance(q, g, metric), qp, gp, qc, gc,
        protocol="regdb", max_rank=max_rank, chunk=chunk
    )


def run_regdb(
    trials: Mapping[int, RegDBTrial] | Iterable[tuple[int, RegDBTrial]],
    *,
    direction: RegDBDirection = "v2t",
    metric: DistanceMetric = "euclidean",
    max_rank: int = 20,
    chunk: int | None = None,
    rerank: bool = False,
) -> Report:
    """RegDB over trials: ``trials`` maps (or yields ``(t, data)`` pairs) trial t in 1..10 to
    that trial's features, so a generator can extract one trial at a time. For both directions
    call twice with a mapping or list (a generator is consumed by the first call)."""
    pairs = trials.items() if isinstance(trials, Mapping) else trials
    rows: list[tuple[int, EvalResult]] = []
    for trial, data in pairs:
        if trial not in REGDB_TRIALS:
            raise MvdError(f"trials: expected trial numbers in 1..10, got {trial!r}")
        result = regdb_trial(
            *data, direction=direction, metric=metric, max_rank=max_rank, chunk=chunk,
            rerank=rerank,
        )
        log.info(
            "RegDB %s trial %s: R1 %.2f mAP %.2f",
            direction,
            trial,
            100 * result.cmc[0],
            100 * result.mAP,
        )
        rows.append((int(trial), result))
    arrow = {"v2t": "visible->thermal", "t2v": "thermal->visible"}[direction]
    return Report.from_results(
        rows,
        name=f"RegDB {arrow}",
        settings={
            "dataset": "regdb",
            "direction": direction,
            "metric": metric,
            "max_rank": max_rank,
            **({"rerank": "k-reciprocal"} if rerank else {}),
        },
    )


# --------------------------------------------------------------------------------------------
# LLCM


def llcm_gallery_indices(
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    trial: int = 0,
    *,
    file_index: np.ndarray | None = None,
) -> np.ndarray:
    """Indices into the gallery-modality test images forming one LLCM trial's gallery: the
    public ``process_gallery_llcm`` (``DEEN/data_manager.py``, see :mod:`mvd_core.data.llcm`):
    ``random.seed(trial)``, then for each id in ascending order and each of its cameras in
    ascending order, one ``random.choice`` over that folder's sorted files. ``file_index``: each
    image's position in its folder's sorted file list (:func:`sysu_file_index`; default: the
    order of appearance within each (id, camera) group)."""
    g_pids = _labels("g_pids", g_pids)
    g_cams = _labels("g_cams", g_cams, g_pids.shape[0])
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or trial < 0:
        raise MvdError(f"trial: expected a non-negative integer seed, got {trial!r}")
    n = g_pids.shape[0]
    if n == 0:
        raise MvdError("g_pids: expected at least one gallery image")
    fidx = sysu_file_index(g_pids, g_cams) if file_index is None else _labels("file_index", file_index, n)
    order = np.lexsort((fidx, g_cams, g_pids))  # (id, camera) groups ascending, files in order
    p, c = g_pids[order], g_cams[order]
    starts = np.flatnonzero(np.r_[True, (p[1:] != p[:-1]) | (c[1:] != c[:-1])])
    ends = np.r_[starts[1:], n]
    rng = random.Random(int(trial))  # == random.seed(trial)
    out = np.empty(starts.shape[0], np.int64)
    for j, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        if not np.array_equal(fidx[order[s:e]], np.arange(e - s)):
            raise MvdError(f"file_index: camera {c[s]} person {p[s]}: expected positions "
                           f"0..{e - s - 1} in the folder's sorted file list")
        out[j] = order[s + rng.choice(range(e - s))]
    return out


def run_llcm(
    q_feats: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_feats: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    direction: RegDBDirection = "t2v",
    trials: Iterable[int] = LLCM_TRIALS,
    metric: DistanceMetric = "euclidean",
    *,
    g_file_index: np.ndarray | None = None,
    max_rank: int = 20,
    chunk: int | None = None,
    rerank: bool = False,
) -> Report:
    """LLCM over gallery-draw trials: every query-modality test image against each trial's
    :func:`llcm_gallery_indices` draw from the other modality's test images; ``protocol="llcm"``
    (same pid and camera removed, CMC on the identity-de-duplicated list). ``direction``: ``t2v``
    = infrared queries ("IR to VIS", the public default), ``v2t`` = visible queries. The query x
    whole-gallery distances are computed once; each trial selects its columns."""
    direction = _choice("direction", direction, LLCM_DIRECTIONS)  # type: ignore[assignment]
    n_q = _rows("q_feats", q_feats)
    n_g = _rows("g_feats", g_feats)
    q_pids, q_cams = _labels("q_pids", q_pids, n_q), _labels("q_cams", q_cams, n_q)
    g_pids, g_cams = _labels("g_pids", g_pids, n_g), _labels("g_cams", g_cams, n_g)
    trials = list(trials)
    if not trials:
        raise MvdError("trials: expected at least one trial seed")
    arrow = {"v2t": "visible->infrared", "t2v": "infrared->visible"}[direction]

    def draw(trial: int) -> np.ndarray:
        return llcm_gallery_indices(g_pids, g_cams, trial, file_index=g_file_index)

    rows = _drawn_trials(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, trials, draw,
                         np.arange(n_g), protocol="llcm", label=f"LLCM {direction}", metric=metric,
                         max_rank=max_rank, chunk=chunk, rerank=rerank)
    return Report.from_results(
        rows,
        name=f"LLCM {arrow}",
        settings={
            "dataset": "llcm",
            "direction": direction,
            "gallery_draw": "public (random.seed(trial), one random.choice per id and camera)",
            "metric": metric,
            "num_query": n_q,
            "max_rank": max_rank,
            **({"rerank": "k-reciprocal"} if rerank else {}),
        },
    )


# --------------------------------------------------------------------------------------------
# report


def _percentages(result: EvalResult) -> dict[str, float]:
    """Report columns of one result in percent (NaN for a rank beyond the CMC's length)."""
    out = {
        f"R{k}": 100 * result.cmc[k - 1] if k <= result.max_rank else math.nan
        for k in (1, 5, 10, 20)
    }
    out["mAP"] = 100 * result.mAP
    out["mINP"] = 100 * result.mINP
    return out


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 2)


@dataclass(frozen=True, eq=False)
class Report:
    """Per-trial results and their mean and standard deviation over trials.

    Values are percentages; :meth:`to_table` and :meth:`to_dict` show them with two decimals.
    The std is the population standard deviation (ddof=0) over the trials.
    """

    name: str
    rows: tuple[tuple[int | str, EvalResult], ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_results(
        cls,
        rows: Iterable[tuple[int | str, EvalResult]],
        *,
        name: str = "evaluation",
        settings: Mapping[str, Any] | None = None,
    ) -> Report:
        """Build a report from ``(trial label, result)`` pairs (at least one, labels unique)."""
        rows = tuple((label, result) for label, result in rows)
        if not rows:
            raise MvdError("rows: expected at least one (trial, EvalResult) pair")
        labels = [label for label, _ in rows]
        if len(set(labels)) != len(labels):
            raise MvdError(f"rows: expected unique trial labels, got {labels}")
        for label, result in rows:
            if not isinstance(result, EvalResult):
                raise MvdError(
                    f"rows: trial {label!r}: expected an EvalResult, got {type(result).__name__}"
                )
        return cls(name=name, rows=rows, settings=dict(settings or {}))

    def values(self) -> dict[str, np.ndarray]:
        """Per-column arrays (one entry per trial, percent, unrounded)."""
        per_trial = [_percentages(r) for _, r in self.rows]
        return {c: np.array([p[c] for p in per_trial]) for c in REPORT_COLUMNS}

    @property
    def mean(self) -> dict[str, float]:
        """Mean over trials per column (percent, unrounded; NaN if a rank is unavailable)."""
        return {c: float(v.mean()) for c, v in self.values().items()}

    @property
    def std(self) -> dict[str, float]:
        """Population std over trials per column (percent, unrounded)."""
        return {c: float(v.std()) for c, v in self.values().items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content; numbers are percentages rounded to two decimals (None = n/a)."""
        trials = []
        for label, result in self.rows:
            row: dict[str, Any] = {"trial": label, "num_valid": result.num_valid}
            row.update({c: _round(v) for c, v in _percentages(result).items()})
            trials.append(row)
        return {
            "name": self.name,
            "settings": dict(self.settings),
            "units": "percent",
            "num_trials": len(self.rows),
            "trials": trials,
            "mean": {c: _round(v) for c, v in self.mean.items()},
            "std": {c: _round(v) for c, v in self.std.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically (a temporary file in the same folder, then
        ``os.replace``); a reader never sees a half-written file. Returns the path."""
        from mvd_core.io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_json() + "\n")
        return path

    def to_table(self) -> str:
        """Fixed-width text table: one row per trial, then mean and std (percent, 2 decimals)."""

        def cells(label: object, values: Mapping[str, float], extra: str) -> str:
            nums = "".join(
                f"{'-' if math.isnan(values[c]) else format(values[c], '.2f'):>8}"
                for c in REPORT_COLUMNS
            )
            return f"{str(label):<8}{nums}{extra:>8}"

        header = f"{'trial':<8}" + "".join(f"{c:>8}" for c in REPORT_COLUMNS) + f"{'valid':>8}"
        lines = [self.name, header, "-" * len(header)]
        lines += [cells(label, _percentages(r), str(r.num_valid)) for label, r in self.rows]
        lines.append("-" * len(header))
        lines.append(cells("mean", self.mean, ""))
        lines.append(cells("std", self.std, ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the typed boundary: a test set and its features → the report of its protocol


def protocol_key(testset: TestSet, cfg: EvalConfig) -> str:
    """The file-name stem of a test set's report under ``cfg``: ``sysu-all-single``,
    ``regdb-v2t-trial3``, ``val-t2v``."""
    if testset.protocol == "sysu":
        return f"sysu-{cfg.sysu_mode}-{cfg.shot}"
    if testset.protocol == "llcm":
        return f"llcm-{testset.direction}"
    if testset.trial is None:
        return f"val-{testset.direction}"
    return f"regdb-{testset.direction}-trial{testset.trial}"


def evaluate(
    testset: TestSet,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    cfg: EvalConfig,
    *,
    trials: int | None = None,
    rerank: bool = False,
) -> Report:
    """Evaluate one test set's query/gallery features under its own protocol.

    SYSU-MM01 (``testset.protocol == "sysu"``): ``cfg.sysu_mode`` / ``cfg.shot`` over
    ``trials`` (default ``cfg.trials``) gallery draws. RegDB: the test set's trial and direction
    (its query modality); a validation split (``trial`` None) is one "val" row. LLCM: its
    direction over ``trials`` (default ``cfg.trials``) gallery draws (:func:`run_llcm`). ``rerank``:
    k-reciprocal re-ranking of each trial's query x gallery distances (:mod:`mvd_core.eval.rerank`).
    """
    q, g = testset.query, testset.gallery
    if _rows("q_feats", q_feats) != len(q) or _rows("g_feats", g_feats) != len(g):
        raise MvdError(
            f"{testset.name}: expected {len(q)} query and {len(g)} gallery features, got "
            f"{len(q_feats)} and {len(g_feats)}"
        )
    if testset.protocol == "sysu":
        n = cfg.trials if trials is None else trials
        return run_sysu(
            q_feats, q.pids, q.cams, g_feats, g.pids, g.cams,
            mode=cfg.sysu_mode, shot=cfg.shot, trials=range(n), metric=cfg.metric,  # type: ignore[arg-type]
            **sysu_draw_inputs(testset, cfg),  # cfg.gallery_draw (agw | official | seeded)
            rerank=rerank,
        )
    if testset.protocol == "llcm":
        n = cfg.trials if trials is None else trials
        return run_llcm(
            q_feats, q.pids, q.cams, g_feats, g.pids, g.cams, direction=testset.direction,  # type: ignore[arg-type]
            trials=range(n), metric=cfg.metric,  # type: ignore[arg-type]
            g_file_index=sysu_file_index(g.pids, g.cams, g.paths) if g.paths is not None else None,
            rerank=rerank,
        )
    direction = testset.direction
    if direction == "v2t":
        data = RegDBTrial(q_feats, q.pids, g_feats, g.pids)
    else:
        data = RegDBTrial(g_feats, g.pids, q_feats, q.pids)
    if testset.trial is None:  # a validation split carved from the training ids
        result = regdb_trial(*data, direction=direction, metric=cfg.metric, rerank=rerank)  # type: ignore[arg-type]
        return Report.from_results(
            [("val", result)], name=testset.name,
            settings={"dataset": "validation", "direction": direction, "metric": cfg.metric},
        )
    return run_regdb({testset.trial: data}, direction=direction, metric=cfg.metric, rerank=rerank)  # type: ignore[arg-type]


def evaluate_all(
    testset: TestSet,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    cfg: EvalConfig,
    *,
    sysu_modes: Iterable[str] = ("all", "indoor"),
    shots: Iterable[str] = ("single",),
    rerank: bool = False,
) -> dict[str, Report]:
    """Every protocol of the test set from one feature extraction, keyed by :func:`protocol_key`:
    SYSU-MM01 each of ``sysu_modes`` × ``shots``; RegDB both directions of its trial; LLCM both
    directions (``llcm-v2t``, ``llcm-t2v``)."""
    import dataclasses

    out: dict[str, Report] = {}
    if testset.protocol == "sysu":
        for mode in sysu_modes:
            for shot in shots:
                sub = dataclasses.replace(cfg, sysu_mode=mode, shot=shot)
                out[protocol_key(testset, sub)] = evaluate(testset, q_feats, g_feats, sub, rerank=rerank)
        return out
    for ts, qf, gf in ((testset, q_feats, g_feats), (testset.reversed(), g_feats, q_feats)):
        out[protocol_key(ts, cfg)] = evaluate(ts, qf, gf, cfg, rerank=rerank)
    return out
