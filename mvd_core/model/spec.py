"""The MVD network's parameters, framework-free: canonical names, shapes, roles and the seeded
NumPy initialisation both backends load, so a torch and a MindSpore model built with the same
seed start from the same bits.

Canonical names are the torch backend's ``state_dict`` names (without ``num_batches_tracked``):

    {b}.trunk.<torchvision ResNet-50 name>      b in v (visible), i (infrared), s (shared)
    {b}.cam{2,3,4}.gamma                        channel attention before layer2/3/4 (cam only)
    {b}.bnneck.{weight,bias,running_mean,running_var}
    {b}.classifier.{weight,bias}                Linear(feat_dim, num_classes), N(0, 0.001) and 0
    {b}.vib.encoder.{0,3,6}.{weight,bias}       Linear(feat,h1) BN ReLU Linear(h1,h2) BN ReLU Linear(h2,z)
    {b}.vib.encoder.{1,4}.<bn>
    {b}.vib.classifier.{0,4}.{weight,bias}      Linear(z,hc) BN LeakyReLU(0.1) Dropout Linear(hc,C)
    {b}.vib.classifier.1.<bn>
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mvd_core.config import ModelConfig
from mvd_core.errors import CheckpointError, ConfigError, MvdError
from mvd_core.interface import OBSERVATIONS, REPRESENTATIONS

BRANCHES = ("v", "i", "s")
BLOCKS = (3, 4, 6, 3)  # ResNet-50 (the default model.blocks)
EXPANSION = 4
BN_KEYS = ("weight", "bias", "running_mean", "running_var")
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # torch convention (MindSpore: 1 - 0.1)
LEAKY_SLOPE = 0.1

# init kinds
KAIMING_OUT = "kaiming_normal_fan_out"  # convs, as torchvision
ONES = "ones"
ZEROS = "zeros"
NORMAL_001 = "normal_0.001"  # ID classifiers
CONST = "const"  # ParamSpec.value everywhere (bottleneck bn3 γ = ModelConfig.residual_gain)
LINEAR_U = "uniform_fan_in"  # torch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
KAIMING_OUT_LINEAR = "kaiming_normal_fan_out_linear"  # PT VIB encoder: N(0, 2/out_features)
NORMAL_1_002 = "normal_1_0.02"  # PT VIB encoder BatchNorm1d weight: N(1, 0.02)
HEAD_INITS = ("framework", "pt")

#: ITU-R 601 luma weights of the grey view (SPEC §2; the MindSpore code's 0.1440 typo not copied)
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
#: which branch and which input view ("rgb" | "gray") produce each observation
OBS_SOURCES: dict[str, tuple[str, str]] = {
    "v_obs": ("v", "rgb"),
    "i_obs": ("i", "gray"),
    "v_ms_obs": ("s", "rgb"),
    "i_ms_obs": ("s", "gray"),
}
#: the representation (VIB head output) of each observation
REP_OF_OBS: dict[str, str] = dict(zip(OBSERVATIONS, REPRESENTATIONS, strict=True))


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    init: str
    trainable: bool  # False: a buffer (BN running stats) or a frozen parameter
    buffer: bool  # BN running statistics
    group: str  # "trunk" (lr × trunk_lr_mult) | "head" (lr × head_lr_mult), see model_spec
    fan_in: int = 0  # for LINEAR_U (bias uses its weight's fan_in)
    value: float = 0.0  # for CONST


def feat_dim(cfg: ModelConfig) -> int:
    """Width of one branch's pooled feature (2048 for the real ResNet-50)."""
    return cfg.width * 8 * EXPANSION


def descriptor_dim(cfg: ModelConfig) -> int:
    """Width of the test feature: the four observation features concatenated."""
    return 4 * feat_dim(cfg)


def _bn(
    out: dict[str, ParamSpec], prefix: str, n: int, group: str, bias_trainable=True,
    gamma: float = 1.0, weight_init: str = "",
) -> None:
    out[f"{prefix}.weight"] = (
        ParamSpec((n,), weight_init, True, False, group) if weight_init
        else ParamSpec((n,), ONES, True, False, group) if gamma == 1.0
        else ParamSpec((n,), CONST, True, False, group, value=float(gamma))
    )
    out[f"{prefix}.bias"] = ParamSpec((n,), ZEROS, bias_trainable, False, group)
    out[f"{prefix}.running_mean"] = ParamSpec((n,), ZEROS, False, True, group)
    out[f"{prefix}.running_var"] = ParamSpec((n,), ONES, False, True, group)


def _conv(out: dict[str, ParamSpec], name: str, co: int, ci: int, k: int) -> None:
    out[name] = ParamSpec((co, ci, k, k), KAIMING_OUT, True, False, "trunk")


