"""The torch MVD network: names and shapes vs model_spec, an independent functional ResNet-50,
CAM vs NumPy, taps, test features, and reading torchvision-format ResNet-50 files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mvd_backends.torch.convert import (
    canonical_to_torch,
    read_torchvision_resnet50,
    torch_to_canonical,
)
from mvd_backends.torch.network import Branch, ChannelAttention, MVDNet, gray_view
from mvd_core.config import ModelConfig, load_config, replace
from mvd_core.interface import OBSERVATIONS, REPRESENTATIONS, TAP_NAMES
from mvd_core.model import spec as ms
from mvd_core.model.spec import feat_dim, init_params, model_spec, num_parameters, trunk_spec

pytestmark = pytest.mark.torch

torch.set_num_threads(1)  # 2 shared cores: one thread each is faster

C = 11  # classes


def small(recipe: str, **model: object) -> ModelConfig:
    """The recipe's model at width 8 with small VIB heads (architecture switches kept)."""
    cfg = load_config(recipe)
    over = {"width": 8, "vib_hidden": [32, 16], "vib_dim": 16, "vib_cls_hidden": 16, **model}
    return replace(cfg, model=over).model


def state_names(net: nn.Module) -> list[str]:
    return [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]


def loaded(cfg: ModelConfig, seed: int = 0) -> MVDNet:
    net = MVDNet(cfg, C)
    missing, unexpected = net.load_state_dict(
        canonical_to_torch(init_params(model_spec(cfg, C), seed)), strict=False
    )
    assert not unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing)
    return net


# ------------------------------------------------------------------ names, shapes, counts


@pytest.mark.parametrize("recipe", ["mvd-ms", "mvd-pt", "tiny"])
def test_state_names_and_shapes_are_canonical(recipe: str) -> None:
    cfg = small(recipe)
    net = MVDNet(cfg, C)
    spec = model_spec(cfg, C)
    assert state_names(net) == list(spec)  # same names, same order
    sd = net.state_dict()
    for k, s in spec.items():
        assert tuple(sd[k].shape) == s.shape, k
    params = dict(net.named_parameters())
    for k, s in spec.items():
        if s.buffer:
            assert k not in params, k
        else:
            assert params[k].requires_grad == s.trainable, k


def test_bnneck_bias_frozen_when_configured() -> None:
    assert not MVDNet(small("mvd-pt"), C).v.bnneck.bias.requires_grad  # pt: frozen at 0
    assert MVDNet(small("mvd-ms"), C).v.bnneck.bias.requires_grad


@pytest.mark.parametrize("recipe", ["mvd-ms", "mvd-pt"])
def test_id_classifier_has_a_trainable_zero_init_bias_at_the_backbone_rate(recipe: str) -> None:
    """Both public codes: Linear(2048, C) with a bias; PT inits weight N(0, 0.001), bias 0."""
    cfg = small(recipe)
    spec = model_spec(cfg, C)
    for b in ("v", "i", "s"):
        s = spec[f"{b}.classifier.bias"]
        assert s.shape == (C,) and s.trainable and not s.buffer
        assert s.group == spec[f"{b}.classifier.weight"].group == "trunk"
    net = loaded(cfg)
    assert net.v.classifier.bias.requires_grad
    assert torch.count_nonzero(net.v.classifier.bias) == 0
    # the bias is used: logits = feat @ W.T + bias
    with torch.no_grad():
        net.v.classifier.bias.fill_(0.5)
        feat = torch.randn(3, feat_dim(cfg))
        ref = feat @ net.v.classifier.weight.T + 0.5
        assert torch.allclose(net.v.classifier(feat), ref, atol=1e-6)


def _moments_ok(a: np.ndarray, mean: float, std: float) -> None:
    """Sample mean/std of ``a`` within 5 standard errors of N(mean, std²)."""
    n = a.size
    assert abs(a.mean() - mean) < 5 * std / np.sqrt(n), (a.mean(), mean)
    assert abs(a.std() - std) < 5 * std / np.sqrt(2 * n), (a.std(), std)


