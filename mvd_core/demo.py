"""The main job, end to end on one CPU, and a measured answer to "does the distillation help?".

:func:`run_demo`: synthesise a SYSU-MM01-layout data set with 96 test identities (SYSU-MM01's
test size: chance Rank-1 ≈ 1 %), evaluate the *untrained* initialisation, train the ``demo``
recipe (the tiny MVD with its distillation losses ``id+tri+kldiv``) and evaluate it with the
all-search single-shot protocol over 10 trials; two training-free matchers (a colour
histogram and raw pixels) show what the data set gives away without learning.

:func:`run_compare`: ``id+tri`` against ``id+tri+kldiv`` on the same data and seeds (mean ±
std over the seeds): whether the distillation helps here is measured, not assumed.

Everything runs through the real code paths: the synthetic data is written in the real
on-disk layout and read back by the real SYSU-MM01 reader, training is :func:`mvd_core.train.driver.train`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvd_core.config import Config, apply_overrides, load_config
from mvd_core.devices import normalize_device
from mvd_core.errors import MvdError

if TYPE_CHECKING:  # pragma: no cover
    from mvd_core.data.base import TestSet
    from mvd_core.eval.protocols import Report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoData:
    """The demo's synthetic SYSU-MM01: identity counts per split, images per (id, camera) and
    the rendering scale (0.5: ~64x32 crops, what the tiny model sees)."""

    train_ids: int = 86
    val_ids: int = 10
    test_ids: int = 96
    images_per_cam: int = 5
    size_scale: float = 0.5
    seed: int = 0

    @property
    def ids(self) -> int:
        return self.train_ids + self.val_ids + self.test_ids

    @property
    def split(self) -> tuple[float, float, float]:
        n = self.ids
        return (self.train_ids / n, self.val_ids / n, self.test_ids / n)


#: the demo's data set (SYSU-MM01 has 96 test identities)
DEMO_DATA = DemoData()
#: metrics shown in the summary
SHOWN = ("R1", "R10", "mAP")


@dataclass
class DemoResult:
    run_dir: Path
    report: Report  # the trained model
    untrained: Report  # the same network at its initialisation
    baselines: dict[str, Report]  # training-free matchers on the same protocol
    chance_rank1: float  # percent
    test_ids: int
    cfg: Config
    steps: int
    seconds: dict[str, float] = field(default_factory=dict)  # synth, untrained, train, total


@dataclass
class CompareResult:
    """Per preset, per seed: the final report of a run with that preset and seed."""

    reports: dict[str, dict[int, Report]]
    seconds: float
    steps: int
    test_ids: int


# ----------------------------------------------------------------------------- data and config


def ensure_data(root: Path, data: DemoData | None = None) -> float:
    """Synthesise the demo data set at ``root`` unless an identical one is there; returns the
    seconds spent (0 when reused)."""
    from mvd_core.data.synth import GENERATOR_VERSION, MARKER, synth_sysu

    data = data or DEMO_DATA
    marker = root / MARKER
    want = {"ids": data.ids, "seed": data.seed, "generator": GENERATOR_VERSION,
            "images_per_cam": data.images_per_cam, "size_scale": data.size_scale,
            "test": data.test_ids, "val": data.val_ids}
    if marker.is_file():
        try:
            m = json.loads(marker.read_text())
            have = {"ids": m["ids"], "seed": m["seed"], "generator": m.get("generator"),
                    "images_per_cam": m["params"]["images_per_cam"],
                    "size_scale": m["params"].get("size_scale", 1.0),
                    "test": len(m["splits"]["test"]), "val": len(m["splits"]["val"])}
        except (ValueError, KeyError, TypeError):
            have = {}
        if have == want:
            log.info("reusing the synthetic data set in %s", root)
            return 0.0
    t0 = time.perf_counter()
    log.info("synthesising a SYSU-MM01-layout data set in %s (%d ids, %d for testing)", root, data.ids,
             data.test_ids)
    info = synth_sysu(root, ids=data.ids, images_per_cam=data.images_per_cam, seed=data.seed,
                      split=data.split, size_scale=data.size_scale)
    if len(info.splits["test"]) != data.test_ids:  # the fractions round back to the counts
        raise MvdError(f"{root}: expected {data.test_ids} test ids, synthesised {len(info.splits['test'])}")
    return time.perf_counter() - t0


def demo_config(
    out: Path,
    backend: str = "torch",
    device: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    tag: str | None = None,
) -> Config:
    """The ``demo`` recipe on the demo data under ``out`` (``out/data/synth-sysu``, runs in
    ``out/runs``), all-search single-shot, 10 trials, plus :func:`torch_cpu_speedups`;
    ``overrides`` win."""
    cfg = apply_overrides(
        load_config("demo"),
        [
            f"data.root={out / 'data' / 'synth-sysu'}",
            "data.synthetic=true",
            f"run.out={out / 'runs'}",
            f"run.backend={backend}",
            "eval.sysu_mode=all",
            "eval.shot=single",
            "eval.trials=10",
            *overrides,
        ],
    )
    if tag is not None:
        cfg = apply_overrides(cfg, [f"run.tag={tag}"])
    elif not cfg.run.tag:
        cfg = apply_overrides(cfg, [f"run.tag=demo-{backend}"])
    dev = normalize_device(cfg.run.backend, device)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=dev))
    fast = torch_cpu_speedups(cfg, overrides)
    return apply_overrides(cfg, fast) if fast else cfg


def torch_cpu_speedups(cfg: Config, overrides: Sequence[str] = ()) -> list[str]:
    """What the demo adds for torch on the CPU (none elsewhere: the recipe itself stays valid
    on MindSpore, which refuses both): ``run.channels_last=true`` (NHWC, measured 1.3x faster
    in fp32) and, on a CPU with AMX bf16 tiles, ``run.amp=bf16`` (with channels_last 1.5x
    faster than fp32 at the same learning; benchmarks/bench_demo.py). A setting the
    ``overrides`` give explicitly is left alone."""
    if cfg.run.backend != "torch" or cfg.run.device != "cpu":
        return []
    given = {o.strip().partition("=")[0] for o in overrides}
    out = [] if "run.channels_last" in given else ["run.channels_last=true"]
    if "run.amp" not in given and cpu_has_amx_bf16():
        out.append("run.amp=bf16")
    return out


def cpu_has_amx_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU lists ``amx_bf16`` among its flags (Intel Sapphire Rapids and later):
    there torch's CPU bf16 autocast with channels_last trains the demo ~1.5x faster than fp32
    at the same learning (benchmarks/bench_demo.py, README demo section). Without AMX the
    bf16 kernels were not measured, so the demo keeps fp32. False when unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return "amx_bf16" in value.split()
    return False


def precision_note(cfg: Config) -> str:
    """How the run computes, for the log and the summary: ``fp32``, ``bf16 autocast,
    channels_last``, ..."""
    parts = [f"{cfg.run.amp} autocast" if cfg.run.amp != "none" else cfg.run.precision]
    if cfg.run.backend == "torch" and cfg.run.channels_last:
        parts.append("channels_last")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- training-free matchers


def colour_histogram_features(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """(N, bins³) L2-normalised square-rooted joint RGB histograms of uint8 (N, H, W, 3)
    images (Hellinger features: Euclidean distance ranks by the Bhattacharyya coefficient)."""
    images = np.asarray(images)
    q = images.astype(np.int64) * bins // 256
    code = ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).reshape(len(images), -1)
    hist = np.stack([np.bincount(c, minlength=bins**3) for c in code]).astype(np.float64)
    feats = np.sqrt(hist / hist.sum(axis=1, keepdims=True))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)


def raw_pixel_features(images: np.ndarray) -> np.ndarray:
    """Flattened grey images (the thermal images are grey), each centred and L2-normalised:
    Euclidean nearest neighbour = best normalised cross-correlation."""
    g = np.asarray(images, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    x = g.reshape(len(g), -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


#: name → feature function of uint8 (N, H, W, 3) images
BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "colour histogram": colour_histogram_features,
    "raw pixels": raw_pixel_features,
}


def baseline_reports(testset: TestSet, cfg: Config) -> dict[str, Report]:
    """Every training-free matcher of :data:`BASELINES` on ``testset`` under ``cfg.eval``,
    images at the model's input size."""
    from mvd_core.data.base import load_images
    from mvd_core.eval.protocols import evaluate

    h, w = cfg.data.height, cfg.data.width
    q = load_images(testset.query, np.arange(len(testset.query)), h, w)
    g = load_images(testset.gallery, np.arange(len(testset.gallery)), h, w)
    return {name: evaluate(testset, f(q), f(g), cfg.eval) for name, f in BASELINES.items()}


