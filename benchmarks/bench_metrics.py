"""Benchmark mvd_core.eval.metrics.evaluate against per-query evaluators shaped like the public codes.

    python benchmarks/bench_metrics.py [--json out.json] [--repeat 5] [--chunk N] [--quick]

Two problems, both with synthetic clustered float32 features (identity centre + camera shift +
noise), distances from ``mvd_core.eval.metrics.distance`` (not timed):

(a) Market-1501 sized, 3368 queries x 15913 gallery (751 identities + 2793 distractors),
    protocol "market" (same pid and camera removed).
(b) SYSU-MM01 single-shot all-search, 3803 IR queries x ~301 gallery, 10 trials drawn by
    ``sysu_gallery_indices`` from a 6775-image visible set; protocol "sysu" (cam 3 / cam 2
    exclusion, CMC on the identity-de-duplicated list). Only the evaluation is timed; every
    evaluator gets the same per-trial distance matrices.

Baselines, written here in the shape of torchreid's ``evaluate_py`` / AGW's ``eval_sysu``: one
``np.argsort`` of the whole matrix, then a Python loop over queries of NumPy operations, with
precision computed by a list comprehension and (SYSU) de-duplication by ``np.unique`` + a list.
A "lean" variant of the same loop (no list comprehensions) is timed too, for context.

Times: ours = median of ``--repeat`` runs; each baseline runs once. Memory: the peak of what
an evaluator allocates (tracemalloc, in a separate untimed run; for the baselines measured on
the lean loop, which allocates the same arrays); the process's peak RSS is printed at the end. Targets: (a) >= 50x, (b) >= 20x against the public-code shape.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from mvd_core.eval.metrics import EvalResult, distance, evaluate
    from mvd_core.eval.protocols import sysu_gallery_indices
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mvd_core.eval.metrics import EvalResult, distance, evaluate
    from mvd_core.eval.protocols import sysu_gallery_indices

NOISE_M, NOISE_S = 1.5, 2.2  # feature noise: sets how hard the synthetic problems are
TARGETS = {"market": 50.0, "sysu": 20.0}


# --------------------------------------------------------------------------------------------
# baselines: one argsort, then a Python loop over queries


def _finish(curves: list, aps: list, inps: list, max_rank: int) -> EvalResult:
    return EvalResult(
        cmc=np.mean(np.asarray(curves, dtype=np.float64), axis=0),
        mAP=float(np.mean(aps)),
        mINP=float(np.mean(inps)),
        num_valid=len(curves),
    )


def _pad(curve: np.ndarray, max_rank: int) -> np.ndarray:
    curve = curve[:max_rank]
    return np.concatenate([curve, np.full(max_rank - curve.shape[0], curve[-1])])


def per_query_eval(distmat, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=20, lean=False):
    """Per-query evaluator of the public codes' shape (see the module docstring)."""
    indices = np.argsort(distmat, axis=1)
    ranked_pids = g_pids[indices]
    matches = (ranked_pids == q_pids[:, np.newaxis]).astype(np.int32)
    curves, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        if protocol == "market":
            remove = (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])
        else:  # sysu
            remove = (q_cams[i] == 3) & (g_cams[order] == 2)
        keep = np.invert(remove)
        hits = matches[i][keep]
        if not np.any(hits):
            continue
        cum = hits.cumsum()
        last = np.max(np.where(hits == 1))
        inps.append(cum[last] / (last + 1.0))
        if protocol == "sysu":
            kept = ranked_pids[i][keep]
            first_seen = np.unique(kept, return_index=True)[1]
            if lean:
                dedup = kept[np.sort(first_seen)]
            else:
                dedup = np.asarray([kept[j] for j in sorted(first_seen)])
            curve = (dedup == q_pids[i]).astype(np.int32).cumsum()
        else:
            curve = cum.copy()
            curve[curve > 1] = 1
        curves.append(_pad(curve, max_rank))
        if lean:
            precision = cum / np.arange(1.0, cum.shape[0] + 1)
        else:
            precision = np.asarray([x / (k + 1.0) for k, x in enumerate(cum)])
        aps.append((precision * hits).sum() / hits.sum())
    return _finish(curves, aps, inps, max_rank)


# --------------------------------------------------------------------------------------------
# synthetic problems


def _features(rng, pids, cams, centers, cam_shift, noise):
    dim = centers.shape[1]
    f = centers[pids] + cam_shift[cams] + noise * rng.standard_normal((pids.shape[0], dim))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f.astype(np.float32)


