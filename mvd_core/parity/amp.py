"""Mixed-precision parity: torch ``run.amp=bf16`` against torch fp32 on the same weights/batches.

The cross-framework parity (:mod:`mvd_core.parity`) holds fp32 against fp32 to ~1e-4; bf16 has
an 8-bit mantissa (relative rounding 2^-9 ≈ 2e-3 per value) and cannot meet those tolerances,
so this section has its own, ``amp-*`` in :data:`mvd_core.parity.tolerances.TOLERANCES`, each with
its reason. Sections (one report, :class:`mvd_core.parity.report.ParityReport`):

* ``amp-forward``: eval-mode taps (the test feature and the four observations' logits);
* ``amp-loss``: every loss term in train mode on one batch, no update;
* ``amp-steps``: the loss of each of ``steps`` optimiser steps on the same seeded batches
  (the forward before each update), i.e. bf16 training follows the fp32 trajectory.

No framework is imported here: both backends come from :func:`mvd_core.registry.create_backend`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mvd_core.config import Config, replace
from mvd_core.parity.compare import compare
from mvd_core.parity.inputs import make_batch
from mvd_core.parity.report import ParityReport
from mvd_core.registry import create_backend

log = logging.getLogger(__name__)

#: eval-mode taps compared in ``amp-forward``
FORWARD_TAPS = ("feat", "v_obs.logits", "i_obs.logits", "v_ms_obs.logits", "i_ms_obs.logits")


def _pair(cfg: Config, amp: str, channels_last: bool, num_classes: int) -> tuple[Any, Any]:
    base = replace(cfg, run={"backend": "torch", "amp": "none", "channels_last": False,
                             "precision": "fp32"})
    low = replace(base, run={"amp": amp, "channels_last": channels_last})
    ref = create_backend(base, num_classes)
    cand = create_backend(low, num_classes)
    cand.load_state(ref.state(), strict=True)
    return ref, cand


def run_amp_parity(
    cfg: Config,
    *,
    amp: str = "bf16",
    channels_last: bool = True,
    num_classes: int = 16,
    batch: int = 16,
    steps: int = 3,
    seed: int = 0,
) -> ParityReport:
    """Torch ``amp`` (+ channels_last) vs torch fp32 on ``cfg``'s model/loss/optimiser, on the
    device ``cfg.run.device``; dropout is switched off (the two would draw the same masks, but
    a mask multiplies a rounding difference into a different unit)."""
    cfg = replace(cfg, model={"dropout": 0.0}, run={"seed": seed})
    ref, cand = _pair(cfg, amp, channels_last, num_classes)
    rng = np.random.default_rng(seed)
    batches = [make_batch(rng, cfg, batch, num_classes) for _ in range(max(1, steps))]
    report = ParityReport(
        backends=("torch-fp32", f"torch-{amp}" + ("+channels_last" if channels_last else "")),
        settings={"amp": amp, "channels_last": channels_last, "batch": batch, "steps": steps,
                  "seed": seed, "device": cfg.run.device, "recipe": cfg.recipe},
    )
    fr, fc = ref.forward(batches[0], train=False), cand.forward(batches[0], train=False)
    for tap in FORWARD_TAPS:
        report.rows.append(compare("amp-forward", tap, fc[tap], fr[tap], "amp-forward"))
    lr_, lc = ref.loss_terms(batches[0]), cand.loss_terms(batches[0])
    for k in lr_:
        report.rows.append(compare("amp-loss", k, lc[k], lr_[k], "amp-loss"))
    lr0 = cfg.optim.lr
    for i, b in enumerate(batches, start=1):
        tr, tc = ref.train_step(b, lr0), cand.train_step(b, lr0)
        report.rows.append(compare("amp-steps", f"step {i} total", tc["total"], tr["total"], "amp-steps"))
    log.info("amp parity: %d rows, %d failing", len(report.rows), len(report.failures()))
    return report


def relative_loss_gap(ref: list[float], cand: list[float]) -> float:
    """max_i |cand_i − ref_i| / |ref_i| over two loss trajectories (benchmarks, tests)."""
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64)
    if r.shape != c.shape or r.size == 0:
        raise ValueError(f"loss trajectories: expected equal non-empty lengths, got {r.shape} and {c.shape}")
    return float(np.max(np.abs(c - r) / np.maximum(np.abs(r), 1e-12)))


__all__ = ["FORWARD_TAPS", "run_amp_parity", "relative_loss_gap"]
