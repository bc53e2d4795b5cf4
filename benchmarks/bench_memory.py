"""Host-memory growth of a long training run (SPEC §3, "The MindSpore memory leak").

Trains the ``tiny`` recipe (configs/tiny.yaml: its network, 64×32 images, batch 16, Adam, its
schedule repeated over the run) with the loss presets ``id+tri`` and ``id+tri+kldiv`` for
``--steps`` steps through the real data path -- ``load_train`` + ``TrainLoader`` (sampler,
augmentation, prefetch threads) over a SYSU-MM01 folder, by default a small synthetic one written
by ``mvd_core.data.synth.synth_sysu`` -- and the real backend (``mvd_core.registry
.create_backend``, ``Backend.train_step(batch, lr)`` with ``lr_at(epoch)``), i.e. the driver's
training loop without its logging and checkpointing. The process RSS (psutil) is sampled
every ``--every`` steps (and after step 1); reported is the least-squares slope of RSS over the
second half of the run in KB/step (KB = 1024 bytes; the first half absorbs allocator and
runtime warm-up: MindSpore settles its execution strategy and memory pool over the first few
hundred steps). On a GPU/Ascend device the framework's allocated device memory is sampled too.

Each (backend, mode, preset) runs in a fresh subprocess, one after the other, so that one run's
caches do not count against another (``--jobs N``: N of them at once). Target: ≤ 1 KB/step for MindSpore with kldiv, in both
modes (``graph`` and ``pynative``).

    python benchmarks/bench_memory.py --backend both --steps 3000 --jobs 2 --threads 1 \
        --json benchmarks/results/memory.json
    python benchmarks/bench_memory.py --backend mindspore --mode pynative --steps 600 --every 50

``tests/test_memory.py`` reuses :func:`run_one` on a shorter run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

PRESETS = ("id+tri", "id+tri+kldiv")
#: the synthetic SYSU-MM01 used when no --data is given (60 % of the ids train: 14 classes)
SYNTH_IDS, SYNTH_PER_CAM = 24, 4


def slope_kb_per_step(steps: list[int], rss: list[float], tail: float = 0.5) -> float:
    """Least-squares slope (KB/step) of RSS (bytes) against step over the samples taken in the
    last ``tail`` of the run (steps > (1 − tail)·last step)."""
    s = np.asarray(steps, dtype=np.float64)
    r = np.asarray(rss, dtype=np.float64) / 1024.0
    keep = s > (1.0 - tail) * s[-1]
    s, r = s[keep], r[keep]
    if len(s) < 2 or np.ptp(s) == 0:
        return float("nan")
    return float(np.polyfit(s, r, 1)[0])


def synth_data(root: str | os.PathLike[str]) -> Path:
    """A small synthetic SYSU-MM01 (raw layout) at ``root``; returns its path."""
    from mvd_core.data.synth import synth_sysu

    synth_sysu(root, ids=SYNTH_IDS, images_per_cam=SYNTH_PER_CAM, seed=0)
    return Path(root)


def _device_bytes(backend: str, device: str) -> float | None:
    """Allocated device memory of the framework (None on the CPU, where it is the RSS)."""
    if device.lower().startswith("cpu"):
        return None
    if backend == "torch":
        import torch

        return float(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None
    import mindspore as ms

    return float(ms.runtime.memory_allocated())


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this process: returns the samples and the slope."""
    import psutil

    from mvd_core.config import load_config, replace
    from mvd_core.data.loader import TrainLoader
    from mvd_core.data.sets import load_train
    from mvd_core.registry import create_backend
    from mvd_core.train.schedule import lr_at

    base = load_config("tiny")
    data: dict[str, Any] = {"root": args.data}
    if args.height:
        data["height"] = args.height
    if args.width:
        data["width"] = args.width
    if args.workers >= 0:
        data["workers"] = args.workers
    cfg = replace(base, data=data, loss={"preset": args.preset},
                  run={"backend": args.backend, "ms_mode": args.mode or "pynative",
                       "device": args.device, "threads": args.threads})
    train_set = load_train(cfg.data)
    loader = TrainLoader(train_set, cfg.data, cfg.run.seed, cfg.schedule.steps_per_epoch)
    spe = loader.steps_per_epoch
    epochs = max(1, math.ceil(args.steps / spe))
    # the recipe's schedule (warm-up, decay), repeated every schedule.epochs epochs: the lr
    # changes now and then, as in a run, and training goes on (no lr decayed to nothing)
    n_sched = max(1, cfg.schedule.epochs)
    be = create_backend(cfg, train_set.num_classes)
    proc = psutil.Process()
    steps: list[int] = []
    rss: list[float] = []
    dev: list[float] = []
    times: list[float] = []
    last: dict[str, float] = {}
    lrs: set[float] = set()
    step = 0
    t0 = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            lr = lr_at((epoch - 1) % n_sched + 1, cfg.schedule, cfg.optim)
            lrs.add(lr)
            batches = loader.epoch(epoch)
            try:
                for batch in batches:
                    last = be.train_step(batch, lr)
                    step += 1
                    if step % args.every == 0 or step in (1, args.steps):
                        steps.append(step)
                        rss.append(float(proc.memory_info().rss))
                        d = _device_bytes(args.backend, args.device)
                        if d is not None:
                            dev.append(d)
                        times.append(time.perf_counter() - t0)
                        if args.verbose:
                            print(f"# {args.backend} {args.mode or ''} {args.preset} step {step} "
                                  f"rss {rss[-1] / 2**20:.1f} MiB t {times[-1]:.0f}s",
                                  file=sys.stderr, flush=True)
                    if step >= args.steps:
                        break
            finally:
                batches.close()
            if step >= args.steps:
                break
    finally:
        loader.close()
    per_step = (times[-1] - times[0]) / max(1, steps[-1] - steps[0])
    mid = next(i for i, s in enumerate(steps) if s > steps[-1] / 2)
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    if args.backend == "torch":
        import torch

        versions["torch"] = torch.__version__
    else:
        import mindspore as ms

        versions["mindspore"] = ms.__version__
    out: dict[str, Any] = {
        "backend": args.backend,
        "mode": args.mode or "-",
        "preset": args.preset,
        "steps": steps,
        "rss_bytes": rss,
        "slope_kb_per_step": slope_kb_per_step(steps, rss),
        "growth_2nd_half_mib": (rss[-1] - rss[mid - 1]) / 2**20,
        "s_per_step": per_step,
        "num_classes": train_set.num_classes,
        "lrs": sorted(lrs),
        "final_loss": last,
        "versions": versions,
    }
    if dev:
        out["device_bytes"] = dev
        out["device_slope_kb_per_step"] = slope_kb_per_step(steps, dev)
    return out


