"""Configs: YAML recipes (configs/*.yaml) → frozen dataclasses, with `--set key=value` overrides.

A recipe file holds any subset of the sections below; a recipe may name another with
``base: NAME`` and override it. Unknown keys and wrong types are rejected naming the key and the
file. The fully resolved config is written next to a run's outputs (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from mvd_core.errors import ConfigError
from mvd_core.io import atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported
from mvd_core.registry import BACKENDS, amp_values, precision_values

#: folder holding the shipped recipes
RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Range:
    """The valid range of a numeric field, written in its annotation next to the default
    (``height: Annotated[int, Range(ge=MIN_HEIGHT)] = 288``); checked for every value loaded
    (YAML, ``--set``, :func:`replace`, a checkpoint's config). Floats must also be finite; a
    tuple field's range applies to each element. ``why`` is appended to the error."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    why: str = ""

    def describe(self) -> str:
        lo = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        hi = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        if lo and hi and self.ge is not None and self.le is not None:
            text = f"in [{self.ge:g}, {self.le:g}]"
        elif lo and hi and self.ge is not None and self.lt is not None:
            text = f"in [{self.ge:g}, {self.lt:g})"
        else:
            text = " and ".join(t for t in (lo, hi) if t) or "finite"
        return text + (f" ({self.why})" if self.why else "")

    def ok(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return not (
            (self.ge is not None and not v >= self.ge)
            or (self.gt is not None and not v > self.gt)
            or (self.le is not None and not v <= self.le)
            or (self.lt is not None and not v < self.lt)
        )


class Choice:
    """The allowed values of a string field, written in its annotation next to the default
    (``kl: Annotated[str, Choice("proper", "legacy", doc="KL divergence form")] = "proper"``);
    checked for every value loaded, like :class:`Range`. This is the one schema of choices:
    the CLI builds its choice options (values, help) from it (``mvd_cli.common.choice_enum``)."""

    __slots__ = ("values", "doc")

    def __init__(self, *values: str, doc: str = "") -> None:
        self.values: tuple[str, ...] = tuple(values)
        self.doc = doc

    def __repr__(self) -> str:
        return f"Choice({', '.join(map(repr, self.values))}, doc={self.doc!r})"


#: probabilities and fractions
PROBABILITY = Range(ge=0, le=1)
#: smallest image the network is given: any size runs (padding keeps every map >= 1x1), but
#: below 2**5 rows one of its 5 stride-2 stages (conv1, maxpool, layer2/3/4) halves a single
#: row; the width floor is that height at the 2:1 person aspect every recipe uses
MIN_HEIGHT = 32
MIN_WIDTH = 16


@dataclass(frozen=True)
class DataConfig:
    dataset: Annotated[str, Choice("sysu", "regdb", "llcm", "manifest", doc="Data set")] = "sysu"
    root: str = ""  # data set root (raw layout, SPEC §6)
    cache: str = ""  # SYSU preprocessed .npy folder ("" = <root>)
    height: Annotated[int, Range(ge=MIN_HEIGHT, why="the network has 5 stride-2 stages")] = 288
    width: Annotated[int, Range(ge=MIN_WIDTH, why="half the minimum height")] = 144
    num_ids: Annotated[int, Range(ge=1)] = 8  # identities per batch
    num_pos: Annotated[int, Range(ge=1)] = 4  # images per identity and modality
    sampler: Annotated[str, Choice("ms", "pt", doc="Identity sampler: ms = ids without replacement per batch, pt = every id once per epoch")] = "ms"
    augment: Annotated[str, Choice("ms", "pt", doc="Augmentation: ms = grey, flip, erasing; pt = flip only")] = "ms"
    pad: Annotated[int, Range(ge=0)] = 0  # pad before random crop (0 = no crop: neither public code shifts images)
    resize: Annotated[str, Choice("lanczos", "bilinear", doc="Resize filter: lanczos (SYSU cache, MS), bilinear (PT's T.Resize)")] = "lanczos"
    erasing: Annotated[str, Choice("ms", "zhong", doc="Random-erasing geometry: ms (MindSpore RandomErasing), zhong (re-id codes)")] = "ms"
    flip_p: Annotated[float, PROBABILITY] = 0.5
    grayscale_p: Annotated[float, PROBABILITY] = 0.5  # visible only
    erasing_p: Annotated[float, PROBABILITY] = 0.5
    trial: Annotated[int, Range(ge=1, le=10, why="RegDB has 10 splits")] = 1  # RegDB split 1..10
    workers: Annotated[int, Range(ge=0)] = 2  # loader worker threads/processes
    prefetch: Annotated[int, Range(ge=0)] = 4  # batches prepared ahead
    synthetic: bool = False  # informational: data written by `mvd synth`


@dataclass(frozen=True)
class ModelConfig:
    width: Annotated[int, Range(ge=1)] = 64  # ResNet-50 base channel count (64 = the real ResNet-50)
    # bottleneck blocks per ResNet stage: (3,4,6,3) ResNet-50, (3,4,23,3) ResNet-101, (3,8,36,3)
    # ResNet-152 (torchvision weights of that depth load into it); tests shrink it to (2,1,1,1)
    blocks: Annotated[tuple[int, int, int, int], Range(ge=1)] = (3, 4, 6, 3)
    last_stride: Annotated[int, Range(ge=1, le=2)] = 2  # layer4 stride (pt: 1)
    cam: bool = False  # channel attention before layer2/3/4 (pt: true)
    bnneck_bias: bool = True  # BN-neck beta trainable (pt: false, frozen at 0)
    vib_hidden: Annotated[tuple[int, int], Range(ge=1)] = (1000, 500)  # VIB encoder hidden sizes
    vib_dim: Annotated[int, Range(ge=1)] = 512  # z size
    vib_cls_hidden: Annotated[int, Range(ge=1)] = 256  # VIB classifier hidden size
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.5  # VIB classifier dropout (0 disables, used by parity)
    # initial γ of every bottleneck's last BatchNorm (bn3): 1 = torchvision's default, 0 = its
    # zero_init_residual; small values make a from-scratch trunk well-conditioned (tiny: 0.1).
    # A pretrained trunk (model.pretrain) brings its own γ.
    residual_gain: Annotated[float, Range(ge=0)] = 1.0
    feat_norm: Annotated[str, Choice("part", "joint", "none", doc="Test feature L2 norm: part = each 2048 block")] = "part"
    pretrain: str = ""  # torchvision-format ResNet-50 state dict or MindSpore checkpoint
    sync_bn: bool = False  # multi-process: BatchNorm statistics over all ranks (default per rank)
    # VIB head initialisation: framework = torch nn.Linear's default U(±1/sqrt(fan_in)) (also
    # MindSpore 2.x Dense's; the MS code's init helpers are no-ops); pt = the PT code's
    # (encoder Linear kaiming-normal fan_out, encoder BN1d weight N(1, 0.02), VIB classifier
    # Linear N(0, 0.001), biases 0)
    head_init: Annotated[str, Choice("framework", "pt", doc="VIB head initialisation")] = "framework"
    # every bottleneck's last BatchNorm (bn3): MS's model-zoo ResNet-50 uses eps 1e-3 and
    # momentum 0.997 (= torch momentum 0.003); torch convention here
    bn3_eps: Annotated[float, Range(gt=0)] = 1e-5
    bn3_momentum: Annotated[float, PROBABILITY] = 0.1


@dataclass(frozen=True)
class LossConfig:
    preset: Annotated[str, Choice("id", "id+tri", "id+tri+kldiv", "mvd-pt", doc="Loss terms")] = "id+tri+kldiv"
    label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0  # pt: 0.1
    triplet: Annotated[str, Choice("batch_hard", "ranked_list", doc="Metric loss")] = "batch_hard"
    margin: Annotated[float, Range(ge=0)] = 0.3  # batch-hard margin
    rll_m1: Annotated[float, Range(ge=0)] = 0.9  # ranked-list intra-modality margin
    rll_m2: Annotated[float, Range(ge=0)] = 1.0  # ranked-list cross-modality margin
    rll_a1: Annotated[float, Range(ge=0)] = 2.2  # ranked-list intra-modality threshold
    rll_a2: Annotated[float, Range(ge=0)] = 2.0  # ranked-list cross-modality threshold
    kl: Annotated[str, Choice("proper", "legacy", doc="KL divergence form")] = "proper"
    temperature: Annotated[float, Range(gt=0)] = 1.0  # VSD only (the PT code's VCD has none)
    sinkhorn_eps: Annotated[float, Range(gt=0)] = 0.01
    sinkhorn_iters: Annotated[int, Range(ge=1)] = 100
    # CML Sinkhorn log-sum-exp: legacy = the PT code's log(Σ exp(A) + 1e-6) (not max-shifted),
    # exact = a true, max-shifted logsumexp
    cml_lse: Annotated[str, Choice("legacy", "exact", doc="CML Sinkhorn log-sum-exp")] = "legacy"


@dataclass(frozen=True)
class OptimConfig:
    name: Annotated[str, Choice("adam", "sgd", doc="Optimiser")] = "adam"
    lr: Annotated[float, Range(gt=0)] = 3.5e-4
    weight_decay: Annotated[float, Range(ge=0)] = 5e-4
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: Annotated[tuple[float, float], Range(ge=0, lt=1)] = (0.9, 0.999)  # adam
    eps: Annotated[float, Range(gt=0)] = 1e-8  # adam
    trunk_lr_mult: Annotated[float, Range(ge=0)] = 0.1  # backbones (trunk, CAM, BN-neck, ID classifier) relative to lr
    head_lr_mult: Annotated[float, Range(ge=0)] = 1.0  # VIB heads relative to lr


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Annotated[str, Choice("ms", "pt", doc="Learning-rate schedule (SPEC §4)")] = "ms"
    epochs: Annotated[int, Range(ge=1)] = 80
    warmup: Annotated[int, Range(ge=0)] = 5  # warm-up epochs
    warmup_from: Annotated[float, PROBABILITY] = 0.0  # pt: 0.01 (fraction of lr at the first epoch)
    start_decay: Annotated[int, Range(ge=0)] = 15  # ms
    end_decay: Annotated[int, Range(ge=0)] = 27  # ms
    milestones: Annotated[tuple[int, ...], Range(ge=1)] = ()  # pt: (210,)
    gamma: Annotated[float, Range(gt=0)] = 0.1
    steps_per_epoch: Annotated[int, Range(ge=0, why="0 = as the sampler defines it")] = 0  # 0 = as the sampler defines it; >0 caps it (tiny runs)


@dataclass(frozen=True)
class EvalConfig:
    every: Annotated[int, Range(ge=0, why="0 = only at the end")] = 5  # evaluate every N epochs (0 = only at the end)
    sysu_mode: Annotated[str, Choice("all", "indoor", doc="SYSU-MM01 search mode")] = "all"
    shot: Annotated[str, Choice("single", "multi", doc="SYSU-MM01 gallery shots")] = "single"
    trials: Annotated[int, Range(ge=1)] = 10
    regdb_mode: Annotated[str, Choice("v2t", "t2v", doc="RegDB direction: v2t = visible queries, thermal gallery")] = "v2t"
    # LLCM's direction of the run's reports: the public code's default is "IR to VIS"
    # (DEEN/test.py test_mode = [1, 2]): infrared queries, the visible draw as gallery
    llcm_mode: Annotated[str, Choice("t2v", "v2t", doc="LLCM direction: t2v = infrared queries, visible gallery (the public default)")] = "t2v"
    metric: Annotated[str, Choice("euclidean", "cosine", doc="Query-gallery distance")] = "euclidean"
    batch_size: Annotated[int, Range(ge=1)] = 64
    # SYSU-MM01 single/multi-shot gallery draw per trial: agw (AGW/MVD test scripts'
    # process_gallery_sysu) | official (the data set's rand_perm_cam.mat) | seeded (toolkit's own)
    gallery_draw: Annotated[str, Choice("agw", "official", "seeded", doc="SYSU-MM01 gallery draw")] = "agw"
    sysu_eval_dir: str = ""  # folder with rand_perm_cam.mat ("" = look under data.root)


@dataclass(frozen=True)
class RunConfig:
    backend: Annotated[str, Choice(*BACKENDS, doc="Framework")] = "torch"
    device: str = "cpu"
    seed: Annotated[int, Range(ge=0)] = 0
    out: str = "runs"  # runs/<tag>/...
    tag: str = ""  # "" = recipe name + time stamp
    log_every: Annotated[int, Range(ge=1)] = 10  # steps between log lines
    ckpt_every: Annotated[int, Range(ge=1)] = 1  # epochs between checkpoints
    val_ids: Annotated[int, Range(ge=0)] = 0  # carve N training ids for validation / "best" checkpoint
    amp: Annotated[str, Choice(*amp_values(), doc="Mixed precision")] = "none"  # per backend and device: registry.BACKENDS
    channels_last: bool = False  # torch: NHWC memory format (with amp=bf16: the fast CPU kernels)
    nproc: Annotated[int, Range(ge=1)] = 1  # local worker processes (mvd train --nproc; see mvd_core.train.distributed)
    ms_mode: Annotated[str, Choice("graph", "pynative", doc="MindSpore execution mode")] = "pynative"
    precision: Annotated[str, Choice(*precision_values(), doc="Parameter precision")] = "fp32"  # fp64: torch only, the float64 arbiter of `mvd parity`
    threads: Annotated[int, Range(ge=0, why="0 = auto")] = 0  # CPU compute threads; 0 = auto (see mvd_core.devices.cpu_threads)


@dataclass(frozen=True)
class Config:
    recipe: str = "mvd-ms"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


#: section name -> its dataclass
SECTIONS: dict[str, type] = {k: v for k, v in typing.get_type_hints(Config).items() if k != "recipe"}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _section_cls(name: str) -> type:
    return SECTIONS[name]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the dataclass field type; raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, os.PathLike):  # a typed path (Setting from a CLI option)
            return os.fspath(value)
        if value is None:
            return ""
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - not used yet
        for a in typing.get_args(tp):
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: unexpected value {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _metadata(cls: type, kind: type) -> dict[str, Any]:
    """``{field: annotation}`` of the fields of ``cls`` annotated with a ``kind`` instance."""
    found = {}
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        for meta in getattr(tp, "__metadata__", ()):
            if isinstance(meta, kind):
                found[name] = meta
    return found


_RANGES: dict[type, dict[str, Range]] = {}
_CHOICES: dict[type, dict[str, Choice]] = {}


def ranges(cls: type) -> dict[str, Range]:
    """``{field: Range}`` of a config section class (from the fields' annotations)."""
    if cls not in _RANGES:
        _RANGES[cls] = _metadata(cls, Range)
    return _RANGES[cls]


def choice_fields(cls: type) -> dict[str, Choice]:
    """``{field: Choice}`` of a config section class (from the fields' annotations)."""
    if cls not in _CHOICES:
        _CHOICES[cls] = _metadata(cls, Choice)
    return _CHOICES[cls]


def choices(cls: type) -> dict[str, tuple[str, ...]]:
    """``{field: allowed values}`` of a config section class's choice fields."""
    return {k: c.values for k, c in choice_fields(cls).items()}


def field_choice(key: str) -> Choice:
    """The :class:`Choice` of ``section.key`` (a ConfigError if that key is not a choice)."""
    sec, _, name = key.partition(".")
    c = choice_fields(_section_cls(sec)).get(name) if sec in SECTIONS else None
    if c is None:
        raise ConfigError(f"{key}: not a config choice")
    return c


def _check_range(cls: type, key: str, value: Any, where: str) -> None:
    r = ranges(cls).get(key)
    if r is None:
        return
    values = value if isinstance(value, tuple) else (value,)
    if not all(r.ok(v) for v in values):
        kind = "an integer" if all(isinstance(v, int) for v in values) else "a finite number"
        each = "each value " if isinstance(value, tuple) else ""
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"{where}={shown!r} is out of range: expected {each}{kind} {r.describe()}")


def _apply(cfg: Config, updates: dict[str, Any], source: str) -> Config:
    """Apply a nested {section: {key: value}} mapping from `source` (a file name or '--set')."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(updates).__name__}")
    top: dict[str, Any] = {}
    for sec, values in updates.items():
        if sec in ("base",):
            continue
        if sec == "recipe":
            top["recipe"] = _coerce(values, str, f"{source}: recipe")
            continue
        if sec not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section {sec!r} (expected one of {', '.join(SECTIONS)})"
            )
        cls = _section_cls(sec)
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {sec!r} must be a mapping")
        hints = _hints(cls)
        current = getattr(cfg, sec)
        changes = {}
        for key, val in values.items():
            if key not in hints:
                raise ConfigError(
                    f"{source}: unknown key {sec}.{key} (expected one of {', '.join(hints)})"
                )
            v = _coerce(val, hints[key], f"{source}: {sec}.{key}")
            _check_range(cls, key, v, f"{source}: {sec}.{key}")
            choice = choice_fields(cls).get(key)
            if choice is not None and v not in choice.values:
                raise ConfigError(
                    f"{source}: {sec}.{key}={v!r} is not one of {', '.join(choice.values)}"
                )
            changes[key] = v
        top[sec] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **top)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} malformed YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def resolve_recipe_path(name_or_path: str) -> Path:
    """A recipe name (``tiny``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    cand = RECIPE_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise ConfigError(
        f"unknown recipe {name_or_path!r} (expected one of {', '.join(recipe_names())} "
        "or a path to a .yaml file)"
    )


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> Config:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back on itself")
    data = _read_yaml(path)
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a recipe name, got {base!r}")
        cfg = _load_chain(resolve_recipe_path(base), seen + (path.resolve(),))
    else:
        cfg = Config()
    cfg = _apply(cfg, data, str(path))
    if "recipe" not in data:
        cfg = dataclasses.replace(cfg, recipe=path.stem)
    return cfg


def parse_override(expr: str) -> tuple[str, str, Any]:
    """``section.key=value`` → (section, key, value parsed as YAML)."""
    if "=" not in expr:
        raise ConfigError(f"--set {expr!r}: expected section.key=value (e.g. model.width=16)")
    key, _, raw = expr.partition("=")
    key = key.strip()
    if key.count(".") != 1:
        raise ConfigError(f"--set {expr!r}: expected section.key=value (e.g. model.width=16)")
    sec, name = key.split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {expr!r}: cannot parse the value {raw!r}") from None
    return sec, name, value


class Setting(str):
    """One typed override, ``Setting("optim.lr", 0.01, "--lr")``: a value a program already
    holds (a CLI option typer parsed), applied by :func:`apply_overrides` as it is (validated
    like YAML, errors naming ``source``) instead of being written out and parsed again. It is
    also the string ``"optim.lr=0.01"``, so code that logs overrides or looks for a key among
    them treats both kinds alike."""

    key: str
    value: Any
    source: str

    def __new__(cls, key: str, value: Any, source: str = "") -> Setting:
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                              default_flow_style=True, width=1 << 30).strip()
        self = super().__new__(cls, f"{key}={text.removesuffix(chr(10) + '...').strip()}")
        self.key, self.value, self.source = key, value, source or key
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # pickles as the typed value, not the text
        return (Setting, (self.key, self.value, self.source))

    def __repr__(self) -> str:
        return f"Setting({self.key!r}, {self.value!r}, {self.source!r})"


Override = typing.Union[str, Setting]


def load_config(recipe: str = "mvd-ms", overrides: typing.Sequence[Override] = ()) -> Config:
    """Load a recipe (name or path), then apply the overrides in order (see apply_overrides)."""
    cfg = _load_chain(resolve_recipe_path(recipe))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: typing.Sequence[Override]) -> Config:
    """Apply overrides in order: ``section.key=value`` strings (``--set``; the value parsed as
    YAML) and typed :class:`Setting` values (used as they are); both validated alike."""
    for expr in overrides:
        if isinstance(expr, Setting):
            sec, dot, name = expr.key.partition(".")
            if not dot or "." in name:
                raise ConfigError(f"{expr.source}: {expr.key!r} is not a section.key name")
            cfg = _apply(cfg, {sec: {name: expr.value}}, expr.source)
            continue
        sec, name, value = parse_override(expr)
        cfg = _apply(cfg, {sec: {name: value}}, "--set")
    return cfg


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Programmatic override: ``replace(cfg, model={"width": 8})`` (validated like YAML)."""
    return _apply(cfg, sections, "replace()")


def to_dict(cfg: Config) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    out: dict[str, Any] = {"recipe": cfg.recipe}
    for sec in SECTIONS:
        out[sec] = {k: conv(v) for k, v in dataclasses.asdict(getattr(cfg, sec)).items()}
    return out


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    return _apply(Config(), data, source)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the fully resolved config as YAML (atomically)."""
    atomic_write_text(path, dump_yaml(cfg))