def market_problem(rng, scale: float, dim: int = 256):
    n_q, n_id, n_distractor = int(3368 * scale), 751, int(2793 * scale)
    n_g_id = int(15913 * scale) - n_distractor
    centers = rng.standard_normal((n_id + 1, dim)) / np.sqrt(dim)
    cam_shift = 0.6 * rng.standard_normal((7, dim)) / np.sqrt(dim)
    q_pids = rng.integers(1, n_id + 1, n_q)
    g_pids = np.concatenate([rng.integers(1, n_id + 1, n_g_id), np.zeros(n_distractor, int)])
    q_cams, g_cams = rng.integers(1, 7, n_q), rng.integers(1, 7, g_pids.shape[0])
    g_centers = centers.copy()
    g_centers[0] = 0.0  # distractors: no identity direction, noise only
    q = _features(rng, q_pids, q_cams, centers, cam_shift, NOISE_M / np.sqrt(dim))
    g = _features(rng, g_pids, g_cams, g_centers, cam_shift, NOISE_M / np.sqrt(dim))
    g[g_pids == 0] = _features(
        rng,
        np.zeros((g_pids == 0).sum(), int),
        g_cams[g_pids == 0],
        rng.standard_normal((1, dim)),
        cam_shift,
        1.0,
    )
    return distance(q, g), q_pids, g_pids, q_cams, g_cams


def sysu_problem(rng, scale: float, trials: int, dim: int = 256):
    n_id, n_q, n_vis = 96, int(3803 * scale), int(6775 * scale)
    centers = rng.standard_normal((n_id + 1, dim)) / np.sqrt(dim)
    cam_shift = 0.9 * rng.standard_normal((7, dim)) / np.sqrt(dim)  # a modality gap
    present = rng.random((n_id + 1, 7)) < 0.8  # ~20 % of (identity, camera) pairs missing
    pairs = [(p, c) for p in range(1, n_id + 1) for c in (1, 2, 4, 5) if present[p, c]]
    pick = rng.integers(0, len(pairs), n_vis)
    g_pids = np.array([pairs[k][0] for k in pick])
    g_cams = np.array([pairs[k][1] for k in pick])
    q_pids, q_cams = rng.integers(1, n_id + 1, n_q), rng.choice([3, 6], n_q)
    q = _features(rng, q_pids, q_cams, centers, cam_shift, NOISE_S / np.sqrt(dim))
    g = _features(rng, g_pids, g_cams, centers, cam_shift, NOISE_S / np.sqrt(dim))
    full = distance(q, g)
    per_trial = []
    for t in range(trials):
        idx = sysu_gallery_indices(g_pids, g_cams, "all", "single", t)
        per_trial.append((np.ascontiguousarray(full[:, idx]), g_pids[idx], g_cams[idx]))
    return per_trial, q_pids, q_cams