def run_one(backend: str, mode: str, preset: str, steps: int, every: int, data: str | os.PathLike[str],
            *, height: int = 0, width: int = 0, threads: int = 0, workers: int = -1,
            device: str = "cpu", verbose: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """One (backend, mode, preset) run in a fresh subprocess; returns :func:`child`'s result.
    ``mode``: "graph" | "pynative" for MindSpore, "" for torch. ``height``/``width`` 0 and
    ``workers`` -1: the recipe's."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--backend", backend,
           "--preset", preset, "--steps", str(steps), "--every", str(every), "--data", str(data),
           "--height", str(height), "--width", str(width), "--threads", str(threads),
           "--workers", str(workers), "--device", device]
    if mode:
        cmd += ["--mode", mode]
    if verbose:
        cmd.append("--verbose")
    env = dict(os.environ)
    env.setdefault("GLOG_v", "3")
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE,
                         text=True, check=False, env=env, timeout=timeout)
    if res.returncode != 0:
        tail = (res.stderr or "")[-3000:]
        raise RuntimeError(f"{backend} {mode} {preset}: exit {res.returncode}\n{tail}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'backend':9s} {'mode':8s} {'preset':13s} {'RSS step 1':>11s} {'RSS mid':>9s} "
             f"{'RSS end':>9s} {'slope 2nd half':>15s} {'ms/step':>8s}"]
    for r in runs:
        rs, st = r["rss_bytes"], r["steps"]
        mid = next(i for i, s in enumerate(st) if s > st[-1] / 2) - 1
        lines.append(f"{r['backend']:9s} {r['mode']:8s} {r['preset']:13s} {rs[0] / 2**20:8.1f}MiB "
                     f"{rs[mid] / 2**20:6.1f}MiB {rs[-1] / 2**20:6.1f}MiB "
                     f"{r['slope_kb_per_step']:9.2f} KB/st {r['s_per_step'] * 1000:8.0f}")
    # RSS against step, one column per run
    heads = [f"{(r['backend'][:5] + ' ' + (r['mode'] if r['mode'] != '-' else ''))[:14]:>14s}"
             for r in runs]
    heads2 = [f"{r['preset']:>14s}" for r in runs]
    lines += ["", "RSS (MiB) by step", f"{'':>6s} " + " ".join(heads), f"{'step':>6s} " + " ".join(heads2)]
    all_steps = sorted({s for r in runs for s in r["steps"]})
    for s in all_steps:
        cells = []
        for r in runs:
            try:
                cells.append(f"{r['rss_bytes'][r['steps'].index(s)] / 2**20:14.1f}")
            except ValueError:
                cells.append(f"{'':>14s}")
        lines.append(f"{s:6d} " + " ".join(cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("torch", "mindspore", "both"), default="both")
    ap.add_argument("--mode", choices=("graph", "pynative", "both"), default="both",
                    help="MindSpore execution mode(s)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=100, help="RSS sample period (steps)")
    ap.add_argument("--data", default="", help="a SYSU-MM01 folder (default: a synthetic one in a "
                    "temporary folder)")
    ap.add_argument("--height", type=int, default=0, help="image height (0: the recipe's)")
    ap.add_argument("--width", type=int, default=0, help="image width (0: the recipe's)")
    ap.add_argument("--threads", type=int, default=0, help="run.threads (0: the project's policy)")
    ap.add_argument("--workers", type=int, default=-1, help="loader threads (-1: the recipe's)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda[:N], GPU[:N], Ascend[:N]")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (one process each)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="id+tri+kldiv", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("GLOG_v", "3")
    if args.child:
        if args.mode == "both":
            args.mode = "pynative"
        if args.backend == "torch":
            args.mode = ""
        print(json.dumps(child(args)))
        return

    backends = ("torch", "mindspore") if args.backend == "both" else (args.backend,)
    modes = ("graph", "pynative") if args.mode == "both" else (args.mode,)
    runs: list[dict[str, Any]] = []
    failed: list[str] = []
    jobs = [(be, mode, preset) for be in backends
            for mode in (modes if be == "mindspore" else ("",))
            for preset in args.presets.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        data = args.data or str(synth_data(Path(tmp) / "SYSU-MM01"))

        def one(job: tuple[str, str, str]) -> dict[str, Any] | None:
            be, mode, preset = job
            t0 = time.perf_counter()
            try:
                r = run_one(be, mode, preset, args.steps, args.every, data,
                            height=args.height, width=args.width, threads=args.threads,
                            workers=args.workers, device=args.device, verbose=args.verbose)
            except RuntimeError as e:
                print(f"FAILED {e}", file=sys.stderr, flush=True)
                return None
            print(f"{be:9s} {r['mode']:8s} {preset:13s} slope {r['slope_kb_per_step']:8.2f} "
                  f"KB/step ({r['s_per_step'] * 1000:.0f} ms/step, "
                  f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            return r

        # --jobs > 1: several runs at once, each in its own process (RSS is per process; only
        # the wall time per step is affected by the sharing)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for job, r in zip(jobs, pool.map(one, jobs), strict=True):
                if r is None:
                    failed.append(" ".join(x for x in job if x))
                else:
                    runs.append(r)
    table = _table(runs) if runs else "(no run finished)"
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        settings = {k: getattr(args, k) for k in ("steps", "every", "height", "width", "threads",
                                                   "workers", "device", "presets")}
        settings["data"] = args.data or f"synthetic SYSU-MM01 ({SYNTH_IDS} ids, {SYNTH_PER_CAM}/camera)"
        settings["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "")
        settings["cpu_count"] = os.cpu_count()
        settings["jobs"] = args.jobs
        out = Path(args.json)
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text(json.dumps({"settings": settings, "runs": runs, "failed": failed,
                                       "table": table}, indent=1))
        tmp_out.replace(out)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
