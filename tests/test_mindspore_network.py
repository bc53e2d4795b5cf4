"""The MindSpore MVD network: names, shapes, layer semantics, checkpoint names, and (when the
torch backend is importable) forward parity with the torch network on the same weights."""

from __future__ import annotations

import os

os.environ.setdefault("MVD_MS_THREADS", "1")

import mindspore as ms  # noqa: E402
import numpy as np
import pytest
from mindspore import Tensor  # noqa: E402

from mvd_backends.mindspore import convert  # noqa: E402
from mvd_backends.mindspore.network import (  # noqa: E402
    ChannelAttention,
    MVDNet,
    _MaxPoolSym,
    gray_view,
)
from mvd_core.config import load_config, replace  # noqa: E402
from mvd_core.interface import TAP_NAMES  # noqa: E402
from mvd_core.model.spec import (  # noqa: E402
    BRANCHES,
    descriptor_dim,
    feat_dim,
    init_params,
    model_spec,
    trunk_spec,
)
from mvd_core.parity.inputs import RESIDUAL_GAIN  # noqa: E402

pytestmark = pytest.mark.mindspore

NUM_CLASSES = 6


def _cfg(**model):
    return replace(load_config("tiny"), model=model) if model else load_config("tiny")


def _load(net: MVDNet, params: dict[str, np.ndarray]) -> None:
    ms_params = convert.canonical_to_ms(params)
    not_loaded, ckpt_not_loaded = ms.load_param_into_net(
        net, {k: ms.Parameter(Tensor(v), name=k) for k, v in ms_params.items()}
    )
    assert not_loaded == [] and ckpt_not_loaded == []


@pytest.mark.parametrize("cam", [False, True])
def test_parameter_names_are_model_spec(cam: bool) -> None:
    cfg = _cfg(cam=cam, bnneck_bias=not cam)
    net = MVDNet(cfg.model, NUM_CLASSES)
    spec = model_spec(cfg.model, NUM_CLASSES)
    got = {convert.canonical_name(p.name): tuple(p.shape) for p in net.get_parameters()}
    assert got == {k: s.shape for k, s in spec.items()}
    # trainable flags: buffers and the frozen BN-neck beta are not trainable
    trainable = {convert.canonical_name(p.name) for p in net.trainable_params()}
    assert trainable == {k for k, s in spec.items() if s.trainable}
    assert ("v.bnneck.bias" in trainable) == (not cam)


def test_name_map_round_trip_and_bn_rules() -> None:
    spec = model_spec(_cfg(cam=True).model, NUM_CLASSES)
    for name in spec:
        m = convert.ms_name(name)
        assert convert.canonical_name(m) == name
    assert convert.ms_name("v.trunk.layer1.0.downsample.1.running_var") == (
        "v.trunk.layer1.0.downsample.1.moving_variance"
    )
    assert convert.ms_name("v.trunk.layer1.0.downsample.0.weight") == (
        "v.trunk.layer1.0.downsample.0.weight"
    )
    assert convert.ms_name("s.vib.classifier.1.weight") == "s.vib.classifier.1.gamma"
    assert convert.ms_name("s.vib.classifier.4.weight") == "s.vib.classifier.4.weight"
    assert convert.ms_name("i.cam3.gamma") == "i.cam3.gamma"
    assert convert.canonical_name("i.cam3.gamma") == "i.cam3.gamma"
    assert convert.ms_name("bn1.bias") == "bn1.beta"  # a bare ResNet-50


def test_taps_shapes_and_gray_view() -> None:
    cfg = _cfg()
    net = MVDNet(cfg.model, NUM_CLASSES)
    _load(net, init_params(model_spec(cfg.model, NUM_CLASSES), 0))
    net.set_train(False)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 32)).astype(np.float32)
    out = MVDNet.taps(net(Tensor(x)))
    assert tuple(out) == TAP_NAMES
    fd, z = feat_dim(cfg.model), cfg.model.vib_dim
    for k, v in out.items():
        if k == "feat":
            assert v.shape == (4, descriptor_dim(cfg.model))
        elif k.endswith(".feat"):
            assert v.shape == (4, fd)
        elif k.endswith(".z"):
            assert v.shape == (4, z)
        else:
            assert v.shape == (4, NUM_CLASSES)
    # "part" normalisation: each 1/4 block has unit norm
    f = out["feat"].asnumpy().reshape(4, 4, fd)
    np.testing.assert_allclose(np.linalg.norm(f, axis=2), 1.0, rtol=1e-5)
    # the grey view: an input already grey (R=G=B=y) maps to (0.2989+0.587+0.114)·y
    g = gray_view(Tensor(x)).asnumpy()
    y = 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]
    for c in range(3):
        np.testing.assert_allclose(g[:, c], y, rtol=1e-5, atol=1e-6)
    # extract() equals the "feat" tap
    np.testing.assert_allclose(net.extract(Tensor(x)).asnumpy(), out["feat"].asnumpy(), atol=1e-6)


