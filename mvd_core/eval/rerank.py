"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), vectorised NumPy with memory bounded by row blocks.

Given query and gallery features, over all ``N = Q + G`` images:

1. ``d`` = squared Euclidean distance, each row divided by its maximum (float32);
2. ``R(i)`` = the ``k1 + 1`` nearest images of ``i`` (stable order; ``i`` itself first);
   the k-reciprocal set ``T(i) = {j ∈ R(i) : i ∈ R(j)}``; the same with ``round(k1 / 2)``
   gives ``S(j)``;
3. expansion: ``E(i) = T(i) ∪ ⋃ S(c)`` over the ``c ∈ T(i)`` with
   ``|S(c) ∩ T(i)| > 2/3 |S(c)|``;
4. ``V[i, j] = exp(-d[i, j]) / Σ_{E(i)} exp(-d[i, ·])`` on ``E(i)``, 0 elsewhere;
   local query expansion: ``V[i] ← mean of V over the k2 nearest of i``;
5. Jaccard distance ``J[i, j] = 1 − m / (2 − m)``, ``m = Σ_k min(V[i, k], V[j, k])``;
6. final distance ``(1 − λ) J + λ d`` (query rows, gallery columns).

Defaults k1 = 20, k2 = 6, λ = 0.3 (the paper's). The result equals the well-known reference
implementation (``re_ranking`` of the authors' code, a per-image Python loop) to 1e-6; see
``tests/test_rerank.py``. Memory: the ``N x N`` float32 ``V`` (twice, during the query
expansion) plus blocks of ``chunk`` rows; nothing of size ``N x N x k``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mvd_core.errors import MvdError

__all__ = ["RerankConfig", "k_reciprocal_rerank", "squared_distances"]

log = logging.getLogger(__name__)

#: entries of one row block (rows per block = this // N)
_BLOCK_ENTRIES = 1 << 22
#: the distance rows are kept between the passes up to this many entries (256 MB float32)
_KEEP_ENTRIES = 1 << 26


@dataclass(frozen=True)
class RerankConfig:
    k1: int = 20
    k2: int = 6
    lam: float = 0.3


def _sq_dist_rows(x: np.ndarray, sq: np.ndarray, start: int, stop: int,
                  qq_sq: np.ndarray | None = None) -> np.ndarray:
    """Rows start:stop of the squared-distance matrix, each divided by its maximum (float32;
    computed in the features' precision). ``qq_sq``: the query x query block, precomputed (the
    query rows then only multiply against the gallery)."""
    nq = 0 if qq_sq is None else qq_sq.shape[0]
    d = np.empty((stop - start, x.shape[0]), dtype=x.dtype)
    split = min(max(nq, start), stop)  # rows start:split are queries with a precomputed block
    if split > start:
        d[: split - start, :nq] = qq_sq[start:split]  # type: ignore[index]
        np.matmul(x[start:split], x[nq:].T, out=d[: split - start, nq:])
        d[: split - start, nq:] *= -2.0
        d[: split - start, nq:] += sq[start:split, None]
        d[: split - start, nq:] += sq[None, nq:]
    if stop > split:
        rest = d[split - start :]
        np.matmul(x[split:stop], x.T, out=rest)
        rest *= -2.0
        rest += sq[split:stop, None]
        rest += sq[None, :]
    np.maximum(d, 0.0, out=d)
    d = d.astype(np.float32, copy=False)
    peak = d.max(axis=1, keepdims=True)
    return d / np.where(peak > 0, peak, np.float32(1.0))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a_i - b_j|^2`` (clipped at 0), in the features' precision: what
    :func:`k_reciprocal_rerank` computes, for a block shared by many calls (``qq_sq``)."""
    a, b = _features(a), _features(b)
    d = a @ b.T
    d *= -2.0
    d += np.einsum("ij,ij->i", a, a)[:, None]
    d += np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(d, 0.0, out=d)


def _features(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _reciprocal(ranks: np.ndarray, block: int) -> np.ndarray:
    """``m[i, a]``: is ``i`` among the neighbours ``ranks[ranks[i, a]]``?"""
    n = ranks.shape[0]
    out = np.empty(ranks.shape, dtype=bool)
    for s in range(0, n, block):
        e = min(n, s + block)
        out[s:e] = (ranks[ranks[s:e]] == np.arange(s, e)[:, None, None]).any(axis=2)
    return out


def k_reciprocal_rerank(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lam: float = 0.3,
    *,
    chunk: int | None = None,
    qq_sq: np.ndarray | None = None,
) -> np.ndarray:
    """Re-ranked (Q, G) float32 distance matrix (smaller = closer); see the module docstring.

    Distances are computed in the features' precision (float32 features: float32 matrix
    products, as the reference given float32 features). ``qq_sq``: the (Q, Q) squared distances
    of the queries (:func:`squared_distances`), when many galleries are re-ranked against the
    same queries (the SYSU-MM01 trials). Row blocks of the distance matrix are kept between
    the two passes while the whole matrix fits in :data:`_KEEP_ENTRIES` entries, else
    recomputed."""
    q = _features(q_feats)
    g = _features(g_feats)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or not len(q) or not len(g):
        raise MvdError(f"rerank: expected (Q, D) and (G, D) features, got {q.shape} and {g.shape}")
    x = np.concatenate([q, g]).astype(np.result_type(q, g), copy=False)
    n, nq = x.shape[0], q.shape[0]
    if not 1 <= k1 < n:
        raise MvdError(f"rerank k1: expected 1..{n - 1} (fewer than the {n} images), got {k1}")
    if not 1 <= k2 <= k1 + 1:
        raise MvdError(f"rerank k2: expected 1..k1+1 = {k1 + 1}, got {k2}")
    if not 0.0 <= lam <= 1.0:
        raise MvdError(f"rerank lambda: expected 0..1, got {lam}")
    block = max(1, (_BLOCK_ENTRIES // n) if chunk is None else int(chunk))
    sq = np.einsum("ij,ij->i", x, x)
    if qq_sq is not None and np.shape(qq_sq) != (nq, nq):
        raise MvdError(f"rerank qq_sq: expected the ({nq}, {nq}) query distances, got {np.shape(qq_sq)}")
    keep: dict[int, np.ndarray] | None = {} if n * n <= _KEEP_ENTRIES else None
    kh = int(np.around(k1 / 2.0))

    # pass 1: nearest k1+1 of every image; keep the query rows of d (gallery columns)
    ranks = np.empty((n, k1 + 1), dtype=np.int64)
    d_qg = np.empty((nq, n - nq), dtype=np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        d = _sq_dist_rows(x, sq, s, e, qq_sq)
        if keep is not None:
            keep[s] = d
        ranks[s:e] = np.argsort(d, axis=1, kind="stable")[:, : k1 + 1]
        if s < nq:
            d_qg[s : min(e, nq)] = d[: min(e, nq) - s, nq:]
    recip = _reciprocal(ranks, block)  # T(i) = ranks[i][recip[i]]
    half = ranks[:, : kh + 1]
    half_recip = _reciprocal(half, block)  # S(c) = half[c][half_recip[c]]
    half_size = half_recip.sum(axis=1)

    # pass 2: expansion sets and the weights V
    v = np.zeros((n, n), dtype=np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        r, m = ranks[s:e], recip[s:e]  # (b, k1+1)
        cand_half, cand_ok = half[r], half_recip[r]  # (b, k1+1, kh+1): S of every neighbour
        in_t = ((cand_half[..., None] == r[:, None, None, :]) & m[:, None, None, :]).any(axis=3)
        count = (in_t & cand_ok).sum(axis=2)
        accept = m & (count > 2.0 / 3.0 * half_size[r])
        mask = np.zeros((e - s, n), dtype=bool)
        rows = np.broadcast_to(np.arange(e - s)[:, None], r.shape)
        mask[rows[m], r[m]] = True
        take = accept[..., None] & cand_ok
        rows3 = np.broadcast_to(np.arange(e - s)[:, None, None], cand_half.shape)
        mask[rows3[take], cand_half[take]] = True
        d = keep.pop(s) if keep is not None else _sq_dist_rows(x, sq, s, e, qq_sq)
        w = np.where(mask, np.exp(-d), np.float32(0.0))
        v[s:e] = w / w.sum(axis=1, keepdims=True)

    if k2 != 1:  # local query expansion
        v_qe = np.empty_like(v)
        for s in range(0, n, block):
            e = min(n, s + block)
            v_qe[s:e] = v[ranks[s:e, :k2]].mean(axis=1)
        v = v_qe

    # Jaccard distance of every query to every gallery image, over each query's support
    out = np.empty((nq, n - nq), dtype=np.float32)
    vg = v[nq:]
    for i in range(nq):
        support = np.flatnonzero(v[i])
        m_sum = np.minimum(vg[:, support], v[i, support]).sum(axis=1)
        out[i] = 1.0 - m_sum / (2.0 - m_sum)
    out *= np.float32(1.0 - lam)
    out += np.float32(lam) * d_qg
    log.debug("re-ranked %d x %d (k1 %d, k2 %d, lambda %.2f)", nq, n - nq, k1, k2, lam)
    return out
