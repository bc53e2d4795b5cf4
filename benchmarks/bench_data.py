"""Training-data throughput with the full ``mvd-ms`` augmentation at 288×144.

Builds a SYSU-MM01 training cache the real way (``mvd synth`` layout → ``prepare_sysu`` → the
memory-mapped four .npy files; or ``--cache DIR`` for an existing one, e.g. the real data set),
then measures images/s of

* the transform alone (one thread, pad+crop, flip, grayscale, normalise, erasing);
* ``TrainLoader`` batches (8 ids × (4 visible + 4 thermal) = 64 images) with 0, 1 and 2 worker
  threads (``data.workers``), the consumer doing nothing else;
* the time a busy consumer (a training step simulated by a ``--step-ms`` sleep) waits for each
  batch with and without background workers.

Prints a table and writes JSON (``--json``, default ``out/bench_data.json``). Target on the
2-core development machine: ≥ 400 images/s for the loader with the recipe's workers.

    .venv/bin/python benchmarks/bench_data.py [--batches 40] [--cache DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mvd_core.config import load_config
from mvd_core.data.loader import TrainLoader
from mvd_core.data.sets import load_train
from mvd_core.data.transforms import TrainTransform


def _cache(args: argparse.Namespace, tmp: Path) -> Path:
    if args.cache:
        return Path(args.cache)
    from mvd_core.data.synth import synth_sysu
    from mvd_core.data.sysu import prepare_sysu

    t = time.perf_counter()
    synth_sysu(tmp / "synth", ids=args.ids, images_per_cam=args.images_per_cam, seed=0)
    prepare_sysu(tmp / "synth", tmp / "cache", progress=False)
    print(f"built a synthetic SYSU-MM01 cache ({args.ids} ids) in {time.perf_counter() - t:.1f} s")
    return tmp / "cache"


def _time_loader(loader: TrainLoader, batches: int, consumer_s: float) -> tuple[float, float]:
    """(images/s, median ms the consumer waited per batch) over ``batches`` batches."""
    ep = 1
    it = loader.epoch(ep)
    for _ in range(3):  # warm-up: threads, page cache
        next(it)
    images, waits, count = 0, [], 0
    t = time.perf_counter()
    while count < batches:
        t0 = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            ep += 1
            it = loader.epoch(ep)
            continue
        waits.append(time.perf_counter() - t0)
        count += 1
        images += len(b)
        if consumer_s:
            time.sleep(consumer_s)
    dt = time.perf_counter() - t
    it.close()
    return images / dt, 1e3 * float(np.median(waits))


def _time_trainer(cfg, train, data, amp: str, steps: int) -> dict:
    """The torch trainer (mvd-ms at its own batch, channels_last, ``amp``) fed by the loader with
    the recipe's workers: images/s it consumes and the median ms it waits for a batch."""
    from mvd_core.config import replace
    from mvd_core.registry import create_backend

    run = {"backend": "torch", "device": "cpu", "channels_last": True,
           "amp": "bf16" if amp == "bf16" else "none"}
    c = replace(cfg, run=run, data={"root": data.root, "cache": data.cache, "dataset": "sysu"})
    backend = create_backend(c, train.num_classes)
    waits, images, dt = [], 0, 0.0
    with TrainLoader(train, c.data, seed=0) as loader:
        it = loader.epoch(1)
        backend.train_step(next(it), 1e-4)  # warm-up (first-call allocations)
        for _ in range(steps):
            t0 = time.perf_counter()
            b = next(it)
            t1 = time.perf_counter()
            backend.train_step(b, 1e-4)
            waits.append(t1 - t0)
            dt += time.perf_counter() - t0
            images += len(b)
        it.close()
    return {"setting": f"trainer torch {amp} + channels_last, mvd-ms {len(b)}/batch",
            "workers": c.data.workers, "images_per_s": images / dt,
            "wait_ms_per_batch": 1e3 * float(np.median(waits))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40, help="batches timed per setting")
    ap.add_argument("--cache", default="", help="existing SYSU-MM01 cache folder (default: build one)")
    ap.add_argument("--ids", type=int, default=60)
    ap.add_argument("--images-per-cam", type=int, default=8)
    ap.add_argument("--workers", default="0,1,2", help="worker counts to time")
    ap.add_argument("--step-ms", type=float, default=50.0, help="simulated training step of the busy consumer")
    ap.add_argument("--trainer", choices=["none", "fp32", "bf16"], default="none",
                    help="also time the real torch trainer (mvd-ms, channels_last; bf16 autocast) "
                         "consuming the loader's batches: its images/s next to the loader's")
    ap.add_argument("--trainer-steps", type=int, default=4)
    ap.add_argument("--json", default="out/bench_data.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as td:
        cache = _cache(args, Path(td))
        cfg = load_config("mvd-ms")
        data = dataclasses.replace(cfg.data, dataset="sysu", root=str(cache), cache=str(cache))
        train = load_train(data)
        assert isinstance(train.visible.images, np.memmap)
        rows = []

        # transform alone
        tf = TrainTransform(data, "visible")
        rng = np.random.default_rng(0)
        imgs = np.asarray(train.visible.images[: min(256, len(train.visible))])
        out = np.empty((3, data.height, data.width), np.float32)
        for i in range(32):
            tf(imgs[i % len(imgs)], rng, out)
        n = 1000
        t = time.perf_counter()
        for i in range(n):
            tf(imgs[i % len(imgs)], rng, out)
        rows.append({"setting": "TrainTransform (visible, 1 thread)", "workers": 0,
                     "images_per_s": n / (time.perf_counter() - t)})

        for w in [int(x) for x in args.workers.split(",")]:
            d = dataclasses.replace(data, workers=w, prefetch=max(4, data.prefetch))
            with TrainLoader(train, d, seed=0) as loader:
                ips, _ = _time_loader(loader, args.batches, consumer_s=0.0)
                rows.append({"setting": f"TrainLoader mvd-ms 64/batch, workers={w}", "workers": w,
                             "images_per_s": ips})
        # a busy consumer (a training step simulated by sleeping): how long does it wait?
        for w in (0, 2):
            d = dataclasses.replace(data, workers=w, prefetch=max(4, data.prefetch))
            with TrainLoader(train, d, seed=0) as loader:
                ips, wait_ms = _time_loader(loader, min(args.batches, 20), consumer_s=args.step_ms / 1e3)
                rows.append({"setting": f"  with a {args.step_ms:.0f} ms consumer, workers={w}", "workers": w,
                             "images_per_s": ips, "wait_ms_per_batch": wait_ms})

        if args.trainer != "none":
            rows.append(_time_trainer(cfg, train, data, args.trainer, args.trainer_steps))

    meta = {
        "height": data.height, "width": data.width, "batch": 2 * data.num_ids * data.num_pos,
        "augment": data.augment, "cpus": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "cache": args.cache or "synthetic",
    }
    print(f"\n{'setting':<45} {'images/s':>10} {'median wait ms':>14}")
    for r in rows:
        wait = f"{r['wait_ms_per_batch']:.1f}" if "wait_ms_per_batch" in r else ""
        print(f"{r['setting']:<45} {r['images_per_s']:>10.0f} {wait:>14}")
    best = max(r["images_per_s"] for r in rows if r["setting"].startswith("TrainLoader"))
    print(f"\nbest loader throughput: {best:.0f} images/s (target >= 400) at "
          f"{data.height}x{data.width}, {os.cpu_count()} CPUs")
    trainer = [r for r in rows if r["setting"].startswith("trainer")]
    if trainer:
        ratio = best / trainer[0]["images_per_s"]
        meta["loader_over_trainer"] = ratio
        print(f"loader / trainer images/s: {ratio:.1f}x (target >= 2x); the trainer waited a median "
              f"{trainer[0]['wait_ms_per_batch']:.1f} ms per batch")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