# --------------------------------------------------------------------------------------------
# measurement


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def peak_extra_mib(fn: Callable[[], Any]) -> float:
    """Peak of the memory allocated during ``fn()`` (NumPy buffers and Python objects, as
    traced by tracemalloc), in MiB. Run apart from the timed runs (tracing slows Python)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def compare(a: EvalResult, b: EvalResult) -> float:
    return float(
        max(
            np.abs(a.cmc - b.cmc).max(),
            abs(a.mAP - b.mAP),
            abs(a.mINP - b.mINP),
            abs(a.num_valid - b.num_valid),
        )
    )


def run_case(
    name,
    ours: Callable[[], Any],
    baselines: dict[str, Callable[[], Any]],
    repeat,
    merge: Callable[[Any], EvalResult],
) -> dict[str, Any]:
    runs = [timed(ours) for _ in range(repeat)]
    ours_s = statistics.median(r[1] for r in runs)
    result = merge(runs[0][0])
    case: dict[str, Any] = {
        "ours_s": ours_s,
        "ours_runs_s": [r[1] for r in runs],
        "ours_peak_extra_mib": peak_extra_mib(ours),
        "R1": 100 * result.cmc[0],
        "mAP": 100 * result.mAP,
        "mINP": 100 * result.mINP,
        "baselines": {},
    }
    label = f"ours (median of {repeat})"
    print(
        f"  {label:<22} {ours_s:8.3f} s   peak extra memory "
        f"{case['ours_peak_extra_mib']:7.1f} MiB   R1 {case['R1']:.2f}  mAP {case['mAP']:.2f}  "
        f"mINP {case['mINP']:.2f}",
        flush=True,
    )
    for label, fn in baselines.items():
        out, seconds = timed(fn)
        diff = compare(result, merge(out))
        entry = {"seconds": seconds, "ratio": seconds / ours_s, "max_abs_diff": diff}
        mem = ""
        if label.startswith("lean"):  # the same arrays as the public-code shape, traced faster
            entry["peak_extra_mib"] = peak_extra_mib(fn)
            mem = f"   peak extra memory {entry['peak_extra_mib']:7.1f} MiB"
        case["baselines"][label] = entry
        print(
            f"  {label:<22} {seconds:8.3f} s   ratio {seconds / ours_s:7.1f}x   "
            f"max |diff| {diff:.1e}{mem}",
            flush=True,
        )
    target = TARGETS[name]
    ratio = case["baselines"]["public-code shape"]["ratio"]
    case.update(target_ratio=target, met=ratio >= target)
    print(f"  => {ratio:.1f}x vs target {target:.0f}x: {'MET' if ratio >= target else 'MISSED'}")
    return case


def _mean_result(results: list[EvalResult]) -> EvalResult:
    return EvalResult(
        cmc=np.mean([r.cmc for r in results], axis=0),
        mAP=float(np.mean([r.mAP for r in results])),
        mINP=float(np.mean([r.mINP for r in results])),
        num_valid=sum(r.num_valid for r in results),
    )


def bench_market(rng: np.random.Generator, scale: float, args: argparse.Namespace) -> dict:
    d, qp, gp, qc, gc = market_problem(rng, scale)
    print(f"(a) Market-1501 sized: {d.shape[0]} queries x {d.shape[1]} gallery, {d.dtype}")
    return dict(
        shape=list(d.shape),
        **run_case(
            "market",
            lambda: evaluate(d, qp, gp, qc, gc, protocol="market", chunk=args.chunk),
            {
                "public-code shape": lambda: per_query_eval(d, qp, gp, qc, gc, "market"),
                "lean per-query loop": lambda: per_query_eval(
                    d, qp, gp, qc, gc, "market", lean=True
                ),
            },
            args.repeat,
            lambda r: r,
        ),
    )


def bench_sysu(rng: np.random.Generator, scale: float, args: argparse.Namespace) -> dict:
    per_trial, qp, qc = sysu_problem(rng, scale, args.trials)
    widths = [t[0].shape[1] for t in per_trial]
    print(
        f"(b) SYSU-MM01 single-shot all-search: {len(qp)} queries x {min(widths)}-"
        f"{max(widths)} gallery x {len(per_trial)} trials"
    )

    def ours() -> list[EvalResult]:
        return [
            evaluate(dm, qp, g_p, qc, g_c, protocol="sysu", chunk=args.chunk)
            for dm, g_p, g_c in per_trial
        ]

    def baseline(lean: bool) -> list[EvalResult]:
        return [
            per_query_eval(dm, qp, g_p, qc, g_c, "sysu", lean=lean) for dm, g_p, g_c in per_trial
        ]

    return dict(
        queries=len(qp),
        gallery=widths,
        **run_case(
            "sysu",
            ours,
            {
                "public-code shape": lambda: baseline(False),
                "lean per-query loop": lambda: baseline(True),
            },
            args.repeat,
            _mean_result,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the measurements to this JSON file")
    ap.add_argument("--repeat", type=int, default=5, help="runs of ours per case (median)")
    ap.add_argument("--chunk", type=int, default=None, help="evaluate(chunk=...) (default auto)")
    ap.add_argument("--trials", type=int, default=10, help="SYSU trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1/8-size problems (smoke run)")
    args = ap.parse_args(argv)
    scale = 0.125 if args.quick else 1.0
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "benchmark": "bench_metrics",
        "quick": args.quick,
        "chunk": args.chunk,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cases": {},
    }

    report["cases"]["market"] = bench_market(rng, scale, args)
    report["cases"]["sysu"] = bench_sysu(rng, scale, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["process_peak_rss_mib"] = peak
    print(f"process peak RSS: {peak:.0f} MiB (includes the synthetic data and the baselines)")
    if args.json:
        from mvd_core.io import atomic_write_json

        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0 if all(c["met"] for c in report["cases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
