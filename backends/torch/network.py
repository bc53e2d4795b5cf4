"""The MVD network in PyTorch (SPEC §2).

Three ResNet-50 branches without shared weights -- ``v`` (visible), ``i`` (infrared), ``s``
(shared) -- each: trunk → (CAM before layer2/3/4) → global average pool → BN-neck → identity
classifier, plus a deterministic VIB head on the BN-neck feature.

``MVDNet(...).state_dict()`` names (minus ``num_batches_tracked``) are exactly the canonical
names of :func:`mvd_core.model.spec.model_spec`; the ResNet-50 is written here (torchvision v1.5
layout: stride on the 3×3 conv) so that no torchvision install is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mvd_core.config import ModelConfig
from mvd_core.interface import OBSERVATIONS
from mvd_core.model.spec import (
    BLOCKS,
    BN_EPS,
    BN_MOMENTUM,
    EXPANSION,
    GRAY_WEIGHTS,
    LEAKY_SLOPE,
    OBS_SOURCES,
    REP_OF_OBS,
    feat_dim,
)


def _bn2d(n: int, eps: float = BN_EPS, momentum: float = BN_MOMENTUM) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(n, eps=eps, momentum=momentum)


def _bn1d(n: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(n, eps=BN_EPS, momentum=BN_MOMENTUM)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1×1 → 3×3 (stride here) → 1×1, projection shortcut if needed.
    ``bn3_eps``/``bn3_momentum``: the last BatchNorm's (MS's model zoo: 1e-3 / torch 0.003)."""

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: bool,
        bn3_eps: float = BN_EPS, bn3_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = _bn2d(planes * EXPANSION, bn3_eps, bn3_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=stride, bias=False),
                _bn2d(planes * EXPANSION),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Trunk(nn.Module):
    """torchvision-layout ResNet without ``avgpool``/``fc``, base width ``width``, ``blocks``
    bottlenecks per stage (ResNet-50 by default)."""

    def __init__(
        self, width: int = 64, last_stride: int = 2,
        bn3_eps: float = BN_EPS, bn3_momentum: float = BN_MOMENTUM,
        blocks: tuple[int, ...] = BLOCKS,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        strides = (1, 2, 2, last_stride)
        for li, (nblocks, stride) in enumerate(zip(blocks, strides, strict=True), start=1):
            planes = width * 2 ** (li - 1)
            blocks = []
            for bi in range(nblocks):
                blocks.append(
                    Bottleneck(inplanes, planes, stride if bi == 0 else 1, downsample=bi == 0,
                               bn3_eps=bn3_eps, bn3_momentum=bn3_momentum)
                )
                inplanes = planes * EXPANSION
            self.add_module(f"layer{li}", nn.Sequential(*blocks))

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:  # plain trunk, no CAM
        x = self.stem(x)
        for li in range(1, 5):
            x = getattr(self, f"layer{li}")(x)
        return x


def _full(x: Tensor) -> Tensor:
    """float32, or float64 if given (``run.precision=fp64``); half/bfloat16 are upcast."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class ChannelAttention(nn.Module):
    """DANet channel attention (CAM): out = γ·(A·X) + X, A = softmax(max(E) − E), E = X·Xᵀ.

    Computed in float32 (float64 at ``run.precision=fp64``) even under autocast: E sums
    thousands of squared activations and overflows float16.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = _full(x)
            q = xf.reshape(b, c, h * w)
            energy = torch.bmm(q, q.transpose(1, 2))
            energy = torch.amax(energy, dim=-1, keepdim=True) - energy
            attn = torch.softmax(energy, dim=-1)
            out = torch.bmm(attn, q).reshape(b, c, h, w)
            out = self.gamma * out + xf
        return out.to(x.dtype)


class VIB(nn.Module):
    """Deterministic variational information bottleneck head (no sampling, as both codes)."""

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, int],
        z_dim: int,
        cls_hidden: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        h1, h2 = hidden
        self.encoder = nn.Sequential(
            nn.Linear(in_dim, h1),
            _bn1d(h1),
            nn.ReLU(inplace=True),
            nn.Linear(h1, h2),
            _bn1d(h2),
            nn.ReLU(inplace=True),
            nn.Linear(h2, z_dim),
        )
        self.classifier = nn.Sequential(
            nn.Linear(z_dim, cls_hidden),
            _bn1d(cls_hidden),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(cls_hidden, num_classes),
        )

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(feat)
        return z, self.classifier(z)


