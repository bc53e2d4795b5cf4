"""Host-memory growth of a long training run (SPEC §3, "The MindSpore memory leak").

Trains the tiny recipe (small images, batch 16) with the loss presets ``id+tri`` and
``id+tri+kldiv`` for ``--steps`` steps, samples the process RSS (psutil) every ``--every``
steps, and reports the least-squares slope of RSS over the second half of the run in KB/step
(the first half absorbs allocator warm-up, compilation caches and the like). The learning rate
changes every ``--lr-every`` steps, as a schedule does, and the batches cycle through a pool of
distinct arrays (new input Tensors each step), so the usual per-step paths are exercised.

Each (backend, mode, preset) runs in a fresh subprocess so that one run's caches do not count
against another. Target: ≤ 1 KB/step for MindSpore with kldiv, in both modes.

    python benchmarks/bench_memory.py --backend both --mode both --steps 3000 --json mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

PRESETS = ("id+tri", "id+tri+kldiv")


def slope_kb_per_step(steps: list[int], rss: list[float], tail: float = 0.5) -> float:
    """Least-squares slope (KB/step) of RSS (bytes) against step over the last ``tail`` of the
    samples."""
    s = np.asarray(steps, dtype=np.float64)
    r = np.asarray(rss, dtype=np.float64) / 1024.0
    k = max(2, int(round(len(s) * tail)))
    s, r = s[-k:], r[-k:]
    if len(s) < 2 or np.ptp(s) == 0:
        return float("nan")
    return float(np.polyfit(s, r, 1)[0])


def make_batches(n: int, batch: int, height: int, width: int, num_classes: int, seed: int = 0):
    from mvd_core.interface import Batch

    rng = np.random.default_rng(seed)
    out = []
    ids = batch // 4
    for _ in range(n):
        labels = np.repeat(rng.choice(num_classes, ids, replace=False), 4).astype(np.int64)
        modality = np.tile(np.array([0, 0, 1, 1], np.int64), ids)
        images = rng.standard_normal((batch, 3, height, width)).astype(np.float32)
        out.append(Batch(images, labels, modality))
    return out


def child(args: argparse.Namespace) -> dict:
    import psutil

    from mvd_core.config import load_config, replace

    cfg = replace(
        load_config("tiny"),
        data={"height": args.height, "width": args.width},
        loss={"preset": args.preset},
        run={"backend": args.backend, "ms_mode": args.mode or "pynative"},
    )
    num_classes = 16
    if args.backend == "mindspore":
        from mvd_backends.mindspore.backend import MindSporeBackend

        be = MindSporeBackend(cfg, num_classes, "CPU", 0)
    else:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        from mvd_backends.torch.backend import TorchBackend

        be = TorchBackend(cfg, num_classes, "cpu", 0)
    batches = make_batches(8, args.batch, args.height, args.width, num_classes)
    proc = psutil.Process()
    steps, rss, times = [], [], []
    lr = cfg.optim.lr
    t0 = time.perf_counter()
    last = None
    for step in range(1, args.steps + 1):
        if step % args.lr_every == 0:  # a schedule: a new lr value now and then
            lr = cfg.optim.lr * (0.5 + 0.5 * np.cos(step / 97.0))
        last = be.train_step(batches[step % len(batches)], float(lr))
        if step % args.every == 0 or step == 1:
            steps.append(step)
            rss.append(float(proc.memory_info().rss))
            times.append(time.perf_counter() - t0)
            if args.verbose:
                print(f"# step {step} rss {rss[-1] / 2**20:.1f} MiB  t {times[-1]:.0f}s",
                      file=sys.stderr, flush=True)
    per_step = (times[-1] - times[0]) / max(1, steps[-1] - steps[0])
    return {
        "backend": args.backend,
        "mode": args.mode or "-",
        "preset": args.preset,
        "steps": steps,
        "rss_bytes": rss,
        "slope_kb_per_step": slope_kb_per_step(steps, rss),
        "growth_mib": (rss[-1] - rss[len(rss) // 2]) / 2**20,
        "s_per_step": per_step,
        "final_loss": last,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("torch", "mindspore", "both"), default="mindspore")
    ap.add_argument("--mode", choices=("graph", "pynative", "both"), default="both",
                    help="MindSpore execution mode(s)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=100, help="RSS sample period (steps)")
    ap.add_argument("--lr-every", type=int, default=50, help="steps between lr changes")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="id+tri+kldiv", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("GLOG_v", "3")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if args.child:
        if args.mode == "both":
            args.mode = "pynative"
        print(json.dumps(child(args)))
        return

    backends = ("torch", "mindspore") if args.backend == "both" else (args.backend,)
    modes = ("graph", "pynative") if args.mode == "both" else (args.mode,)
    runs = []
    for be in backends:
        for mode in modes if be == "mindspore" else ("",):
            for preset in args.presets.split(","):
                cmd = [sys.executable, os.path.abspath(__file__), "--child", "--backend", be,
                       "--steps", str(args.steps), "--every", str(args.every),
                       "--lr-every", str(args.lr_every), "--preset", preset,
                       "--height", str(args.height), "--width", str(args.width),
                       "--batch", str(args.batch)]
                if mode:
                    cmd += ["--mode", mode]
                if args.verbose:
                    cmd.append("--verbose")
                res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
                if res.returncode != 0:
                    print(f"{be} {mode} {preset}: FAILED (exit {res.returncode})", file=sys.stderr)
                    continue
                runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
                r = runs[-1]
                print(f"{be:9s} {r['mode']:8s} {preset:13s} slope {r['slope_kb_per_step']:8.2f} "
                      f"KB/step  ({r['s_per_step'] * 1000:.0f} ms/step)", file=sys.stderr, flush=True)

    print(f"\n{'backend':9s} {'mode':8s} {'preset':13s} {'RSS start':>10s} {'RSS mid':>10s} "
          f"{'RSS end':>10s} {'slope 2nd half':>15s} {'ms/step':>8s}")
    for r in runs:
        rs = r["rss_bytes"]
        print(f"{r['backend']:9s} {r['mode']:8s} {r['preset']:13s} {rs[0] / 2**20:8.1f}Mi "
              f"{rs[len(rs) // 2] / 2**20:8.1f}Mi {rs[-1] / 2**20:8.1f}Mi "
              f"{r['slope_kb_per_step']:10.2f} KB/st {r['s_per_step'] * 1000:8.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "height": args.height, "width": args.width,
                       "batch": args.batch, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
