"""The MVD network in MindSpore (SPEC §2), the same architecture as ``mvd_backends.torch.network``.

Three ResNet-50 branches ``v`` (visible), ``i`` (infrared) and ``s`` (shared), no weights shared,
each with a BN-neck, an identity classifier and a VIB head. Parameter names are the canonical
(torch) names with MindSpore's BatchNorm suffixes (gamma/beta/moving_mean/moving_variance); the
one name map lives in :mod:`mvd_backends.mindspore.convert`.

Parity notes (SPEC §8):
- every convolution uses ``pad_mode='pad'`` with explicit symmetric padding (MindSpore's ``same``
  pads asymmetrically, TF style);
- the stem max-pool is ``MaxPool2d(3, 2, pad_mode='pad', padding=1)``: explicit symmetric
  padding, torch's ``MaxPool2d(3, 2, 1)`` (tested against torch and NumPy);
- BatchNorm eps 1e-5, momentum 0.9 (MindSpore convention = 1 − torch's 0.1); every bottleneck's
  bn3 takes ``model.bn3_eps`` / ``model.bn3_momentum`` (torch convention; mvd-ms: 1e-3, 0.003 =
  MindSpore 0.997, as MS's model-zoo ResNet-50).

Dropout in the VIB classifier takes its mask as an input (``masks``), drawn by the backend from a
seeded NumPy generator it owns (exact resume, identical in both execution modes); ``masks=None``
means no dropout (eval mode, or ``model.dropout == 0``).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from mvd_core.config import ModelConfig
from mvd_core.interface import TAP_NAMES
from mvd_core.model.spec import (
    BLOCKS,
    BN_EPS,
    BN_MOMENTUM,
    EXPANSION,
    GRAY_WEIGHTS,
    LEAKY_SLOPE,
    feat_dim,
)

#: MindSpore's BatchNorm momentum is the weight of the old running value: 1 − torch's momentum
_MS_BN_MOMENTUM = 1.0 - BN_MOMENTUM
#: F.normalize's floor on the norm
_NORM_EPS = 1e-12


def _bn2d(n: int, eps: float = BN_EPS, momentum: float = BN_MOMENTUM) -> nn.BatchNorm2d:
    """``momentum`` in the torch convention (converted to MindSpore's 1 − momentum here)."""
    return nn.BatchNorm2d(n, eps=eps, momentum=1.0 - momentum)


def _bn1d(n: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(n, eps=BN_EPS, momentum=_MS_BN_MOMENTUM)


def _conv(ci: int, co: int, k: int, stride: int = 1, pad: int = 0) -> nn.Conv2d:
    # weights are overwritten by mvd_core.model.spec.init_params at construction: zeros are cheap
    return nn.Conv2d(
        ci, co, k, stride=stride, pad_mode="pad", padding=pad, has_bias=False, weight_init="zeros"
    )


def _dense(ci: int, co: int, bias: bool = True) -> nn.Dense:
    return nn.Dense(
        ci, co, weight_init="zeros", bias_init="zeros" if bias else None, has_bias=bias
    )


class Bottleneck(nn.Cell):
    """torchvision's Bottleneck (stride on conv2, 'ResNet v1.5'); ``bn3_eps``/``bn3_momentum``
    (torch convention) for the last BatchNorm (MS's model zoo: 1e-3 / 0.997 = torch 0.003)."""

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: bool,
        bn3_eps: float = BN_EPS, bn3_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 1)
        self.bn1 = _bn2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride, 1)
        self.bn2 = _bn2d(planes)
        self.conv3 = _conv(planes, planes * EXPANSION, 1)
        self.bn3 = _bn2d(planes * EXPANSION, bn3_eps, bn3_momentum)
        self.relu = nn.ReLU()
        self.has_down = downsample
        if downsample:
            self.downsample = nn.SequentialCell(
                [_conv(inplanes, planes * EXPANSION, 1, stride), _bn2d(planes * EXPANSION)]
            )

    def construct(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.has_down else x
        return self.relu(out + identity)


class _MaxPoolSym(nn.Cell):
    """torch ``MaxPool2d(3, 2, 1)``: explicit symmetric padding of 1 (implicit -inf), 3×3/2.

    (Not ``ops.pad(-inf)`` + a valid pool: on the CPU, MindSpore 2.8's pad kernel pair
    intermittently spun forever in graph mode after a few training steps.)"""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)

    def construct(self, x: Tensor) -> Tensor:
        return self.pool(x)


