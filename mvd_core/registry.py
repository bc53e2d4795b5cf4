"""Backends by name, resolved lazily: importing mvd_core never imports a framework."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mvd_core.devices import normalize_device
from mvd_core.errors import BackendUnavailable, MvdError

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.config import Config
    from mvd_core.interface import Backend

#: name -> ("module:Class", framework module, pip extra)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("mvd_backends.torch.backend:TorchBackend", "torch", "mvd[torch]"),
    "mindspore": ("mvd_backends.mindspore.backend:MindSporeBackend", "mindspore", "mvd[mindspore]"),
}


#: name -> the ``run.precision`` values the backend can train in, and why not the others
PRECISIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("fp32", "fp64"), ""),
    "mindspore": (
        ("fp32",),
        "MindSpore 2.8 has no float64 Conv2D and no float64 train-mode BatchNorm kernels "
        "(CPU, GPU or Ascend), so the network cannot run in float64",
    ),
}


def check_precision(name: str, precision: str) -> None:
    """Raise :class:`MvdError` unless backend ``name`` supports ``run.precision=precision``."""
    allowed, why = PRECISIONS.get(name, (("fp32",), ""))
    if precision not in allowed:
        raise MvdError(
            f"run.precision={precision!r}: the {name} backend supports only "
            f"{', '.join(allowed)}" + (f" ({why})" if why else "")
        )


#: (backend, device kind) -> the ``run.amp`` values it accepts; (backend, device kind, amp) ->
#: why a value is refused. Device kinds: torch "cpu"/"cuda", MindSpore "CPU"/"GPU"/"Ascend".
AMP: dict[tuple[str, str], tuple[str, ...]] = {
    ("torch", "cpu"): ("none", "bf16"),
    ("torch", "cuda"): ("none", "bf16", "fp16"),
    ("mindspore", "CPU"): ("none",),
    ("mindspore", "GPU"): ("none", "fp16"),
    ("mindspore", "Ascend"): ("none", "fp16", "bf16"),
}
AMP_WHY: dict[tuple[str, str, str], str] = {
    ("torch", "cpu", "fp16"): "fp16 autocast on the CPU was measured 160x slower than fp32; "
    "use run.amp=bf16 (AMX/AVX-512 bf16 kernels) or a CUDA device",
    ("mindspore", "CPU", "bf16"): "MindSpore 2.8 has no bfloat16 Conv2D on the CPU",
    ("mindspore", "CPU", "fp16"): "MindSpore fp16 mixed precision runs on the CPU but slower than "
    "fp32; use run.amp=none there, fp16 on GPU/Ascend",
    ("mindspore", "GPU", "bf16"): "MindSpore bfloat16 training is supported on Ascend only; use fp16",
}


def check_amp(name: str, amp: str, device: str) -> None:
    """Raise :class:`MvdError` (one line) unless backend ``name`` accepts ``run.amp=amp`` on
    ``device`` (a normalised device string: ``cpu``, ``cuda:1``, ``CPU``, ``GPU:0``, ...)."""
    kind = device.partition(":")[0]
    allowed = AMP.get((name, kind), ("none",))
    if amp not in allowed:
        why = AMP_WHY.get((name, kind, amp), "")
        raise MvdError(
            f"run.amp={amp}: the {name} backend on {device} supports only "
            f"{', '.join(allowed)}" + (f" ({why})" if why else "")
        )


def backend_names() -> list[str]:
    return list(BACKENDS)


def _check_name(name: str) -> tuple[str, str, str]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise MvdError(
            f"--backend {name!r}: unknown backend (expected one of {', '.join(BACKENDS)})"
        ) from None


def framework_available(name: str) -> bool:
    """Whether the backend's framework can be imported (imports it when it can)."""
    _, framework, _ = _check_name(name)
    try:
        importlib.import_module(framework)
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def backend_class(name: str) -> type:
    target, framework, extra = _check_name(name)
    try:
        importlib.import_module(framework)
    except ImportError as e:
        raise BackendUnavailable(
            f"backend {name!r} needs {framework}, which is not installed ({e}); "
            f"install {extra}"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(cfg: Config, num_classes: int, device: str | None = None) -> Backend:
    """Build the backend ``cfg.run.backend`` on ``device`` (default ``cfg.run.device``)."""
    name = cfg.run.backend
    dev = normalize_device(name, device if device is not None else cfg.run.device)
    check_support(cfg, dev)
    return backend_class(name)(cfg, num_classes, dev, cfg.run.seed)


# --------------------------------------------------------------------------- who honours each key

#: Every config key and who honours it (a conformance test holds this table to the config's
#: fields and to the backends' code):
#:   "core"      — mvd_core does it, the same for every backend (data, schedule, evaluation, runs);
#:   "backends"  — each backend reads it and implements every allowed value;
#:   "limited"   — a backend supports only some values: see LIMITS / check_support (one-line
#:                 refusal before anything runs, never accepted and ignored);
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
        "every", "sysu_mode", "shot", "trials", "regdb_mode", "metric", "batch_size",
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

#: backend -> key -> the only values that backend accepts (keys absent: every value); run.amp
#: depends on the device too (AMP), run.device on the framework (mvd_core.devices)
LIMITS: dict[str, dict[str, tuple[object, ...]]] = {
    "torch": {},
    "mindspore": {
        "run.channels_last": (False,),  # a torch memory format; MindSpore picks its own layouts
    },
}


def check_support(cfg: Config, device: str) -> None:
    """Raise :class:`MvdError` (one line) if backend ``cfg.run.backend`` cannot honour a setting
    of ``cfg`` on ``device``."""
    name = cfg.run.backend
    check_precision(name, cfg.run.precision)
    check_amp(name, cfg.run.amp, device)
    for key, allowed in LIMITS.get(name, {}).items():
        sec, _, field = key.partition(".")
        value = getattr(getattr(cfg, sec), field)
        if value not in allowed:
            raise MvdError(
                f"{key}={value!r}: the {name} backend does not support it "
                f"(supported: {', '.join(repr(a) for a in allowed)})"
            )
