"""k-reciprocal re-ranking against a plain re-implementation of the well-known reference code
(``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``, a per-image loop)."""

import numpy as np
import pytest

from mvd_core.errors import MvdError
from mvd_core.eval.rerank import k_reciprocal_rerank


def _euclid(a, b):
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d, 0))


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """The public reference, written plainly (one image at a time)."""
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1),
         np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    for i in range(all_num):
        forward = initial_rank[i, :k1 + 1]
        backward = initial_rank[forward, :k1 + 1]
        fi = np.where(backward == i)[0]
        k_recip = forward[fi]
        expansion = k_recip
        for j in range(len(k_recip)):
            cand = k_recip[j]
            cf = initial_rank[cand, :int(np.around(k1 / 2.0)) + 1]
            cb = initial_rank[cf, :int(np.around(k1 / 2.0)) + 1]
            fic = np.where(cb == cand)[0]
            cand_recip = cf[fic]
            if len(np.intersect1d(cand_recip, k_recip)) > 2.0 / 3 * len(cand_recip):
                expansion = np.append(expansion, cand_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def _clustered(rng, n_ids, per_id, dim, spread=0.6):
    centres = rng.normal(size=(n_ids, dim))
    x = np.repeat(centres, per_id, axis=0) + spread * rng.normal(size=(n_ids * per_id, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k1,k2,lam,chunk", [(20, 6, 0.3, None), (20, 6, 0.3, 7), (5, 1, 0.5, 3), (8, 3, 0.0, None)])
def test_equals_reference(k1, k2, lam, chunk):
    rng = np.random.default_rng(k1 + k2)
    feats = _clustered(rng, 12, 8, 16)
    perm = rng.permutation(len(feats))
    q, g = feats[perm[:30]], feats[perm[30:]]
    ref = reference_re_ranking(_euclid(q, g), _euclid(q, q), _euclid(g, g), k1, k2, lam)
    got = k_reciprocal_rerank(q, g, k1, k2, lam, chunk=chunk)
    assert got.shape == (30, len(feats) - 30) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_lambda_one_is_the_row_normalised_squared_distance():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(6, 5)), rng.normal(size=(40, 5))
    x = np.concatenate([q, g])
    d2 = _euclid(x, x) ** 2
    want = (d2 / d2.max(axis=1, keepdims=True))[:6, 6:]
    np.testing.assert_allclose(k_reciprocal_rerank(q, g, lam=1.0), want, atol=1e-6)


def test_bad_input():
    f = np.zeros((5, 4), np.float32)
    with pytest.raises(MvdError, match="k1"):
        k_reciprocal_rerank(f, f, k1=20)
    with pytest.raises(MvdError, match="features"):
        k_reciprocal_rerank(f, np.zeros((5, 3)))


def test_protocols_rerank_each_trial_gallery():
    """run_sysu / regdb_trial with rerank=True = the metric on the re-ranked distances of each
    trial's own gallery."""
    from mvd_core.eval.metrics import evaluate
    from mvd_core.eval.protocols import regdb_trial, run_sysu, sysu_gallery_indices

    rng = np.random.default_rng(5)
    n_ids = 10
    q_pids = np.repeat(np.arange(n_ids), 4)
    q_cams = np.tile([3, 6], n_ids * 2)
    g_pids = np.repeat(np.arange(n_ids), 8)
    g_cams = np.tile([1, 2, 4, 5], n_ids * 2)
    centres = rng.normal(size=(n_ids, 16))
    qf = (centres[q_pids] + rng.normal(size=(len(q_pids), 16))).astype(np.float32)
    gf = (centres[g_pids] + rng.normal(size=(len(g_pids), 16))).astype(np.float32)
    rep = run_sysu(qf, q_pids, q_cams, gf, g_pids, g_cams, mode="all", trials=[0, 1], rerank=True)
    assert rep.settings["rerank"] == "k-reciprocal"
    for trial, result in rep.rows:
        idx = sysu_gallery_indices(g_pids, g_cams, "all", "single", trial)
        want = evaluate(k_reciprocal_rerank(qf, gf[idx]), q_pids, g_pids[idx], q_cams, g_cams[idx],
                        protocol="sysu")
        np.testing.assert_allclose(result.cmc, want.cmc)
        assert result.mAP == pytest.approx(want.mAP) and result.mINP == pytest.approx(want.mINP)
    r = regdb_trial(qf, q_pids, gf, g_pids, direction="v2t", rerank=True)
    want = evaluate(k_reciprocal_rerank(qf, gf), q_pids, g_pids, np.ones_like(q_pids), 2 * np.ones_like(g_pids),
                    protocol="regdb")
    assert r.mAP == pytest.approx(want.mAP)


def test_precomputed_query_block_and_float64():
    from mvd_core.eval.rerank import squared_distances

    rng = np.random.default_rng(9)
    feats = _clustered(rng, 10, 6, 12)
    q, g = feats[:20], feats[20:]
    plain = k_reciprocal_rerank(q, g, chunk=7)
    np.testing.assert_allclose(k_reciprocal_rerank(q, g, qq_sq=squared_distances(q, q), chunk=7), plain, atol=1e-6)
    ref = reference_re_ranking(_euclid(q, g), _euclid(q, q), _euclid(g, g))
    np.testing.assert_allclose(k_reciprocal_rerank(q.astype(np.float64), g.astype(np.float64)), ref, atol=1e-6)
