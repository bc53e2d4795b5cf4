"""Re-identification metrics: CMC, mAP and mINP from a distance matrix, vectorised over queries.

Conventions (SPEC §5):

* Smaller distance = closer. Ties are broken by gallery order (the stable order of
  ``(distance, gallery index)``).
* ``protocol="sysu"``: a query from camera 3 never sees gallery camera 2 (same location). The
  CMC is computed on the ranked list with repeated identities removed (first occurrence of each
  gallery identity kept); mAP and mINP on the full (filtered) list.
* ``protocol="regdb"``: nothing removed; standard CMC.
* ``protocol="market"``: gallery items with the query's pid *and* camera are removed
  (torchreid / Market-1501 convention); standard CMC.
* ``protocol="llcm"``: LLCM's ``eval_llcm`` (the data set's public code): the ``market`` removal
  (same pid *and* camera number, across modalities), then the CMC on the identity-de-duplicated
  list as for ``sysu``; mAP and mINP on the full (filtered) list.
* AP = mean over true matches of ``k / rank_k``; INP = ``#true matches / rank of the last one``.
  Queries without a true match (after removal) are skipped; every average divides by the
  number of valid queries. A CMC curve keeps its last value past the end of a short list.

How it is fast: no gallery is argsorted. Each block of query rows is sorted by value
(``np.sort``), and the position of each true match in its row is found by a vectorised
bisection over all (query, match) pairs at once; the per-row exclusion, the AP sums and the
de-duplicated rank are then bincounts over the flat list of matches. Rows in which a true
match ties exactly with another gallery item fall back to a stable argsort of those rows only.
Peak extra memory is a few copies of one block of ``chunk`` rows.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np

from mvd_core.errors import MvdError

__all__ = ["PROTOCOLS", "DISTANCE_METRICS", "EvalResult", "PerQuery", "evaluate", "distance"]

log = logging.getLogger(__name__)

Protocol = Literal["sysu", "regdb", "market", "llcm"]
DistanceMetric = Literal["euclidean", "cosine"]

PROTOCOLS: tuple[str, ...] = ("sysu", "regdb", "market", "llcm")
DISTANCE_METRICS: tuple[str, ...] = ("euclidean", "cosine")

#: Default block size in distance-matrix entries (rows per block = this // num_gallery).
_BLOCK_ENTRIES = 1 << 22
#: The SYSU-MM01 exclusion: queries from this camera ...
_SYSU_QUERY_CAM = 3
#: ... never see gallery items from this camera.
_SYSU_EXCLUDED_GALLERY_CAM = 2


@dataclass(frozen=True, eq=False)
class PerQuery:
    """What :func:`evaluate` knows about every valid query, so any plot can be made later.

    Attributes (V = number of valid queries, in ascending query order):
        query: (V,) row of each valid query in the distance matrix.
        ap, inp: (V,) average precision and inverse negative penalty (fractions).
        first_rank: (V,) 1-based rank of the first true match, as the CMC counts it (SYSU-MM01:
            in the list with repeated identities removed).
        match_ranks: 1-based rank of every true match in the (filtered) list, query after query;
            those of ``query[v]`` are ``match_ranks[offsets[v]:offsets[v + 1]]``.
        offsets: (V + 1,) start of each query's matches in ``match_ranks``.
        top: (V, K) gallery columns of the K nearest items, closest first (stable order; the
            SYSU-MM01 camera-2 exclusion applied), K = min(:data:`TOP_K`, gallery size).
    """

    query: np.ndarray
    ap: np.ndarray
    inp: np.ndarray
    first_rank: np.ndarray
    match_ranks: np.ndarray
    offsets: np.ndarray
    top: np.ndarray
    num_gallery: int = 0

    def cmc(self) -> np.ndarray:
        """The full CMC curve, ranks 1..``num_gallery`` (fractions of the valid queries)."""
        n = max(1, self.num_gallery, int(self.first_rank.max(initial=0)))
        hist = np.bincount(self.first_rank - 1, minlength=n)
        return np.cumsum(hist[:n]) / max(1, self.first_rank.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as an array (``cmc``: the full curve)."""
        out = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        out["cmc"] = self.cmc()
        return out