def test_maxpool_is_symmetric_like_torch() -> None:
    """MaxPool2d(3, 2, 1) semantics: output (H+1)//2, borders padded symmetrically with -inf."""
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6)).astype(np.float32)
    got = _MaxPoolSym()(Tensor(x)).asnumpy()
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (7 + 2 - 3) // 2 + 1, (6 + 2 - 3) // 2 + 1
    ref = np.empty((2, 3, ho, wo), np.float32)
    for i in range(ho):
        for j in range(wo):
            ref[:, :, i, j] = pad[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(2, 3))
    np.testing.assert_array_equal(got, ref)


def test_cam_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3, 2)).astype(np.float32)
    cam = ChannelAttention()
    cam.gamma.set_data(Tensor(np.array([0.7], np.float32)))
    got = cam(Tensor(x)).asnumpy()
    q = x.reshape(2, 4, 6).astype(np.float64)
    e = q @ q.transpose(0, 2, 1)
    e = e.max(axis=-1, keepdims=True) - e
    a = np.exp(e - e.max(axis=-1, keepdims=True))
    a /= a.sum(axis=-1, keepdims=True)
    ref = 0.7 * (a @ q).reshape(x.shape) + x
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    cam.gamma.set_data(Tensor(np.array([0.0], np.float32)))  # γ = 0 at init: identity
    np.testing.assert_array_equal(cam(Tensor(x)).asnumpy(), x)


def test_last_stride_and_feature_map_size() -> None:
    for stride, expect in ((2, (2, 1)), (1, (4, 2))):
        cfg = _cfg(last_stride=stride)
        net = MVDNet(cfg.model, NUM_CLASSES)
        t = net.v.trunk
        x = Tensor(np.zeros((1, 3, 64, 32), np.float32))
        y = t.layer4(t.layer3(t.layer2(t.layer1(t.stem(x)))))
        assert tuple(y.shape[2:]) == expect


def test_resnet50_checkpoint_round_trip_and_strictness(tmp_path) -> None:
    """A MindSpore-format ResNet-50 checkpoint (width 8, MindSpore names, with an ImageNet fc)
    reads back bit-exactly under torchvision names; a corrupted one fails naming the key."""
    spec = trunk_spec(8)
    rng = np.random.default_rng(3)
    params = {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in spec.items()}
    path = tmp_path / "r50.ckpt"
    convert.save_checkpoint(
        {**convert.canonical_to_ms(params), "fc.weight": np.zeros((10, 256), np.float32),
         "fc.bias": np.zeros(10, np.float32)},
        path,
    )
    raw = convert.load_checkpoint(path)
    assert "layer1.0.bn1.moving_variance" in raw and "layer1.0.bn1.running_var" not in raw
    back = convert.read_mindspore_resnet50(path)
    assert list(back) == list(spec)
    for k in spec:
        np.testing.assert_array_equal(back[k], params[k])

    bad = convert.canonical_to_ms(params)
    bad["layer2.0.bn2.gama"] = bad.pop("layer2.0.bn2.gamma")  # misspelt
    convert.save_checkpoint(bad, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"layer2\.0\.bn2\.gama") as ei:
        convert.read_mindspore_resnet50(tmp_path / "bad.ckpt")
    assert "layer2.0.bn2.gamma" in str(ei.value)  # the missing one is named too

    short = convert.canonical_to_ms(params)
    short["layer3.1.conv2.weight"] = short["layer3.1.conv2.weight"][:, :, :2, :2]
    convert.save_checkpoint(short, tmp_path / "short.ckpt")
    with pytest.raises(ValueError, match=r"mis-shaped: layer3\.1\.conv2\.weight"):
        convert.read_mindspore_resnet50(tmp_path / "short.ckpt")


def test_resnet50_checkpoint_loads_into_all_trunks(tmp_path) -> None:
    """Through mvd_core.weights.pretrained (the path `model.pretrain` takes), into v, i and s."""
    from mvd_core.weights.pretrained import load_trunk_params

    spec = trunk_spec(8)
    rng = np.random.default_rng(4)
    params = {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in spec.items()}
    path = tmp_path / "r50.ckpt"
    convert.save_mindspore_resnet50(params, path)
    trunks = load_trunk_params(path, 8)
    assert set(trunks) == {f"{b}.trunk.{k}" for b in BRANCHES for k in spec}
    cfg = _cfg()
    full = init_params(model_spec(cfg.model, NUM_CLASSES), 0)
    full.update(trunks)
    net = MVDNet(cfg.model, NUM_CLASSES)
    _load(net, full)
    got = {convert.canonical_name(p.name): p.asnumpy() for p in net.get_parameters()}
    for b in BRANCHES:
        for k in spec:
            np.testing.assert_array_equal(got[f"{b}.trunk.{k}"], params[k])