def _linear(
    out: dict[str, ParamSpec], prefix: str, ci: int, co: int, weight_init: str = LINEAR_U,
    group: str = "head",
) -> None:
    """A Linear layer: torch's default init (weight and bias U(±1/sqrt(fan_in))), or
    ``weight_init`` for the weight with a zero bias (the PT code's heads)."""
    bias_init = LINEAR_U if weight_init == LINEAR_U else ZEROS
    out[f"{prefix}.weight"] = ParamSpec((co, ci), weight_init, True, False, group, ci)
    out[f"{prefix}.bias"] = ParamSpec((co,), bias_init, True, False, group, ci)


def trunk_spec(
    width: int = 64, residual_gain: float = 1.0, blocks: tuple[int, ...] = BLOCKS,
) -> dict[str, ParamSpec]:
    """A torchvision ResNet (without fc; ResNet-50 by default), torchvision names, at base width
    ``width`` with ``blocks`` bottlenecks per stage. Every bottleneck's ``bn3.weight`` is
    initialised to the model's ``residual_gain``."""
    out: dict[str, ParamSpec] = {}
    _conv(out, "conv1.weight", width, 3, 7)
    _bn(out, "bn1", width, "trunk")
    inplanes = width
    for li, nblocks in enumerate(blocks, start=1):
        planes = width * 2 ** (li - 1)
        for bi in range(nblocks):
            p = f"layer{li}.{bi}"
            _conv(out, f"{p}.conv1.weight", planes, inplanes, 1)
            _bn(out, f"{p}.bn1", planes, "trunk")
            _conv(out, f"{p}.conv2.weight", planes, planes, 3)
            _bn(out, f"{p}.bn2", planes, "trunk")
            _conv(out, f"{p}.conv3.weight", planes * EXPANSION, planes, 1)
            _bn(out, f"{p}.bn3", planes * EXPANSION, "trunk", gamma=residual_gain)
            if bi == 0:  # every ResNet stage starts with a projection shortcut
                _conv(out, f"{p}.downsample.0.weight", planes * EXPANSION, inplanes, 1)
                _bn(out, f"{p}.downsample.1", planes * EXPANSION, "trunk")
            inplanes = planes * EXPANSION
    return out


def trunk_blocks(names) -> tuple[int, int, int, int]:
    """Bottleneck blocks per stage that a torchvision-named ResNet trunk's parameter names show
    (at least 1 each, so that an absent stage is reported missing), so that a file of any depth
    is checked against its own spec."""
    counts = [1, 1, 1, 1]
    for k in names:
        parts = k.split(".")
        if len(parts) > 2 and parts[0] in ("layer1", "layer2", "layer3", "layer4") and parts[1].isdigit():
            li = int(parts[0][-1]) - 1
            counts[li] = max(counts[li], int(parts[1]) + 1)
    return tuple(counts)  # type: ignore[return-value]


