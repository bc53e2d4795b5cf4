"""The MindSpore backend's optimiser (flat buffers, ``backends/mindspore/optim.py``), compiled as
the backend compiles it (``mindspore.jit``), against ``torch.optim`` and a float64 NumPy
reference, on the same gradients (issues 7, 16).

Parameters of several shapes in both groups (trunk and head, different lr multipliers), a
frozen one between them; gradients span 10 decades (1e-10..1) so that Adam's eps and weight
decay both matter. The bound: within a few float32 roundings of the float64 reference, as torch
is (a compiled graph once folded ``1.0 - 0.999`` in float32, 1.3e-5 off, and missed it by 5×).
A run resumed mid-way through the canonical state (mvd_core.weights.optim_state) continues
bit for bit, and that state is torch's, key by key."""

from __future__ import annotations

import os

os.environ.setdefault("MVD_MS_THREADS", "1")

import dataclasses  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mindspore import Parameter, Tensor  # noqa: E402

from mvd_backends.mindspore.backend import _set_device  # noqa: E402
from mvd_backends.mindspore.optim import Optimizer  # noqa: E402
from mvd_core.config import OptimConfig  # noqa: E402
from mvd_core.errors import CheckpointError  # noqa: E402
from mvd_core.model.spec import ParamSpec  # noqa: E402
from mvd_core.weights import optim_state  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.torch, pytest.mark.mindspore]

LRS = (1e-3, 1e-3, 1e-3, 1e-4, 1e-5)
WD = 5e-4
MULTS = {"trunk": 0.1, "head": 1.0}


def _spec() -> dict[str, ParamSpec]:
    def p(shape: tuple[int, ...], group: str, trainable: bool = True) -> ParamSpec:
        return ParamSpec(shape, "zeros", trainable, False, group)

    # spec order interleaves the groups: the optimiser orders trunk first
    return {
        "a.weight": p((2048,), "trunk"),
        "h.weight": p((16, 24), "head"),
        "b.weight": p((8, 3, 3, 3), "trunk"),
        "frozen": p((5,), "trunk", trainable=False),
        "h.bias": p((16,), "head"),
        "c.bias": p((7,), "trunk"),
    }


SPEC = _spec()
NAMES = optim_state.trainable(SPEC)


def _problem():
    rng = np.random.default_rng(0)
    p0 = {k: (rng.standard_normal(SPEC[k].shape) * 0.01).astype(np.float32) for k in NAMES}
    grads = [
        {k: (rng.standard_normal(SPEC[k].shape) * 10.0 ** rng.uniform(-10, 0, SPEC[k].shape))
         .astype(np.float32) for k in NAMES}
        for _ in LRS
    ]
    return p0, grads


def _cfg(name: str, **kw) -> OptimConfig:
    return dataclasses.replace(OptimConfig(), name=name, weight_decay=WD,
                               trunk_lr_mult=MULTS["trunk"], head_lr_mult=MULTS["head"], **kw)


class _MS:
    """One MindSpore optimiser over fresh Parameters, its step compiled once."""

    def __init__(self, o: OptimConfig, p0: dict[str, np.ndarray], flat: bool = False) -> None:
        _set_device("CPU")  # idempotent once the runtime is up (other tests ran first)
        self.params = {k: Parameter(Tensor(p0[k].copy()), name=k) for k in NAMES}
        self.opt = Optimizer(o, SPEC, self.params)
        self.opt.flat_grads = flat  # gradients raveled first, as the backend's gradient block does
        self.ravel = ms.jit(self.opt.ravel) if flat else None
        self.step = ms.jit(self.opt.construct)

    def run(self, grads: list[dict[str, np.ndarray]], lrs) -> list[dict[str, np.ndarray]]:  # noqa: ANN001
        out = []
        for g, lr in zip(grads, lrs, strict=True):
            gs = ms.mutable(tuple(Tensor(g[k]) for k in NAMES))
            if self.ravel is not None:
                gs = ms.mutable(self.ravel(gs))
                back = self.opt.unravel([x.asnumpy() for x in gs])
                assert all(np.array_equal(back[k], g[k]) for k in NAMES)
            self.step(gs, self.opt.hyper(lr))
            out.append({k: p.asnumpy().copy() for k, p in self.params.items()})
        return out


