"""mvd_core.eval.metrics: evaluate() against a plain per-query reference, hand-computed cases,
invariants (hypothesis) and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvd_core.errors import MvdError
from mvd_core.eval.metrics import EvalResult, distance, evaluate

PROTOCOLS = ("sysu", "regdb", "market")


# --------------------------------------------------------------------------------------------
# the reference: one query at a time, a stable argsort, Python lists


def reference_evaluate(distmat, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=20):
    """Written from SPEC §5 without any vectorisation; returns (cmc, mAP, mINP, num_valid)."""
    curves, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")  # ties: gallery order
        kept = []
        for j in order:
            if protocol == "sysu" and q_cams[i] == 3 and g_cams[j] == 2:
                continue
            if protocol == "market" and g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i]:
                continue
            kept.append(int(g_pids[j]))
        hits = [r + 1 for r, p in enumerate(kept) if p == q_pids[i]]  # 1-based ranks
        if not hits:
            continue
        aps.append(sum((k + 1) / r for k, r in enumerate(hits)) / len(hits))
        inps.append(len(hits) / hits[-1])
        if protocol == "sysu":
            dedup = []
            for p in kept:
                if p not in dedup:
                    dedup.append(p)
            first = dedup.index(q_pids[i]) + 1
        else:
            first = hits[0]
        curves.append([1.0 if first <= k else 0.0 for k in range(1, max_rank + 1)])
    n = len(curves)
    if n == 0:
        return None, None, None, 0
    return np.mean(curves, axis=0), float(np.mean(aps)), float(np.mean(inps)), n


def assert_matches_reference(d, qp, gp, qc, gc, protocol, max_rank=20, chunk=None):
    ref_cmc, ref_map, ref_minp, ref_n = reference_evaluate(d, qp, gp, qc, gc, protocol, max_rank)
    if ref_n == 0:
        with pytest.raises(MvdError, match="q_pids"):
            evaluate(d, qp, gp, qc, gc, protocol=protocol, max_rank=max_rank, chunk=chunk)
        return
    res = evaluate(d, qp, gp, qc, gc, protocol=protocol, max_rank=max_rank, chunk=chunk)
    assert res.num_valid == ref_n
    assert res.cmc.dtype == np.float64 and res.cmc.shape == (max_rank,)
    np.testing.assert_allclose(res.cmc, ref_cmc, rtol=0, atol=1e-9)
    assert res.mAP == pytest.approx(ref_map, abs=1e-9)
    assert res.mINP == pytest.approx(ref_minp, abs=1e-9)


def random_case(seed: int, n_q: int, n_g: int, *, levels: int | None, n_ids: int):
    """Random labels and distances; `levels` small = many exact ties (None = continuous)."""
    rng = np.random.default_rng(seed)
    if levels is None:
        d = rng.random((n_q, n_g))
    else:
        d = rng.integers(0, levels, (n_q, n_g)).astype(np.float64)
    # query ids go one past the gallery's (queries without a match); gallery ids are skewed
    # so that some identities have a single image
    qp = rng.integers(0, n_ids + 2, n_q)
    gp = np.minimum(rng.geometric(0.3, n_g) - 1, n_ids)
    qc = rng.choice([3, 6, 1, 2], n_q)  # IR cams 3/6 (+ others for the market rule)
    gc = rng.choice([1, 2, 4, 5, 3], n_g)
    return d, qp, gp, qc, gc


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("levels", [None, 2, 4, 30])
@pytest.mark.parametrize("seed", range(6))
def test_random_against_reference(protocol, levels, seed):
    n_g = [3, 7, 19, 40, 90, 150][seed]  # several galleries shorter than max_rank
    d, qp, gp, qc, gc = random_case(seed, 60, n_g, levels=levels, n_ids=6)
    assert_matches_reference(d, qp, gp, qc, gc, protocol)
    assert_matches_reference(d, qp, gp, qc, gc, protocol, max_rank=5, chunk=7)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_chunking_and_float32_do_not_change_results(protocol, chunk):
    d, qp, gp, qc, gc = random_case(11, 45, 33, levels=5, n_ids=4)
    assert_matches_reference(d, qp, gp, qc, gc, protocol, chunk=chunk)
    d32 = (d / 7).astype(np.float32)  # the reference sees the very same float32 values
    assert_matches_reference(d32, qp, gp, qc, gc, protocol, chunk=chunk)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_all_match_and_single_match_queries(protocol):
    rng = np.random.default_rng(3)
    d = rng.integers(0, 3, (8, 12)).astype(np.float64)
    qc = np.array([3, 6, 3, 6, 1, 3, 6, 2])
    gc = rng.choice([1, 2, 4, 5], 12)
    # every gallery item has the query's identity
    assert_matches_reference(d, np.zeros(8, int), np.zeros(12, int), qc, gc, protocol)
    # identity 1 has exactly one gallery image
    gp = np.array([0, 0, 2, 1, 0, 2, 2, 0, 3, 3, 0, 2])
    qp = np.array([1, 1, 0, 1, 2, 1, 3, 1])
    assert_matches_reference(d, qp, gp, qc, gc, protocol)


def test_cam3_never_sees_cam2():
    # query from cam 3 whose only true match is in cam 2: skipped under "sysu"
    d = np.array([[0.1, 0.2, 0.3]])
    gp, gc = np.array([7, 8, 9]), np.array([2, 1, 4])
    with pytest.raises(MvdError, match="q_pids"):
        evaluate(d, [7], gp, [3], gc, protocol="sysu")
    # the same query from cam 6 keeps it (rank 1); "regdb" keeps it whatever the camera
    assert evaluate(d, [7], gp, [6], gc, protocol="sysu").cmc[0] == 1.0
    assert evaluate(d, [7], gp, [3], gc, protocol="regdb").cmc[0] == 1.0


# --------------------------------------------------------------------------------------------
# hand-computed cases


def test_hand_regdb():
    # query pid 1; ranked gallery pids: 2, 1, 3, 1 -> true matches at ranks 2 and 4
    # AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4 = 0.5; first match at rank 2
    r = evaluate(
        [[0.1, 0.2, 0.3, 0.4]], [1], [2, 1, 3, 1], [1], [2, 2, 2, 2], protocol="regdb", max_rank=4
    )
    np.testing.assert_array_equal(r.cmc, [0.0, 1.0, 1.0, 1.0])
    assert (r.mAP, r.mINP, r.num_valid) == (0.5, 0.5, 1)


def test_hand_market_removes_same_pid_same_cam():
    # query pid 1 cam 1. gallery (pid, cam, dist): (1,1,.1) (2,2,.2) (1,2,.3) (1,1,.4)
    # items 0 and 3 share pid and cam -> removed; list: pid 2, pid 1 -> match at rank 2
    # AP = 1/2; INP = 1/2; CMC = 0, 1, 1
    r = evaluate(
        [[0.1, 0.2, 0.3, 0.4]], [1], [1, 2, 1, 1], [1], [1, 2, 2, 1], protocol="market", max_rank=3
    )
    np.testing.assert_array_equal(r.cmc, [0.0, 1.0, 1.0])
    assert (r.mAP, r.mINP) == (0.5, 0.5)
    # "regdb" removes nothing: matches at ranks 1, 3, 4 -> AP = (1 + 2/3 + 3/4)/3, INP = 3/4
    r = evaluate(
        [[0.1, 0.2, 0.3, 0.4]], [1], [1, 2, 1, 1], [1], [1, 2, 2, 1], protocol="regdb", max_rank=3
    )
    assert r.mAP == pytest.approx((1 + 2 / 3 + 3 / 4) / 3, abs=1e-15)
    assert r.mINP == 0.75 and r.cmc[0] == 1.0


def test_hand_sysu_exclusion_and_dedup():
    g_pids = [5, 1, 5, 5, 7, 1]
    g_cams = [2, 2, 1, 4, 4, 5]
    d = [
        # query A: pid 1, cam 3. Items 0, 1 (cam 2) removed. Remaining order:
        # idx2 pid5 (.2), idx3 pid5 (.25), idx4 pid7 (.3), idx5 pid1 (.4)
        # full list: the only match at rank 4 -> AP = 1/4, INP = 1/4
        # de-duplicated list: 5, 7, 1 -> first match at rank 3
        [0.05, 0.1, 0.2, 0.25, 0.3, 0.4],
        # query B: pid 1, cam 6 (nothing removed). Order: idx5 pid1 (.05), idx1 pid1 (.1),
        # then pids 5, 5, 5, 7 -> matches at ranks 1, 2: AP = (1/1 + 2/2)/2 = 1, INP = 2/2 = 1
        [0.5, 0.1, 0.2, 0.3, 0.6, 0.05],
    ]
    r = evaluate(d, [1, 1], g_pids, [3, 6], g_cams, protocol="sysu", max_rank=4)
    # CMC: A hits at 3, B at 1 -> [1/2, 1/2, 1, 1]; mAP = mINP = (1/4 + 1)/2 = 0.625
    np.testing.assert_array_equal(r.cmc, [0.5, 0.5, 1.0, 1.0])
    assert (r.mAP, r.mINP, r.num_valid) == (0.625, 0.625, 2)


def test_hand_ties_follow_gallery_order():
    # all distances equal -> ranked list = gallery order
    # query pid 1 vs pids (2, 1, 2): match at rank 2 -> AP = 1/2, INP = 1/2, CMC@1 = 0
    # query pid 2 vs pids (2, 1, 2): matches at 1, 3 -> AP = (1 + 2/3)/2 = 5/6, INP = 2/3
    r = evaluate(
        np.full((2, 3), 0.5), [1, 2], [2, 1, 2], [1, 1], [2, 2, 2], protocol="regdb", max_rank=2
    )
    np.testing.assert_allclose(r.cmc, [0.5, 1.0], rtol=0, atol=1e-15)
    assert r.mAP == pytest.approx((0.5 + 5 / 6) / 2, abs=1e-15)
    assert r.mINP == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-15)


def test_hand_sysu_dedup_ties():
    # query pid 1 cam 6, all distances equal: list = gallery order 3, 3, 4, 1
    # full list: match at rank 4 (AP = INP = 1/4); de-duplicated: 3, 4, 1 -> rank 3
    r = evaluate(
        np.zeros((1, 4)), [1], [3, 3, 4, 1], [6], [1, 1, 1, 1], protocol="sysu", max_rank=3
    )
    np.testing.assert_array_equal(r.cmc, [0.0, 0.0, 1.0])
    assert (r.mAP, r.mINP) == (0.25, 0.25)


def test_hand_skips_queries_without_match_and_short_gallery():
    # query 0: pid 9 absent -> skipped. query 1: pid 1 vs (2, 1) -> rank 2, AP = INP = 1/2
    # gallery of 2 < max_rank 5: the curve keeps its last value -> 0, 1, 1, 1, 1
    r = evaluate(
        [[0.3, 0.1], [0.1, 0.2]], [9, 1], [2, 1], [1, 1], [2, 2], protocol="regdb", max_rank=5
    )
    np.testing.assert_array_equal(r.cmc, [0.0, 1.0, 1.0, 1.0, 1.0])
    assert (r.mAP, r.mINP, r.num_valid) == (0.5, 0.5, 1)
    assert r.rank(2) == 1.0 and r.max_rank == 5


def test_result_is_frozen_and_read_only():
    r = evaluate([[0.1, 0.2]], [1], [1, 2], [1], [2, 2], protocol="regdb")
    assert isinstance(r, EvalResult)
    with pytest.raises(AttributeError):
        r.mAP = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.cmc[0] = 0.5


# --------------------------------------------------------------------------------------------
# invariants


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_q=st.integers(1, 12),
    n_g=st.integers(1, 30),
    protocol=st.sampled_from(PROTOCOLS),
)
def test_gallery_permutation_without_ties_changes_nothing(seed, n_q, n_g, protocol):
    rng = np.random.default_rng(seed)
    d = rng.permutation(n_q * n_g).reshape(n_q, n_g).astype(np.float64)  # all distinct
    qp, gp = rng.integers(0, 4, n_q), rng.integers(0, 4, n_g)
    qc, gc = rng.choice([3, 6], n_q), rng.choice([1, 2, 4, 5], n_g)
    qp[0], gp[0], gc[0] = 0, 0, 1  # at least one valid query under every protocol
    perm = rng.permutation(n_g)
    a = evaluate(d, qp, gp, qc, gc, protocol=protocol)
    b = evaluate(d[:, perm], qp, gp[perm], qc, gc[perm], protocol=protocol)
    np.testing.assert_allclose(a.cmc, b.cmc, rtol=0, atol=1e-12)
    assert (a.mAP, a.mINP, a.num_valid) == pytest.approx((b.mAP, b.mINP, b.num_valid), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_q=st.integers(1, 12),
    n_g=st.integers(1, 30),
    protocol=st.sampled_from(PROTOCOLS),
)
def test_perfect_ranking_scores_one(seed, n_q, n_g, protocol):
    rng = np.random.default_rng(seed)
    qp, gp = rng.integers(0, 3, n_q), rng.integers(0, 3, n_g)
    qc, gc = rng.choice([3, 6], n_q), rng.choice([1, 4, 5], n_g)  # no cam 2: nothing excluded
    qp[0], gp[0] = 0, 0
    # every true match closer than every other item (ties allowed inside each class)
    d = np.where(qp[:, None] == gp[None, :], rng.random((n_q, n_g)), 1 + rng.random((n_q, n_g)))
    r = evaluate(d, qp, gp, qc, gc, protocol=protocol)
    assert r.mAP == pytest.approx(1.0, abs=1e-12)
    assert r.mINP == pytest.approx(1.0, abs=1e-12)
    assert r.cmc[0] == 1.0 and np.all(r.cmc == 1.0)


# --------------------------------------------------------------------------------------------
# distances


def test_distance_euclidean_and_cosine():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    ref = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(distance(q, g), ref, rtol=1e-10, atol=1e-12)
    cos = (q @ g.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(g, axis=1)[None, :]
    np.testing.assert_allclose(distance(q, g, "cosine"), -cos, rtol=1e-12, atol=1e-12)
    # on normalised features both rank the same
    qn, gn = (
        q / np.linalg.norm(q, axis=1, keepdims=True),
        g / np.linalg.norm(g, axis=1, keepdims=True),
    )
    np.testing.assert_array_equal(
        np.argsort(distance(qn, gn), axis=1), np.argsort(distance(qn, gn, "cosine"), axis=1)
    )


def test_distance_float32_is_safe():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(4, 64)).astype(np.float32) * 100
    d = distance(q, q)  # identical rows: cancellation would go negative without the clip
    assert d.dtype == np.float32 and np.all(np.isfinite(d)) and np.all(d >= 0)
    assert np.all(np.diag(d) < 1e-1 * 100)
    big = np.full((2, 3), 1e20, dtype=np.float32)  # |x|^2 overflows float32
    d = distance(big, big)
    assert d.dtype == np.float32 and np.all(np.isfinite(d))
    np.testing.assert_allclose(d, 0.0, atol=1e-3 * 1e20)
    assert distance(q.astype(np.float64), q).dtype == np.float64


# --------------------------------------------------------------------------------------------
# bad input


GOOD = dict(
    distmat=np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]),
    q_pids=np.array([1, 2]),
    g_pids=np.array([1, 2, 3]),
    q_cams=np.array([3, 6]),
    g_cams=np.array([1, 2, 4]),
)


def call(**over):
    kw = {**GOOD, **over}
    protocol = kw.pop("protocol", "sysu")
    return evaluate(
        kw["distmat"],
        kw["q_pids"],
        kw["g_pids"],
        kw["q_cams"],
        kw["g_cams"],
        protocol=protocol,
        **{k: v for k, v in kw.items() if k in ("max_rank", "chunk")},
    )


@pytest.mark.parametrize(
    ("over", "pattern"),
    [
        ({"distmat": np.zeros(3)}, r"distmat: expected a 2-D array of shape \(num_query"),
        ({"distmat": np.zeros((2, 3, 1))}, "distmat: expected a 2-D"),
        ({"distmat": np.zeros((0, 3))}, "distmat: expected a non-empty"),
        ({"distmat": np.zeros((2, 0))}, "distmat: expected a non-empty"),
        ({"distmat": np.array([[0.1, np.nan, 0.3], [0, 0, 0]])}, "distmat: expected finite"),
        ({"distmat": np.array([[0.1, np.inf, 0.3], [0, 0, 0]])}, "distmat: expected finite"),
        ({"distmat": np.array([["a", "b", "c"]] * 2)}, "distmat: expected real"),
        ({"q_pids": np.array([1, 2, 3])}, r"q_pids: expected a 1-D array of length 2"),
        ({"g_pids": np.array([1, 2])}, r"g_pids: expected a 1-D array of length 3"),
        ({"q_cams": np.array([[3, 6]])}, r"q_cams: expected a 1-D array of length 2"),
        ({"g_cams": np.array([1, 2, 4, 5])}, r"g_cams: expected a 1-D array of length 3"),
        ({"q_pids": np.array([1.0, 2.0])}, "q_pids: expected integer labels"),
        ({"protocol": "dukemtmc"}, r"protocol: expected one of \('sysu', 'regdb', 'market', 'llcm'\)"),
        ({"max_rank": 0}, "max_rank: expected a positive integer"),
        ({"chunk": 0}, "chunk: expected a positive integer"),
        ({"q_pids": np.array([8, 9])}, "q_pids: no query has a true match"),
    ],
)
def test_bad_input(over, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(**over)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((np.zeros((2, 3)), np.zeros((4, 5))), "gallery_feats: expected feature dimension 3"),
        ((np.zeros(3), np.zeros((4, 3))), "query_feats: expected a 2-D array"),
        ((np.zeros((0, 3)), np.zeros((4, 3))), "query_feats: expected a non-empty"),
        ((np.zeros((2, 3)), np.zeros((0, 3))), "gallery_feats: expected a non-empty"),
        ((np.full((2, 3), np.nan), np.zeros((4, 3))), "query_feats: expected finite"),
        ((np.zeros((2, 3)), np.full((4, 3), -np.inf)), "gallery_feats: expected finite"),
    ],
)
def test_distance_bad_input(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        distance(*args)
    with pytest.raises(ValueError, match="metric: expected one of"):
        distance(np.zeros((2, 3)), np.zeros((4, 3)), "manhattan")