def model_spec(cfg: ModelConfig, num_classes: int) -> dict[str, ParamSpec]:
    """Every parameter and buffer of the MVD network, canonical names, in a fixed order.

    Learning-rate groups: "trunk" is a whole backbone (ResNet trunk, CAM, BN-neck, ID
    classifier: the public MindSpore code's ``*_backbone.trainable_params()``, at
    ``optim.trunk_lr_mult``), "head" the VIB heads (``*_bottleneck``, at ``optim.head_lr_mult``).
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes: expected >= 1, got {num_classes}")
    fd = feat_dim(cfg)
    h1, h2 = cfg.vib_hidden
    out: dict[str, ParamSpec] = {}
    if not cfg.residual_gain >= 0:
        raise ConfigError(f"model.residual_gain: expected >= 0, got {cfg.residual_gain}")
    if cfg.head_init not in HEAD_INITS:
        raise ConfigError(f"model.head_init: {cfg.head_init!r} is not one of {', '.join(HEAD_INITS)}")
    pt = cfg.head_init == "pt"
    enc_w = KAIMING_OUT_LINEAR if pt else LINEAR_U  # PT: weights_init_kaiming on the encoder
    enc_bn = NORMAL_1_002 if pt else ""
    cls_w = NORMAL_001 if pt else LINEAR_U  # PT: weights_init_classifier on the VIB classifier
    trunk = trunk_spec(cfg.width, cfg.residual_gain, cfg.blocks)
    for b in BRANCHES:
        for name, spec in trunk.items():
            out[f"{b}.trunk.{name}"] = spec
        if cfg.cam:
            for k in (2, 3, 4):
                out[f"{b}.cam{k}.gamma"] = ParamSpec((1,), ZEROS, True, False, "trunk")
        # BN-neck and ID classifier live inside the public codes' backbone cell and train with
        # it (MS: the three backbones at 0.1×lr, only the three VIB heads at lr)
        _bn(out, f"{b}.bnneck", fd, "trunk", bias_trainable=cfg.bnneck_bias)
        # both codes: Linear(2048, C) with a trainable bias (PT: weights_init_classifier)
        _linear(out, f"{b}.classifier", fd, num_classes, NORMAL_001, group="trunk")
        _linear(out, f"{b}.vib.encoder.0", fd, h1, enc_w)
        _bn(out, f"{b}.vib.encoder.1", h1, "head", weight_init=enc_bn)
        _linear(out, f"{b}.vib.encoder.3", h1, h2, enc_w)
        _bn(out, f"{b}.vib.encoder.4", h2, "head", weight_init=enc_bn)
        _linear(out, f"{b}.vib.encoder.6", h2, cfg.vib_dim, enc_w)
        _linear(out, f"{b}.vib.classifier.0", cfg.vib_dim, cfg.vib_cls_hidden, cls_w)
        _bn(out, f"{b}.vib.classifier.1", cfg.vib_cls_hidden, "head")  # PT: BN default (1, 0)
        _linear(out, f"{b}.vib.classifier.4", cfg.vib_cls_hidden, num_classes, cls_w)
    return out


def num_parameters(spec: dict[str, ParamSpec]) -> int:
    """Parameters (trainable or frozen), buffers excluded."""
    return int(sum(np.prod(s.shape) for s in spec.values() if not s.buffer))


def init_params(spec: dict[str, ParamSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 initial values for every entry of ``spec`` (the same on every backend)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, s in spec.items():
        if s.init == ONES:
            a = np.ones(s.shape, np.float32)
        elif s.init == ZEROS:
            a = np.zeros(s.shape, np.float32)
        elif s.init == CONST:
            a = np.full(s.shape, s.value, np.float32)
        elif s.init == KAIMING_OUT:
            fan_out = s.shape[0] * int(np.prod(s.shape[2:]))
            a = rng.standard_normal(s.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_out))
        elif s.init == NORMAL_001:
            a = rng.standard_normal(s.shape, dtype=np.float32) * np.float32(0.001)
        elif s.init == KAIMING_OUT_LINEAR:  # torch kaiming_normal_(mode='fan_out'), (out, in)
            a = rng.standard_normal(s.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / s.shape[0]))
        elif s.init == NORMAL_1_002:
            a = np.float32(1.0) + rng.standard_normal(s.shape, dtype=np.float32) * np.float32(0.02)
        elif s.init == LINEAR_U:
            bound = 1.0 / np.sqrt(s.fan_in)
            a = rng.uniform(-bound, bound, s.shape).astype(np.float32)
        else:  # pragma: no cover - spec and init kinds are written together
            raise ValueError(f"{name}: unknown init kind {s.init!r}")
        out[name] = a
    return out


def _listed(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def check_arrays(
    arrays: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    source: str,
    *,
    strict: bool = True,
    dtypes: str | Mapping[str, str] | None = "float32",
    label: Callable[[str], str] = str,
    error: type[MvdError] = CheckpointError,
) -> None:
    """The one "missing / unexpected / mis-shaped / wrong dtype" report of the project.

    ``arrays`` (name → array) is checked against ``shapes`` (name → expected shape): raise
    ``error`` (default :class:`~mvd_core.errors.CheckpointError`) naming every entry of ``shapes``
    that is absent (unless ``strict`` is False: a partial load), every name that ``shapes`` does
    not hold (always), every mis-shaped entry and, unless ``dtypes`` is None, every entry whose
    dtype is not ``dtypes`` (one dtype name for all, or name → dtype name; never cast silently).
    ``source`` names the file or object being loaded; ``label`` turns a name into the one the
    message shows (e.g. a framework's own name)."""
    missing = [label(k) for k in shapes if k not in arrays]
    unexpected = [label(k) for k in arrays if k not in shapes]
    mis_shaped = [
        f"{label(k)}: expected {tuple(shapes[k])}, got {tuple(np.shape(arrays[k]))}"
        for k in shapes
        if k in arrays and tuple(np.shape(arrays[k])) != tuple(shapes[k])
    ]
    wrong_dtype = []
    if dtypes is not None:
        for k in shapes:
            want = dtypes if isinstance(dtypes, str) else dtypes.get(k)
            if k in arrays and want is not None and np.asarray(arrays[k]).dtype != np.dtype(want):
                wrong_dtype.append(f"{label(k)}: expected {want}, got {np.asarray(arrays[k]).dtype}")
    problems = []
    if mis_shaped:
        problems.append("mis-shaped: " + _listed(mis_shaped))
    if wrong_dtype:
        problems.append("wrong dtype: " + _listed(wrong_dtype))
    if strict and missing:
        problems.append("missing: " + _listed(missing))
    if unexpected:
        problems.append("unexpected: " + _listed(unexpected))
    if problems:
        raise error(f"{source}: " + "; ".join(problems))


def check_state(
    params: Mapping[str, Any], spec: Mapping[str, ParamSpec], source: str, strict: bool = True
) -> None:
    """Raise :class:`~mvd_core.errors.CheckpointError` (a ValueError) naming every missing
    (``strict`` only), unexpected, mis-shaped or non-float32 entry of ``params`` against the
    model's ``spec`` (``source`` names the file or object being loaded): an int32 conv weight,
    a uint8 variance or a float16 tensor is never cast silently (:func:`check_arrays`)."""
    check_arrays(params, {k: s.shape for k, s in spec.items()}, source, strict=strict)