# ----------------------------------------------------------------------------- torch parity
def _torch_net(cfg, params):
    import torch

    from mvd_backends.torch.network import MVDNet as TorchMVDNet

    net = TorchMVDNet(cfg.model, NUM_CLASSES)
    missing, unexpected = net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in params.items()}, strict=False
    )
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing)
    return torch, net


def test_bn3_eps_momentum_and_classifier_bias() -> None:
    """mvd-ms's bn3 (MS model zoo): eps 1e-3, MindSpore momentum 0.997 (torch 0.003); every
    other BatchNorm eps 1e-5, momentum 0.9; the ID classifier is a Dense with a bias."""
    cfg = _cfg(bn3_eps=1e-3, bn3_momentum=0.003)
    net = MVDNet(cfg.model, NUM_CLASSES)
    bns = [(n, c) for n, c in net.cells_and_names() if isinstance(c, (ms.nn.BatchNorm2d,
                                                                      ms.nn.BatchNorm1d))]
    bn3 = [c for n, c in bns if n.endswith(".bn3")]
    assert len(bn3) == 3 * 16 and len(bns) > len(bn3)
    for n, c in bns:
        eps, mom = (1e-3, 0.997) if n.endswith(".bn3") else (1e-5, 0.9)
        assert c.bn_train.epsilon == pytest.approx(eps, rel=1e-6), n
        # MindSpore 2.8 stores 1 − its momentum argument (the new batch's weight) in .momentum
        assert 1.0 - c.momentum == pytest.approx(mom, rel=1e-6), n
    names = {p.name for p in net.get_parameters()}
    assert {f"{b}.classifier.bias" for b in BRANCHES} <= names
    assert net.v.classifier.has_bias


@pytest.mark.parity
@pytest.mark.parametrize("cam, train, bn3_ms", [(True, False, False), (False, False, False),
                                                (False, True, False), (True, True, False),
                                                (False, True, True)])
def test_forward_parity_with_torch(train: bool, cam: bool, bn3_ms: bool) -> None:
    # conditioned as `mvd parity` conditions them: at residual gain 1 the train-mode trunk
    # amplifies fp32 rounding past any tolerance (torch against itself included);
    # bn3_ms: mvd-ms's bn3 eps 1e-3 / momentum 0.003 (the running statistics move alike)
    bn3 = {"bn3_eps": 1e-3, "bn3_momentum": 0.003} if bn3_ms else {}
    cfg = _cfg(dropout=0.0, cam=cam, last_stride=1 if cam else 2, residual_gain=RESIDUAL_GAIN,
               **bn3)
    params = init_params(model_spec(cfg.model, NUM_CLASSES), 7)
    for b in BRANCHES:  # a non-zero ID-classifier bias must reach the logits in both
        params[f"{b}.classifier.bias"] = np.linspace(-0.5, 0.5, NUM_CLASSES).astype(np.float32)
    if cam:  # γ = 0 would hide the attention path
        for b in BRANCHES:
            for k in (2, 3, 4):
                params[f"{b}.cam{k}.gamma"] = np.array([0.05 * k], np.float32)
    torch, tnet = _torch_net(cfg, params)
    tnet.train(train)
    net = MVDNet(cfg.model, NUM_CLASSES)
    _load(net, params)
    net.set_train(train)
    x = np.random.default_rng(5).standard_normal((8, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in tnet(torch.from_numpy(x)).items()}
    got = {k: v.asnumpy() for k, v in MVDNet.taps(net(Tensor(x))).items()}
    for k in TAP_NAMES:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    if train:  # the running statistics moved the same way
        tstate = {k: v.numpy() for k, v in tnet.state_dict().items()}
        mstate = {convert.canonical_name(p.name): p.asnumpy() for p in net.get_parameters()}
        for k in ("v.trunk.bn1.running_mean", "s.trunk.layer4.2.bn3.running_var",
                  "i.trunk.layer1.0.bn3.running_mean",
                  "i.bnneck.running_var", "s.vib.classifier.1.running_mean"):
            np.testing.assert_allclose(mstate[k], tstate[k], rtol=1e-4, atol=1e-5, err_msg=k)
