"""Where `mvd demo`'s time goes, and what the speed levers buy, side by side in one process.

    python benchmarks/bench_demo.py [--out out/demo] [--contenders fp32@1 fp32+cl@1 bf16+cl@1 ...]
        [--block 4] [--rounds 3] [--workers W] [--no-split] [--set section.key=value ...] [--json OUT]

Contenders are ``<precision>[+cl]@<threads>``: ``fp32`` (run.amp=none) or ``bf16`` (run.amp=bf16
autocast), ``+cl`` channels_last, ``@T`` torch CPU threads. Every contender starts from the same
weights (the demo's seeded initialisation) and trains the demo recipe on the demo's own data,
each through its own real :class:`~mvd_core.data.loader.TrainLoader` (``data.workers`` prefetch
threads, ``--workers`` overrides) on the same seeded batches. Contenders alternate in blocks of
``--block`` steps for ``--rounds`` rounds (load on a shared machine hits them alike); the first
step of a block is not timed. A step is ``train_step`` plus the wait for its batch: what the
demo's training loop pays per step, loader contention included. ``fp32@1`` is what the demo ran
before it picked its CPU settings (mvd_core.demo.torch_cpu_speedups); ``@2`` (two torch threads
beside the loader's, on 2 cores) was measured 16-28 s a step under load 5 -- OpenMP's barrier
stall (mvd_core.devices.cpu_threads) -- so it is not a default contender.

The split (unless ``--no-split``): the parts of a demo outside the training steps, each timed
once with the first contender's setting -- reading the data set, the two training-free matchers,
the feature extraction of the test set (untrained, then once more), the 10-trial all-search
metrics, one checkpoint save -- and the batch build on one thread (the loader's CPU cost per step).

Printed: per contender the median step, images/s, speed-up against the first contender and the
demo's training time at the recipe's step count (steps x median step), in wall-clock seconds and
in the main thread's CPU seconds (``time.thread_time``: at one torch thread the step's compute,
which waiting for a core under load does not inflate -- an idle machine's wall-clock step is
about this); then the split and the demo's estimated total. Absolute wall-clock seconds depend
on the machine's load (printed): compare ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from mvd_core import demo as D
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mvd_core import demo as D
from mvd_core.config import Config, apply_overrides
from mvd_core.io import atomic_write_text

log = logging.getLogger("bench_demo")


def parse_contender(name: str) -> dict[str, Any]:
    """``bf16+cl@2`` → {"amp": "bf16", "channels_last": True, "threads": 2}."""
    spec, _, threads = name.partition("@")
    prec, _, cl = spec.partition("+")
    if prec not in ("fp32", "bf16") or cl not in ("", "cl") or not (threads or "1").isdigit():
        raise SystemExit(f"contender {name!r}: expected fp32|bf16[+cl][@THREADS], e.g. bf16+cl@1")
    return {"amp": "none" if prec == "fp32" else "bf16", "channels_last": cl == "cl",
            "threads": int(threads or 1)}


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - non-Linux
        return "?"


#: CPU seconds of the parts timed by :func:`_timed` (process CPU time: the parts run no
#: threads of their own), keyed like their wall-clock seconds
SPLIT_CPU: dict[str, float] = {}


def _timed(fn: Any, key: str | None = None) -> tuple[Any, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if key is not None:
        SPLIT_CPU[key] = SPLIT_CPU.get(key, 0.0) + time.process_time() - c0
    return out, time.perf_counter() - t0


def contender_config(base: Config, name: str, workers: int | None) -> Config:
    s = parse_contender(name)
    sets = [f"run.amp={s['amp']}", f"run.channels_last={str(s['channels_last']).lower()}",
            f"run.threads={s['threads']}"]
    if workers is not None:
        sets.append(f"data.workers={workers}")
    return apply_overrides(base, sets)


def bench_steps(base: Config, names: list[str], block: int, rounds: int, workers: int | None) -> dict[str, Any]:
    """Median seconds per training step (batch wait + train_step) of each contender."""
    import torch

    from mvd_core.data.loader import TrainLoader
    from mvd_core.data.sets import load_train
    from mvd_core.registry import create_backend

    train_set = load_train(base.data)
    cfgs = {n: contender_config(base, n, workers) for n in names}
    backends = {n: create_backend(cfgs[n], train_set.num_classes) for n in names}
    loaders = {n: TrainLoader(train_set, cfgs[n].data, cfgs[n].run.seed, cfgs[n].schedule.steps_per_epoch)
               for n in names}
    epochs = {n: 1 for n in names}
    iters = {n: iter(loaders[n].epoch(1)) for n in names}

    def next_batch(n: str) -> Any:
        try:
            return next(iters[n])
        except StopIteration:  # more steps than an epoch: go on with the next epoch's batches
            epochs[n] += 1
            iters[n] = iter(loaders[n].epoch(epochs[n]))
            return next(iters[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, list[float]] = {n: [] for n in names}
    lr = base.optim.lr
    try:
        for r in range(rounds):
            for n in names:
                torch.set_num_threads(cfgs[n].run.threads)
                for i in range(block):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    batch = next_batch(n)
                    out = backends[n].train_step(batch, lr)
                    dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                    losses[n].append(out["total"])
                    if i > 0:
                        times[n].append(dt)
                        cpu[n].append(dc)
                log.info("round %d %-10s median %.3f s (load %s)", r + 1, n,
                         statistics.median(times[n][-(block - 1):]), _load())
    finally:
        for n in names:
            loaders[n].close()
    ref = statistics.median(times[names[0]])
    ref_cpu = statistics.median(cpu[names[0]])
    batch_size = base.data.num_ids * base.data.num_pos * 2
    rows = []
    for n in names:
        med, med_cpu = statistics.median(times[n]), statistics.median(cpu[n])
        rows.append({"contender": n, **parse_contender(n), "step_s": med, "images_per_s": batch_size / med,
                     "speedup": ref / med, "step_cpu_s": med_cpu, "speedup_cpu": ref_cpu / med_cpu,
                     "step_s_all": times[n], "step_cpu_s_all": cpu[n], "losses": losses[n]})
    return {"rows": rows, "batch": batch_size}


def bench_split(base: Config, name: str) -> dict[str, float]:
    """Seconds of each part of a demo outside the training steps, in ``name``'s setting."""
    import torch

    from mvd_core.data.loader import TrainLoader
    from mvd_core.data.sets import load_test, load_train
    from mvd_core.eval.features import testset_features
    from mvd_core.eval.protocols import evaluate
    from mvd_core.registry import create_backend
    from mvd_core.train.loop import LoopState, make_checkpoint
    from mvd_core.weights.checkpoint import save_checkpoint

    cfg = contender_config(base, name, None)
    out: dict[str, float] = {}
    train_set, out["read data set"] = _timed(lambda: load_train(cfg.data), "read data set")
    testset, t = _timed(lambda: load_test(cfg.data), "read data set")
    out["read data set"] += t
    _, out["training-free matchers"] = _timed(lambda: D.baseline_reports(testset, cfg), "training-free matchers")
    backend, out["build backend"] = _timed(lambda: create_backend(cfg, train_set.num_classes), "build backend")
    torch.set_num_threads(cfg.run.threads)
    (qf, gf), out["extract test features"] = _timed(lambda: testset_features(backend, testset, cfg),
                                                    "extract test features")
    _, out["10-trial metrics"] = _timed(lambda: evaluate(testset, qf, gf, cfg.eval), "10-trial metrics")
    with tempfile.TemporaryDirectory() as tmp:
        _, out["checkpoint save"] = _timed(
            lambda: save_checkpoint(Path(tmp) / "last.safetensors", make_checkpoint(backend, cfg, LoopState(1, 25))),
            "checkpoint save")
    one = apply_overrides(cfg, ["data.workers=0"])
    loader = TrainLoader(train_set, one.data, one.run.seed, one.schedule.steps_per_epoch)
    plan = loader.plan(1)
    t0 = time.perf_counter()
    for s, (v, th) in enumerate(plan[:5]):
        loader.make_batch(1, s, v, th)
    out["batch build (1 thread)"] = (time.perf_counter() - t0) / 5
    SPLIT_CPU["batch build (1 thread)"] = out["batch build (1 thread)"]  # wall-clock: see the note
    loader.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/demo"), help="the demo folder (data synthesised if absent)")
    ap.add_argument("--contenders", nargs="+", default=["fp32@1", "fp32+cl@1", "bf16@1", "bf16+cl@1"])
    ap.add_argument("--block", type=int, default=4, help="steps per contender per round (first not timed)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="data.workers for every contender")
    ap.add_argument("--no-split", action="store_true", help="skip the time split")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mvd_core.eval.protocols").setLevel(logging.WARNING)
    if args.block < 2 or args.rounds < 1:
        raise SystemExit("--block >= 2 and --rounds >= 1 expected")
    names = list(dict.fromkeys(args.contenders))
    for n in names:
        parse_contender(n)
    base = D.demo_config(args.out, "torch", "cpu", args.sets)
    D.ensure_data(Path(base.data.root))
    load_before = _load()
    steps = bench_steps(base, names, args.block, args.rounds, args.workers)
    split = {} if args.no_split else bench_split(base, names[0])
    total_steps = base.schedule.epochs * base.schedule.steps_per_epoch
    import torch

    result = {
        "benchmark": "demo", "command": "bench_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_before": load_before, "load_after": _load(), "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__, "platform": platform.platform(), "steps_in_recipe": total_steps,
        "workers": base.data.workers if args.workers is None else args.workers, **steps, "split": split,
    }
    print(f"load average before {load_before}, after {result['load_after']} ({result['cores']} cores); "
          f"batch {steps['batch']}, loader workers {result['workers']}, {total_steps} steps in the recipe")
    print(f"{'contender':12s} {'step s':>7s} {'img/s':>7s} {'speed-up':>9s} {'training s':>11s}"
          f" {'step CPU s':>11s} {'speed-up':>9s} {'training CPU s':>15s}")
    for r in steps["rows"]:
        print(f"{r['contender']:12s} {r['step_s']:7.3f} {r['images_per_s']:7.1f} {r['speedup']:8.2f}x "
              f"{r['step_s'] * total_steps:11.1f} {r['step_cpu_s']:11.3f} {r['speedup_cpu']:8.2f}x "
              f"{r['step_cpu_s'] * total_steps:15.1f}")
    if split:
        print(f"split outside the training steps ({names[0]}): wall-clock s, CPU s")
        for k, v in split.items():
            print(f"  {k:26s} {v:7.2f} {SPLIT_CPU.get(k, float('nan')):7.2f}")

        def fixed_part(t: dict[str, float]) -> float:
            # a demo: data, matchers, untrained extraction + metrics, per-epoch checkpoints, the
            # trained extraction + metrics (the per-step batch build runs in the loader's threads)
            return (t["read data set"] * 2 + t["training-free matchers"] + t["build backend"] * 2
                    + 2 * (t["extract test features"] + t["10-trial metrics"])
                    + base.schedule.epochs * t["checkpoint save"])

        fixed, fixed_cpu = fixed_part(split), fixed_part(SPLIT_CPU)
        print(f"  {'fixed part of a demo':26s} {fixed:7.2f} {fixed_cpu:7.2f} (steps excluded)")
        for r in steps["rows"]:
            print(f"  estimated demo, {r['contender']:10s} {fixed + r['step_s'] * total_steps:7.1f} "
                  f"{fixed_cpu + r['step_cpu_s'] * total_steps:7.1f}")
        result["fixed_s"], result["fixed_cpu_s"], result["split_cpu"] = fixed, fixed_cpu, dict(SPLIT_CPU)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
