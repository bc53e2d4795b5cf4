"""The torch primitives, and the shared composition over them, against the NumPy float64
reference (tests/reference_losses.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import reference_losses as ref
import torch

from mvd_backends.torch import losses as tl
from mvd_core.config import LossConfig
from mvd_core.errors import ConfigError
from mvd_core.interface import OBSERVATIONS, REPRESENTATIONS, TAP_NAMES
from mvd_core.model import losses as shared
from mvd_core.model.losses import PRESET_WEIGHTS

pytestmark = pytest.mark.torch

torch.set_num_threads(1)  # 2 shared cores: one thread each is faster

B, C, D, Z = 12, 7, 16, 8  # batch, classes, feature and code sizes


def _labels(rng: np.random.Generator, n: int = B, ids: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Each id has visible and thermal samples, like the real sampler."""
    labels = np.repeat(np.arange(ids), n // ids)
    modality = np.tile([0, 1], n // 2)
    perm = rng.permutation(n)
    return labels[perm].astype(np.int64), modality[perm].astype(np.int64)


def _out(rng: np.random.Generator, scale: float = 2.0) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for o in OBSERVATIONS:
        out[f"{o}.feat"] = rng.standard_normal((B, D))
        out[f"{o}.logits"] = scale * rng.standard_normal((B, C))
    for r in REPRESENTATIONS:
        out[f"{r}.z"] = rng.standard_normal((B, Z))
        out[f"{r}.logits"] = scale * rng.standard_normal((B, C))
    out["feat"] = rng.standard_normal((B, 4 * D))
    assert set(out) == set(TAP_NAMES)
    return out


def _t(a: np.ndarray, dtype: torch.dtype = torch.float64, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=dtype, requires_grad=grad)


def _tout(out: dict[str, np.ndarray], grad: bool = False) -> dict[str, torch.Tensor]:
    return {k: _t(v, grad=grad) for k, v in out.items()}


def _term(name: str, tout: dict, labels: np.ndarray | None = None,
          modality: np.ndarray | None = None, cfg: LossConfig | None = None) -> torch.Tensor:
    """One term of the shared composition over the torch primitives."""
    y = None if labels is None else torch.tensor(labels)
    m = None if modality is None else torch.tensor(modality)
    plan = shared.loss_plan(cfg or LossConfig())
    return shared.term(tl, name, shared.taps_of(tout), y, m, plan)


# ------------------------------------------------------------------ elementary losses


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy(seed: int, eps: float) -> None:
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((B, C))
    labels = rng.integers(0, C, B)
    got = tl.cross_entropy(_t(logits), torch.tensor(labels), eps)
    assert float(got) == pytest.approx(ref.cross_entropy(logits, labels, eps), rel=1e-10)
    got32 = tl.cross_entropy(_t(logits, torch.float32), torch.tensor(labels), eps)
    assert got32.dtype == torch.float32
    assert float(got32) == pytest.approx(ref.cross_entropy(logits, labels, eps), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("margin", [0.3, 5.0])
def test_batch_hard_triplet(seed: int, margin: float) -> None:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((B, D))
    labels, _ = _labels(rng)
    got = tl.batch_hard_triplet(_t(feats), torch.tensor(labels), margin)
    assert float(got) == pytest.approx(ref.batch_hard_triplet(feats, labels, margin), rel=1e-9)
    got32 = tl.batch_hard_triplet(_t(feats, torch.float32), torch.tensor(labels), margin)
    assert float(got32) == pytest.approx(ref.batch_hard_triplet(feats, labels, margin), rel=1e-5)


def test_batch_hard_triplet_self_is_a_positive() -> None:
    # two ids, one sample each: the hardest positive is the anchor itself (d = 1e-6)
    feats = np.array([[0.0, 0.0], [1.0, 0.0]])
    labels = np.array([0, 1])
    got = float(tl.batch_hard_triplet(_t(feats), torch.tensor(labels), 2.0))
    assert got == pytest.approx(1e-6 - 1.0 + 2.0, abs=1e-12)
    assert got == pytest.approx(ref.batch_hard_triplet(feats, labels, 2.0), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thresholds", [(0.9, 1.0, 2.2, 2.0), (0.2, 0.3, 1.3, 1.2)])
def test_ranked_list_loss(seed: int, thresholds: tuple[float, float, float, float]) -> None:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((B, D)) + 0.5  # not centred: distances spread around the a's
    labels, modality = _labels(rng)
    m1, m2, a1, a2 = thresholds
    want = ref.ranked_list_loss(feats, labels, modality, m1, m2, a1, a2)
    got = tl.ranked_list_loss(_t(feats), torch.tensor(labels), torch.tensor(modality), *thresholds)
    assert float(got) == pytest.approx(want, rel=1e-9)


def test_ranked_list_loss_empty_sets_contribute_zero() -> None:
    # every sample its own identity and all visible: no positives, negatives only
    rng = np.random.default_rng(5)
    feats = rng.standard_normal((6, 4))
    labels = np.arange(6)
    modality = np.zeros(6, np.int64)
    want = ref.ranked_list_loss(feats, labels, modality)
    got = tl.ranked_list_loss(_t(feats), torch.tensor(labels), torch.tensor(modality))
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert np.isfinite(float(got))


@pytest.mark.parametrize("mode", ["proper", "legacy"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_div(mode: str, temperature: float) -> None:
    rng = np.random.default_rng(7)
    t, s = 3 * rng.standard_normal((B, C)), 3 * rng.standard_normal((B, C))
    got = tl.kl_div(_t(t), _t(s), mode, temperature)
    assert float(got) == pytest.approx(ref.kl_div(t, s, mode, temperature), rel=1e-9, abs=1e-14)


def test_kl_proper_is_a_divergence() -> None:
    rng = np.random.default_rng(8)
    t, s = rng.standard_normal((B, C)), rng.standard_normal((B, C))
    assert float(tl.kl_div(_t(t), _t(s))) > 0
    assert float(tl.kl_div(_t(t), _t(t))) == pytest.approx(0.0, abs=1e-12)
    # invariant to a per-row shift of the logits
    assert float(tl.kl_div(_t(t + 5.0), _t(s - 2.0))) == pytest.approx(
        float(tl.kl_div(_t(t), _t(s))), rel=1e-10
    )


def test_kl_legacy_can_be_negative() -> None:
    # t = (1/2, 1/2), s = (3/4, 1/4): the reference's worked example, −0.5311
    t = np.array([[0.0, 0.0]])
    s = np.array([[np.log(3.0), 0.0]])
    got = float(tl.kl_div(_t(t), _t(s), "legacy"))
    assert got < 0
    assert got == pytest.approx(ref.kl_div(t, s, "legacy"), rel=1e-12)
    assert got == pytest.approx(-0.5311, abs=1e-4)
    # and it is not zero for identical distributions, unlike a divergence
    assert float(tl.kl_div(_t(s), _t(s), "legacy")) != pytest.approx(0.0, abs=1e-3)


def test_kl_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        tl.kl_div(_t(np.zeros((1, 2))), _t(np.zeros((1, 2))), "sym")


@pytest.mark.parametrize("mode", ["proper", "legacy"])
def test_kl_gradient_reaches_the_student_only(mode: str) -> None:
    rng = np.random.default_rng(9)
    t = _t(rng.standard_normal((B, C)), grad=True)
    s = _t(rng.standard_normal((B, C)), grad=True)
    gt, gs = torch.autograd.grad(tl.kl_div(t, s, mode), [t, s], allow_unused=True)
    assert gt is None or float(gt.abs().max()) == 0.0
    assert float(gs.abs().max()) > 0.0


def _numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def test_batch_hard_triplet_gradient_matches_reference() -> None:
    # the masked max/min (±inf fills) have the reference's gradient
    rng = np.random.default_rng(12)
    labels = np.repeat([3, 7, 9, 11], 4)
    feats = rng.standard_normal((16, 6))
    ft = _t(feats, grad=True)
    (g,) = torch.autograd.grad(tl.batch_hard_triplet(ft, torch.as_tensor(labels), 0.3), [ft])
    want = _numeric_grad(lambda x: ref.batch_hard_triplet(x, labels, 0.3), feats)
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mode", ["proper", "legacy"])
def test_kl_student_gradient_matches_reference(mode: str) -> None:
    rng = np.random.default_rng(10)
    t, s = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    st = _t(s, grad=True)
    (g,) = torch.autograd.grad(tl.kl_div(_t(t), st, mode, 2.0), [st])
    want = _numeric_grad(lambda x: ref.kl_div(t, x, mode, 2.0), s)
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", ["proper", "legacy"])
def test_vsd_vcd(mode: str) -> None:
    rng = np.random.default_rng(11)
    out = _out(rng)
    tout = _tout(out, grad=True)
    vsd = _term("vsd", tout, cfg=LossConfig(kl=mode))
    vcd = _term("vcd", tout, cfg=LossConfig(kl=mode))
    assert float(vsd.detach()) == pytest.approx(ref.vsd_loss(out, mode, 1.0), rel=1e-9)
    assert float(vcd.detach()) == pytest.approx(ref.vcd_loss(out, mode, 1.0), rel=1e-9)
    names = [f"{x}.logits" for x in OBSERVATIONS + REPRESENTATIONS]
    grads = torch.autograd.grad(vsd + vcd, [tout[n] for n in names], allow_unused=True)
    for n, g in zip(names, grads, strict=True):
        if n.split(".")[0] in OBSERVATIONS:  # teachers: stop-gradient
            assert g is None or float(g.abs().max()) == 0.0, n
        else:  # every representation is a student of exactly one pair
            assert g is not None and float(g.abs().max()) > 0.0, n


# ------------------------------------------------------------------ Sinkhorn / CML


def _probs(rng: np.random.Generator, n: int = B, c: int = C, scale: float = 3.0) -> np.ndarray:
    return ref.softmax(scale * rng.standard_normal((n, c)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_iter", [1, 3, 100])
@pytest.mark.parametrize("eps", [0.01, 0.1])
@pytest.mark.parametrize("lse", ["legacy", "exact"])
def test_sinkhorn_cost(seed: int, max_iter: int, eps: float, lse: str) -> None:
    rng = np.random.default_rng(seed)
    p, q = _probs(rng), _probs(rng)
    want = ref.sinkhorn_cost(p, q, eps, max_iter, lse=lse)
    got = tl.sinkhorn_cost(_t(p), _t(q), eps, max_iter, lse=lse)
    assert float(got) == pytest.approx(want, rel=1e-8)
    got32 = tl.sinkhorn_cost(_t(p, torch.float32), _t(q, torch.float32), eps, max_iter, lse=lse)
    assert float(got32) == pytest.approx(want, rel=2e-4, abs=1e-6)


@pytest.mark.parametrize("scale", [3.0, 10.0])
def test_sinkhorn_legacy_lse_is_a_different_loss(scale: float) -> None:
    """The PT code's lse (default) vs the exact one on sharp softmaxes: each backend matches
    its own reference, and the two differ by more than float noise (SPEC §3: 4-15 %)."""
    rng = np.random.default_rng(21)
    p, q = _probs(rng, 16, 10, scale), _probs(rng, 16, 10, scale)
    f32 = {k: float(tl.sinkhorn_cost(_t(p, torch.float32), _t(q, torch.float32), lse=k))
           for k in ("legacy", "exact")}
    for k, v in f32.items():
        assert v == pytest.approx(ref.sinkhorn_cost(p, q, lse=k), rel=2e-4)
    assert abs(f32["legacy"] - f32["exact"]) > 0.01 * f32["exact"]
    assert float(tl.sinkhorn_cost(_t(p), _t(q))) == pytest.approx(f32["legacy"], rel=2e-4)
    with pytest.raises(ValueError, match="cml_lse"):
        tl.sinkhorn_cost(_t(p), _t(q), lse="bogus")


def test_sinkhorn_early_stop_matches_reference_iterations() -> None:
    rng = np.random.default_rng(3)
    p, q = _probs(rng), _probs(rng)
    _, _, iters = ref.sinkhorn_plan(p, q, 0.01, 100)
    assert 1 < iters < 100  # the case exercises the early stop
    # stopping later than the reference would give a different value
    later = ref.sinkhorn_cost(p, q, 0.01, 100, thresh=1e-9)
    got = float(tl.sinkhorn_cost(_t(p), _t(q), 0.01, 100))
    assert got == pytest.approx(ref.sinkhorn_cost(p, q, 0.01, 100), rel=1e-10)
    assert abs(got - later) > 1e-9


@pytest.mark.parametrize("seed", [0, 4])
@pytest.mark.parametrize("lse", ["legacy", "exact"])
def test_sinkhorn_sync_free_path_equals_early_stop(seed: int, lse: str) -> None:
    """The accelerator path (frozen iterates, no host read) = the early-stopping path, in
    values and in gradients."""
    rng = np.random.default_rng(seed)
    p, q = _probs(rng), _probs(rng)

    def run(sync_free: bool) -> tuple[float, np.ndarray]:
        pt = _t(p, grad=True)
        cost = torch.sum((pt[:, None, :] - _t(q)[None, :, :]) ** 2, dim=-1)
        val = torch.sum(tl._sinkhorn_plan(cost, 0.01, 100, sync_free=sync_free, lse=lse) * cost)
        (g,) = torch.autograd.grad(val, [pt])
        return float(val.detach()), g.numpy()

    v1, g1 = run(False)
    v2, g2 = run(True)
    assert v1 == v2
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("lse, eps", [("exact", 0.1), ("legacy", 0.1), ("legacy", 0.01)])
def test_sinkhorn_gradient_through_iterations(lse: str, eps: float) -> None:
    rng = np.random.default_rng(6)
    p, q = _probs(rng, 5, 4, 1.0), _probs(rng, 5, 4, 1.0)
    pt, qt = _t(p, grad=True), _t(q, grad=True)
    gp, gq = torch.autograd.grad(tl.sinkhorn_cost(pt, qt, eps, 5, lse=lse), [pt, qt])
    np.testing.assert_allclose(
        gp.numpy(),
        _numeric_grad(lambda x: ref.sinkhorn_cost(x, q, eps, 5, lse=lse), p),
        rtol=1e-5,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        gq.numpy(),
        _numeric_grad(lambda x: ref.sinkhorn_cost(p, x, eps, 5, lse=lse), q),
        rtol=1e-5,
        atol=1e-8,
    )


def test_cml_loss() -> None:
    rng = np.random.default_rng(12)
    out = _out(rng)
    tout = _tout(out, grad=True)
    got = _term("cml", tout, cfg=LossConfig(sinkhorn_eps=0.01, sinkhorn_iters=100))
    assert float(got.detach()) == pytest.approx(ref.cml_loss(out, 0.01, 100), rel=1e-8)
    gi, gv = torch.autograd.grad(got, [tout["i_obs.logits"], tout["v_obs.logits"]])
    assert float(gi.abs().max()) > 0 and float(gv.abs().max()) > 0


# ------------------------------------------------------------------ combinations


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_id_loss(eps: float) -> None:
    rng = np.random.default_rng(13)
    out = _out(rng)
    labels, _ = _labels(rng)
    got = _term("id", _tout(out), labels, cfg=LossConfig(label_smoothing=eps))
    assert float(got) == pytest.approx(ref.id_loss(out, labels, eps), rel=1e-10)


@pytest.mark.parametrize("kind", ["batch_hard", "ranked_list"])
def test_triplet_loss(kind: str) -> None:
    rng = np.random.default_rng(14)
    out = _out(rng)
    labels, modality = _labels(rng)
    cfg = LossConfig(triplet=kind)
    got = _term("tri", _tout(out), labels, modality, cfg)
    assert float(got) == pytest.approx(ref.triplet_loss(out, labels, modality, cfg), rel=1e-9)


def test_triplet_loss_bad_kind() -> None:
    rng = np.random.default_rng(14)
    labels, modality = _labels(rng)
    cfg = dataclasses.replace(LossConfig(), triplet="lifted")
    with pytest.raises(ConfigError, match="loss.triplet: 'lifted'"):
        tl.mvd_loss(_tout(_out(rng)), torch.tensor(labels), torch.tensor(modality), cfg)


@pytest.mark.parametrize("preset", list(PRESET_WEIGHTS))
@pytest.mark.parametrize("kl", ["proper", "legacy"])
def test_mvd_loss(preset: str, kl: str) -> None:
    rng = np.random.default_rng(15)
    out = _out(rng)
    labels, modality = _labels(rng)
    triplet = "ranked_list" if preset == "mvd-pt" else "batch_hard"
    cfg = LossConfig(preset=preset, kl=kl, triplet=triplet, label_smoothing=0.1)
    want = ref.mvd_loss(out, labels, modality, cfg)
    got = tl.mvd_loss(_tout(out), torch.tensor(labels), torch.tensor(modality), cfg)
    assert set(got) == set(want) == set(PRESET_WEIGHTS[preset]) | {"total"}
    for k in want:
        assert float(got[k]) == pytest.approx(want[k], rel=1e-8, abs=1e-12), k
    # float32 inputs (what the network produces) stay within float32 tolerance
    got32 = tl.mvd_loss(
        {k: v.float() for k, v in _tout(out).items()},
        torch.tensor(labels),
        torch.tensor(modality),
        cfg,
    )
    assert got32["total"].dtype == torch.float32
    assert float(got32["total"]) == pytest.approx(want["total"], rel=1e-4)


@pytest.mark.parametrize("cml_lse", ["legacy", "exact"])
def test_mvd_loss_vcd_has_no_temperature_and_cml_lse_flows(cml_lse: str) -> None:
    """The PT code divides by the temperature in VSD only; loss.cml_lse picks the Sinkhorn lse."""
    rng = np.random.default_rng(17)
    out = _out(rng)
    labels, modality = _labels(rng)
    cfg = LossConfig(preset="mvd-pt", triplet="ranked_list", temperature=3.0, cml_lse=cml_lse)
    got = tl.mvd_loss(_tout(out), torch.tensor(labels), torch.tensor(modality), cfg)
    assert float(got["vsd"]) == pytest.approx(ref.vsd_loss(out, "proper", 3.0), rel=1e-9)
    assert float(got["vcd"]) == pytest.approx(ref.vcd_loss(out, "proper", 1.0), rel=1e-9)
    assert float(got["vcd"]) != pytest.approx(ref.vcd_loss(out, "proper", 3.0), rel=1e-3)
    assert float(got["cml"]) == pytest.approx(ref.cml_loss(out, lse=cml_lse), rel=1e-8)


def test_mvd_loss_total_gradient_matches_reference() -> None:
    """d total / d (one tap) against central differences of the reference. Observation
    logits are KL teachers (stop-gradient), so for them the reference is differentiated
    without the VSD/VCD terms."""
    rng = np.random.default_rng(16)
    out = _out(rng, scale=1.0)
    labels, modality = _labels(rng)
    cfg = LossConfig(preset="mvd-pt", triplet="ranked_list", label_smoothing=0.1, sinkhorn_eps=0.1)
    weights = PRESET_WEIGHTS["mvd-pt"]
    for tap in ("i_rep.logits", "v_ms_rep.logits", "v_obs.logits", "v_ms_obs.feat"):
        tout = _tout(out)
        tout[tap] = _t(out[tap], grad=True)
        total = tl.mvd_loss(tout, torch.tensor(labels), torch.tensor(modality), cfg)["total"]
        (g,) = torch.autograd.grad(total, [tout[tap]])
        teacher = tap.endswith("_obs.logits")

        def f(x: np.ndarray, tap: str = tap, teacher: bool = teacher) -> float:
            terms = ref.mvd_loss({**out, tap: x}, labels, modality, cfg)
            skip = ("vsd", "vcd") if teacher else ()
            return sum(w * terms[k] for k, w in weights.items() if k not in skip)

        # central differences at a dozen entries (the reference is slow, loop-based)
        picks = [tuple(ix) for ix in rng.integers(0, out[tap].shape, (12, 2))]
        for ix in picks:
            xp, xm = out[tap].copy(), out[tap].copy()
            xp[ix] += 1e-6
            xm[ix] -= 1e-6
            num = (f(xp) - f(xm)) / 2e-6
            assert float(g[ix]) == pytest.approx(num, rel=1e-4, abs=1e-7), (tap, ix)
