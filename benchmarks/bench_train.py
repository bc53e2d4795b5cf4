"""Training-step throughput through ``Backend.train_step`` vs a bare framework loop, and the
backends side by side.

    python benchmarks/bench_train.py --backend torch mindspore [--ms-mode graph pynative]
        [--config tiny|mvd-ms|mvd-pt] [--batch 16 64] [--steps N] [--warmup N] [--rounds R]
        [--device cpu|cuda|GPU|Ascend] [--classes C] [--threads T]
        [--set section.key=value ...] [--json OUT]

Contenders: every ``--backend``, MindSpore once per ``--ms-mode``; all are built in ONE process
(the same threads, the same machine state) through ``mvd_core.registry.create_backend`` from the
same recipe. For each batch size: random normalised NumPy batches (uniform [0,1) pixels
normalised with the ImageNet mean/std; half visible, half thermal = grey replicated to 3
channels; B/8 identities × (4 visible + 4 thermal), at least 2 identities) are built once, every
contender is warmed up (allocator, autotuning, graph compilation), and then, ``--rounds`` times,
each contender in turn runs:

* ``backend``: ``Backend.train_step(batch, lr)`` -- NumPy in, Python floats out, i.e. what the
  driver pays per step (host→device copy, one device→host read of the loss terms);
* ``bare``: the same network, loss function and optimiser driven directly in the framework with
  the inputs already on the device and no loss read-back (a per-step device synchronisation
  only, so that the step is timed honestly).

Reported per contender: the first step's time (MindSpore: compiling its two blocks), median
step time, images/s, overhead % = (backend − bare) / bare
(target ≤ 10%), and its ``train_step`` time as a ratio of the first contender's (torch when it
is one; target for MindSpore ≤ 1.3× torch). Alternating rounds in one process is what makes the
ratio meaningful on a shared machine: load affects every contender alike. Memory adds up too:
at mvd-ms batch 16 (288×144) a MindSpore contender holds ~11 GiB of host memory, so on a 24 GiB
machine run torch with ONE MindSpore mode at a time (three contenders were OOM-killed there).

Adding a bare loop for another backend: write ``def _<name>_bare_loop(backend, batches, steps,
lr) -> list[float]`` (per-step seconds, one entry per step, warm-up excluded by the caller) and
register it in ``BARE_LOOPS``; see ``_torch_bare_loop``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def _mindspore_bare_loop(backend: Any, batches: list[Batch], steps: int, lr: float) -> list[float]:
    """The MindSpore backend's compiled gradient and optimiser blocks (``_train_fn``), called
    with Tensors made once; synchronised at the end of each step (on CPU, where
    ``mindspore.runtime.synchronize`` is not supported, by reading back the last parameter the
    update writes)."""
    import mindspore as ms

    if backend.device == "CPU":
        last = backend.weights[-1]

        def sync() -> None:
            last.asnumpy()
    else:
        sync = ms.runtime.synchronize
    data = []
    for b in batches:
        x, y, m = backend._inputs(b)
        data.append((x, y, m, backend._masks(len(b))))
    backend.net.set_train(True)
    times = []
    for i in range(steps):
        x, y, m, masks = data[i % len(data)]
        t0 = time.perf_counter()
        hyper = backend.opt.hyper(lr)  # counts the update (Adam's t)
        backend._train_fn(x, y, m, masks, hyper)
        sync()
        times.append(time.perf_counter() - t0)
    return times


#: backend name → bare loop (backend, batches, steps, lr) -> per-step seconds
BARE_LOOPS: dict[str, Callable[[Any, list[Batch], int, float], list[float]]] = {
    "torch": _torch_bare_loop,
    "mindspore": _mindspore_bare_loop,
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


def contenders(args: argparse.Namespace) -> list[tuple[str, Config]]:
    """(label, config) per contender: each backend, MindSpore once per --ms-mode."""
    out = []
    for name in args.backend:
        modes = args.ms_mode if name == "mindspore" else [""]
        for mode in modes:
            over = [f"run.backend={name}", f"run.device={args.device}", *args.set]
            if args.threads:
                over.append(f"run.threads={args.threads}")
            if mode:
                over.append(f"run.ms_mode={mode}")
            label = f"{name}/{mode}" if mode else name
            out.append((label, load_config(args.config, over)))
    return out


def run_batch(args: argparse.Namespace, cons: list[tuple[str, Config]], batch: int) -> list[dict[str, Any]]:
    """All contenders at one batch size, rounds alternating between them."""
    cfg0 = cons[0][1]
    batches = make_batches(cfg0, batch, args.classes, count=4, seed=batch)
    built = []
    for label, cfg in cons:
        backend = create_backend(cfg, args.classes)
        name, lr = cfg.run.backend, cfg.optim.lr
        # warm-up (allocator, autotuning, graph compilation); the first step's time is reported
        # as first_step_s (MindSpore: compiling the gradient and optimiser blocks)
        first = backend_loop(backend, batches, max(1, args.warmup), lr)[0]
        has_bare = bare_loop(name, backend, batches, args.warmup, lr) is not None
        built.append({"label": label, "name": name, "lr": lr, "backend": backend, "first": first,
                      "has_bare": has_bare, "t_backend": [], "t_bare": []})
    for _ in range(args.rounds):
        for c in built:
            c["t_backend"] += backend_loop(c["backend"], batches, args.steps, c["lr"])
            if c["has_bare"]:
                c["t_bare"] += bare_loop(c["name"], c["backend"], batches, args.steps, c["lr"]) or []
    rows = []
    ref = statistics.median(built[0]["t_backend"])
    for c in built:
        med = statistics.median(c["t_backend"])
        row: dict[str, Any] = {
            "contender": c["label"],
            "backend": c["name"],
            "batch": batch,
            "steps": len(c["t_backend"]),
            "backend_step_s": med,
            "backend_images_per_s": batch / med,
            "backend_step_s_all": c["t_backend"],
            "ratio_to_first": med / ref,
            "first_step_s": c["first"],
        }
        if c["has_bare"]:
            med_bare = statistics.median(c["t_bare"])
            row |= {
                "bare_step_s": med_bare,
                "bare_images_per_s": batch / med_bare,
                "bare_step_s_all": c["t_bare"],
                "overhead_pct": 100.0 * (med - med_bare) / med_bare,
            }
        mem = peak_device_memory(c["name"], c["backend"])
        if mem is not None:
            row["peak_device_mem_gib"] = mem
        rows.append(row)
    del built
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", nargs="+", default=["torch"], choices=["torch", "mindspore"])
    p.add_argument("--ms-mode", nargs="+", default=["pynative", "graph"],
                   choices=["graph", "pynative"], help="MindSpore execution mode(s)")
    p.add_argument("--config", default="tiny", help="recipe name or YAML path")
    p.add_argument("--batch", type=int, nargs="+", default=[16])
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and loop")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternations between contenders")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] (torch), GPU, Ascend (MindSpore)")
    p.add_argument("--classes", type=int, default=395, help="identities (SYSU-MM01: 395)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU compute threads of every backend (run.threads; 0: the project's policy)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    cons = contenders(args)
    first = cons[0][0]
    rows = []
    for b in args.batch:
        for row in run_batch(args, cons, b):
            rows.append(row)
            ov = row.get("overhead_pct")
            ratio = "" if row["contender"] == first else (
                f" | {row['ratio_to_first']:.2f}x {first}"
                + (" (target <= 1.3x)" if first == "torch" and row["backend"] == "mindspore" else "")
            )
            print(
                f"{row['contender']:18s} {cons[0][1].recipe:7s} batch {b:4d}: train_step "
                f"{row['backend_step_s'] * 1e3:9.1f} ms ({row['backend_images_per_s']:7.1f} img/s)"
                f" | first step {row['first_step_s']:6.1f} s"
                + (
                    f" | bare {row['bare_step_s'] * 1e3:9.1f} ms"
                    f" | overhead {ov:+.1f}% (target <= {TARGET_OVERHEAD_PCT:.0f}%)"
                    if ov is not None
                    else " | no bare loop for this backend"
                )
                + ratio,
                flush=True,
            )
    cfg = cons[0][1]
    result = {
        "benchmark": "train_step",
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "contenders": [label for label, _ in cons],
        "recipe": cfg.recipe,
        "device": args.device,
        "image": [cfg.data.height, cfg.data.width],
        "classes": args.classes,
        "amp": cfg.run.amp,
        "loss_preset": cfg.loss.preset,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "framework": {n: framework_info(n) for n in dict.fromkeys(args.backend)},
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "load_average": list(os.getloadavg()),
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
