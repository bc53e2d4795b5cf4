"""Per-query evaluation data (metrics.PerQuery, the run's <stem>.npz) against a plain
per-query loop, and the HTML run report."""

import numpy as np
import pytest

from mvd_core.evaldata import read_eval_npz, write_eval_npz
from mvd_core.metrics import TOP_K, evaluate
from mvd_core.protocols import Report


def _plain(dist, q_pids, g_pids, q_cams, g_cams, sysu):
    """One query at a time: stable order, the SYSU cam-3/cam-2 exclusion, AP, INP, ranks."""
    out = {}
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        if sysu and q_cams[i] == 3:
            order = order[g_cams[order] != 2]
        match = g_pids[order] == q_pids[i]
        if not match.any():
            continue
        ranks = np.flatnonzero(match) + 1
        ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
        inp = len(ranks) / ranks[-1]
        if sysu:
            seen, first = [], None
            for p in g_pids[order]:
                if p not in seen:
                    seen.append(p)
                if p == q_pids[i]:
                    first = len(seen)
                    break
        else:
            first = ranks[0]
        out[i] = (ap, inp, first, ranks, order[:TOP_K])
    return out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("protocol", ["sysu", "regdb"])
def test_per_query_equals_a_plain_loop(protocol, ties):
    rng = np.random.default_rng(1)
    nq, ng = 40, 60
    q_pids, g_pids = rng.integers(0, 12, nq), rng.integers(0, 12, ng)
    q_cams, g_cams = rng.choice([3, 6], nq), rng.choice([1, 2, 4, 5], ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    dist[:, 5] = dist[:, 6]  # ties are broken by gallery order
    if ties:
        dist = rng.integers(0, 6, (nq, ng)).astype(np.float32)
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol=protocol, chunk=7)
    pq = res.per_query
    want = _plain(dist, q_pids, g_pids, q_cams, g_cams, protocol == "sysu")
    assert pq.query.tolist() == sorted(want)
    for v, q in enumerate(pq.query.tolist()):
        ap, inp, first, ranks, top = want[q]
        assert pq.ap[v] == pytest.approx(ap) and pq.inp[v] == pytest.approx(inp)
        assert pq.first_rank[v] == first
        assert pq.match_ranks[pq.offsets[v]:pq.offsets[v + 1]].tolist() == ranks.tolist()
        assert pq.top[v].tolist() == top.tolist()
    assert pq.ap.mean() == pytest.approx(res.mAP)
    np.testing.assert_allclose(pq.cmc()[:20], res.cmc)  # the full curve starts as the CMC
    assert pq.cmc()[-1] == 1.0


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    pids = np.repeat(np.arange(5), 3)
    rows = []
    for t in (1, 2):
        d = rng.random((15, 15))
        rows.append((t, evaluate(d, pids, pids, np.ones(15, int), 2 * np.ones(15, int), protocol="regdb")))
    rep = Report.from_results(rows, name="x")
    path = write_eval_npz(rep, tmp_path / "r.npz")
    name, trials = read_eval_npz(path)
    assert name == "x" and sorted(trials) == ["1", "2"]
    for (t, r) in rows:
        np.testing.assert_array_equal(trials[str(t)]["ap"], r.per_query.ap)
        np.testing.assert_array_equal(trials[str(t)]["match_ranks"], r.per_query.match_ranks)
