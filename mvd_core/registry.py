"""The one table of backend facts, and backends by name, resolved lazily.

:data:`BACKENDS` says, per backend, what it is (class, framework module, pip extra, the module
listing its devices), which weight files it reads and writes, which precisions it runs, and its
devices (the names ``--device`` accepts, which mixed precisions each supports and why not the
others). :mod:`mvd_core.devices`, :mod:`mvd_core.sysinfo`, :mod:`mvd_core.weights.convert`,
:mod:`mvd_core.weights.pretrained` and :mod:`mvd_core.config` read it. The framework module
names here are the only ones mvd_core ever imports, and only when asked (:func:`import_framework`);
every framework call lives in a backend module.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mvd_core.errors import BackendUnavailable, MvdError

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import Config
    from mvd_core.interface import Backend


@dataclasses.dataclass(frozen=True)
class Device:
    """One kind of device of a backend."""

    name: str  # the framework's own name ("cuda", "GPU"); a normalised --device starts with it
    aliases: tuple[str, ...]  # lower-case names --device accepts for it
    indexed: bool  # takes ":N"
    amp: tuple[str, ...]  # the run.amp values it trains in
    amp_why: Mapping[str, str] = dataclasses.field(default_factory=dict)  # refused run.amp value -> why


@dataclasses.dataclass(frozen=True)
class BackendFacts:
    name: str
    cls: str  # "module:Class" implementing mvd_core.interface.Backend
    framework: str  # the framework's import name
    extra: str  # the pip extra that installs it
    info: str  # module with version() and list_devices() (what `mvd info` shows)
    converter: str  # module reading/writing its weight files: read_state, write_state, write_resnet50
    resnet50_reader: str  # function of `converter` reading a bare ResNet-50 (torchvision names)
    suffixes: tuple[str, ...]  # weight files `converter` reads and writes
    precisions: tuple[str, ...]  # run.precision values
    precision_why: str  # why not the others
    devices: tuple[Device, ...]
    launcher: str  # its multi-process launcher (mvd_core.train.distributed.LAUNCHERS)
    #: the RNG entries of its checkpoints: key -> (dtype, ndim); a trailing "?" marks an optional key
    rng_layout: Mapping[str, tuple[str, int]]
    limits: Mapping[str, tuple[object, ...]] = dataclasses.field(default_factory=dict)  # key -> the only values accepted

    def device(self, name: str) -> Device | None:
        """The device whose framework name is ``name`` (``"cuda"``, ``"GPU"``), or None."""
        return next((d for d in self.devices if d.name == name), None)

    def device_for(self, alias: str) -> Device | None:
        """The device a lower-case ``--device`` kind (``"gpu"``, ``"cuda"``) names, or None."""
        return next((d for d in self.devices if alias in d.aliases), None)


_MS_CPU_FP16 = ("MindSpore fp16 mixed precision runs on the CPU but slower than fp32; use "
                "run.amp=none there, fp16 on GPU/Ascend")

#: name -> the backend's facts (the order is the order backends are listed in)
BACKENDS: dict[str, BackendFacts] = {
    "torch": BackendFacts(
        name="torch",
        cls="mvd_backends.torch.backend:TorchBackend",
        framework="torch",
        extra="mvd[torch]",
        info="mvd_backends.torch.info",
        converter="mvd_backends.torch.convert",
        resnet50_reader="read_torchvision_resnet50",
        suffixes=(".pth", ".pt", ".bin"),
        precisions=("fp32", "fp64"),
        precision_why="",
        devices=(
            Device("cpu", ("cpu",), False, ("none", "bf16"), {
                "fp16": "fp16 autocast on the CPU was measured 160x slower than fp32; use "
                "run.amp=bf16 (AMX/AVX-512 bf16 kernels) or a CUDA device"}),
            Device("cuda", ("cuda", "gpu"), True, ("none", "bf16", "fp16")),
        ),
        launcher="torchrun",
        rng_layout={"torch.cpu": ("uint8", 1), "torch.cuda?": ("uint8", 1)},
    ),
    "mindspore": BackendFacts(
        name="mindspore",
        cls="mvd_backends.mindspore.backend:MindSporeBackend",
        framework="mindspore",
        extra="mvd[mindspore]",
        info="mvd_backends.mindspore.info",
        converter="mvd_backends.mindspore.convert",
        resnet50_reader="read_mindspore_resnet50",
        suffixes=(".ckpt",),
        precisions=("fp32",),
        precision_why="MindSpore 2.8 has no float64 Conv2D and no float64 train-mode BatchNorm "
        "kernels (CPU, GPU or Ascend), so the network cannot run in float64",
        devices=(
            Device("CPU", ("cpu",), False, ("none",), {
                "bf16": "MindSpore 2.8 has no bfloat16 Conv2D on the CPU", "fp16": _MS_CPU_FP16}),
            Device("GPU", ("gpu", "cuda"), True, ("none", "fp16"), {
                "bf16": "MindSpore bfloat16 training is supported on Ascend only; use fp16"}),
            Device("Ascend", ("ascend", "npu"), True, ("none", "fp16", "bf16")),
        ),
        launcher="msrun",
        rng_layout={"dropout.seed": ("int64", 0), "dropout.draws": ("int64", 0)},
        limits={
            "run.channels_last": (False,),  # a torch memory format; MindSpore picks its own layouts
        },
    ),
}


def _unique(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def backend_names() -> list[str]:
    return list(BACKENDS)


def precision_values() -> tuple[str, ...]:
    """Every ``run.precision`` some backend runs (the config's choices)."""
    return _unique(p for f in BACKENDS.values() for p in f.precisions)


def amp_values() -> tuple[str, ...]:
    """Every ``run.amp`` value some backend device runs (the config's choices)."""
    return _unique(a for f in BACKENDS.values() for d in f.devices for a in d.amp)


def facts(name: str) -> BackendFacts:
    """The facts of backend ``name``; an unknown name is a one-line :class:`MvdError`."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise MvdError(
            f"--backend {name!r}: unknown backend (expected one of {', '.join(BACKENDS)})"
        ) from None


# --------------------------------------------------------------------------- precisions

def check_precision(name: str, precision: str) -> None:
    """Raise :class:`MvdError` unless backend ``name`` supports ``run.precision=precision``."""
    f = facts(name)
    if precision not in f.precisions:
        raise MvdError(
            f"run.precision={precision!r}: the {name} backend supports only "
            f"{', '.join(f.precisions)}" + (f" ({f.precision_why})" if f.precision_why else "")
        )


def check_amp(name: str, amp: str, device: str) -> None:
    """Raise :class:`MvdError` (one line) unless backend ``name`` accepts ``run.amp=amp`` on
    ``device`` (a normalised device string: ``cpu``, ``cuda:1``, ``CPU``, ``GPU:0``, ...)."""
    dev = facts(name).device(device.partition(":")[0])
    allowed = dev.amp if dev is not None else ("none",)
    if amp not in allowed:
        why = dev.amp_why.get(amp, "") if dev is not None else ""
        raise MvdError(
            f"run.amp={amp}: the {name} backend on {device} supports only "
            f"{', '.join(allowed)}" + (f" ({why})" if why else "")
        )


# --------------------------------------------------------------------------- weight files

def weight_suffixes() -> tuple[str, ...]:
    """The framework weight-file suffixes of every backend, in table order."""
    return tuple(s for f in BACKENDS.values() for s in f.suffixes)


def suffix_backend(suffix: str) -> BackendFacts | None:
    """The backend whose framework reads weight files ending in ``suffix`` (lower case), or None."""
    return next((f for f in BACKENDS.values() if suffix in f.suffixes), None)


def describe_suffixes() -> str:
    """``.pth/.pt/.bin (torch), .ckpt (mindspore)``: the framework formats, for messages."""
    return ", ".join(f"{'/'.join(f.suffixes)} ({f.name})" for f in BACKENDS.values() if f.suffixes)


def weight_converter(suffix: str, source: str) -> ModuleType:
    """The backend module reading and writing ``suffix`` files (its ``read_state``,
    ``write_state``, ``write_resnet50`` and ``resnet50_reader``); one line naming ``source`` and
    the pip extra when its framework is missing."""
    f = suffix_backend(suffix)
    if f is None:
        raise MvdError(f"{source}: no backend reads {suffix!r} files (expected {describe_suffixes()})")
    try:
        return importlib.import_module(f.converter)
    except ImportError as e:
        raise BackendUnavailable(f"{source}: reading {suffix} files needs {f.extra} ({e})") from None


# --------------------------------------------------------------------------- frameworks and classes

def import_framework(name: str) -> ModuleType:
    """Import backend ``name``'s framework (any failure propagates)."""
    return importlib.import_module(facts(name).framework)


def framework_available(name: str) -> bool:
    """Whether the backend's framework can be imported (imports it when it can)."""
    try:
        import_framework(name)
    except MvdError:
        raise
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def backend_info(name: str) -> ModuleType:
    """Backend ``name``'s info module: ``version()`` and ``list_devices()`` (needs its framework)."""
    return importlib.import_module(facts(name).info)


def backend_class(name: str) -> type:
    f = facts(name)
    try:
        import_framework(name)
    except ImportError as e:
        raise BackendUnavailable(
            f"backend {name!r} needs {f.framework}, which is not installed ({e}); install {f.extra}"
        ) from None
    module, _, cls = f.cls.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(cfg: Config, num_classes: int, device: str | None = None) -> Backend:
    """Build the backend ``cfg.run.backend`` on ``device`` (default ``cfg.run.device``)."""
    from mvd_core.devices import normalize_device

    name = cfg.run.backend
    dev = normalize_device(name, device if device is not None else cfg.run.device)
    check_support(cfg, dev)
    return backend_class(name)(cfg, num_classes, dev, cfg.run.seed)


# --------------------------------------------------------------------------- who honours each key

#: Every config key and who honours it (a conformance test holds this table to the config's
#: fields and to the backends' code):
#:   "core"      — mvd_core does it, the same for every backend (data, schedule, evaluation, runs);
#:   "backends"  — each backend reads it and implements every allowed value;
#:   "limited"   — a backend supports only some values (BACKENDS: limits, precisions, devices);
#:                 check_support refuses the others in one line before anything runs, never
#:                 accepting and ignoring them;
#:   "mindspore" — a MindSpore-only setting (torch has no execution modes).
HONOURED: dict[str, str] = {
    "recipe": "core",
    **{f"data.{k}": "core" for k in (
        "dataset", "root", "cache", "height", "width", "num_ids", "num_pos", "sampler", "augment",
        "pad", "resize", "erasing", "flip_p", "grayscale_p", "erasing_p", "trial", "workers",
        "prefetch", "synthetic")},
    **{f"model.{k}": "backends" for k in (
        "width", "blocks", "last_stride", "cam", "bnneck_bias", "vib_hidden", "vib_dim", "vib_cls_hidden",
        "dropout", "residual_gain", "feat_norm", "pretrain", "head_init", "bn3_eps",
        "bn3_momentum")},
    "model.sync_bn": "backends",
    **{f"loss.{k}": "backends" for k in (
        "preset", "label_smoothing", "triplet", "margin", "rll_m1", "rll_m2", "rll_a1", "rll_a2",
        "kl", "temperature", "sinkhorn_eps", "sinkhorn_iters", "cml_lse")},
    "optim.lr": "core",  # the schedule turns it into each step's lr (Backend.train_step(batch, lr))
    **{f"optim.{k}": "backends" for k in (
        "name", "weight_decay", "momentum", "nesterov", "betas", "eps", "trunk_lr_mult",
        "head_lr_mult")},
    **{f"schedule.{k}": "core" for k in (
        "kind", "epochs", "warmup", "warmup_from", "start_decay", "end_decay", "milestones",
        "gamma", "steps_per_epoch")},
    **{f"eval.{k}": "core" for k in (
        "every", "sysu_mode", "shot", "trials", "regdb_mode", "llcm_mode", "metric", "batch_size",
        "gallery_draw", "sysu_eval_dir")},
    **{f"run.{k}": "core" for k in ("backend", "out", "tag", "log_every", "ckpt_every", "val_ids", "nproc")},
    "run.seed": "backends",
    "run.threads": "backends",
    "run.device": "limited",
    "run.amp": "limited",
    "run.precision": "limited",
    "run.channels_last": "limited",
    "run.ms_mode": "mindspore",
}


def check_support(cfg: Config, device: str) -> None:
    """Raise :class:`MvdError` (one line) if backend ``cfg.run.backend`` cannot honour a setting
    of ``cfg`` on ``device``."""
    name = cfg.run.backend
    check_precision(name, cfg.run.precision)
    check_amp(name, cfg.run.amp, device)
    for key, allowed in facts(name).limits.items():
        sec, _, field = key.partition(".")
        value = getattr(getattr(cfg, sec), field)
        if value not in allowed:
            raise MvdError(
                f"{key}={value!r}: the {name} backend does not support it "
                f"(supported: {', '.join(repr(a) for a in allowed)})"
            )
