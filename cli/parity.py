"""`mvd parity`: show that the torch and MindSpore MVDs compute the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import ConfigOpt, MsModeOpt, SetOpt, build_config, cli_errors, fail


def register(app: typer.Typer) -> None:
    app.command("parity")(parity)


@cli_errors
def parity(
    config: ConfigOpt = "tiny",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Canonical weights (.safetensors checkpoint); default: seeded random ones.")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Batch size (multiple of 4, >= 8).")] = 16,
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps compared.")] = 5,
    ms_mode: MsModeOpt = None,
    sets: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    torch_device: Annotated[str, typer.Option("--torch-device")] = "cpu",
    ms_device: Annotated[str, typer.Option("--ms-device")] = "CPU",
    perturb: Annotated[float, typer.Option("--perturb", help="Self-check: add N(0, x²) noise to the MindSpore weights; parity must then fail.")] = 0.0,
    residual_gain: Annotated[float, typer.Option("--residual-gain", help="Seeded weights only: initial gamma of every bottleneck's last BatchNorm (model.residual_gain; at 1.0 the train-mode trunk amplifies fp32 rounding beyond every tolerance).")] = 0.1,
    no_fp64_arbiter: Annotated[bool, typer.Option("--no-fp64-arbiter", help="Judge every row by its fp32 tolerance alone (no torch float64 run; the trunk gradients/parameters then fail on fp32 ReLU sign flips).")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write every comparison as JSON.")] = None,
    onnx: Annotated[Optional[str], typer.Option("--onnx", help="A third contender: export this backend's (torch or mindspore) test-feature network to ONNX after the steps and compare onnxruntime's features with it and with the reference.")] = None,
) -> None:
    """Run both backends on the same weights and inputs; print name, max |Δ|, relative error,
    cosine, tolerance, pass for every tap, loss, gradient, parameter and metric. Exit 1 on any
    failure. A third model, torch in float64, arbitrates the gradient, parameter and feature rows
    that fail their fp32 tolerance: they pass iff MindSpore is within K_NOISE (gradients) or
    K_NOISE_STEPS (after the steps) x the fp32 noise floor of it, the floor being the larger of
    two fp32 samples (the reference, and the reference on permuted batches); gradients that are
    0 in exact arithmetic are judged against their layer's scale (mvd_core/parity/tolerances.py,
    "noise-floor", "noise-floor-steps", "grad-zero")."""
    from mvd_core.parity.runner import run_parity

    cfg = build_config(config, sets, None, None, ms_mode)
    report = run_parity(
        cfg, weights=weights, batch=batch, steps=steps, seed=seed,
        backends=("mindspore", "torch"), devices=(ms_device, torch_device), perturb=perturb,
        residual_gain=residual_gain, arbiter=not no_fp64_arbiter, onnx=onnx,
    )
    typer.echo(report.to_table())
    if json_out is not None:
        report.write_json(json_out)
        typer.echo(f"json: {json_out}")
    if not report.passed:
        raise fail(f"parity failed: {len(report.failures())} comparisons out of tolerance", 1)