def evaluate_untrained(cfg: Config, num_classes: int, testset: TestSet) -> Report:
    """The run's starting point (the same seeded initialisation ``train`` builds) on the test
    protocol."""
    from mvd_core.eval.features import evaluate_backend
    from mvd_core.registry import create_backend

    return evaluate_backend(create_backend(cfg, num_classes), testset, cfg)


# ----------------------------------------------------------------------------- the demo


def run_demo(
    out: Path = Path("out/demo"),
    backend: str = "torch",
    device: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    data: DemoData | None = None,
    fresh: bool = True,
) -> DemoResult:
    """Synthesise (once), evaluate the untrained network and the baselines, train, evaluate.
    ``fresh`` replaces an earlier demo run folder of the same tag."""
    from mvd_core.data.sets import load_test, load_train
    from mvd_core.train.driver import train

    t_start = time.perf_counter()
    out = Path(out)
    cfg = demo_config(out, backend, device, overrides)
    log.info("demo: %s on %s, %s", cfg.run.backend, cfg.run.device, precision_note(cfg))
    seconds = {"synth": ensure_data(Path(cfg.data.root), data or DEMO_DATA)}
    run_dir = Path(cfg.run.out) / cfg.run.tag
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    testset = load_test(cfg.data)
    num_classes = load_train(cfg.data).num_classes
    t0 = time.perf_counter()
    baselines = baseline_reports(testset, cfg)
    untrained = evaluate_untrained(cfg, num_classes, testset)
    seconds["untrained"] = time.perf_counter() - t0
    for name, rep in baselines.items():
        log.info("%s (no training): %s", name, _fmt(rep))
    log.info("untrained network: %s", _fmt(untrained))
    t0 = time.perf_counter()
    result = train(cfg)
    seconds["train"] = time.perf_counter() - t0
    if result.report is None:  # pragma: no cover - train(cfg) always evaluates a full run
        raise MvdError(f"{result.run_dir}: the demo run ended without its final evaluation")
    test_ids = len(set(testset.query.pids.tolist()))
    seconds["total"] = time.perf_counter() - t_start
    res = DemoResult(result.run_dir, result.report, untrained, baselines, 100.0 / test_ids, test_ids,
                     cfg, len(result.steps), seconds)
    _write_demo_json(res)
    return res


