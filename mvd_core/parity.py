"""`mvd parity`: build two backends (torch and MindSpore by default) from the same weights and
the same seeded NumPy inputs and show, side by side, that they compute the same model:

1. every forward tap, eval mode and train mode (dropout off, BatchNorm on batch statistics);
2. every loss term and the total for each preset and both KL modes;
3. the gradient of every parameter, and every parameter after K optimiser steps on the real
   learning-rate schedule (plus the loss of every step);
4. test features of a small synthetic test set and the resulting CMC / mAP / mINP.

Dropout is switched off (``model.dropout=0``): the two frameworks cannot draw the same masks.
Tolerances come from :mod:`mvd_core.tolerances`. Framework-free: backends come from the registry.

Seeded weights are *conditioned*: they are initialised with ``model.residual_gain`` = 0.1 (every
bottleneck's last BatchNorm γ; trained ResNets have small residual γ, torchvision's
``zero_init_residual`` sets them to 0; the tiny recipe trains from 0.1 too). At γ = 1 the 16-block train-mode trunk is chaotic: it
amplifies fp32 rounding ~300× in the forward pass and far more in the backward pass, so that
torch fp32 differs from torch fp64 by 6e-5 (features) and 1–3.5 % (per-parameter gradients), and
torch from itself with another convolution kernel (oneDNN off, or channels-last) by 1.5–1.9e-4
and 8–9 % — a check on those weights measures the rounding, not the implementations. With
γ = 0.1 both backends agree with torch fp64 to ~1.5e-6 (taps) and ~3e-6 (median gradient).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.config import Config, replace
from mvd_core.devices import normalize_device
from mvd_core.interface import TAP_NAMES, THERMAL, VISIBLE, Batch
from mvd_core.registry import create_backend
from mvd_core.schedule import lr_at
from mvd_core.tolerances import TOLERANCES, Tolerance

log = logging.getLogger(__name__)

#: the loss settings compared in section 2: (label, loss-section overrides)
LOSS_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("id", {"preset": "id"}),
    ("id+tri", {"preset": "id+tri"}),
    ("id+tri+kldiv/proper", {"preset": "id+tri+kldiv", "kl": "proper"}),
    ("id+tri+kldiv/legacy", {"preset": "id+tri+kldiv", "kl": "legacy"}),
    ("mvd-pt/proper", {"preset": "mvd-pt", "kl": "proper", "triplet": "ranked_list", "label_smoothing": 0.1}),
    ("mvd-pt/legacy", {"preset": "mvd-pt", "kl": "legacy", "triplet": "ranked_list", "label_smoothing": 0.1}),
)


@dataclass(frozen=True)
class Row:
    section: str
    name: str
    max_abs: float
    rel: float
    cosine: float
    tolerance: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare(section: str, name: str, a: Any, b: Any, tol_name: str) -> Row:
    """Compare ``a`` (candidate) with ``b`` (reference) under tolerance ``tol_name``."""
    tol: Tolerance = TOLERANCES[tol_name]
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        return Row(section, f"{name} (shape {np.shape(a)} vs {np.shape(b)})", np.inf, np.inf, 0.0, tol_name, False)
    if x.size == 0:
        return Row(section, name, 0.0, 0.0, 1.0, tol_name, True)
    d = np.abs(x - y)
    finite = bool(np.all(np.isfinite(x)) and np.all(np.isfinite(y)))
    max_abs = float(d.max()) if finite else np.inf
    ny = float(np.linalg.norm(y))
    nd = float(np.linalg.norm(x - y)) if finite else np.inf
    rel = nd / ny if ny > 0 else (0.0 if nd == 0 else np.inf)
    nx = float(np.linalg.norm(x))
    cosine = float(x @ y / (nx * ny)) if nx > 0 and ny > 0 else (1.0 if nx == ny else 0.0)
    if not finite:
        ok = False
    elif tol.kind == "allclose":
        ok = bool(np.all(d <= tol.atol + tol.rtol * np.abs(y)))
    elif tol.kind == "norm":
        ok = nd <= tol.atol + tol.rtol * ny
    else:  # abs
        ok = max_abs <= tol.atol
    return Row(section, name, max_abs, rel, cosine, tol_name, ok)


@dataclass
class ParityReport:
    backends: tuple[str, str]
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def summary_rows(self, per_section_limit: int = 1) -> list[Row]:
        """Rows for the console: every row of small sections; for the per-parameter sections
        (grad/, params/) one aggregate row (the worst) plus every failing parameter."""
        out: list[Row] = []
        groups: dict[str, list[Row]] = {}
        for r in self.rows:
            groups.setdefault(r.section, []).append(r)
        for rows in groups.values():
            if len(rows) <= 40:
                out.extend(rows)
                continue
            worst = max(rows, key=lambda r: (not r.passed, r.rel))
            n_fail = sum(not r.passed for r in rows)
            out.append(dataclasses.replace(
                worst, name=f"worst of {len(rows)}: {worst.name}" + (f" ({n_fail} failing)" if n_fail else "")))
            out.extend(r for r in rows if not r.passed and r is not worst)
        return out

    def to_table(self) -> str:
        head = f"{'section':<22} {'name':<44} {'max|Δ|':>10} {'rel err':>10} {'cosine':>10} {'tolerance':>18} pass"
        lines = [f"parity: {self.backends[0]} (candidate) vs {self.backends[1]} (reference)", head, "-" * len(head)]
        for r in self.summary_rows():
            t = TOLERANCES[r.tolerance]
            tol = f"{r.tolerance} " + (f"{t.atol:g}" if t.kind == "abs" else f"{t.rtol:g}/{t.atol:g}")
            lines.append(
                f"{r.section:<22} {r.name[:44]:<44} {r.max_abs:>10.3g} {r.rel:>10.3g} {r.cosine:>10.6f} "
                f"{tol:>18} {'ok' if r.passed else 'FAIL'}"
            )
        n_fail = len(self.failures())
        lines.append("-" * len(head))
        lines.append(
            f"{len(self.rows)} comparisons, {n_fail} failed: " + ("PASS" if self.passed else "FAIL")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": list(self.backends),
            "settings": self.settings,
            "passed": self.passed,
            "tolerances": {k: dataclasses.asdict(v) for k, v in TOLERANCES.items()},
            "rows": [r.to_dict() for r in self.rows],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        from mvd_core.config import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=float))
        return Path(path)


# --------------------------------------------------------------------------- inputs

#: initial residual-branch gain (``model.residual_gain``) of the seeded parity weights
RESIDUAL_GAIN = 0.1


def make_batch(rng: np.random.Generator, cfg: Config, batch: int, num_classes: int) -> Batch:
    """A seeded batch laid out as the sampler lays it out: ids × pos visible, then thermal."""
    if batch < 8 or batch % 4:
        raise ValueError(f"batch: expected a multiple of 4, at least 8, got {batch}")
    pos = 2
    ids = batch // (2 * pos)
    if ids > num_classes:
        raise ValueError(f"batch: {ids} identities per batch but only {num_classes} classes")
    chosen = rng.choice(num_classes, ids, replace=False)
    labels = np.concatenate([np.repeat(chosen, pos), np.repeat(chosen, pos)]).astype(np.int64)
    modality = np.concatenate([np.full(ids * pos, VISIBLE), np.full(ids * pos, THERMAL)]).astype(np.int64)
    images = rng.standard_normal((batch, 3, cfg.data.height, cfg.data.width), dtype=np.float32)
    # thermal samples look like thermal images: one channel repeated
    images[modality == THERMAL] = images[modality == THERMAL][:, :1].repeat(3, axis=1)
    return Batch(images=images, labels=labels, modality=modality)


def make_test_set(rng: np.random.Generator, cfg: Config, ids: int = 8, per_id: int = 4):
    """Identity-structured images (a per-identity template plus noise) so that features
    cluster by identity and the metrics are meaningful; returns (q_imgs, q_pids, g_imgs, g_pids)."""
    h, w = cfg.data.height, cfg.data.width
    templates = rng.standard_normal((ids, 3, h, w), dtype=np.float32)
    pids = np.repeat(np.arange(ids), per_id)

    def draw() -> np.ndarray:
        return (templates[pids] + 0.6 * rng.standard_normal((len(pids), 3, h, w), dtype=np.float32)).astype(np.float32)

    q = draw()
    q = q[:, :1].repeat(3, axis=1)  # thermal-like queries
    return q, pids, draw(), pids.copy()


# --------------------------------------------------------------------------- the run

def _num_classes(params: dict[str, np.ndarray] | None, default: int) -> int:
    if params is None:
        return default
    return int(params["v.classifier.weight"].shape[0])


def _load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    from mvd_core.checkpoint import load_checkpoint

    return load_checkpoint(path).params


def _build(cfg: Config, name: str, device: str, num_classes: int, params: dict[str, np.ndarray]):
    c = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, backend=name, device=normalize_device(name, device)))
    b = create_backend(c, num_classes)
    b.load_state(params, strict=True)
    return b


def run_parity(
    cfg: Config,
    *,
    weights: str | os.PathLike[str] | None = None,
    batch: int = 16,
    steps: int = 5,
    seed: int = 0,
    num_classes: int = 16,
    backends: tuple[str, str] = ("mindspore", "torch"),
    devices: tuple[str, str] = ("cpu", "cpu"),
    perturb: float = 0.0,
    loss_cases: tuple[tuple[str, dict[str, Any]], ...] = LOSS_CASES,
    residual_gain: float | None = RESIDUAL_GAIN,
) -> ParityReport:
    """Compare ``backends[0]`` (candidate) against ``backends[1]`` (reference).

    Without ``weights``, the reference's own seeded initialisation with
    ``model.residual_gain = residual_gain`` (None: the config's own). ``perturb`` > 0 adds seeded N(0, perturb²) noise to
    the candidate's weights — a self-check that the comparison can fail.
    """
    cfg = replace(cfg, model={"dropout": 0.0})
    if weights is None and residual_gain is not None:
        cfg = replace(cfg, model={"residual_gain": float(residual_gain)})
    rng = np.random.default_rng(seed)
    params = _load_weights(weights) if weights is not None else None
    C = _num_classes(params, num_classes)
    cand_name, ref_name = backends
    ref = _build(cfg, ref_name, devices[1], C, params) if params is not None else None
    if ref is None:  # seeded random weights: the reference's own initialisation, shared
        c = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, backend=ref_name, device=normalize_device(ref_name, devices[1])))
        ref = create_backend(c, C)
        params = ref.state()
    cand_params = dict(params)
    if perturb > 0:
        prng = np.random.default_rng(seed + 1)
        cand_params = {
            k: (v + prng.normal(0.0, perturb, v.shape).astype(v.dtype)) if v.dtype.kind == "f" and not k.endswith(("running_mean", "running_var")) else v
            for k, v in params.items()
        }
    cand = _build(cfg, cand_name, devices[0], C, cand_params)
    report = ParityReport(
        backends=(cand_name, ref_name),
        settings={
            "recipe": cfg.recipe, "batch": batch, "steps": steps, "seed": seed, "classes": C,
            "image": [cfg.data.height, cfg.data.width], "width": cfg.model.width,
            "ms_mode": cfg.run.ms_mode, "weights": str(weights) if weights else "seeded",
            "residual_gain": None if weights else cfg.model.residual_gain,
            "perturb": perturb, "loss": cfg.loss.preset, "kl": cfg.loss.kl,
        },
    )
    add = report.rows.append
    b0 = make_batch(rng, cfg, batch, C)

    # 1. forward taps
    for train in (False, True):
        sec = "forward/" + ("train" if train else "eval")
        fc, fr = cand.forward(b0, train=train), ref.forward(b0, train=train)
        for tap in TAP_NAMES:
            add(compare(sec, tap, fc[tap], fr[tap], "forward"))
    # train-mode forwards moved BatchNorm running statistics identically; restore both
    cand.load_state(cand_params)
    ref.load_state(params)

    # 2. loss terms per preset and KL mode (fresh backends, the same weights)
    for label, loss_over in loss_cases:
        c2 = replace(cfg, loss=loss_over)
        bc = _build(c2, cand_name, devices[0], C, cand_params)
        br = _build(c2, ref_name, devices[1], C, params)
        lc, lr_ = bc.loss_terms(b0), br.loss_terms(b0)
        for term in lr_:
            add(compare(f"loss/{label}", term, lc.get(term, np.nan), lr_[term], "loss"))
        del bc, br

    # 3. gradients (the recipe's own loss) and K optimiser steps on the real schedule
    gc, gr = cand.gradients(b0), ref.gradients(b0)
    for name in gr:
        add(compare("grad", name, gc.get(name, np.full(1, np.nan)), gr[name], "grad"))
    cand.load_state(cand_params)
    ref.load_state(params)
    for k in range(1, steps + 1):
        bk = make_batch(rng, cfg, batch, C)
        lr = lr_at(k, cfg.schedule, cfg.optim)
        lc, lr_ = cand.train_step(bk, lr), ref.train_step(bk, lr)
        add(compare("steps/loss", f"step {k} total (lr {lr:.2e})", lc["total"], lr_["total"], "loss"))
    sc, sr = cand.state(), ref.state()
    for name in sr:
        add(compare(f"params/after {steps} steps", name, sc.get(name, np.full(1, np.nan)), sr[name], "params"))

    # 4. features and metrics on a small synthetic test set
    from mvd_core.metrics import distance, evaluate

    q, qp, g, gp = make_test_set(rng, cfg)
    qc, gcf = cand.extract_features(q, "thermal"), cand.extract_features(g, "visible")
    qr, grf = ref.extract_features(q, "thermal"), ref.extract_features(g, "visible")
    add(compare("features", "query", qc, qr, "features"))
    add(compare("features", "gallery", gcf, grf, "features"))
    cams_q, cams_g = np.full(len(qp), 2), np.full(len(gp), 1)
    mc = evaluate(distance(qc, gcf), qp, gp, cams_q, cams_g, protocol="regdb", max_rank=5)
    mr = evaluate(distance(qr, grf), qp, gp, cams_q, cams_g, protocol="regdb", max_rank=5)
    for key, a, b in (("R1", mc.cmc[0], mr.cmc[0]), ("R5", mc.cmc[4], mr.cmc[4]),
                      ("mAP", mc.mAP, mr.mAP), ("mINP", mc.mINP, mr.mINP)):
        add(compare("metrics", f"{key} ({100 * b:.2f}%)", 100 * a, 100 * b, "metrics"))
    return report