#: gallery items kept per query in :attr:`PerQuery.top`
TOP_K = 10


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Metrics of one evaluation, averaged over the valid queries.

    Attributes:
        cmc: float64 array of length ``max_rank``; ``cmc[k-1]`` is the fraction (0..1) of valid
            queries whose first true match is within the top ``k`` (read-only).
        mAP: mean average precision (fraction 0..1).
        mINP: mean inverse negative penalty (fraction 0..1).
        num_valid: number of queries with at least one true match (after exclusions).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    #: per-query details (see :class:`PerQuery`); None when built by hand
    per_query: PerQuery | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        cmc = np.array(self.cmc, dtype=np.float64)
        if cmc.ndim != 1 or cmc.size == 0:
            raise MvdError(f"cmc: expected a non-empty 1-D array, got shape {cmc.shape}")
        cmc.setflags(write=False)
        object.__setattr__(self, "cmc", cmc)
        object.__setattr__(self, "mAP", float(self.mAP))
        object.__setattr__(self, "mINP", float(self.mINP))
        object.__setattr__(self, "num_valid", int(self.num_valid))

    @property
    def max_rank(self) -> int:
        """Length of the CMC curve."""
        return int(self.cmc.shape[0])

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based), as a fraction."""
        if not 1 <= k <= self.max_rank:
            raise MvdError(f"k: expected 1..{self.max_rank}, got {k}")
        return float(self.cmc[k - 1])


# --------------------------------------------------------------------------------------------
# input checks


def _check_matrix(name: str, value: object, what: str) -> np.ndarray:
    """A finite, non-empty, real 2-D array; ints become float64, float16 becomes float32."""
    a = np.asarray(value)
    if a.ndim != 2:
        raise MvdError(f"{name}: expected a 2-D array of shape {what}, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise MvdError(f"{name}: expected a non-empty array of shape {what}, got shape {a.shape}")
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f":
        raise MvdError(f"{name}: expected real numbers, got dtype {a.dtype}")
    elif a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    # min/max propagate NaN and expose +-inf without a full-size temporary.
    if not (np.isfinite(a.min()) and np.isfinite(a.max())):
        raise MvdError(f"{name}: expected finite values, found NaN or infinity")
    return a


def _check_labels(name: str, value: object, n: int, what: str) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1 or a.shape[0] != n:
        raise MvdError(f"{name}: expected a 1-D array of length {n} ({what}), got shape {a.shape}")
    if a.dtype.kind not in "biu":
        raise MvdError(f"{name}: expected integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MvdError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# distances


def distance(
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    metric: DistanceMetric = "euclidean",
) -> np.ndarray:
    """Distance matrix ``(num_query, num_gallery)``; smaller means closer.

    * ``"euclidean"``: ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))`` on the features as given (the
      caller normalises them if it wants). Negative values left by rounding are clipped to 0
      before the square root, so identical vectors give 0, never NaN.
    * ``"cosine"``: ``-q.g / (|q| |g|)`` (norms clamped below at 1e-12, like torch's
      ``F.normalize``), in [-1, 1]; the *negated* cosine similarity, so that smaller is closer.
      On L2-normalised features both metrics give the same ranking.

    float32 inputs give a float32 matrix (computed in float32 unless the squared norms could
    overflow it, in which case float64 is used and the result cast back); anything else gives
    float64.
    """
    q = _check_matrix("query_feats", query_feats, "(num_query, dim)")
    g = _check_matrix("gallery_feats", gallery_feats, "(num_gallery, dim)")
    if q.shape[1] != g.shape[1]:
        raise MvdError(
            f"gallery_feats: expected feature dimension {q.shape[1]} (as query_feats), "
            f"got shape {g.shape}"
        )
    if metric not in DISTANCE_METRICS:
        raise MvdError(f"metric: expected one of {DISTANCE_METRICS}, got {metric!r}")
    out_dtype = np.result_type(q.dtype, g.dtype)
    qq = np.einsum("ij,ij->i", q, q, dtype=np.float64)
    gg = np.einsum("ij,ij->i", g, g, dtype=np.float64)
    work = out_dtype
    if out_dtype == np.float32 and max(qq.max(), gg.max()) > 1e36:
        work = np.dtype(np.float64)  # |q|^2 or q.g would overflow float32
    q = q.astype(work, copy=False)
    g = g.astype(work, copy=False)
    if metric == "euclidean":
        d = q @ g.T
        d *= -2.0
        d += qq.astype(work)[:, None]
        d += gg.astype(work)[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
    else:
        qn = q / np.maximum(np.sqrt(qq), 1e-12).astype(work)[:, None]
        gn = g / np.maximum(np.sqrt(gg), 1e-12).astype(work)[:, None]
        d = qn @ gn.T
        np.negative(d, out=d)
    return d.astype(out_dtype, copy=False)


# --------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class _Gallery:
    """A gallery (or a column subset of one) grouped by identity."""

    pids: np.ndarray  # (G,)
    cams: np.ndarray  # (G,)
    order: np.ndarray  # (G,) column indices, stably sorted by pid
    uniq: np.ndarray  # (P,) sorted distinct pids
    starts: np.ndarray  # (P,) start of each identity's run in `order`
    counts: np.ndarray  # (P,) images per identity

    @classmethod
    def build(cls, pids: np.ndarray, cams: np.ndarray) -> _Gallery:
        order = np.argsort(pids, kind="stable")
        uniq, starts, counts = np.unique(pids[order], return_index=True, return_counts=True)
        return cls(pids, cams, order, uniq, starts, counts)


class _Accumulator:
    def __init__(self, max_rank: int) -> None:
        self.max_rank = max_rank
        self.first_rank_hist = np.zeros(max_rank + 1, dtype=np.int64)  # last bin: > max_rank
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.parts: list[tuple[np.ndarray, ...]] = []  # per-query details, block by block

    def add(self, first_rank: np.ndarray, ap: np.ndarray, inp: np.ndarray,
            detail: tuple[np.ndarray, ...] | None = None) -> None:
        self.first_rank_hist += np.bincount(
            np.minimum(first_rank, self.max_rank + 1) - 1, minlength=self.max_rank + 1
        )
        self.ap_sum += float(ap.sum())
        self.inp_sum += float(inp.sum())
        self.num_valid += int(first_rank.shape[0])
        if detail is not None:  # (query rows, match ranks, matches per query, top columns)
            self.parts.append((detail[0], ap, inp, first_rank, *detail[1:]))

    def per_query(self) -> PerQuery:
        if not self.parts:
            e = np.zeros(0, np.int64)
            return PerQuery(e, e.astype(float), e.astype(float), e, e, np.zeros(1, np.int64), e.reshape(0, 0))
        query, ap, inp, first, ranks, counts, top = (list(x) for x in zip(*self.parts))
        k = min(t.shape[1] for t in top)
        q = np.concatenate(query)
        order = np.argsort(q, kind="stable")
        counts_all = np.concatenate(counts)
        starts = np.concatenate([[0], np.cumsum(counts_all)])
        flat = np.concatenate(ranks)
        lens = counts_all[order]  # each query's matches, moved to the query's sorted place
        moved = np.concatenate([[0], np.cumsum(lens)])[:-1]
        match_ranks = flat[np.repeat(starts[:-1][order] - moved, lens) + np.arange(int(lens.sum()))]
        return PerQuery(
            query=q[order],
            ap=np.concatenate(ap)[order],
            inp=np.concatenate(inp)[order],
            first_rank=np.concatenate(first)[order].astype(np.int64),
            match_ranks=match_ranks.astype(np.int64),
            offsets=np.concatenate([[0], np.cumsum(counts_all[order])]).astype(np.int64),
            top=np.concatenate([t[:, :k] for t in top])[order].astype(np.int64),
        )


def _count_less(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each i: the number of entries of ``sorted_rows[rows[i]]`` strictly below ``values[i]``.

    A bisection run on all pairs at once (``np.searchsorted`` is 1-D only).
    """
    n_cols = sorted_rows.shape[1]
    flat = sorted_rows.reshape(-1)
    base = rows.astype(np.int64) * n_cols
    lo = np.zeros(rows.shape[0], dtype=np.int64)
    hi = np.full(rows.shape[0], n_cols, dtype=np.int64)
    for _ in range(int(n_cols).bit_length()):
        mid = (lo + hi) >> 1
        active = lo < hi
        below = flat[base + np.minimum(mid, n_cols - 1)] < values
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _stable_positions(block: np.ndarray) -> np.ndarray:
    """``pos[r, j]`` = position of column ``j`` in the stable ascending order of row ``r``."""
    order = np.argsort(block, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.broadcast_to(np.arange(block.shape[1]), order.shape), axis=1)
    return pos