def test_pt_head_init_distributions() -> None:
    """model.head_init=pt (mvd-pt): the PT code's weights_init_kaiming on the VIB encoder
    (Linear kaiming-normal fan_out, bias 0; BatchNorm1d weight N(1, 0.02), bias 0) and
    weights_init_classifier on the VIB classifier (Linear N(0, 0.001), bias 0; its BN keeps
    (1, 0)); checked by moments on a realistic width (fan_out 1000/500/512)."""
    cfg = dataclasses.replace(load_config("mvd-pt").model, width=8)
    assert cfg.head_init == "pt"
    spec = model_spec(cfg, 395)
    p = init_params({k: v for k, v in spec.items() if ".vib." in k}, 3)
    h1, h2 = cfg.vib_hidden
    for b in ("v", "i", "s"):
        for idx, out in ((0, h1), (3, h2), (6, cfg.vib_dim)):
            _moments_ok(p[f"{b}.vib.encoder.{idx}.weight"], 0.0, np.sqrt(2.0 / out))
            assert not p[f"{b}.vib.encoder.{idx}.bias"].any()
        for idx in (1, 4):
            _moments_ok(p[f"{b}.vib.encoder.{idx}.weight"], 1.0, 0.02)
            assert not p[f"{b}.vib.encoder.{idx}.bias"].any()
        for idx in (0, 4):
            _moments_ok(p[f"{b}.vib.classifier.{idx}.weight"], 0.0, 0.001)
            assert not p[f"{b}.vib.classifier.{idx}.bias"].any()
        assert (p[f"{b}.vib.classifier.1.weight"] == 1).all()
    # the framework default (mvd-ms): U(±1/sqrt(fan_in)) for weights and biases
    fw = init_params(model_spec(dataclasses.replace(cfg, head_init="framework"), 395), 3)
    w = fw["v.vib.encoder.0.weight"]
    bound = 1 / np.sqrt(w.shape[1])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    _moments_ok(w, 0.0, bound / np.sqrt(3))
    assert fw["v.vib.encoder.0.bias"].any()
    assert load_config("mvd-ms").model.head_init == "framework"


@pytest.mark.parametrize("recipe, eps, momentum", [("mvd-ms", 1e-3, 0.003), ("mvd-pt", 1e-5, 0.1)])
def test_bn3_eps_momentum_and_gamma(recipe: str, eps: float, momentum: float) -> None:
    """MS's model-zoo ResNet-50: every bottleneck's bn3 has eps 1e-3, momentum 0.997 (torch
    0.003) and gamma 0 at init; every other BatchNorm eps 1e-5, momentum 0.1."""
    cfg = small(recipe)
    net = loaded(cfg)
    bn3 = [m for n, m in net.named_modules() if n.endswith(".bn3")]
    others = [m for n, m in net.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and not n.endswith(".bn3")]
    assert len(bn3) == 3 * 16 and others
    assert all(m.eps == eps and m.momentum == momentum for m in bn3)
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in others)
    gamma = 0.0 if recipe == "mvd-ms" else 1.0
    assert all(bool((m.weight == gamma).all()) for m in bn3)
    # the eps is the one used in the computation (eval mode: (x - mean) / sqrt(var + eps))
    m = bn3[0].eval()
    with torch.no_grad():
        m.weight.fill_(1.0)
        m.running_var.fill_(1e-3)
        x = torch.ones(1, m.num_features, 1, 1)
        assert torch.allclose(m(x), x / np.sqrt(1e-3 + eps), rtol=1e-5)


def test_no_weight_sharing_between_branches() -> None:
    net = MVDNet(small("mvd-pt"), C)
    ptrs = [p.data_ptr() for p in net.parameters()]
    assert len(ptrs) == len(set(ptrs))
    assert len(ptrs) == sum(1 for s in model_spec(small("mvd-pt"), C).values() if not s.buffer)


def test_full_model_parameter_count() -> None:
    cfg = load_config("mvd-pt").model
    net = MVDNet(cfg, 395)
    n = sum(p.numel() for p in net.parameters())
    assert n == num_parameters(model_spec(cfg, 395))
    assert 82_000_000 <= n <= 88_000_000
    # mvd-ms: the same without the 3×3 CAM scalars
    assert num_parameters(model_spec(load_config("mvd-ms").model, 395)) == n - 9


@pytest.mark.parametrize("last_stride,hw", [(1, (18, 9)), (2, (9, 5))])
def test_layer4_map_size_at_288x144(last_stride: int, hw: tuple[int, int]) -> None:
    cfg = replace(load_config("mvd-pt"), model={"last_stride": last_stride}).model
    br = Branch(cfg, 395).eval()
    with torch.no_grad():
        fmap = br.feature_map(torch.randn(1, 3, 288, 144))
    assert tuple(fmap.shape) == (1, 2048, *hw)


