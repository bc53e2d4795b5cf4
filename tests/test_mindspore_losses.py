"""The MindSpore primitives, and the shared composition over them (the loss cell the backend
compiles), against the NumPy reference (tests/reference_losses.py), in PyNative and inside
``mindspore.jit`` (graph mode), plus the gradient properties of the distillation terms."""

from __future__ import annotations

import os

os.environ.setdefault("MVD_MS_THREADS", "1")

import dataclasses  # noqa: E402
import inspect  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import reference_losses as ref  # noqa: E402
from mindspore import Tensor  # noqa: E402

from mvd_backends.mindspore import losses as L  # noqa: E402
from mvd_core.config import LossConfig  # noqa: E402
from mvd_core.errors import ConfigError  # noqa: E402
from mvd_core.interface import TAP_NAMES  # noqa: E402
from mvd_core.model import losses as shared  # noqa: E402
from mvd_core.model.losses import PRESET_WEIGHTS  # noqa: E402

pytestmark = pytest.mark.mindspore

RTOL, ATOL = 1e-5, 1e-6  # float32 vs float64 reference on O(1) values


def T(a) -> Tensor:  # noqa: N802
    a = np.asarray(a)
    return Tensor(a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int32))


def _batch(rng: np.random.Generator, n_ids: int = 4, per: int = 4, dim: int = 6):
    labels = np.repeat(rng.choice(50, n_ids, replace=False), per)
    modality = np.tile(np.repeat([0, 1], per // 2), n_ids)
    feats = rng.standard_normal((n_ids * per, dim)).astype(np.float32)
    return feats, labels, modality


def _taps(rng: np.random.Generator, b: int = 8, c: int = 5, d: int = 6, z: int = 4) -> dict:
    out = {}
    for k in TAP_NAMES:
        if k.endswith(".logits"):
            out[k] = (2.0 * rng.standard_normal((b, c))).astype(np.float32)
        elif k.endswith(".z"):
            out[k] = rng.standard_normal((b, z)).astype(np.float32)
        else:
            out[k] = rng.standard_normal((b, d if k != "feat" else 4 * d)).astype(np.float32)
    return out


def _term(name: str, tout: dict, labels=None, modality=None, cfg: LossConfig | None = None):
    """One term of the shared composition over the MindSpore primitives (PyNative)."""
    plan = shared.loss_plan(cfg or LossConfig())
    y = None if labels is None else T(labels)
    m = None if modality is None else T(modality)
    return shared.term(L, name, shared.taps_of(tout), y, m, plan)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(smoothing: float) -> None:
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((8, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 8)
    got = float(L.cross_entropy(T(logits), T(labels), smoothing).asnumpy())
    assert got == pytest.approx(ref.cross_entropy(logits, labels, smoothing), rel=RTOL)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_hard_triplet(seed: int) -> None:
    feats, labels, _ = _batch(np.random.default_rng(seed))
    for margin in (0.3, 5.0):
        got = float(L.batch_hard_triplet(T(feats), T(labels), margin).asnumpy())
        assert got == pytest.approx(ref.batch_hard_triplet(feats, labels, margin), rel=RTOL, abs=ATOL)


def _numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("graph", [False, True], ids=["pynative", "jit"])
def test_batch_hard_triplet_gradient_and_repeatability(graph: bool) -> None:
    # the value and gradient (ties of the masked max/min shared) are the reference's, and a
    # compiled call repeated gives the same finite value every time
    feats, labels, _ = _batch(np.random.default_rng(4))
    want = _numeric_grad(lambda x: ref.batch_hard_triplet(x, labels, 0.3), feats)
    def fn(f, y):
        return L.batch_hard_triplet(f, y, 0.3)

    grad_fn = ms.value_and_grad(fn, grad_position=0)
    if graph:
        grad_fn = ms.jit(grad_fn)
    value, g = grad_fn(T(feats), T(labels))
    assert float(value.asnumpy()) == pytest.approx(ref.batch_hard_triplet(feats, labels, 0.3),
                                                   rel=RTOL, abs=ATOL)
    np.testing.assert_allclose(g.asnumpy(), want, rtol=1e-3, atol=1e-5)
    values = {float(grad_fn(T(feats), T(labels))[0].asnumpy()) for _ in range(20)}
    assert values == {float(value.asnumpy())}


@pytest.mark.parametrize("seed", [4, 5])
def test_ranked_list_loss(seed: int) -> None:
    feats, labels, modality = _batch(np.random.default_rng(seed))
    for args in ((0.9, 1.0, 2.2, 2.0), (0.5, 0.3, 1.2, 1.4)):
        got = float(L.ranked_list_loss(T(feats), T(labels), T(modality), *args).asnumpy())
        want = ref.ranked_list_loss(feats, labels, modality, *args)
        assert got == pytest.approx(want, rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("mode", ["proper", "legacy"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_div(mode: str, temperature: float) -> None:
    rng = np.random.default_rng(6)
    t, s = (3 * rng.standard_normal((2, 8, 5))).astype(np.float32)
    got = float(L.kl_div(T(t), T(s), mode, temperature).asnumpy())
    assert got == pytest.approx(ref.kl_div(t, s, mode, temperature), rel=RTOL, abs=ATOL)


def test_legacy_kl_can_be_negative_and_proper_cannot() -> None:
    # t = (1/2, 1/2), s = (3/4, 1/4): the reference's worked example, −0.5311
    t = np.log(np.array([[0.5, 0.5]], np.float32))
    s = np.log(np.array([[0.75, 0.25]], np.float32))
    legacy = float(L.kl_div(T(t), T(s), "legacy").asnumpy())
    assert legacy == pytest.approx(-0.5311, abs=1e-4)
    assert legacy == pytest.approx(ref.kl_div(t, s, "legacy"), rel=RTOL)
    assert float(L.kl_div(T(t), T(s), "proper").asnumpy()) > 0.0
    with pytest.raises(ValueError, match="mode"):
        L.kl_div(T(t), T(s), "reverse")


@pytest.mark.parametrize("mode", ["proper", "legacy"])
def test_kl_gradient_reaches_only_the_student(mode: str) -> None:
    rng = np.random.default_rng(7)
    t, s = (2 * rng.standard_normal((2, 6, 4))).astype(np.float32)
    gt, gs = ms.grad(lambda a, b: L.kl_div(a, b, mode), grad_position=(0, 1))(T(t), T(s))
    assert np.all(gt.asnumpy() == 0.0)
    if mode == "proper":  # d/ds KL(t‖softmax(s)) = (softmax(s) − t)/B
        want = (ref.softmax(s) - ref.softmax(t)) / s.shape[0]
        np.testing.assert_allclose(gs.asnumpy(), want, rtol=1e-4, atol=1e-6)
    else:  # central differences of the float64 reference
        eps, num = 1e-4, np.zeros_like(s, dtype=np.float64)
        for idx in np.ndindex(s.shape):
            d = np.zeros_like(s, dtype=np.float64)
            d[idx] = eps
            num[idx] = (ref.kl_div(t, s + d, mode) - ref.kl_div(t, s - d, mode)) / (2 * eps)
        np.testing.assert_allclose(gs.asnumpy(), num, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("mode", ["proper", "legacy"])
def test_vsd_vcd(mode: str) -> None:
    out = _taps(np.random.default_rng(8))
    tout = {k: T(v) for k, v in out.items()}
    cfg = LossConfig(kl=mode)
    assert float(_term("vsd", tout, cfg=cfg).asnumpy()) == pytest.approx(
        ref.vsd_loss(out, mode), rel=RTOL, abs=ATOL)
    assert float(_term("vcd", tout, cfg=cfg).asnumpy()) == pytest.approx(
        ref.vcd_loss(out, mode), rel=RTOL, abs=ATOL)
    # the teachers (observations) get no gradient from VSD/VCD; the students do
    names = ("i_obs.logits", "i_rep.logits", "v_ms_obs.logits", "i_ms_rep.logits")

    def f(a, b, c, d):
        o = dict(tout)
        o.update(zip(names, (a, b, c, d)))
        return _term("vsd", o, cfg=cfg) + _term("vcd", o, cfg=cfg)

    grads = ms.grad(f, grad_position=(0, 1, 2, 3))(*(tout[k] for k in names))
    assert np.all(grads[0].asnumpy() == 0) and np.all(grads[2].asnumpy() == 0)
    assert np.abs(grads[1].asnumpy()).max() > 0 and np.abs(grads[3].asnumpy()).max() > 0


def _probs(rng: np.random.Generator, b: int, c: int, scale: float) -> np.ndarray:
    return ref.softmax(scale * rng.standard_normal((b, c))).astype(np.float32)


@pytest.mark.parametrize(
    ("seed", "b", "c", "scale", "eps", "max_iter", "lse"),
    [(9, 6, 5, 2.0, 0.01, 100, "legacy"), (10, 8, 4, 4.0, 0.01, 100, "legacy"),
     (11, 5, 3, 1.0, 0.05, 7, "legacy"), (12, 6, 6, 3.0, 0.1, 100, "legacy"),
     (10, 8, 4, 4.0, 0.01, 100, "exact"), (11, 5, 3, 1.0, 0.05, 7, "exact")],
)
def test_sinkhorn_cost_matches_reference_incl_early_stop(seed, b, c, scale, eps, max_iter,
                                                         lse) -> None:
    rng = np.random.default_rng(seed)
    p, q = _probs(rng, b, c, scale), _probs(rng, b, c, scale)
    _, _, iters = ref.sinkhorn_plan(p, q, eps, max_iter, lse=lse)
    want = ref.sinkhorn_cost(p, q, eps, max_iter, lse=lse)
    got = float(L._sinkhorn(T(p), T(q), eps, max_iter, ref.SINKHORN_THRESH, True, lse).asnumpy())
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert 1 <= iters <= max_iter


def test_sinkhorn_legacy_lse_is_a_different_loss() -> None:
    """Sharp softmaxes: legacy (the PT code's lse, the default) and exact each match their
    reference and differ from each other by more than float noise."""
    rng = np.random.default_rng(21)
    p, q = _probs(rng, 16, 10, 10.0), _probs(rng, 16, 10, 10.0)
    got = {k: float(L._sinkhorn(T(p), T(q), 0.01, 100, ref.SINKHORN_THRESH, True, k).asnumpy())
           for k in ("legacy", "exact")}  # host stop: fewer eager launches, the same values
    for k, v in got.items():
        assert v == pytest.approx(ref.sinkhorn_cost(p, q, lse=k), rel=2e-4)
    assert abs(got["legacy"] - got["exact"]) > 0.01 * got["exact"]
    assert inspect.signature(L.sinkhorn_cost).parameters["lse"].default == "legacy"
    assert LossConfig().cml_lse == "legacy"


def test_sinkhorn_compiled_equals_eager(lse: str = "legacy") -> None:
    """Graph mode (the loop is unrolled: 30 trips keep the compile short), stop at trip < 30
    (the PT code's lse; the exact one is compiled in the graph-cell tests)."""
    rng = np.random.default_rng(17)
    p, q = _probs(rng, 6, 5, 2.0), _probs(rng, 6, 5, 2.0)
    _, _, iters = ref.sinkhorn_plan(p, q, 0.05, 30, lse=lse)
    assert iters < 30

    def fn(a, b):
        return L.sinkhorn_cost(a, b, 0.05, 30, lse=lse)

    got = float(ms.jit(fn)(T(p), T(q)).asnumpy())
    assert got == pytest.approx(float(fn(T(p), T(q)).asnumpy()), rel=1e-5, abs=1e-7)
    assert got == pytest.approx(ref.sinkhorn_cost(p, q, 0.05, 30, lse=lse), rel=1e-4)


def test_sinkhorn_early_stop_matters_and_is_reproduced() -> None:
    """A case where stopping early changes the value: the masked loop must agree with the
    reference that stops, not with one that runs all max_iter trips."""
    rng = np.random.default_rng(13)
    p, q = _probs(rng, 6, 5, 3.0), _probs(rng, 6, 5, 3.0)
    _, _, iters = ref.sinkhorn_plan(p, q, 0.01, 100)
    assert iters < 100
    stop = ref.sinkhorn_cost(p, q, 0.01, 100)
    full = ref.sinkhorn_cost(p, q, 0.01, 100, thresh=-1.0)  # never stops
    assert abs(stop - full) > 1e-5
    masked = float(L.sinkhorn_cost(T(p), T(q), 0.01, 100).asnumpy())
    assert masked == pytest.approx(stop, rel=1e-4)
    host = float(L._sinkhorn(T(p), T(q), 0.01, 100, ref.SINKHORN_THRESH, True).asnumpy())
    assert host == pytest.approx(masked, rel=1e-6)


def test_sinkhorn_gradient_through_iterations() -> None:
    rng = np.random.default_rng(14)
    p, q = _probs(rng, 4, 3, 2.0), _probs(rng, 4, 3, 2.0)
    eps_sk, n_it = 0.05, 30
    assert ref.sinkhorn_plan(p, q, eps_sk, n_it)[2] < n_it  # the early stop is on the path
    gp, gq = ms.grad(lambda a, b: L.sinkhorn_cost(a, b, eps_sk, n_it), grad_position=(0, 1))(
        T(p), T(q))
    h = 1e-4
    for g, which in ((gp, 0), (gq, 1)):
        num = np.zeros(p.shape)
        for idx in np.ndindex(p.shape):
            d = np.zeros(p.shape)
            d[idx] = h
            a_plus = (p + d, q) if which == 0 else (p, q + d)
            a_minus = (p - d, q) if which == 0 else (p, q - d)
            num[idx] = (ref.sinkhorn_cost(*a_plus, eps_sk, n_it)
                        - ref.sinkhorn_cost(*a_minus, eps_sk, n_it)) / (2 * h)
        np.testing.assert_allclose(g.asnumpy(), num, rtol=2e-2, atol=2e-4)


def test_cml_id_triplet() -> None:
    rng = np.random.default_rng(15)
    out = _taps(rng)
    labels = np.repeat(np.arange(4), 2)
    modality = np.tile([0, 1], 4)
    tout = {k: T(v) for k, v in out.items()}
    cml = _term("cml", tout, cfg=LossConfig(sinkhorn_eps=0.01, sinkhorn_iters=100))
    assert float(cml.asnumpy()) == pytest.approx(ref.cml_loss(out, 0.01, 100), rel=1e-4, abs=1e-6)
    idl = _term("id", tout, labels, cfg=LossConfig(label_smoothing=0.1))
    assert float(idl.asnumpy()) == pytest.approx(ref.id_loss(out, labels, 0.1), rel=RTOL)
    for kind in ("batch_hard", "ranked_list"):
        cfg = LossConfig(triplet=kind)
        assert float(_term("tri", tout, labels, modality, cfg).asnumpy()) == pytest.approx(
            ref.triplet_loss(out, labels, modality, cfg), rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("preset", list(PRESET_WEIGHTS))
@pytest.mark.parametrize("kl", ["proper", "legacy"])
def test_mvd_loss_and_graph_cell(preset: str, kl: str) -> None:
    rng = np.random.default_rng(16)
    out = _taps(rng)
    labels = np.repeat(np.arange(4), 2)
    modality = np.tile([0, 1], 4)
    cfg = LossConfig(preset=preset, kl=kl, label_smoothing=0.1 if preset == "mvd-pt" else 0.0,
                     triplet="ranked_list" if preset == "mvd-pt" else "batch_hard",
                     sinkhorn_eps=0.05, sinkhorn_iters=20)  # 20 unrolled trips: short compile
    want = ref.mvd_loss(out, labels, modality, cfg)
    tout = {k: T(v) for k, v in out.items()}
    got = {k: float(v.asnumpy()) for k, v in L.mvd_loss(tout, T(labels), T(modality), cfg).items()}
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
    # the graph-friendly cell, eagerly and compiled, over the tuple output
    cell = L._MVDLoss(cfg)
    assert cell.terms[-1] == "total" and set(cell.terms) == set(want)
    outs = tuple(tout[k] for k in TAP_NAMES)
    eager = cell(outs, T(labels), T(modality)).asnumpy()
    def fn(o, y, s):
        return cell(o, y, s)

    compiled = ms.jit(fn)(ms.mutable(outs), T(labels), T(modality))
    for j, k in enumerate(cell.terms):
        assert float(eager[j]) == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
        assert float(compiled.asnumpy()[j]) == pytest.approx(float(eager[j]), rel=1e-5, abs=1e-7), k


def test_graph_cell_vcd_has_no_temperature_and_cml_lse_flows() -> None:
    """mvd-pt with T = 3 and the exact lse: VSD at T, VCD without (the PT code), CML exact;
    eagerly and compiled."""
    rng = np.random.default_rng(18)
    out = _taps(rng)
    labels = np.repeat(np.arange(4), 2)
    modality = np.tile([0, 1], 4)
    cfg = LossConfig(preset="mvd-pt", triplet="ranked_list", temperature=3.0, cml_lse="exact",
                     sinkhorn_eps=0.05, sinkhorn_iters=20)
    want = ref.mvd_loss(out, labels, modality, cfg)
    assert want["vcd"] == pytest.approx(ref.vcd_loss(out, "proper", 1.0))
    assert want["vcd"] != pytest.approx(ref.vcd_loss(out, "proper", 3.0), rel=1e-3)
    assert want["cml"] == pytest.approx(ref.cml_loss(out, 0.05, 20, lse="exact"))
    tout = {k: T(v) for k, v in out.items()}
    got = {k: float(v.asnumpy()) for k, v in L.mvd_loss(tout, T(labels), T(modality), cfg).items()}
    cell = L._MVDLoss(cfg)
    outs = tuple(tout[k] for k in TAP_NAMES)
    def fn(o, y, s):
        return cell(o, y, s)

    compiled = ms.jit(fn)(ms.mutable(outs), T(labels), T(modality))
    host = L._MVDLoss(cfg, host_stop=True)(outs, T(labels), T(modality)).asnumpy()
    for j, k in enumerate(cell.terms):
        assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
        assert float(compiled.asnumpy()[j]) == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
        assert float(host[j]) == pytest.approx(got[k], rel=1e-5, abs=1e-7), k
    with pytest.raises(ConfigError, match="cml_lse"):
        L._MVDLoss(dataclasses.replace(cfg, cml_lse="nope"))


def test_loss_config_errors() -> None:
    with pytest.raises(ConfigError, match="preset"):
        L._MVDLoss(dataclasses.replace(LossConfig(), preset="nope"))
    with pytest.raises(ConfigError, match="triplet"):
        L._MVDLoss(dataclasses.replace(LossConfig(), triplet="nope"))