def _eval_block(
    d: np.ndarray,
    sorted_buf: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    gal: _Gallery,
    *,
    remove_same_cam: bool,
    dedup: bool,
    acc: _Accumulator,
    q_index: np.ndarray | None = None,
    col_map: np.ndarray | None = None,
) -> None:
    """Evaluate one block of query rows against `gal` (no Python loop over queries)."""
    n_rows, n_cols = d.shape
    # 1. every gallery item sharing the query's pid, as a flat list grouped by row
    u = np.minimum(np.searchsorted(gal.uniq, q_pids), gal.uniq.shape[0] - 1)
    n_same = np.where(gal.uniq[u] == q_pids, gal.counts[u], 0)
    total = int(n_same.sum())
    if total == 0:
        return
    row_start = np.cumsum(n_same) - n_same
    rows = np.repeat(np.arange(n_rows), n_same)
    cols = gal.order[gal.starts[u][rows] + np.arange(total) - row_start[rows]]
    vals = d[rows, cols]

    # 2. position of each in its row's stable order: #entries below it (+ earlier equal ones)
    s = sorted_buf[:n_rows]
    s[...] = d
    s.sort(axis=1)
    pos = _count_less(s, rows, vals)
    nxt = np.minimum(pos + 1, n_cols - 1)
    tied = (pos + 1 < n_cols) & (s[rows, nxt] == vals)
    if tied.any():
        tie_rows = np.unique(rows[tied])
        local = np.full(n_rows, -1, dtype=np.int64)
        local[tie_rows] = np.arange(tie_rows.shape[0])
        exact = _stable_positions(d[tie_rows])
        sel = local[rows] >= 0
        pos[sel] = exact[local[rows[sel]], cols[sel]]

    # 3. order matches by (row, position); drop same-(pid, cam) items and shift ranks past them
    srt = np.argsort(rows * np.int64(n_cols) + pos, kind="stable")
    rows, cols, pos = rows[srt], cols[srt], pos[srt]
    if remove_same_cam:
        junk = gal.cams[cols] == q_cams[rows]
        before = np.cumsum(junk) - junk
        junk_before = before - before[row_start[rows]]
        good = ~junk
        rows, cols, rank = rows[good], cols[good], (pos - junk_before + 1)[good]
    else:
        rank = pos + 1

    # 4. AP, INP and rank of the first match, per valid row
    n_good = np.bincount(rows, minlength=n_rows)
    valid = np.flatnonzero(n_good)
    if valid.shape[0] == 0:
        return
    good_start = np.cumsum(n_good) - n_good
    k = np.arange(rows.shape[0]) - good_start[rows] + 1
    ap = np.bincount(rows, weights=k / rank, minlength=n_rows)[valid] / n_good[valid]
    first = good_start[valid]
    inp = n_good[valid] / rank[first + n_good[valid] - 1]
    first_rank = rank[first]

    if dedup:
        first_rank = _dedup_first_rank(d, valid, cols[first], u[valid], gal)
    detail = None
    if q_index is not None:  # per-query details: rank of every match, the top-K columns
        every = valid.shape[0] == n_rows  # no copy of the block when every row counts
        top = _top_columns(d if every else d[valid], TOP_K, s if every else s[valid])
        detail = (q_index[valid], rank, n_good[valid], top if col_map is None else col_map[top])
    acc.add(first_rank, ap, inp, detail)


