"""Tests OF the NumPy reference losses (tests/reference_losses.py): hand-derived golden values
on tiny inputs, invariants, and torch.nn.functional as an independent check of CE and KL."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import reference_losses as R
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mvd_core.config import LossConfig
from mvd_core.interface import OBSERVATIONS, REPRESENTATIONS
from mvd_core.model.losses import (
    BRANCH_WEIGHTS,
    METRIC_TAP,
    PRESET_WEIGHTS,
    SINKHORN_MARGINAL_EPS,
    SINKHORN_THRESH,
    TERMS,
    preset_weights,
)

LOG = math.log


def _random_out(rng: np.random.Generator, b: int = 8, c: int = 5, fd: int = 6, zd: int = 4):
    out: dict[str, np.ndarray] = {}
    for o in OBSERVATIONS:
        out[f"{o}.feat"] = rng.standard_normal((b, fd))
        out[f"{o}.logits"] = rng.standard_normal((b, c)) * 2.0
    for r in REPRESENTATIONS:
        out[f"{r}.z"] = rng.standard_normal((b, zd))
        out[f"{r}.logits"] = rng.standard_normal((b, c)) * 2.0
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3][:b])
    modality = np.array([0, 1] * (b // 2))
    return out, labels, modality


# ------------------------------------------------------------------------------------------
# model.losses
# ------------------------------------------------------------------------------------------


def test_branch_weights_sum_to_three_and_match_spec():
    assert sum(BRANCH_WEIGHTS.values()) == 3.0
    assert BRANCH_WEIGHTS == {
        "i_obs": 0.5, "i_rep": 0.5, "v_obs": 0.5, "v_rep": 0.5,
        "i_ms_obs": 0.25, "i_ms_rep": 0.25, "v_ms_obs": 0.25, "v_ms_rep": 0.25,
    }
    assert set(BRANCH_WEIGHTS) == set(OBSERVATIONS) | set(REPRESENTATIONS)
    assert METRIC_TAP["v_obs"] == "v_obs.feat" and METRIC_TAP["i_ms_rep"] == "i_ms_rep.z"


def test_preset_weights():
    assert PRESET_WEIGHTS["id"] == {"id": 1.0}
    assert PRESET_WEIGHTS["id+tri"] == {"id": 1.0, "tri": 1.0}
    assert PRESET_WEIGHTS["id+tri+kldiv"] == {"id": 1.0, "tri": 1.0, "vsd": 1.0, "vcd": 1.0}
    assert PRESET_WEIGHTS["mvd-pt"] == {"id": 1.0, "tri": 1.0, "cml": 8.0, "vsd": 2.0, "vcd": 2.0}
    for w in PRESET_WEIGHTS.values():
        assert set(w) <= set(TERMS)
    with pytest.raises(ValueError, match="loss.preset"):
        preset_weights("nope")


def test_branch_weighted_golden_and_missing():
    assert R.branch_weighted(dict.fromkeys(BRANCH_WEIGHTS, 1.0)) == 3.0
    # i_obs=1, v_rep=2, i_ms_obs=4, v_ms_rep=8, rest 0 → 0.5·1 + 0.5·2 + 0.25·4 + 0.25·8 = 4.5
    vals = dict.fromkeys(BRANCH_WEIGHTS, 0.0) | {"i_obs": 1, "v_rep": 2, "i_ms_obs": 4,
                                                 "v_ms_rep": 8}
    assert R.branch_weighted(vals) == pytest.approx(4.5, abs=1e-15)
    with pytest.raises(KeyError, match="v_ms_rep"):
        R.branch_weighted({k: 1.0 for k in BRANCH_WEIGHTS if k != "v_ms_rep"})


# ------------------------------------------------------------------------------------------
# cross-entropy
# ------------------------------------------------------------------------------------------


def test_cross_entropy_golden():
    # logits (log 3, 0) → p = (3/4, 1/4). Label 0, ε = 0: −log(3/4) = log(4/3).
    logits = np.array([[LOG(3.0), 0.0]])
    assert R.cross_entropy(logits, np.array([0])) == pytest.approx(LOG(4 / 3), rel=1e-14)
    # ε = 0.2, C = 2: q = (0.9, 0.1) → 0.9·log(4/3) + 0.1·log(4)
    expect = 0.9 * LOG(4 / 3) + 0.1 * LOG(4.0)
    assert R.cross_entropy(logits, np.array([0]), 0.2) == pytest.approx(expect, rel=1e-14)
    # batch mean: second row (0, 0) label 1 → log 2; mean = (log(4/3) + log 2) / 2
    two = np.array([[LOG(3.0), 0.0], [0.0, 0.0]])
    assert R.cross_entropy(two, np.array([0, 1])) == pytest.approx(
        (LOG(4 / 3) + LOG(2.0)) / 2, rel=1e-14
    )


def test_cross_entropy_eps0_is_minus_log_p_label_and_shift_invariant():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 7)) * 3
    y = rng.integers(0, 7, 6)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    expect = -np.mean(np.log(p[np.arange(6), y]))
    assert R.cross_entropy(x, y) == pytest.approx(expect, rel=1e-12)
    # adding a constant per row changes nothing; huge logits stay finite (log-space)
    assert R.cross_entropy(x + 1000.0, y, 0.1) == pytest.approx(R.cross_entropy(x, y, 0.1),
                                                               rel=1e-9)


def test_cross_entropy_against_torch():
    import torch
    f = torch.nn.functional
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 11)) * 4
    y = rng.integers(0, 11, 9)
    for eps in (0.0, 0.1, 0.5):
        ref = f.cross_entropy(torch.tensor(x), torch.tensor(y), label_smoothing=eps).item()
        assert R.cross_entropy(x, y, eps) == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------------------------------------------
# batch-hard triplet
# ------------------------------------------------------------------------------------------


def test_batch_hard_triplet_golden():
    # 1-D features 0, 2 (label 0) and 1, 5 (label 1), margin 0.3:
    #   anchor 0: d_ap = 2, d_an = min(1, 5) = 1 → 1.3
    #   anchor 2: d_ap = 2, d_an = min(1, 3) = 1 → 1.3
    #   anchor 1: d_ap = 4, d_an = min(1, 1) = 1 → 3.3
    #   anchor 5: d_ap = 4, d_an = min(5, 3) = 3 → 1.3      mean = 7.2 / 4 = 1.8
    feats = np.array([[0.0], [2.0], [1.0], [5.0]])
    labels = np.array([0, 0, 1, 1])
    assert R.batch_hard_triplet(feats, labels, 0.3) == pytest.approx(1.8, abs=1e-12)
    # unnormalised: scaling by 10 scales distances: anchors give 20-10+.3, 20-10+.3, 40-10+.3,
    # 40-30+.3 → (10.3 + 10.3 + 30.3 + 10.3) / 4 = 15.3
    assert R.batch_hard_triplet(10 * feats, labels, 0.3) == pytest.approx(15.3, abs=1e-10)


def test_batch_hard_triplet_zero_when_margin_satisfied():
    # d_ap = 0.1, d_an ≥ 4.9 > d_ap + 0.3 for every anchor
    feats = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    assert R.batch_hard_triplet(feats, np.array([0, 0, 1, 1]), 0.3) == 0.0
    # a single positive (itself): d_ap = sqrt(1e-12) = 1e-6, d_an = 1 → max(0, 1e-6 - 1 + 2)
    feats = np.array([[0.0], [1.0]])
    assert R.batch_hard_triplet(feats, np.array([0, 1]), 2.0) == pytest.approx(1.0 + 1e-6,
                                                                                abs=1e-12)
    with pytest.raises(ValueError, match="no negative"):
        R.batch_hard_triplet(feats, np.array([3, 3]))


# ------------------------------------------------------------------------------------------
# ranked-list loss
# ------------------------------------------------------------------------------------------


def test_ranked_list_golden_four_points():
    # unit vectors at 0°, 90°, 180°, 270°; labels (0, 0, 1, 1), modality (0, 1, 0, 1).
    # Distances: neighbours √2, opposite 2. Every anchor has exactly
    #   one cross positive at √2       → [√2 + m2 − a2]₊ / (1 + 1e-5) = (√2 − 1)/(1 + 1e-5)
    #   no intra positive              → 0
    #   one intra negative at 2 < a1   → w(a1 − 2)/(w + 1e-5), w = e^{0.2}
    #   one cross negative at √2 < a2  → w(2 − √2)/(w + 1e-5), w = e^{2 − √2}
    # so the mean over anchors equals that value, ≈ 0.41421 + 0.2 + 0.58579 = 1.2.
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = np.array([0, 0, 1, 1])
    modality = np.array([0, 1, 0, 1])
    r2 = math.sqrt(2.0)
    w1, w2 = math.exp(0.2), math.exp(2 - r2)
    expect = (r2 - 1) / (1 + 1e-5) + w1 * 0.2 / (w1 + 1e-5) + w2 * (2 - r2) / (w2 + 1e-5)
    got = R.ranked_list_loss(feats, labels, modality)
    assert got == pytest.approx(expect, rel=1e-12)
    assert got == pytest.approx(1.2, abs=1e-4)
    # features are L2-normalised first: per-row scaling changes nothing
    scaled = feats * np.array([[3.0], [0.5], [7.0], [2.0]])
    assert R.ranked_list_loss(scaled, labels, modality) == pytest.approx(expect, rel=1e-12)


def test_ranked_list_intra_vs_cross_margins():
    feats = np.array([[1.0, 0.0], [0.0, 1.0]])  # D = √2
    r2 = math.sqrt(2.0)
    # same label, same modality: intra positive, [√2 + 0.9 − 2.2]₊ = √2 − 1.3 ≈ 0.1142
    same = R.ranked_list_loss(feats, np.array([0, 0]), np.array([1, 1]))
    assert same == pytest.approx((r2 - 1.3) / (1 + 1e-5), rel=1e-12)
    # same label, other modality: cross positive, [√2 + 1.0 − 2.0]₊ = √2 − 1 ≈ 0.4142
    cross = R.ranked_list_loss(feats, np.array([0, 0]), np.array([0, 1]))
    assert cross == pytest.approx((r2 - 1.0) / (1 + 1e-5), rel=1e-12)
    # custom thresholds flow through: m1 = 0.5, a1 = 1.0 → √2 − 0.5
    custom = R.ranked_list_loss(feats, np.array([0, 0]), np.array([1, 1]), m1=0.5, a1=1.0)
    assert custom == pytest.approx((r2 - 0.5) / (1 + 1e-5), rel=1e-12)


def test_ranked_list_negatives_beyond_threshold_ignored():
    feats = np.array([[1.0, 0.0], [-1.0, 0.0]])  # D = 2 exactly
    # different labels, cross modality: D = 2 is not < a2 = 2.0 → nothing → 0
    assert R.ranked_list_loss(feats, np.array([0, 1]), np.array([0, 1])) == 0.0
    # same modality: 2 < a1 = 2.2 → w·0.2/(w + 1e-5), w = e^{0.2}, for both anchors
    w = math.exp(0.2)
    got = R.ranked_list_loss(feats, np.array([0, 1]), np.array([0, 0]))
    assert got == pytest.approx(w * 0.2 / (w + 1e-5), rel=1e-12)
    # positives already inside the margin contribute 0: D = √2·sin small
    near = np.array([[1.0, 0.0], [1.0, 0.01]])
    assert R.ranked_list_loss(near, np.array([0, 0]), np.array([0, 1])) == 0.0


# ------------------------------------------------------------------------------------------
# KL divergence
# ------------------------------------------------------------------------------------------


def test_kl_proper_golden():
    # t = softmax(0, 0) = (½, ½); s = softmax(log 3, 0) = (¾, ¼)
    # KL(t‖s) = ½ log(½/¾) + ½ log(½/¼) = ½ log(4/3)
    t = np.array([[0.0, 0.0]])
    s = np.array([[LOG(3.0), 0.0]])
    assert R.kl_div(t, s) == pytest.approx(0.5 * LOG(4 / 3), rel=1e-13)
    # the other direction: ¾ log(¾/½) + ¼ log(¼/½) = ¾ log(3/2) − ¼ log 2
    assert R.kl_div(s, t) == pytest.approx(0.75 * LOG(1.5) - 0.25 * LOG(2.0), rel=1e-13)


def test_kl_legacy_golden_is_negative():
    # legacy = mean over B·C of s·(log s − t), s = (¾, ¼) the student, t = (½, ½) the teacher:
    # [¾(log ¾ − ½) + ¼(log ¼ − ½)] / 2 = (¾ log ¾ + ¼ log ¼ − ½) / 2 ≈ −0.531168
    t = np.array([[0.0, 0.0]])
    s = np.array([[LOG(3.0), 0.0]])
    expect = (0.75 * LOG(0.75) + 0.25 * LOG(0.25) - 0.5) / 2
    got = R.kl_div(t, s, mode="legacy")
    assert got == pytest.approx(expect, rel=1e-13)
    assert got < 0
    # even teacher == student does not give 0: uniform over C=4 → (log ¼ − ¼)/4
    u = np.zeros((3, 4))
    assert R.kl_div(u, u, mode="legacy") == pytest.approx((LOG(0.25) - 0.25) / 4, rel=1e-13)
    with pytest.raises(ValueError, match="mode"):
        R.kl_div(u, u, mode="reverse")


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (3, 4), elements=st.floats(-20, 20)),
    arrays(np.float64, (3, 4), elements=st.floats(-20, 20)),
    st.sampled_from([0.5, 1.0, 4.0]),
)
def test_kl_proper_nonnegative_and_zero_on_equal(t, s, temp):
    assert R.kl_div(t, s, "proper", temp) >= -1e-12
    assert R.kl_div(t, t, "proper", temp) == pytest.approx(0.0, abs=1e-12)
    # temperature divides both logits (no T² factor)
    assert R.kl_div(t, s, "proper", temp) == pytest.approx(
        R.kl_div(t / temp, s / temp, "proper", 1.0), rel=1e-9, abs=1e-12
    )


@pytest.mark.filterwarnings("ignore:reduction:UserWarning")
def test_kl_against_torch():
    import torch
    f = torch.nn.functional
    rng = np.random.default_rng(2)
    t = rng.standard_normal((7, 5)) * 3
    s = rng.standard_normal((7, 5)) * 3
    tt, ss = torch.tensor(t), torch.tensor(s)
    for temp in (1.0, 2.0):
        proper = f.kl_div(f.log_softmax(ss / temp, 1), f.log_softmax(tt / temp, 1),
                          reduction="batchmean", log_target=True).item()
        assert R.kl_div(t, s, "proper", temp) == pytest.approx(proper, rel=1e-12)
        # the PT code's call, verbatim in shape: kl_div(input=softmax(teacher), target=softmax(
        # student)) with the default 'mean' reduction
        legacy = f.kl_div(input=f.softmax(tt / temp, 1), target=f.softmax(ss / temp, 1)).item()
        assert R.kl_div(t, s, "legacy", temp) == pytest.approx(legacy, rel=1e-12)


def test_vsd_vcd_compose_kl():
    rng = np.random.default_rng(3)
    out, _, _ = _random_out(rng)
    k = R.kl_div
    for mode in ("proper", "legacy"):
        vsd = k(out["i_obs.logits"], out["i_rep.logits"], mode, 2.0) + k(
            out["v_obs.logits"], out["v_rep.logits"], mode, 2.0)
        assert R.vsd_loss(out, mode, 2.0) == pytest.approx(vsd, rel=1e-14)
        vcd = 0.5 * k(out["v_ms_obs.logits"], out["i_ms_rep.logits"], mode) + 0.5 * k(
            out["i_ms_obs.logits"], out["v_ms_rep.logits"], mode)
        assert R.vcd_loss(out, mode) == pytest.approx(vcd, rel=1e-14)
    # a representation equal to its teacher → 0 (proper)
    same = dict(out)
    for o, r in (("i_obs", "i_rep"), ("v_obs", "v_rep")):
        same[f"{r}.logits"] = out[f"{o}.logits"]
    for o, r in (("v_ms_obs", "i_ms_rep"), ("i_ms_obs", "v_ms_rep")):
        same[f"{r}.logits"] = out[f"{o}.logits"]
    assert R.vsd_loss(same) == pytest.approx(0.0, abs=1e-14)
    assert R.vcd_loss(same) == pytest.approx(0.0, abs=1e-14)
    assert R.vsd_loss(out) > 0 and R.vcd_loss(out) > 0


# ------------------------------------------------------------------------------------------
# Sinkhorn / CML
# ------------------------------------------------------------------------------------------


def test_sinkhorn_equal_costs_golden():
    # p rows = (1, 0), q rows = (0, 1): every cost is 2, so any plan with total mass m costs 2m.
    # Iteration 1: M = −200 everywhere, u_j = 0.01(log(½ + 1e-8) + 200 − log 2) ≈ 1.986
    # (err ≈ 3.97 ≥ 0.1), then v ≈ 0 and π_jk = ¼(1 + O(1e-8)); iteration 2 changes u by
    # O(1e-10) < 0.1 → stop. Cost = 2·Σπ ≈ 2.
    # (exact logsumexp; the PT code's legacy lse: test_sinkhorn_legacy_lse_scalar_recurrence)
    p = np.array([[1.0, 0.0], [1.0, 0.0]])
    q = np.array([[0.0, 1.0], [0.0, 1.0]])
    pi, cost, iters = R.sinkhorn_plan(p, q, lse="exact")
    np.testing.assert_allclose(cost, 2.0, rtol=0, atol=0)
    np.testing.assert_allclose(pi, 0.25, rtol=1e-6)
    assert iters == 2
    assert R.sinkhorn_cost(p, q, lse="exact") == pytest.approx(2.0, rel=1e-6)


def test_sinkhorn_legacy_lse_scalar_recurrence():
    """The PT code's lse(A) = log(Σ exp(A) + 1e-6) on the equal-cost problem above: every u_j
    is one scalar a, every v_k one scalar b, so the Sinkhorn is the scalar recurrence
        a ← 0.01(log(½ + 1e-8) − log(2 e^{(−2 + a + b)/0.01} + 1e-6)) + a,   then b likewise,
    stopping once Σ_j |Δu_j| = 2|Δa| < 0.1. At the start every exp(M) = e^{−200} is swamped by
    the 1e-6 (lse ≈ log 1e-6 = −13.8, where the exact lse is −199.3), so u and v creep up by
    ~0.13 per iteration instead of jumping: many more iterations, a different plan."""
    def lse(m: float) -> float:  # two equal entries m
        return math.log(2.0 * math.exp(m) + 1e-6)

    a = b = 0.0
    n = 0
    while n < 100:
        n += 1
        a_prev = a
        a = 0.01 * (math.log(0.5 + 1e-8) - lse((-2.0 + a + b) / 0.01)) + a
        b = 0.01 * (math.log(0.5 + 1e-8) - lse((-2.0 + a + b) / 0.01)) + b
        if 2 * abs(a - a_prev) < 0.1:
            break
    pi_scalar = math.exp((-2.0 + a + b) / 0.01)
    p = np.array([[1.0, 0.0], [1.0, 0.0]])
    q = np.array([[0.0, 1.0], [0.0, 1.0]])
    pi, _, iters = R.sinkhorn_plan(p, q, lse="legacy")
    assert iters == n and iters > 2  # exact: 2
    np.testing.assert_allclose(pi, pi_scalar, rtol=1e-9)
    assert R.sinkhorn_cost(p, q) == pytest.approx(8 * pi_scalar, rel=1e-9)  # legacy is default
    # the 1e-6 stays in the plan: each column sums to about nu - 1e-6, not nu
    assert pi.sum(0) == pytest.approx(0.5 - 1e-6, abs=2e-7)


def test_sinkhorn_legacy_and_exact_lse_differ_once_softmaxes_sharpen():
    """SPEC §3: with logits N(0, 3²)..N(0, 10²) the legacy cost differs from the exact one by
    several percent; with flat softmaxes and a large eps (every Σ exp ≫ 1e-6) they agree."""
    rng = np.random.default_rng(12)
    gaps = []
    for scale in (3.0, 10.0):
        p = R.softmax(rng.standard_normal((8, 6)) * scale)
        q = R.softmax(rng.standard_normal((8, 6)) * scale)
        leg, ex = R.sinkhorn_cost(p, q, lse="legacy"), R.sinkhorn_cost(p, q, lse="exact")
        gaps.append(abs(leg - ex) / ex)
    assert max(gaps) > 0.02, gaps
    p = R.softmax(rng.standard_normal((8, 6)) * 0.3)
    q = R.softmax(rng.standard_normal((8, 6)) * 0.3)
    assert R.sinkhorn_cost(p, q, eps=1.0, lse="legacy") == pytest.approx(
        R.sinkhorn_cost(p, q, eps=1.0, lse="exact"), rel=1e-4)
    with pytest.raises(ValueError, match="lse"):
        R.sinkhorn_plan(p, q, lse="bogus")


def test_sinkhorn_identical_inputs_cost_zero():
    # p = q = one-hot rows e1, e2: Cost = [[0, 2], [2, 0]]. Iteration 1: u ≈ 0.01·log ½ (err
    # ≈ 0.0139 < 0.1 → stop after 1 iteration), π ≈ diag(½), off-diagonal ≈ ½e^{−200}: cost ≈ 0.
    # (legacy lse: the diagonal sums to 1/2 - 1e-6, see the legacy tests)
    p = np.eye(2)
    for lse, atol in (("exact", 1e-7), ("legacy", 2e-6)):
        pi, _, iters = R.sinkhorn_plan(p, p, lse=lse)
        assert iters == 1
        np.testing.assert_allclose(pi, np.diag([0.5, 0.5]), atol=atol)
        assert 0.0 <= R.sinkhorn_cost(p, p, lse=lse) < 1e-12
        # swapped rows: the transport is the anti-diagonal, cost again ≈ 0
        assert R.sinkhorn_cost(p, p[::-1], lse=lse) < 1e-12


def test_sinkhorn_marginals_cost_and_symmetry():
    rng = np.random.default_rng(4)
    b, c = 6, 5
    p = R.softmax(rng.standard_normal((b, c)) * 2)
    q = R.softmax(rng.standard_normal((b, c)) * 2)
    pi, cost, iters = R.sinkhorn_plan(p, q, lse="exact")
    assert 1 <= iters <= 100
    assert np.all(pi >= 0) and np.all(cost >= 0)
    assert R.sinkhorn_cost(p, q, lse="exact") >= 0
    # v is updated last: column marginals equal nu = 1/B (up to the 1e-8 inside the log)
    np.testing.assert_allclose(pi.sum(0), 1.0 / b, rtol=1e-6)
    # legacy lse: nu'·S/(S + 1e-6), S the column sums before the v update: short of nu by
    # ~1e-6·nu/S (S < nu before convergence), far beyond the exact lse's 1e-8
    pi_leg, _, _ = R.sinkhorn_plan(p, q, lse="legacy")
    short = 1.0 / b - pi_leg.sum(0)
    assert np.all(short > 5e-7) and np.all(short < 5e-6), short
    # run to convergence: both marginals uniform; the cost no larger than the independent
    # coupling's (uniform plan) average cost; and swapping p, q gives the same cost
    pi, cost, _ = R.sinkhorn_plan(p, q, eps=0.05, max_iter=5000, thresh=1e-12, lse="exact")
    np.testing.assert_allclose(pi.sum(1), 1.0 / b, rtol=1e-6)
    np.testing.assert_allclose(pi.sum(0), 1.0 / b, rtol=1e-6)
    ot = float(np.sum(pi * cost))
    assert ot <= cost.mean() + 1e-12
    back = R.sinkhorn_cost(q, p, eps=0.05, max_iter=5000, thresh=1e-12, lse="exact")
    assert back == pytest.approx(ot, rel=1e-6)
    assert SINKHORN_THRESH == 0.1 and SINKHORN_MARGINAL_EPS == 1e-8


def test_sinkhorn_max_iter_caps_iterations():
    rng = np.random.default_rng(5)
    p = R.softmax(rng.standard_normal((4, 3)) * 3)
    q = R.softmax(rng.standard_normal((4, 3)) * 3)
    _, _, iters = R.sinkhorn_plan(p, q, max_iter=1, thresh=0.0)
    assert iters == 1
    _, _, iters = R.sinkhorn_plan(p, q, max_iter=7, thresh=0.0)
    assert iters == 7


def test_cml_loss_uses_softmax_of_i_and_v_obs():
    rng = np.random.default_rng(6)
    out, _, _ = _random_out(rng)
    expect = R.sinkhorn_cost(R.softmax(out["i_obs.logits"]), R.softmax(out["v_obs.logits"]))
    assert R.cml_loss(out) == pytest.approx(expect, rel=1e-14)
    same = dict(out) | {"v_obs.logits": out["i_obs.logits"]}
    assert R.cml_loss(same) < R.cml_loss(out)


# ------------------------------------------------------------------------------------------
# weighted losses and the total
# ------------------------------------------------------------------------------------------


def test_id_and_triplet_loss_branch_weighting():
    rng = np.random.default_rng(7)
    out, labels, modality = _random_out(rng)
    ce = {k: R.cross_entropy(out[f"{k}.logits"], labels, 0.1) for k in BRANCH_WEIGHTS}
    expect = (0.5 * (ce["i_obs"] + ce["i_rep"]) + 0.5 * (ce["v_obs"] + ce["v_rep"])
              + 0.25 * (ce["i_ms_obs"] + ce["i_ms_rep"]) + 0.25 * (ce["v_ms_obs"] + ce["v_ms_rep"]))
    assert R.id_loss(out, labels, 0.1) == pytest.approx(expect, rel=1e-14)

    bh = LossConfig(triplet="batch_hard", margin=0.5)
    tri = {k: R.batch_hard_triplet(out[METRIC_TAP[k]], labels, 0.5) for k in BRANCH_WEIGHTS}
    assert R.triplet_loss(out, labels, modality, bh) == pytest.approx(R.branch_weighted(tri),
                                                                      rel=1e-14)
    assert tri["v_obs"] == R.batch_hard_triplet(out["v_obs.feat"], labels, 0.5)
    assert tri["v_rep"] == R.batch_hard_triplet(out["v_rep.z"], labels, 0.5)

    rl = LossConfig(triplet="ranked_list", rll_m1=0.8, rll_m2=1.1, rll_a1=2.1, rll_a2=1.9)
    rll = {k: R.ranked_list_loss(out[METRIC_TAP[k]], labels, modality, 0.8, 1.1, 2.1, 1.9)
           for k in BRANCH_WEIGHTS}
    assert R.triplet_loss(out, labels, modality, rl) == pytest.approx(R.branch_weighted(rll),
                                                                      rel=1e-14)


@pytest.mark.parametrize("preset", list(PRESET_WEIGHTS))
def test_mvd_loss_terms_and_total(preset):
    rng = np.random.default_rng(8)
    out, labels, modality = _random_out(rng)
    cfg = LossConfig(preset=preset, label_smoothing=0.1, triplet="ranked_list", kl="proper",
                     temperature=1.0)
    terms = R.mvd_loss(out, labels, modality, cfg)
    weights = PRESET_WEIGHTS[preset]
    assert set(terms) == set(weights) | {"total"}
    assert all(isinstance(v, float) for v in terms.values())
    assert terms["total"] == pytest.approx(sum(weights[k] * terms[k] for k in weights), rel=1e-14)
    assert terms["id"] == pytest.approx(R.id_loss(out, labels, 0.1), rel=1e-14)
    if "tri" in terms:
        assert terms["tri"] == pytest.approx(R.triplet_loss(out, labels, modality, cfg), rel=1e-14)
    if "vsd" in terms:
        assert terms["vsd"] == pytest.approx(R.vsd_loss(out, "proper", 1.0), rel=1e-14)
        assert terms["vcd"] == pytest.approx(R.vcd_loss(out, "proper", 1.0), rel=1e-14)
    if "cml" in terms:
        assert terms["cml"] == pytest.approx(R.cml_loss(out, 0.01, 100), rel=1e-14)


def test_mvd_loss_pt_total_and_config_flow():
    rng = np.random.default_rng(9)
    out, labels, modality = _random_out(rng)
    cfg = LossConfig(preset="mvd-pt", label_smoothing=0.1, triplet="ranked_list")
    t = R.mvd_loss(out, labels, modality, cfg)
    assert t["total"] == pytest.approx(
        t["id"] + t["tri"] + 8 * t["cml"] + 2 * t["vsd"] + 2 * t["vcd"], rel=1e-14
    )
    # kl / temperature / sinkhorn settings reach the terms; the temperature reaches VSD only
    # (the PT code's VCD has none)
    leg = R.mvd_loss(out, labels, modality, dataclasses.replace(cfg, kl="legacy", temperature=2.0))
    assert leg["vsd"] == pytest.approx(R.vsd_loss(out, "legacy", 2.0), rel=1e-14)
    assert leg["vcd"] == pytest.approx(R.vcd_loss(out, "legacy", 1.0), rel=1e-14)
    assert leg["vcd"] != pytest.approx(R.vcd_loss(out, "legacy", 2.0), rel=1e-6)
    sk = R.mvd_loss(out, labels, modality,
                    dataclasses.replace(cfg, sinkhorn_eps=0.1, sinkhorn_iters=3))
    assert sk["cml"] == pytest.approx(R.cml_loss(out, 0.1, 3), rel=1e-14)
    assert sk["cml"] != pytest.approx(t["cml"], rel=1e-6)
    assert cfg.cml_lse == "legacy" and t["cml"] == pytest.approx(R.cml_loss(out, lse="legacy"))
    ex = R.mvd_loss(out, labels, modality, dataclasses.replace(cfg, cml_lse="exact"))
    assert ex["cml"] == pytest.approx(R.cml_loss(out, lse="exact"), rel=1e-14)
    with pytest.raises(ValueError, match="loss.preset"):
        R.mvd_loss(out, labels, modality, dataclasses.replace(cfg, preset="bogus"))