def test_full_mvd_pt_taps_at_288x144() -> None:
    cfg = load_config("mvd-pt").model
    net = MVDNet(cfg, 395).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 288, 144))
    want = {f"{o}.feat": (2, 2048) for o in OBSERVATIONS}
    want |= {f"{o}.logits": (2, 395) for o in OBSERVATIONS}
    want |= {f"{r}.z": (2, 512) for r in REPRESENTATIONS}
    want |= {f"{r}.logits": (2, 395) for r in REPRESENTATIONS}
    want["feat"] = (2, 8192)
    assert {k: tuple(v.shape) for k, v in out.items()} == want


@pytest.mark.parametrize("recipe", ["mvd-ms", "mvd-pt"])
def test_tap_shapes_small(recipe: str) -> None:
    cfg = small(recipe)
    net = loaded(cfg).train()
    out = net(torch.randn(6, 3, 64, 32))
    fd = feat_dim(cfg)
    assert list(out) == [k for k in TAP_NAMES if k != "feat"] + ["feat"] or set(out) == set(
        TAP_NAMES
    )
    for o in OBSERVATIONS:
        assert tuple(out[f"{o}.feat"].shape) == (6, fd)
        assert tuple(out[f"{o}.logits"].shape) == (6, C)
    for r in REPRESENTATIONS:
        assert tuple(out[f"{r}.z"].shape) == (6, cfg.vib_dim)
        assert tuple(out[f"{r}.logits"].shape) == (6, C)
    assert tuple(out["feat"].shape) == (6, ms.descriptor_dim(cfg))


# ------------------------------------------------------------------ an independent ResNet-50


def functional_resnet50(
    sd: dict[str, torch.Tensor], x: torch.Tensor, last_stride: int, bn3_eps: float = 1e-5,
    blocks: tuple[int, ...] = (3, 4, 6, 3),
) -> torch.Tensor:
    """torchvision v1.5 ResNet-50 (eval-mode BN) from a name → tensor dict, written with
    torch.nn.functional only: the layer4 map."""

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(
            t,
            sd[f"{p}.running_mean"],
            sd[f"{p}.running_var"],
            sd[f"{p}.weight"],
            sd[f"{p}.bias"],
            training=False,
            eps=bn3_eps if p.endswith(".bn3") else 1e-5,
        )

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for li, (n, stride) in enumerate(zip(blocks, (1, 2, 2, last_stride), strict=True), 1):
        for bi in range(n):
            p = f"layer{li}.{bi}"
            s = stride if bi == 0 else 1
            y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2"))
            y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            x = F.relu(x + y)
    return x