def _top_columns(block: np.ndarray, k: int, sorted_rows: np.ndarray) -> np.ndarray:
    """The ``k`` smallest columns of each row, closest first (ties: lower column first).

    ``sorted_rows`` = ``np.sort(block, axis=1)`` (already made for the ranks): every entry up to
    the row's k-th smallest value is a candidate (at least k per row); ordered by (value,
    column), the first k of each row are kept.
    """
    k = min(k, block.shape[1])
    n = block.shape[0]
    rows, cols = np.nonzero(block <= sorted_rows[:, k - 1 : k])
    if rows.shape[0] == n * k:  # exactly k per row (no tie at the cut): sort each row's k
        cols = cols.reshape(n, k)  # ascending columns, so a stable sort breaks ties by column
        vals = np.take_along_axis(block, cols, axis=1)
        return np.take_along_axis(cols, np.argsort(vals, axis=1, kind="stable"), axis=1)
    order = np.lexsort((cols, block[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    within = np.arange(rows.shape[0]) - np.searchsorted(rows, np.arange(n))[rows]
    return cols[within < k].reshape(n, k)


def _dedup_first_rank(
    d: np.ndarray,
    valid: np.ndarray,
    first_col: np.ndarray,
    true_group: np.ndarray,
    gal: _Gallery,
) -> np.ndarray:
    """Rank of the true identity in the list with repeated identities removed.

    = 1 + the number of other identities whose first occurrence comes before the first true
    match (``first_col``: the first one kept); an identity's first occurrence is its minimum
    distance (ties: lowest index). The true identity itself is never counted: with the
    same-camera removal (``llcm``) its removed images may come before ``first_col``.
    """
    sub = d[valid]
    rows = np.arange(valid.shape[0])
    per_id_min = np.minimum.reduceat(sub[:, gal.order], gal.starts, axis=1)  # (V, P)
    t = sub[rows, first_col][:, None]
    less = per_id_min < t
    less[rows, true_group] = False
    ahead = less.sum(axis=1)
    equal = per_id_min == t
    equal[rows, true_group] = False
    tie = np.flatnonzero(equal.any(axis=1))
    if tie.shape[0]:
        pos = _stable_positions(sub[tie])
        first_pos = np.minimum.reduceat(pos[:, gal.order], gal.starts, axis=1)
        before = first_pos < pos[np.arange(tie.shape[0]), first_col[tie]][:, None]
        before[np.arange(tie.shape[0]), true_group[tie]] = False
        ahead[tie] = before.sum(axis=1)
    return ahead + 1


def evaluate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    *,
    protocol: Protocol,
    max_rank: int = 20,
    chunk: int | None = None,
) -> EvalResult:
    """CMC@1..max_rank, mAP and mINP of a ``(num_query, num_gallery)`` distance matrix.

    Args:
        distmat: distances, smaller = closer; finite; float32 is kept as is.
        q_pids, q_cams: integer identity / camera labels of the queries (rows).
        g_pids, g_cams: integer identity / camera labels of the gallery (columns).
        protocol: ``"sysu"``, ``"regdb"``, ``"market"`` or ``"llcm"`` (see the module docstring).
        max_rank: length of the returned CMC curve.
        chunk: query rows processed together (bounds the extra memory to a few
            ``chunk x num_gallery`` arrays); default: about 4M entries per block.

    Raises:
        MvdError (a ValueError): bad shapes/values, unknown protocol, or no valid query at all.
    """
    if protocol not in PROTOCOLS:
        raise MvdError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    max_rank = _check_positive_int("max_rank", max_rank)
    d = _check_matrix("distmat", distmat, "(num_query, num_gallery)")
    n_q, n_g = d.shape
    q_pids = _check_labels("q_pids", q_pids, n_q, "one per distmat row")
    q_cams = _check_labels("q_cams", q_cams, n_q, "one per distmat row")
    g_pids = _check_labels("g_pids", g_pids, n_g, "one per distmat column")
    g_cams = _check_labels("g_cams", g_cams, n_g, "one per distmat column")
    chunk = max(1, _BLOCK_ENTRIES // n_g) if chunk is None else _check_positive_int("chunk", chunk)

    # (query rows, gallery columns) groups that share one column set; None = all
    groups: list[tuple[np.ndarray | None, np.ndarray | None]]
    if protocol == "sysu":
        from_cam3 = q_cams == _SYSU_QUERY_CAM
        groups = [
            (np.flatnonzero(~from_cam3), None),
            (np.flatnonzero(from_cam3), np.flatnonzero(g_cams != _SYSU_EXCLUDED_GALLERY_CAM)),
        ]
    else:
        groups = [(None, None)]

    acc = _Accumulator(max_rank)
    for rows, cols in groups:
        n_rows = n_q if rows is None else rows.shape[0]
        if n_rows == 0 or (cols is not None and cols.shape[0] == 0):
            continue  # no such queries, or nothing left to match them with
        gal = (
            _Gallery.build(g_pids, g_cams)
            if cols is None
            else _Gallery.build(g_pids[cols], g_cams[cols])
        )
        width = n_g if cols is None else cols.shape[0]
        step = min(chunk, n_rows)
        sorted_buf = np.empty((step, width), dtype=d.dtype)
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            if rows is None:
                block, idx = d[start:stop], slice(start, stop)
            else:
                idx = rows[start:stop]
                block = d[idx] if cols is None else d[np.ix_(idx, cols)]
            _eval_block(
                block,
                sorted_buf,
                q_pids[idx],
                q_cams[idx],
                gal,
                remove_same_cam=protocol in ("market", "llcm"),
                dedup=protocol in ("sysu", "llcm"),
                acc=acc,
                q_index=np.arange(start, stop) if rows is None else idx,
                col_map=cols,
            )

    if acc.num_valid == 0:
        raise MvdError(
            "q_pids: no query has a true match in the gallery (after the protocol's exclusions); "
            "expected at least one"
        )
    cmc = np.cumsum(acc.first_rank_hist[:max_rank]) / acc.num_valid
    log.debug(
        "evaluate(%s): %d x %d, %d valid queries, chunk %d",
        protocol,
        n_q,
        n_g,
        acc.num_valid,
        chunk,
    )
    return EvalResult(
        cmc=cmc,
        mAP=acc.ap_sum / acc.num_valid,
        mINP=acc.inp_sum / acc.num_valid,
        num_valid=acc.num_valid,
        per_query=dataclasses.replace(acc.per_query(), num_gallery=n_g),
    )
