"""Torch mixed precision vs fp32, side by side in one process: step time ratio and loss gap.

    python benchmarks/bench_amp.py [--config mvd-ms] [--batch 16] [--steps 20] [--warmup 2]
        [--device cpu|cuda] [--classes 395] [--threads T] [--amp bf16|fp16]
        [--contenders fp32 amp+cl amp] [--same-weights] [--set section.key=value ...] [--json OUT]

Contenders (``--contenders``): ``fp32`` (run.amp=none), ``amp+cl`` (run.amp=<amp> +
run.channels_last=true), ``amp`` (autocast only), ``fp32+cl``. All start from the SAME weights
(the fp32 contender's, loaded into every other one) and train on the SAME seeded batches
(``bench_train.make_batches``), so their loss trajectories are comparable step by step. Steps
alternate: step i of every contender, then step i+1 -- load on a shared machine hits them
alike. The first ``--warmup`` steps are trained and their losses kept, but not timed.

Reported per contender: median step time, images/s, speed-up = fp32 median / contender
median (target >= 2.5x for amp+cl on the CPU at mvd-ms batch 16, 288×144), and the largest
relative loss gap to fp32 over every step (target <= 1e-2 over 20 steps;
``mvd_core.parity.amp.relative_loss_gap``). JSON to ``--json``.

``--same-weights``: every step starts each contender from the fp32 contender's weights (and
BatchNorm statistics) before that step, so step i's loss is the same network on the same batch
in two precisions -- the rounding of one step, measured along the fp32 trajectory. Without it
each contender follows its own trajectory, and those drift apart chaotically whatever the
precision: fp32 against fp32 + channels_last alone (the same arithmetic, another summation
order) reached a 7.2e-2 gap in 20 mvd-ms steps (benchmarks/results/amp-control-*).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

try:
    from mvd_core.config import apply_overrides, load_config, replace
    from mvd_core.io import atomic_write_text
    from mvd_core.parity.amp import relative_loss_gap
    from mvd_core.registry import create_backend
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mvd_core.config import apply_overrides, load_config, replace
    from mvd_core.io import atomic_write_text
    from mvd_core.parity.amp import relative_loss_gap
    from mvd_core.registry import create_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import make_batches  # noqa: E402

log = logging.getLogger("bench_amp")

TARGET_SPEEDUP = 2.5
TARGET_LOSS_GAP = 1e-2
CONTENDERS = ("fp32", "fp32+cl", "amp", "amp+cl")


def _settings(name: str, amp: str) -> dict[str, Any]:
    return {
        "fp32": {"amp": "none", "channels_last": False},
        "fp32+cl": {"amp": "none", "channels_last": True},
        "amp": {"amp": amp, "channels_last": False},
        "amp+cl": {"amp": amp, "channels_last": True},
    }[name]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="mvd-ms")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="trained steps per contender (warm-up included)")
    ap.add_argument("--warmup", type=int, default=2, help="leading steps not timed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--classes", type=int, default=395)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--amp", default="bf16", choices=("bf16", "fp16"))
    ap.add_argument("--contenders", nargs="+", default=["fp32", "amp+cl"], choices=CONTENDERS)
    ap.add_argument("--same-weights", action="store_true",
                    help="start every step of every contender from the fp32 weights (module doc)")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.steps <= args.warmup:
        raise SystemExit(f"--steps {args.steps}: expected more than --warmup {args.warmup}")
    names = list(dict.fromkeys(["fp32", *args.contenders]))  # fp32 first: the reference

    cfg = apply_overrides(load_config(args.config), args.sets)
    cfg = replace(cfg, run={"backend": "torch", "device": args.device, "threads": args.threads})
    backends: dict[str, Any] = {}
    for n in names:
        backends[n] = create_backend(replace(cfg, run=_settings(n, args.amp)), args.classes)
        if n != "fp32":
            backends[n].load_state(backends["fp32"].state(), strict=True)
    batches = make_batches(cfg, args.batch, args.classes, args.steps, seed=0)
    lr = cfg.optim.lr
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, list[float]] = {n: [] for n in names}
    for i, b in enumerate(batches):
        start = backends["fp32"].state() if args.same_weights else None
        for n in names:
            if start is not None and n != "fp32":
                backends[n].load_state(start, strict=True)
            _sync(args.device)
            t0 = time.perf_counter()
            out = backends[n].train_step(b, lr)
            _sync(args.device)
            dt = time.perf_counter() - t0
            losses[n].append(out["total"])
            if i >= args.warmup:
                times[n].append(dt)
            log.info("step %d %-8s %.3f s  loss %.5f", i + 1, n, dt, out["total"])

    ref_t = statistics.median(times["fp32"])
    rows = []
    for n in names:
        med = statistics.median(times[n])
        rows.append({
            "contender": n, **_settings(n, args.amp), "step_s": med,
            "images_per_s": args.batch / med, "speedup_vs_fp32": ref_t / med,
            "max_rel_loss_gap": relative_loss_gap(losses["fp32"], losses[n]),
            "step_s_all": times[n], "losses": losses[n],
        })
    import torch

    result = {
        "benchmark": "amp",
        "command": "bench_amp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipe": cfg.recipe, "image": [cfg.data.height, cfg.data.width], "batch": args.batch,
        "steps": args.steps, "warmup": args.warmup, "device": args.device, "classes": args.classes,
        "same_weights": args.same_weights,
        "loss_preset": cfg.loss.preset, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "targets": {"speedup": TARGET_SPEEDUP, "max_rel_loss_gap": TARGET_LOSS_GAP},
        "rows": rows,
    }
    print(f"{'contender':10s} {'step s':>8s} {'img/s':>7s} {'speed-up':>9s} {'loss gap':>9s}")
    for r in rows:
        print(f"{r['contender']:10s} {r['step_s']:8.3f} {r['images_per_s']:7.2f} "
              f"{r['speedup_vs_fp32']:8.2f}x {r['max_rel_loss_gap']:9.2e}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