def random_trunk(width: int, seed: int, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> dict[str, torch.Tensor]:
    """torchvision-named ResNet-50 weights with non-trivial BN statistics."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in trunk_spec(width, blocks=blocks).items():
        if k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(s.shape, generator=g)
        elif k.endswith(".weight") and len(s.shape) == 1:
            out[k] = 0.5 + torch.rand(s.shape, generator=g)
        elif len(s.shape) == 4:
            fan = s.shape[0] * s.shape[2] * s.shape[3]
            out[k] = torch.randn(s.shape, generator=g) * (2.0 / fan) ** 0.5
        else:
            out[k] = 0.1 * torch.randn(s.shape, generator=g)
    return out


@pytest.mark.parametrize("last_stride, bn3_eps, blocks", [
    (1, 1e-5, (3, 4, 6, 3)), (2, 1e-3, (3, 4, 6, 3)),  # ResNet-50
    (2, 1e-5, (2, 1, 1, 1)),  # the tests' shrunk trunk
    (1, 1e-5, (3, 4, 23, 3)),  # ResNet-101
])
def test_trunk_matches_functional_resnet50(last_stride: int, bn3_eps: float, blocks) -> None:
    cfg = small("mvd-ms", last_stride=last_stride, cam=False, bn3_eps=bn3_eps, blocks=blocks)
    br = Branch(cfg, C).eval()
    assert state_names(br.trunk) == list(trunk_spec(8, blocks=blocks))
    sd = random_trunk(8, 1, blocks)
    missing, unexpected = br.trunk.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        got = br.feature_map(x)
        want = functional_resnet50(sd, x, last_stride, bn3_eps, blocks)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ CAM, gray view, features


def cam_numpy(x: np.ndarray, gamma: float) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(b):
        q = x[i].reshape(c, h * w)
        e = q @ q.T
        e = e.max(axis=1, keepdims=True) - e
        a = np.exp(e - e.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        out[i] = (gamma * (a @ q)).reshape(c, h, w) + x[i]
    return out


def test_channel_attention_vs_numpy() -> None:
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 3)).astype(np.float32)
    cam = ChannelAttention()
    assert float(cam.gamma.detach()) == 0.0
    torch.testing.assert_close(cam(torch.from_numpy(x)), torch.from_numpy(x))  # γ = 0: identity
    with torch.no_grad():
        cam.gamma.fill_(0.7)
    got = cam(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, cam_numpy(x.astype(np.float64), 0.7), rtol=1e-5, atol=1e-5)


def test_cam_is_applied_before_layer2_3_4() -> None:
    cfg = small("mvd-pt")
    net = loaded(cfg).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        base = net.v.feature_map(x)
        for k in (2, 3, 4):
            getattr(net.v, f"cam{k}").gamma.fill_(0.5)
            changed = net.v.feature_map(x)
            assert not torch.allclose(changed, base), k
            base = changed
    assert sum(1 for _ in net.v.modules() if isinstance(_, ChannelAttention)) == 3


def test_gray_view() -> None:
    x = torch.randn(3, 3, 5, 4, requires_grad=True)
    g = gray_view(x)
    want = 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]
    assert tuple(g.shape) == (3, 3, 5, 4)
    for c in range(3):
        torch.testing.assert_close(g[:, c], want.detach())
    assert not g.requires_grad


def test_forward_uses_the_right_branch_and_view() -> None:
    cfg = small("mvd-ms", dropout=0.0)
    net = loaded(cfg).eval()
    x = torch.randn(4, 3, 64, 32)
    g = gray_view(x)
    with torch.no_grad():
        out = net(x)
        for obs, (br, inp) in {
            "v_obs": (net.v, x),
            "i_obs": (net.i, g),
            "v_ms_obs": (net.s, x),
            "i_ms_obs": (net.s, g),
        }.items():
            feat, logits = br(inp)
            torch.testing.assert_close(out[f"{obs}.feat"], feat)
            torch.testing.assert_close(out[f"{obs}.logits"], logits)
            rep = obs.replace("_obs", "_rep")
            z, rl = br.vib(feat)
            torch.testing.assert_close(out[f"{rep}.z"], z)
            torch.testing.assert_close(out[f"{rep}.logits"], rl)
            torch.testing.assert_close(logits, feat @ br.classifier.weight.t())


@pytest.mark.parametrize("mode", ["part", "joint", "none"])
def test_test_feature_normalisation_and_extract(mode: str) -> None:
    cfg = small("mvd-ms", feat_norm=mode)
    net = loaded(cfg, seed=3).eval()
    x = torch.randn(5, 3, 64, 32)
    with torch.no_grad():
        out = net(x)
        ext = net.extract(x)
    torch.testing.assert_close(ext, out["feat"])
    raw = torch.cat([out[f"{o}.feat"] for o in OBSERVATIONS], dim=1)
    fd = feat_dim(cfg)
    if mode == "part":
        for k in range(4):
            block = ext[:, k * fd : (k + 1) * fd]
            torch.testing.assert_close(block.norm(dim=1), torch.ones(5))
            torch.testing.assert_close(
                block,
                raw[:, k * fd : (k + 1) * fd]
                / raw[:, k * fd : (k + 1) * fd].norm(dim=1, keepdim=True),
            )
    elif mode == "joint":
        torch.testing.assert_close(ext.norm(dim=1), torch.ones(5))
        torch.testing.assert_close(ext, raw / raw.norm(dim=1, keepdim=True))
    else:
        torch.testing.assert_close(ext, raw)


def test_bad_feat_norm() -> None:
    cfg = dataclasses.replace(small("mvd-ms"), feat_norm="l1")
    with pytest.raises(ValueError, match="feat_norm"):
        MVDNet(cfg, C).eval().extract(torch.randn(2, 3, 64, 32))


# ------------------------------------------------------------------ convert


def test_canonical_round_trip() -> None:
    cfg = small("mvd-pt")
    net = MVDNet(cfg, C)
    canon = torch_to_canonical(net.state_dict())
    assert list(canon) == list(model_spec(cfg, C))
    assert all(a.dtype == np.float32 for a in canon.values())
    back = canonical_to_torch(canon)
    sd = net.state_dict()
    assert set(sd) - set(back) == {k for k in sd if k.endswith("num_batches_tracked")}
    for k, t in back.items():
        assert torch.equal(t, sd[k]), k


class _TVBottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, down: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        if down:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )


class TorchvisionStyleResNet50(nn.Module):
    """Only the parameter layout of torchvision's resnet50 (names incl. fc), at width w."""

    def __init__(self, w: int, classes: int = 1000, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        cin = w
        for li, n in enumerate(blocks, 1):
            planes = w * 2 ** (li - 1)
            blocks = [
                _TVBottleneck(cin if b == 0 else planes * 4, planes, 1, b == 0) for b in range(n)
            ]
            setattr(self, f"layer{li}", nn.Sequential(*blocks))
            cin = planes * 4
        self.fc = nn.Linear(cin, classes)


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    m = TorchvisionStyleResNet50(8)
    sd = m.state_dict()
    for k, v in sd.items():  # non-trivial BN statistics
        if k.endswith("running_mean") or k.endswith("running_var"):
            v.copy_(torch.rand_like(v) + 0.5)
    return sd


def test_read_torchvision_resnet50_loads_into_all_trunks(tmp_path: Path, tv_state) -> None:
    path = tmp_path / "r50.pth"
    torch.save(tv_state, path)
    arrays = read_torchvision_resnet50(path, width=8)
    assert list(arrays) == list(trunk_spec(8))
    assert not any(k.startswith("fc.") for k in arrays)
    net = MVDNet(small("mvd-ms"), C)
    for b in ("v", "i", "s"):
        trunk = net.branch(b).trunk
        missing, unexpected = trunk.load_state_dict(canonical_to_torch(arrays), strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
        for k, v in trunk.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                torch.testing.assert_close(v, tv_state[k], rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["state_dict", "module"])
def test_read_torchvision_resnet50_wrappers(tmp_path: Path, tv_state, wrap: str) -> None:
    path = tmp_path / "r50.pt"
    if wrap == "state_dict":
        torch.save({"state_dict": tv_state, "epoch": 3}, path)
    else:
        torch.save({f"module.{k}": v for k, v in tv_state.items()}, path)
    arrays = read_torchvision_resnet50(path, width=8)
    np.testing.assert_array_equal(
        arrays["layer3.2.conv2.weight"], tv_state["layer3.2.conv2.weight"].numpy()
    )


@pytest.mark.parametrize(
    "corrupt,key",
    [
        ("missing", "layer2.1.bn2.running_var"),
        ("extra", "layer5.0.conv1.weight"),
        ("shape", "layer4.0.downsample.0.weight"),
    ],
)
def test_read_torchvision_resnet50_rejects_corrupt(
    tmp_path: Path, tv_state, corrupt: str, key: str
) -> None:
    sd = dict(tv_state)
    if corrupt == "missing":
        del sd[key]
    elif corrupt == "extra":
        sd[key] = torch.zeros(3)
    else:
        sd[key] = torch.zeros(5, 5, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        read_torchvision_resnet50(path, width=8)
    assert corrupt.replace("extra", "unexpected").replace("shape", "mis-shaped") in str(info.value)


def test_read_torchvision_resnet50_wrong_width_and_bad_files(tmp_path: Path, tv_state) -> None:
    path = tmp_path / "r50.pth"
    torch.save(tv_state, path)
    with pytest.raises(ValueError, match="mis-shaped"):
        read_torchvision_resnet50(path, width=16)
    assert list(read_torchvision_resnet50(path)) == list(trunk_spec(8))  # width from the file
    with pytest.raises(ValueError, match="not found"):
        read_torchvision_resnet50(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        read_torchvision_resnet50(junk)


def test_a_resnet101_file_loads_into_a_resnet101_model_and_not_into_resnet50(tmp_path: Path) -> None:
    """model.blocks: a file is read at its own depth, then checked against the model's."""
    from mvd_core.errors import MvdError
    from mvd_core.weights.pretrained import load_trunk_params

    path = tmp_path / "r101.pth"
    torch.save(TorchvisionStyleResNet50(4, blocks=(3, 4, 23, 3)).state_dict(), path)
    assert list(read_torchvision_resnet50(path)) == list(trunk_spec(4, blocks=(3, 4, 23, 3)))
    trunks = load_trunk_params(path, 4, (3, 4, 23, 3))
    cfg = dataclasses.replace(small("mvd-ms", width=4, blocks=(3, 4, 23, 3)), pretrain=str(path))
    net = MVDNet(cfg, C)
    got = {k: v for k, v in net.state_dict().items() if k.startswith("i.trunk.")}
    assert set(got) - {k for k in got if k.endswith("num_batches_tracked")} == {
        k for k in trunks if k.startswith("i.trunk.")}
    with pytest.raises(MvdError, match=r"unexpected: layer3\.6\."):
        load_trunk_params(path, 4)  # a ResNet-50 model
