"""TorchBackend, what is torch-specific: the registry, devices and AMP, fp64, optimiser groups,
gradients against the SGD update, determinism with several backends in one process, resume from
a fresh instance, the canonical optimiser-state format, the torch RNG state. The contract every
backend keeps (weights, state round trip, side effects, batches, features, errors) is
tests/test_backend_contract.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_backend_contract import make_batch

from mvd_backends.torch.backend import TorchBackend
from mvd_core.config import Config, load_config
from mvd_core.errors import BackendUnavailable, MvdError
from mvd_core.interface import TAP_NAMES
from mvd_core.model import spec as ms
from mvd_core.model.spec import init_params, model_spec
from mvd_core.registry import create_backend

pytestmark = pytest.mark.torch

torch.set_num_threads(1)  # 2 shared cores: one thread each is faster

C = 6  # classes


def tiny(*overrides: str) -> Config:
    """tiny at 32×16 with small heads: fast enough for many constructions and steps."""
    return load_config(
        "tiny",
        [
            "model.vib_hidden=[32,16]",
            "model.vib_dim=16",
            "model.vib_cls_hidden=16",
            "eval.batch_size=5",
            *overrides,
        ],
    )


BATCHES = [make_batch(s) for s in range(6)]


@pytest.fixture(scope="module")
def be() -> TorchBackend:
    return TorchBackend(tiny(), C, "cpu", 0)


# ------------------------------------------------------------------ construction / interface


def test_registry_builds_it() -> None:
    cfg = tiny("run.device=cpu", "run.seed=3")
    b = create_backend(cfg, C)
    assert isinstance(b, TorchBackend)
    np.testing.assert_array_equal(
        b.state()["s.classifier.weight"],
        init_params(model_spec(cfg.model, C), 3)["s.classifier.weight"],
    )


def test_device_and_amp_errors() -> None:
    with pytest.raises(MvdError, match="amp"):  # fp16 autocast on the CPU: refused (bf16 runs)
        TorchBackend(tiny("run.amp=fp16"), C, "cpu", 0)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            TorchBackend(tiny(), C, "cuda", 0)
    with pytest.raises(MvdError, match="device"):
        TorchBackend(tiny(), C, "mps", 0)


def test_fp64_precision() -> None:
    """run.precision=fp64: a float64 network from the same float32 weights -- its loss agrees
    with fp32 to ~1e-7 relative (fp32 rounding), gradients/taps/features come back float64,
    parameters and optimiser state float32; it refuses AMP."""
    b32 = TorchBackend(tiny(), C, "cpu", 0)
    b64 = TorchBackend(tiny("run.precision=fp64"), C, "cpu", 0)
    assert all(t.dtype == torch.float64 for t in b64.net.parameters())
    batch = BATCHES[0]
    l32, l64 = b32.loss_terms(batch), b64.loss_terms(batch)
    assert l32.keys() == l64.keys()
    for k in l32:
        assert l64[k] == pytest.approx(l32[k], rel=1e-5, abs=1e-6), k
    g = b64.gradients(batch)
    assert all(v.dtype == np.float64 for v in g.values())
    assert all(v.dtype == np.float64 for v in b64.forward(batch, train=False).values())
    assert b64.extract_features(batch.images, "visible").dtype == np.float64
    b64.train_step(batch, 1e-3)
    assert all(v.dtype == np.float32 for v in b64.state().values() if v.dtype.kind == "f")
    opt = b64.optimizer_state()
    assert int(opt["adam.step"]) == 1 and all(
        v.dtype == np.float32 for k, v in opt.items() if k != "adam.step")
    b64.load_optimizer_state(opt)  # round trip into float64 moments
    assert b64.train_step(batch, 1e-3)["total"] > 0
    with pytest.raises(MvdError, match="run.precision=fp64 cannot be combined with run.amp=bf16"):
        TorchBackend(tiny("run.precision=fp64", "run.amp=bf16"), C, "cpu", 0)


def test_optimizer_groups_follow_the_spec() -> None:
    cfg = tiny("optim.trunk_lr_mult=0.1", "optim.head_lr_mult=2.0", "model.bnneck_bias=false")
    b = TorchBackend(cfg, C, "cpu", 0)
    spec = model_spec(cfg.model, C)
    groups = {n: g for g in b._opt.param_groups for n in g["names"]}
    assert set(groups) == {k for k, s in spec.items() if s.trainable}
    assert "v.bnneck.bias" not in groups and "v.bnneck.running_mean" not in groups
    b.train_step(BATCHES[0], 0.01)
    for k, g in groups.items():
        want = 0.01 * (0.1 if spec[k].group == "trunk" else 2.0)
        assert g["lr"] == pytest.approx(want), k
    assert not b.state()["v.bnneck.bias"].any()  # frozen at 0
    assert isinstance(b._opt, torch.optim.Adam)
    assert isinstance(TorchBackend(tiny("optim.name=sgd"), C, "cpu", 0)._opt, torch.optim.SGD)


# ------------------------------------------------------------------ forward / features / loss


def test_forward_taps(be: TorchBackend) -> None:
    out = be.forward(BATCHES[0], train=False)
    assert set(out) == set(TAP_NAMES)
    assert all(v.dtype == np.float32 for v in out.values())
    assert out["feat"].shape == (12, ms.descriptor_dim(be.cfg.model))
    assert out["i_rep.logits"].shape == (12, C)


def test_gradients_equal_the_sgd_update() -> None:
    """One plain SGD step (no momentum, no decay): θ' = θ − lr·g, so g = (θ − θ')/lr."""
    cfg = tiny(
        "optim.name=sgd",
        "optim.momentum=0.0",
        "optim.nesterov=false",
        "optim.weight_decay=0.0",
        "optim.trunk_lr_mult=1.0",
    )
    b = TorchBackend(cfg, C, "cpu", 0)
    grads = b.gradients(BATCHES[2])
    spec = model_spec(cfg.model, C)
    assert set(grads) == {k for k, s in spec.items() if s.trainable}
    before = b.state()
    lr = 0.5
    b.train_step(BATCHES[2], lr)
    after = b.state()
    for k, g in grads.items():
        np.testing.assert_allclose((before[k] - after[k]) / lr, g, rtol=1e-3, atol=2e-6, err_msg=k)
    assert sum(float(np.abs(g).sum()) > 0 for g in grads.values()) == len(grads)


# ------------------------------------------------------------------ training, determinism, resume


def test_same_seed_same_batches_same_losses_bit_for_bit() -> None:
    a = TorchBackend(tiny(), C, "cpu", 7)
    b = TorchBackend(tiny(), C, "cpu", 7)
    # interleaved on purpose: each backend keeps its own RNG stream (dropout is on)
    for batch in BATCHES[:4]:
        la = a.train_step(batch, 1e-3)
        lb = b.train_step(batch, 1e-3)
        assert la == lb
    sa, sb = a.state(), b.state()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    c = TorchBackend(tiny(), C, "cpu", 8)
    assert c.train_step(BATCHES[0], 1e-3) != TorchBackend(tiny(), C, "cpu", 7).train_step(
        BATCHES[0], 1e-3
    )


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_exact_resume(optim: str) -> None:
    cfg = tiny(f"optim.name={optim}")
    lr = 1e-3 if optim == "adam" else 0.01
    ref = TorchBackend(cfg, C, "cpu", 0)
    for batch in BATCHES[:3]:
        ref.train_step(batch, lr)
    snap = (ref.state(), ref.optimizer_state(), ref.rng_state())
    want = [ref.train_step(batch, lr) for batch in BATCHES[3:]]

    fresh = TorchBackend(cfg, C, "cpu", 123)  # another seed: everything must come from snap
    fresh.load_state(snap[0])
    fresh.load_optimizer_state(snap[1])
    fresh.load_rng_state(snap[2])
    got = [fresh.train_step(batch, lr) for batch in BATCHES[3:]]
    assert got == want
    s1, s2 = ref.state(), fresh.state()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k], err_msg=k)


def test_resume_from_step_zero_equals_a_fresh_start() -> None:
    cfg = tiny()
    a = TorchBackend(cfg, C, "cpu", 0)
    snap = (a.state(), a.optimizer_state(), a.rng_state())
    assert int(snap[1]["adam.step"]) == 0
    b = TorchBackend(cfg, C, "cpu", 99)
    b.load_state(snap[0])
    b.load_optimizer_state(snap[1])
    b.load_rng_state(snap[2])
    assert [a.train_step(x, 1e-3) for x in BATCHES[:2]] == [
        b.train_step(x, 1e-3) for x in BATCHES[:2]
    ]


# ------------------------------------------------------------------ state formats


def test_canonical_adam_state_format_and_round_trip() -> None:
    cfg = tiny()
    b = TorchBackend(cfg, C, "cpu", 0)
    for batch in BATCHES[:2]:
        b.train_step(batch, 1e-3)
    st = b.optimizer_state()
    trainable = [k for k, s in model_spec(cfg.model, C).items() if s.trainable]
    assert set(st) == {"adam.step"} | {f"adam.{mv}.{k}" for mv in "mv" for k in trainable}
    assert (
        st["adam.step"].dtype == np.int64
        and st["adam.step"].shape == ()
        and int(st["adam.step"]) == 2
    )
    assert st["adam.m.v.trunk.conv1.weight"].shape == (8, 3, 7, 7)
    assert all(v.dtype == np.float32 for k, v in st.items() if k != "adam.step")
    assert (st["adam.v.i.vib.encoder.0.weight"] >= 0).all() and st[
        "adam.v.i.vib.encoder.0.weight"
    ].any()

    other = TorchBackend(cfg, C, "cpu", 1)
    other.load_optimizer_state(st)
    back = other.optimizer_state()
    assert set(back) == set(st)
    for k in st:
        np.testing.assert_array_equal(back[k], st[k], err_msg=k)


def test_canonical_sgd_state_format() -> None:
    cfg = tiny("optim.name=sgd")
    b = TorchBackend(cfg, C, "cpu", 0)
    zero = b.optimizer_state()
    trainable = [k for k, s in model_spec(cfg.model, C).items() if s.trainable]
    assert set(zero) == {f"sgd.momentum.{k}" for k in trainable}
    assert not any(v.any() for v in zero.values())
    b.train_step(BATCHES[0], 0.01)
    st = b.optimizer_state()
    assert st["sgd.momentum.s.classifier.weight"].any()
    other = TorchBackend(cfg, C, "cpu", 1)
    other.load_optimizer_state(st)
    for k, v in other.optimizer_state().items():
        np.testing.assert_array_equal(v, st[k], err_msg=k)


def test_optimizer_state_errors(be: TorchBackend) -> None:
    st = be.optimizer_state()
    bad = dict(st)
    del bad["adam.m.s.bnneck.weight"]
    with pytest.raises(MvdError, match=r"missing: adam\.m\.s\.bnneck\.weight"):
        be.load_optimizer_state(bad)
    bad = dict(st, **{"adam.m.s.bnneck.weight": np.zeros(3, np.float32)})
    with pytest.raises(MvdError, match=r"mis-shaped: adam\.m\.s\.bnneck\.weight"):
        be.load_optimizer_state(bad)
    sgd = TorchBackend(tiny("optim.name=sgd"), C, "cpu", 0).optimizer_state()
    with pytest.raises(MvdError, match="sgd.momentum"):
        be.load_optimizer_state(sgd)


def test_rng_state_round_trip_and_errors() -> None:
    b = TorchBackend(tiny(), C, "cpu", 0)
    rs = b.rng_state()
    assert set(rs) == {"torch.cpu"} and rs["torch.cpu"].dtype == np.uint8
    out1 = b.forward(BATCHES[0], train=True)["v_rep.logits"]  # dropout draws
    b.load_rng_state(rs)
    out2 = b.forward(BATCHES[0], train=True)["v_rep.logits"]
    np.testing.assert_array_equal(out1, out2)
    out3 = b.forward(BATCHES[0], train=True)["v_rep.logits"]
    assert not np.array_equal(out1, out3)
    with pytest.raises(MvdError, match="torch.cpu"):
        b.load_rng_state({"mindspore.seed": np.zeros(2, np.int64)})
    with pytest.raises(MvdError, match="rng state"):
        b.load_rng_state({"torch.cpu": np.zeros(3, np.uint8)})