class ResNet50Trunk(nn.Cell):
    """A torchvision ResNet without avgpool/fc, base width ``width``, ``blocks`` bottlenecks per
    stage (ResNet-50 by default), torchvision names."""

    def __init__(
        self, width: int, last_stride: int,
        bn3_eps: float = BN_EPS, bn3_momentum: float = BN_MOMENTUM,
        blocks: tuple[int, ...] = BLOCKS,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(3, width, 7, 2, 3)
        self.bn1 = _bn2d(width)
        self.relu = nn.ReLU()
        self.maxpool = _MaxPoolSym()
        inplanes = width
        layers = []
        for li, nblocks in enumerate(blocks, start=1):
            planes = width * 2 ** (li - 1)
            stride = 1 if li == 1 else (last_stride if li == 4 else 2)
            blocks = []
            for bi in range(nblocks):
                blocks.append(Bottleneck(inplanes, planes, stride if bi == 0 else 1, bi == 0,
                                         bn3_eps, bn3_momentum))
                inplanes = planes * EXPANSION
            layers.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ChannelAttention(nn.Cell):
    """Channel attention (DANet style): out = γ·(A·X) + X, A = softmax(max(E) − E), E = X·Xᵀ."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = Parameter(Tensor([0.0], ms.float32), name="gamma")
        self.softmax = nn.Softmax(axis=-1)

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = x.reshape(b, c, h * w)
        energy = ops.bmm(q, q.transpose(0, 2, 1))
        energy = energy.max(axis=-1, keepdims=True) - energy
        att = self.softmax(energy)
        out = ops.bmm(att, q).reshape(b, c, h, w)
        return self.gamma * out + x


class VIB(nn.Cell):
    """Deterministic VIB head: encoder (feat → z) and classifier (z → logits)."""

    def __init__(self, fd: int, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        h1, h2 = cfg.vib_hidden
        self.encoder = nn.SequentialCell(
            [
                _dense(fd, h1),
                _bn1d(h1),
                nn.ReLU(),
                _dense(h1, h2),
                _bn1d(h2),
                nn.ReLU(),
                _dense(h2, cfg.vib_dim),
            ]
        )
        hc = cfg.vib_cls_hidden
        # index 3 is the dropout slot (applied with an external mask, see module doc)
        self.classifier = nn.SequentialCell(
            [_dense(cfg.vib_dim, hc), _bn1d(hc), nn.LeakyReLU(LEAKY_SLOPE), nn.Identity(),
             _dense(hc, num_classes)]
        )

    def construct(self, feat: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = self.encoder(feat)
        h = self.classifier[2](self.classifier[1](self.classifier[0](z)))
        if mask is not None:
            h = h * mask
        return z, self.classifier[4](h)


class Branch(nn.Cell):
    """One backbone: trunk (+CAM) → GAP → BN-neck → classifier, and its VIB head."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        fd = feat_dim(cfg)
        self.use_cam = cfg.cam
        self.trunk = ResNet50Trunk(cfg.width, cfg.last_stride, cfg.bn3_eps, cfg.bn3_momentum, cfg.blocks)
        if cfg.cam:
            self.cam2 = ChannelAttention()
            self.cam3 = ChannelAttention()
            self.cam4 = ChannelAttention()
        self.bnneck = _bn1d(fd)
        if not cfg.bnneck_bias:
            self.bnneck.beta.requires_grad = False
        self.classifier = _dense(fd, num_classes)  # with a bias, as both public codes
        self.vib = VIB(fd, cfg, num_classes)

    def observe(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = self.trunk
        x = t.layer1(t.stem(x))
        if self.use_cam:
            x = self.cam2(x)
        x = t.layer2(x)
        if self.use_cam:
            x = self.cam3(x)
        x = t.layer3(x)
        if self.use_cam:
            x = self.cam4(x)
        x = t.layer4(x)
        pooled = x.mean(axis=(2, 3))
        feat = self.bnneck(pooled)
        return feat, self.classifier(feat)


def _l2_normalize(x: Tensor) -> Tensor:
    """torch.nn.functional.normalize(x, dim=1): x / max(‖x‖, 1e-12)."""
    norm = ops.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / ops.maximum(norm, _NORM_EPS)


def gray_view(x: Tensor) -> Tensor:
    """0.2989 R + 0.5870 G + 0.1140 B of the (normalised) input, repeated to 3 channels,
    without gradient."""
    r, g, b = GRAY_WEIGHTS
    y = r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]
    return ops.stop_gradient(ops.tile(y, (1, 3, 1, 1)))


def normalize_test_feature(parts: list[Tensor] | tuple[Tensor, ...], mode: str) -> Tensor:
    """Concatenate the four observation features and L2-normalise them per ``mode``:
    "part" each block separately, "joint" the whole vector, "none" not at all."""
    if mode == "part":
        return ops.concat([_l2_normalize(p) for p in parts], axis=1)
    feat = ops.concat(parts, axis=1)
    if mode == "joint":
        return _l2_normalize(feat)
    return feat


class MVDNet(nn.Cell):
    """The MVD network: branches ``v``, ``i``, ``s``.

    ``construct(x, masks=None)`` returns the taps as a TUPLE in :data:`TAP_NAMES` order (a
    tuple, not a dict, is the graph-mode friendly output; :meth:`taps` names it). ``masks`` is
    ``None`` (no dropout) or four dropout masks (v_rep, i_rep, v_ms_rep, i_ms_rep), each
    (B, vib_cls_hidden), already scaled by 1/(1 − p).
    """

    def __init__(self, model_cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        if model_cfg.feat_norm not in ("part", "joint", "none"):
            raise ValueError(f"model.feat_norm: expected part|joint|none, got {model_cfg.feat_norm!r}")
        self.feat_norm = model_cfg.feat_norm
        self.v = Branch(model_cfg, num_classes)
        self.i = Branch(model_cfg, num_classes)
        self.s = Branch(model_cfg, num_classes)

    def construct(self, x: Tensor, masks: tuple | None = None) -> tuple:
        g = gray_view(x)
        v_f, v_l = self.v.observe(x)
        i_f, i_l = self.i.observe(g)
        vs_f, vs_l = self.s.observe(x)
        is_f, is_l = self.s.observe(g)
        if masks is None:
            v_z, v_rl = self.v.vib(v_f)
            i_z, i_rl = self.i.vib(i_f)
            vs_z, vs_rl = self.s.vib(vs_f)
            is_z, is_rl = self.s.vib(is_f)
        else:
            v_z, v_rl = self.v.vib(v_f, masks[0])
            i_z, i_rl = self.i.vib(i_f, masks[1])
            vs_z, vs_rl = self.s.vib(vs_f, masks[2])
            is_z, is_rl = self.s.vib(is_f, masks[3])
        feat = normalize_test_feature((v_f, i_f, vs_f, is_f), self.feat_norm)
        # TAP_NAMES order: obs (feat, logits) x4, rep (z, logits) x4, feat
        return (
            v_f, v_l, i_f, i_l, vs_f, vs_l, is_f, is_l,
            v_z, v_rl, i_z, i_rl, vs_z, vs_rl, is_z, is_rl,
            feat,
        )

    def extract(self, x: Tensor) -> Tensor:
        """The test feature only (no classifiers, no VIB): (B, 4·feat_dim)."""
        g = gray_view(x)
        feats = (self.v.observe(x)[0], self.i.observe(g)[0], self.s.observe(x)[0],
                 self.s.observe(g)[0])
        return normalize_test_feature(feats, self.feat_norm)

    @staticmethod
    def taps(outs: tuple) -> dict:
        """The tuple output → {tap name: tensor} in :data:`TAP_NAMES` order."""
        if len(outs) != len(TAP_NAMES):
            raise ValueError(f"expected {len(TAP_NAMES)} outputs, got {len(outs)}")
        return dict(zip(TAP_NAMES, outs, strict=True))
