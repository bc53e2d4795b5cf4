"""Training-step throughput through ``Backend.train_step`` vs a bare framework loop.

    python benchmarks/bench_train.py --backend torch [--config tiny|mvd-ms|mvd-pt]
        [--batch 16 64] [--steps N] [--warmup N] [--rounds R] [--device cpu|cuda|GPU|Ascend]
        [--classes C] [--threads T] [--set section.key=value ...] [--json OUT]

For each batch size: random normalised NumPy batches (uniform [0,1) pixels normalised with the
ImageNet mean/std; half visible, half thermal = grey replicated to 3 channels; B/8 identities ×
(4 visible + 4 thermal), at least 2 identities) are built once, the backend is built through
``mvd_core.registry.create_backend``, and then, ``--rounds`` times alternately:

* ``backend``: ``Backend.train_step(batch, lr)`` -- NumPy in, Python floats out, i.e. what the
  driver pays per step (host→device copy, one device→host read of the loss terms);
* ``bare``: the same network, loss function and optimiser driven directly in the framework with
  the inputs already on the device and no loss read-back (a per-step device synchronisation
  only, so that the step is timed honestly).

Reported: median step time, images/s, and overhead % = (backend − bare) / bare (target ≤ 10%).
A backend without a bare loop registered in :data:`BARE_LOOPS` reports the backend numbers only.

Adding a bare loop for another backend: write ``def _<name>_bare_loop(backend, batches, steps,
lr) -> list[float]`` (per-step seconds, timed by the caller's convention: one entry per step,
warm-up excluded by the caller) and register it in ``BARE_LOOPS``; see ``_torch_bare_loop``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from mvd_core.config import Config, load_config
    from mvd_core.interface import THERMAL, VISIBLE, Batch
    from mvd_core.registry import create_backend
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mvd_core.config import Config, load_config
    from mvd_core.interface import THERMAL, VISIBLE, Batch
    from mvd_core.registry import create_backend

log = logging.getLogger("bench_train")

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
TARGET_OVERHEAD_PCT = 10.0


def make_batches(cfg: Config, batch: int, classes: int, count: int, seed: int) -> list[Batch]:
    """``count`` random batches of ``batch`` images at the recipe's image size."""
    if batch < 4 or batch % 2:
        raise SystemExit(f"--batch {batch}: expected an even number >= 4")
    rng = np.random.default_rng(seed)
    h, w = cfg.data.height, cfg.data.width
    ids = max(2, batch // 8)
    out = []
    for _ in range(count):
        labels = np.resize(np.repeat(rng.choice(classes, ids, replace=False), 2), batch)
        modality = np.tile([VISIBLE, THERMAL], batch // 2)
        px = rng.random((batch, 3, h, w), dtype=np.float32)
        grey = px.mean(axis=1, keepdims=True)
        px[modality == THERMAL] = np.repeat(grey[modality == THERMAL], 3, axis=1)
        images = ((px - MEAN) / STD).astype(np.float32)
        out.append(Batch(images, labels.astype(np.int64), modality.astype(np.int64)))
    return out


# --------------------------------------------------------------------------------------------
# bare loops, one per backend


def _torch_bare_loop(backend: Any, batches: list[Batch], steps: int, lr: float) -> list[float]:
    """The torch backend's network, ``losses.mvd_loss`` and an optimiser of the same kind and
    groups, inputs already on the device; returns per-step seconds."""
    import torch

    from mvd_backends.torch import losses

    net = backend.net
    dev = backend.device
    cfg = backend.cfg
    data = [
        (
            torch.from_numpy(b.images).to(dev),
            torch.from_numpy(b.labels).to(dev),
            torch.from_numpy(b.modality).to(dev),
        )
        for b in batches
    ]
    groups = [{"params": g["params"], "lr": lr * g["lr_mult"]} for g in backend._opt.param_groups]
    o = cfg.optim
    if o.name == "adam":
        opt = torch.optim.Adam(
            groups, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, foreach=True
        )
    else:
        opt = torch.optim.SGD(
            groups,
            lr=lr,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
            foreach=True,
        )
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.run.amp)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    net.train()
    times = []
    for i in range(steps):
        x, y, m = data[i % len(data)]
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if amp is not None:
            with torch.autocast("cuda", dtype=amp):
                out = net(x)
        else:
            out = net(x)
        total = losses.mvd_loss(out, y, m, cfg.loss)["total"]
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        else:
            total.backward()
            opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


#: backend name → bare loop (backend, batches, steps, lr) -> per-step seconds
BARE_LOOPS: dict[str, Callable[[Any, list[Batch], int, float], list[float]]] = {
    "torch": _torch_bare_loop,
}


def bare_loop(
    backend_name: str, backend: Any, batches: list[Batch], steps: int, lr: float
) -> list[float] | None:
    """Per-step seconds of ``backend_name``'s bare loop, or None if it has none."""
    fn = BARE_LOOPS.get(backend_name)
    return None if fn is None else fn(backend, batches, steps, lr)


def backend_loop(backend: Any, batches: list[Batch], steps: int, lr: float) -> list[float]:
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        backend.train_step(batches[i % len(batches)], lr)
        times.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------------------------


def framework_info(name: str) -> dict[str, Any]:
    if name == "torch":
        import torch

        info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
        return info
    if name == "mindspore":
        import mindspore

        return {"mindspore": mindspore.__version__}
    return {}


def peak_device_memory(name: str, backend: Any) -> float | None:
    """Peak device memory in GiB where the framework reports it."""
    if name == "torch":
        import torch

        if backend.device.type == "cuda":
            return torch.cuda.max_memory_allocated(backend.device) / 2**30
    return None


def run_one(args: argparse.Namespace, cfg: Config, batch: int) -> dict[str, Any]:
    batches = make_batches(cfg, batch, args.classes, count=4, seed=batch)
    backend = create_backend(cfg, args.classes)
    lr = cfg.optim.lr
    name = cfg.run.backend
    # warm-up (allocator, autotuning, graph compilation)
    backend_loop(backend, batches, args.warmup, lr)
    has_bare = bare_loop(name, backend, batches, args.warmup, lr) is not None
    t_backend: list[float] = []
    t_bare: list[float] = []
    for _ in range(args.rounds):
        t_backend += backend_loop(backend, batches, args.steps, lr)
        if has_bare:
            t_bare += bare_loop(name, backend, batches, args.steps, lr) or []
    med = statistics.median(t_backend)
    row: dict[str, Any] = {
        "batch": batch,
        "steps": len(t_backend),
        "backend_step_s": med,
        "backend_images_per_s": batch / med,
        "backend_step_s_all": t_backend,
    }
    if has_bare:
        med_bare = statistics.median(t_bare)
        row |= {
            "bare_step_s": med_bare,
            "bare_images_per_s": batch / med_bare,
            "bare_step_s_all": t_bare,
            "overhead_pct": 100.0 * (med - med_bare) / med_bare,
        }
    mem = peak_device_memory(name, backend)
    if mem is not None:
        row["peak_device_mem_gib"] = mem
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="torch", choices=["torch", "mindspore"])
    p.add_argument("--config", default="tiny", help="recipe name or YAML path")
    p.add_argument("--batch", type=int, nargs="+", default=[16])
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and loop")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternations backend/bare")
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=int, default=395, help="identities (SYSU-MM01: 395)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    cfg = load_config(
        args.config, [f"run.backend={args.backend}", f"run.device={args.device}", *args.set]
    )
    if args.backend == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for b in args.batch:
        row = run_one(args, cfg, b)
        rows.append(row)
        ov = row.get("overhead_pct")
        print(
            f"{args.backend:9s} {cfg.recipe:7s} batch {b:4d}: train_step {row['backend_step_s'] * 1e3:9.1f} ms"
            f" ({row['backend_images_per_s']:7.1f} img/s)"
            + (
                f" | bare {row['bare_step_s'] * 1e3:9.1f} ms ({row['bare_images_per_s']:7.1f} img/s)"
                f" | overhead {ov:+.1f}% (target <= {TARGET_OVERHEAD_PCT:.0f}%)"
                if ov is not None
                else " | no bare loop for this backend"
            ),
            flush=True,
        )
    result = {
        "benchmark": "train_step",
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "backend": args.backend,
        "recipe": cfg.recipe,
        "device": args.device,
        "image": [cfg.data.height, cfg.data.width],
        "classes": args.classes,
        "amp": cfg.run.amp,
        "loss_preset": cfg.loss.preset,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "framework": framework_info(args.backend),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rows": rows,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
