"""Multi-process scaling: ``mvd train`` in 1 process vs ``--nproc N``, same per-rank batch.

    python benchmarks/bench_scale.py [--backend torch|mindspore] [--nproc 2] [--config tiny]
        [--steps 8] [--warmup 2] [--set section.key=value ...] [--json OUT]

Both runs train on the same synthetic SYSU-MM01 set (``mvd_core.data.synth``) through the real
CLI, one after the other; throughput is read from each run's ``log.jsonl`` (the rank-0 step
records' time stamps, first ``--warmup`` steps dropped). With N ranks every step trains N times
the images, so

    efficiency = (images/s with N ranks) / (N × images/s with 1 process)

(1.0 = perfect scaling). On a CPU the ranks share the cores: each rank gets
``OMP_NUM_THREADS`` (default 1) threads, so N ranks on N free cores is the fair comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    from mvd_core.io import atomic_write_text
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mvd_core.io import atomic_write_text

MVD = Path(sys.executable).with_name("mvd")


def _throughput(run: Path, warmup: int, images_per_step: int) -> tuple[float, int]:
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    t = [r["time"] for r in recs if "total" in r and "eval" not in r][warmup:]
    if len(t) < 2:
        raise SystemExit(f"{run}: fewer than {warmup + 2} step records; raise --steps")
    return images_per_step * (len(t) - 1) / (t[-1] - t[0]), len(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="torch", choices=("torch", "mindspore"))
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp) / "SYSU-MM01"
        subprocess.run([str(MVD), "synth", "--layout", "sysu", "--out", str(root)], env=env,
                       check=True, capture_output=True)
        common = ["train", "--config", args.config, "--backend", args.backend, "--data-path",
                  str(root), "--out", tmp, "--epochs", "2", "--stop-after", "1",
                  "--set", f"schedule.steps_per_epoch={args.steps}", "--set", "data.workers=1"]
        for s in args.sets:
            common += ["--set", s]
        if args.backend == "mindspore":
            common += ["--device", "CPU"]
        rows = []
        for n in (1, args.nproc):
            cmd = [str(MVD), *common, "--ckpt", f"n{n}"] + (["--nproc", str(n)] if n > 1 else [])
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
            cfg = yaml.safe_load((Path(tmp) / f"n{n}" / "config.yaml").read_text())
            per_rank = 2 * cfg["data"]["num_ids"] * cfg["data"]["num_pos"]
            ips, steps = _throughput(Path(tmp) / f"n{n}", args.warmup, per_rank * n)
            rows.append({"nproc": n, "images_per_s": ips, "timed_steps": steps, "per_rank_batch": per_rank})
    eff = rows[1]["images_per_s"] / (args.nproc * rows[0]["images_per_s"])
    result = {"benchmark": "scale", "backend": args.backend, "config": args.config,
              "threads_per_rank": env["OMP_NUM_THREADS"], "cpu_count": os.cpu_count(),
              "rows": rows, "efficiency": eff,
              "command": "bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    for r in rows:
        print(f"nproc {r['nproc']}: {r['images_per_s']:.1f} images/s ({r['timed_steps']} steps timed)")
    print(f"scaling efficiency at {args.nproc} ranks: {eff:.2f}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