def _torch(make_opt, p0, grads, lrs):  # noqa: ANN001, ANN202
    import torch

    ws = {k: torch.nn.Parameter(torch.from_numpy(p0[k].copy())) for k in NAMES}
    groups = [{"params": [ws[k] for k in NAMES if SPEC[k].group == g], "lr": 1.0, "mult": MULTS[g]}
              for g in ("trunk", "head")]
    opt = make_opt(groups)
    out = []
    for g, lr in zip(grads, lrs, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr * group["mult"]
        for k, w in ws.items():
            w.grad = torch.from_numpy(g[k].copy())
        opt.step()
        out.append({k: w.detach().numpy().copy() for k, w in ws.items()})
    return out, opt, ws


def _err(a: dict, b: dict) -> float:
    """Largest difference in units of the first learning rate (an entry moves by up to ~lr per
    step; the trunk's 0.1·lr steps are a few float32 spacings of its ~0.01 entries)."""
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) / 1e-3 for k in NAMES)


def test_adam_matches_torch_and_float64() -> None:
    import torch

    p0, grads = _problem()
    b1, b2, eps = 0.9, 0.999, 1e-8
    ms_opt = _MS(_cfg("adam", betas=(b1, b2), eps=eps), p0)
    got = ms_opt.run(grads, LRS)
    ref, topt, ws = _torch(
        lambda gs: torch.optim.Adam(gs, betas=(b1, b2), eps=eps, weight_decay=WD, foreach=True),
        p0, grads, LRS,
    )
    p = {k: v.astype(np.float64) for k, v in p0.items()}
    m = {k: np.zeros(SPEC[k].shape) for k in NAMES}
    v = {k: np.zeros(SPEC[k].shape) for k in NAMES}
    for t, (g, lr, a, b) in enumerate(zip(grads, LRS, got, ref, strict=True), start=1):
        for k in NAMES:
            lr_k = lr * MULTS[SPEC[k].group]
            gk = g[k] + WD * p[k]
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            p[k] = p[k] - lr_k / (1 - b1**t) * m[k] / (np.sqrt(v[k]) / np.sqrt(1 - b2**t) + eps)
        assert _err(b, p) < 1e-5, (t, _err(b, p))
        assert _err(a, p) < 1e-5, (t, _err(a, p))
        assert _err(a, {k: x.astype(np.float64) for k, x in b.items()}) < 1e-5, t
    # the canonical state is torch's state, key by key
    st = ms_opt.opt.state()
    assert int(st["adam.step"]) == len(LRS)
    for k, w in ws.items():
        s = topt.state[w]
        np.testing.assert_allclose(st[f"adam.m.{k}"], s["exp_avg"].numpy(), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(st[f"adam.v.{k}"], s["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-20)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_matches_torch(nesterov: bool) -> None:
    import torch

    p0, grads = _problem()
    ms_opt = _MS(_cfg("sgd", momentum=0.9, nesterov=nesterov), p0)
    got = ms_opt.run(grads, LRS)
    ref, topt, ws = _torch(
        lambda gs: torch.optim.SGD(gs, lr=1.0, momentum=0.9, nesterov=nesterov, weight_decay=WD),
        p0, grads, LRS,
    )
    for t, (a, b) in enumerate(zip(got, ref, strict=True), start=1):
        for k in NAMES:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-9, err_msg=f"step {t} {k}")
    st = ms_opt.opt.state()  # torch adds wd·p in one fused op: a rounding apart at most
    for k, w in ws.items():
        np.testing.assert_allclose(st[f"sgd.momentum.{k}"], topt.state[w]["momentum_buffer"].numpy(),
                                   rtol=1e-5, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_flat_gradients_give_the_same_bits(name: str) -> None:
    p0, grads = _problem()
    per_param = _MS(_cfg(name), p0).run(grads[:3], LRS[:3])
    flat = _MS(_cfg(name), p0, flat=True).run(grads[:3], LRS[:3])
    for a, b in zip(flat, per_param, strict=True):
        for k in NAMES:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_resume_midway_through_the_canonical_state(name: str) -> None:
    p0, grads = _problem()
    o = _cfg(name)
    whole = _MS(o, p0).run(grads, LRS)

    first = _MS(o, p0)
    half = first.run(grads[:2], LRS[:2])
    snap = first.opt.state()
    assert set(snap) == set(optim_state.layout(name, SPEC))
    optim_state.check(snap, name, SPEC, "snapshot")
    second = _MS(o, half[-1])
    second.opt.load_state(snap, "test")
    assert second.opt.t == (first.opt.t if name == "adam" else 0)  # SGD has no step count
    rest = second.run(grads[2:], LRS[2:])
    for a, b in zip(rest, whole[2:], strict=True):
        for k in NAMES:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    back = second.opt.state()
    third = _MS(o, rest[-1])
    third.opt.load_state(back, "test")
    for k, arr in third.opt.state().items():
        np.testing.assert_array_equal(arr, back[k], err_msg=k)
    # loaded into an optimiser whose compiled step has already run (the graph must see it)
    for k, p in first.params.items():
        p.copy_(Tensor(half[-1][k]))
    first.opt.load_state(snap, "test")
    again = first.run(grads[2:], LRS[2:])
    for a, b in zip(again, whole[2:], strict=True):
        for k in NAMES:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_load_state_is_checked() -> None:
    p0, _ = _problem()
    ms_opt = _MS(_cfg("adam"), p0)
    st = ms_opt.opt.state()
    bad = dict(st, **{"adam.m.h.bias": np.zeros(3, np.float32), "adam.x": np.zeros(1, np.float32)})
    del bad["adam.v.a.weight"]
    with pytest.raises(CheckpointError, match=r"mis-shaped: adam\.m\.h\.bias.*missing: adam\.v\.a"
                                              r"\.weight.*unexpected: adam\.x"):
        ms_opt.opt.load_state(bad, "test")


def test_copy_in_place_lands_before_it_returns_and_a_lost_copy_is_refused() -> None:
    """``copy_in_place`` (every load: weights, BN statistics, optimiser buffers) returns once
    each destination reads back its source: a graph compiled before the load and run right
    after sees the new values; a copy that did not land is one MvdError naming the parameter."""
    from mvd_backends.mindspore.optim import copy_in_place
    from mvd_core.errors import MvdError

    _set_device("CPU")
    rng = np.random.default_rng(3)
    params = [Parameter(Tensor(np.zeros((32, 16, 3, 3), np.float32)), name=f"w{i}") for i in range(8)]

    @ms.jit
    def total(*ps):
        return ms.ops.stack([p.sum() for p in ps])

    total(*params)  # compiled on the old values
    for _ in range(5):
        new = [rng.standard_normal(p.shape).astype(np.float64) for p in params]
        copy_in_place(zip(params, new, strict=True))
        got = total(*params).asnumpy()
        np.testing.assert_allclose(got, [a.astype(np.float32).sum() for a in new], rtol=1e-4)

    class Lost:  # a destination whose copy never lands
        name = "head.classifier.weight"
        shape = (2, 2)

        def copy_(self, src):
            return self

        def asnumpy(self):
            return np.zeros((2, 2), np.float32)

    with pytest.raises(MvdError, match=r"head\.classifier\.weight did not land"):
        copy_in_place([(Lost(), np.ones((2, 2)))])