class Branch(nn.Module):
    """One backbone: trunk (+CAM) → GAP → BN-neck → classifier, and its VIB head.

    Attribute registration order follows :func:`mvd_core.model.spec.model_spec`.
    """

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
        self.bnneck.bias.requires_grad_(cfg.bnneck_bias)
        self.classifier = nn.Linear(fd, num_classes)  # with a bias, as both public codes
        self.vib = VIB(
            fd, cfg.vib_hidden, cfg.vib_dim, cfg.vib_cls_hidden, num_classes, cfg.dropout
        )

    def feature_map(self, x: Tensor) -> Tensor:
        """The layer4 output map (B, feat_dim, h, w)."""
        t = self.trunk
        x = t.layer1(t.stem(x))
        for k in (2, 3, 4):
            if self.use_cam:
                x = getattr(self, f"cam{k}")(x)
            x = getattr(t, f"layer{k}")(x)
        return x

    def features(self, x: Tensor) -> Tensor:
        """The BN-neck feature (B, feat_dim)."""
        pooled = torch.mean(self.feature_map(x), dim=(2, 3))
        return self.bnneck(pooled)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.features(x)
        return feat, self.classifier(feat)


def gray_view(x: Tensor) -> Tensor:
    """0.2989 R + 0.5870 G + 0.1140 B of the (normalised) input, repeated to 3 channels,
    without gradient."""
    with torch.no_grad():
        r, g, b = GRAY_WEIGHTS
        y = r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]
        return y.expand(-1, 3, -1, -1).contiguous()


def normalize_test_feature(parts: list[Tensor], mode: str) -> Tensor:
    """Concatenate the four observation features and L2-normalise them per ``mode``:
    "part" each block separately, "joint" the whole vector, "none" not at all."""
    parts = [_full(p) for p in parts]  # normalise in float32 even under autocast
    if mode == "part":
        return torch.cat([F.normalize(p, p=2.0, dim=1) for p in parts], dim=1)
    feat = torch.cat(parts, dim=1)
    if mode == "joint":
        return F.normalize(feat, p=2.0, dim=1)
    if mode == "none":
        return feat
    raise ValueError(f"model.feat_norm: expected part|joint|none, got {mode!r}")


class MVDNet(nn.Module):
    """Multi-view variational distillation network: branches ``v``, ``i``, ``s``."""

    def __init__(self, model_cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.cfg = model_cfg
        self.num_classes = num_classes
        self.v = Branch(model_cfg, num_classes)
        self.i = Branch(model_cfg, num_classes)
        self.s = Branch(model_cfg, num_classes)

    def branch(self, name: str) -> Branch:
        return {"v": self.v, "i": self.i, "s": self.s}[name]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """All taps of :data:`mvd_core.interface.TAP_NAMES` for a mixed batch ``x``."""
        views = {"rgb": x, "gray": gray_view(x)}
        out: dict[str, Tensor] = {}
        for obs in OBSERVATIONS:
            bname, view = OBS_SOURCES[obs]
            br = self.branch(bname)
            feat, logits = br(views[view])
            z, rep_logits = br.vib(feat)
            rep = REP_OF_OBS[obs]
            out[f"{obs}.feat"] = feat
            out[f"{obs}.logits"] = logits
            out[f"{rep}.z"] = z
            out[f"{rep}.logits"] = rep_logits
        out["feat"] = normalize_test_feature(
            [out[f"{o}.feat"] for o in OBSERVATIONS], self.cfg.feat_norm
        )
        return out

    def extract(self, x: Tensor) -> Tensor:
        """The test feature only (no classifiers, no VIB): (B, 4·feat_dim)."""
        views = {"rgb": x, "gray": gray_view(x)}
        parts = [
            self.branch(OBS_SOURCES[o][0]).features(views[OBS_SOURCES[o][1]]) for o in OBSERVATIONS
        ]
        return normalize_test_feature(parts, self.cfg.feat_norm)