def _fmt(report: Report) -> str:
    return " ".join(f"{k} {report.mean[k]:.2f}" for k in SHOWN)


def _write_demo_json(res: DemoResult) -> Path:
    """``demo.json`` in the run folder: the summary's numbers (percent)."""
    from mvd_core.io import atomic_write_text

    def pick(r: Report) -> dict[str, float]:
        return {k: round(r.mean[k], 2) for k in SHOWN} | {f"{k}_std": round(r.std[k], 2) for k in SHOWN}

    doc = {
        "test_ids": res.test_ids,
        "chance_R1": round(res.chance_rank1, 2),
        "trained": pick(res.report),
        "untrained": pick(res.untrained),
        "baselines": {k: pick(v) for k, v in res.baselines.items()},
        "steps": res.steps,
        "batch": res.cfg.data.num_ids * res.cfg.data.num_pos * 2,
        "preset": res.cfg.loss.preset,
        "precision": precision_note(res.cfg),
        "seconds": {k: round(v, 1) for k, v in res.seconds.items()},
    }
    path = res.run_dir / "demo.json"
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def _duration(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def summary(res: DemoResult) -> str:
    """The demo's closing summary: what was trained, metrics against chance, the baselines and
    the untrained network, and the time taken."""
    cfg = res.cfg
    batch = cfg.data.num_ids * cfg.data.num_pos * 2
    r1, r1_0 = res.report.mean["R1"], res.untrained.mean["R1"]
    m1, m0 = res.report.mean["mAP"], res.untrained.mean["mAP"]
    lines = [
        "summary",
        f"  trained  : MVD (3 ResNet-50 trunks, width {cfg.model.width}) with {cfg.loss.preset} "
        f"from scratch, {res.steps} steps of {batch} images at {cfg.data.height}x{cfg.data.width}, "
        f"{cfg.run.backend} on {cfg.run.device} ({precision_note(cfg)})",
        f"  test     : synthetic SYSU-MM01 layout, {res.test_ids} unseen identities, all-search "
        f"single-shot, {len(res.report.rows)} trials (thermal query, visible gallery)",
        f"  {'':<18}{'R1':>8}{'R10':>8}{'mAP':>8}",
        f"  {'chance':<18}{res.chance_rank1:>8.2f}",
    ]
    rows = [*res.baselines.items(), ("untrained network", res.untrained), ("trained network", res.report)]
    for name, rep in rows:
        lines.append(f"  {name:<18}" + "".join(f"{rep.mean[k]:>8.2f}" for k in SHOWN))
    lines.append(
        f"  trained R1 {r1:.1f} ± {res.report.std['R1']:.1f} % = {r1 / res.chance_rank1:.0f}x chance "
        f"(untrained {r1_0 / res.chance_rank1:.1f}x); mAP {m1:.1f} % = {m1 / max(m0, 1e-9):.1f}x "
        "the untrained network's"
    )
    sec = res.seconds
    lines.append(
        f"  time     : {_duration(sec.get('total', 0.0))} (synthesis {_duration(sec.get('synth', 0.0))}, "
        f"untrained evaluation {_duration(sec.get('untrained', 0.0))}, training + evaluation "
        f"{_duration(sec.get('train', 0.0))})"
    )
    lines.append(f"  run      : {res.run_dir} (report.txt, report.json, demo.json, log.jsonl)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the comparison

#: what `mvd demo --compare` trains
COMPARE_PRESETS = ("id+tri", "id+tri+kldiv")


def run_compare(
    out: Path = Path("out/demo"),
    backend: str = "torch",
    device: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    seeds: Sequence[int] = (0, 1, 2),
    presets: Sequence[str] = COMPARE_PRESETS,
    data: DemoData | None = None,
) -> CompareResult:
    """Train the demo recipe once per (preset, seed) on the same data; ``run.seed`` sets the
    initialisation and the batch draws, so both presets see the same start and the same
    batches for a seed. Runs go to ``<out>/runs/compare-<preset>-s<seed>`` (replaced)."""
    from mvd_core.train.driver import train

    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise MvdError(f"--seeds: expected distinct seeds, got {list(seeds)}")
    t0 = time.perf_counter()
    out = Path(out)
    base = demo_config(out, backend, device, overrides)
    log.info("compare: %s on %s, %s", base.run.backend, base.run.device, precision_note(base))
    ensure_data(Path(base.data.root), data or DEMO_DATA)
    reports: dict[str, dict[int, Report]] = {p: {} for p in presets}
    steps = 0
    for seed in seeds:
        for preset in presets:
            tag = f"compare-{preset}-s{seed}"
            cfg = demo_config(out, backend, device, [*overrides, f"loss.preset={preset}", f"run.seed={seed}"], tag=tag)
            run_dir = Path(cfg.run.out) / tag
            if run_dir.exists():
                shutil.rmtree(run_dir)
            log.info("compare: %s, seed %d", preset, seed)
            result = train(cfg)
            assert result.report is not None
            reports[preset][seed] = result.report
            steps = len(result.steps)
            log.info("compare: %s seed %d: %s", preset, seed, _fmt(result.report))
    from mvd_core.data.sets import load_test

    test_ids = len(set(load_test(base.data).query.pids.tolist()))
    return CompareResult(reports, time.perf_counter() - t0, steps, test_ids)


def compare_stats(res: CompareResult) -> dict[str, dict[str, tuple[float, float]]]:
    """preset → metric → (mean, population std) over the seeds of the per-run trial means."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for preset, runs in res.reports.items():
        vals = {k: np.array([r.mean[k] for r in runs.values()]) for k in SHOWN}
        out[preset] = {k: (float(v.mean()), float(v.std())) for k, v in vals.items()}
    return out


def compare_table(res: CompareResult) -> str:
    """One row per preset: mean ± std over the seeds, then the per-seed R1/mAP."""
    stats = compare_stats(res)
    seeds = sorted(next(iter(res.reports.values())).keys())
    lines = [
        f"id+tri vs id+tri+kldiv: {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{res.steps} steps each, same data and seeds; mean ± std over seeds of the 10-trial means",
        f"{'preset':<14}" + "".join(f"{k:>16}" for k in SHOWN) + "   per seed R1 / mAP",
    ]
    for preset, st in stats.items():
        cells = "".join(f"{f'{m:.2f} ± {s:.2f}':>16}" for m, s in (st[k] for k in SHOWN))
        per = ", ".join(f"{res.reports[preset][s].mean['R1']:.1f}/{res.reports[preset][s].mean['mAP']:.1f}" for s in seeds)
        lines.append(f"{preset:<14}{cells}   {per}")
    if len(stats) == 2:
        (a, sa), (b, sb) = stats.items()
        d = {k: sb[k][0] - sa[k][0] for k in ("R1", "mAP")}
        pooled = math.sqrt((sa["mAP"][1] ** 2 + sb["mAP"][1] ** 2) / 2)
        lines.append(
            f"difference ({b} - {a}): R1 {d['R1']:+.2f}, mAP {d['mAP']:+.2f} points "
            f"(seed-to-seed std of mAP ~{pooled:.2f})"
        )
    lines.append(f"time: {_duration(res.seconds)}")
    return "\n".join(lines)
