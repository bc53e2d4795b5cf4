"""mvd_core.weights.optim_state: the one optimiser-state layout and its check (issue 14), against
the model spec written independently here (keys, shapes, dtypes), and the flat-buffer mapping
the MindSpore backend uses (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from mvd_core.config import load_config
from mvd_core.errors import CheckpointError, MvdError
from mvd_core.model.spec import model_spec
from mvd_core.weights import optim_state

CFG = load_config("tiny", ["model.width=2", "model.vib_hidden=[16,16]", "model.vib_dim=16",
                           "model.vib_cls_hidden=16"])
SPEC = model_spec(CFG.model, 6)
TRAINABLE = [k for k, s in SPEC.items() if s.trainable]


def test_adam_layout_is_step_and_two_moments_per_trainable_parameter() -> None:
    lay = optim_state.layout("adam", SPEC)
    want = {"adam.step": ("int64", ())}
    for k in TRAINABLE:
        want[f"adam.m.{k}"] = ("float32", SPEC[k].shape)
        want[f"adam.v.{k}"] = ("float32", SPEC[k].shape)
    assert lay == want
    assert not any(k.endswith("running_mean") or k.endswith("running_var") for k in lay)
    assert lay["adam.m.v.trunk.conv1.weight"] == ("float32", (2, 3, 7, 7))


def test_sgd_layout_and_zeros() -> None:
    lay = optim_state.layout("sgd", SPEC)
    assert lay == {f"sgd.momentum.{k}": ("float32", SPEC[k].shape) for k in TRAINABLE}
    z = optim_state.zeros("sgd", SPEC)
    assert set(z) == set(lay) and not any(v.any() for v in z.values())
    assert all(v.dtype == np.float32 for v in z.values())
    optim_state.check(z, "sgd", SPEC, "zeros")  # the state before the first step passes


def test_trainable_order_is_trunk_group_first() -> None:
    order = optim_state.trainable(SPEC)
    assert sorted(order) == sorted(TRAINABLE)
    groups = [SPEC[k].group for k in order]
    assert groups == sorted(groups, key=("trunk", "head").index)
    assert "head" in groups and "trunk" in groups


def test_check_names_every_bad_key_in_one_error() -> None:
    st = optim_state.zeros("adam", SPEC)
    k1, k2, k3 = (f"adam.m.{TRAINABLE[0]}", f"adam.v.{TRAINABLE[1]}", f"adam.m.{TRAINABLE[2]}")
    del st[k1]
    st[k2] = np.zeros(3, np.float32)
    st[k3] = st[k3].astype(np.float64)
    st["adam.m.not.a.param"] = np.zeros(1, np.float32)
    st["adam.step"] = np.array(1.0)
    with pytest.raises(CheckpointError) as e:
        optim_state.check(st, "adam", SPEC, "run/ckpt.safetensors")
    msg = str(e.value)
    assert msg.startswith("run/ckpt.safetensors: optimizer state (optim.name=adam)")
    assert "\n" not in msg
    for part in (f"missing: {k1}", f"mis-shaped: {k2}", k3, "wrong dtype", "adam.step",
                 "unexpected: adam.m.not.a.param"):
        assert part in msg, part


def test_check_refuses_the_other_optimiser_and_allows_the_amp_pair() -> None:
    with pytest.raises(CheckpointError, match=r"missing: adam\.step.*unexpected: sgd\.momentum"):
        optim_state.check(optim_state.zeros("sgd", SPEC), "adam", SPEC, "x")
    st = optim_state.zeros("adam", SPEC)
    st |= {"amp.scale": np.array(65536.0, np.float32), "amp.growth_tracker": np.array(3, np.int64)}
    optim_state.check(st, "adam", SPEC, "x")
    st["amp.scale"] = np.array([1.0, 2.0], np.float32)
    with pytest.raises(CheckpointError, match="mis-shaped: amp.scale"):
        optim_state.check(st, "adam", SPEC, "x")
    with pytest.raises(MvdError, match="optim.name"):
        optim_state.layout("lamb", SPEC)


def test_flat_round_trip() -> None:
    rng = np.random.default_rng(0)
    names = [k for k in optim_state.trainable(SPEC) if SPEC[k].group == "head"]
    st = {f"adam.v.{k}": rng.random(SPEC[k].shape).astype(np.float32) for k in names}
    flat = optim_state.join_flat(st, "adam", "v", names)
    assert flat.shape == (sum(int(np.prod(SPEC[k].shape)) for k in names),)
    np.testing.assert_array_equal(flat[: st[f"adam.v.{names[0]}"].size],
                                  st[f"adam.v.{names[0]}"].ravel())
    back = optim_state.split_flat(flat, "adam", "v", names, SPEC)
    assert back.keys() == st.keys()
    for k, v in st.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].shape == v.shape
    with pytest.raises(ValueError, match="split_flat"):
        optim_state.split_flat(flat[:-1], "adam", "v", names, SPEC)
    assert optim_state.step_of({"adam.step": np.array(7)}) == 7 and optim_state.step_of({}) == 0
