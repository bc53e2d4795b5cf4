"""`mvd parity`: build two backends (torch and MindSpore by default) from the same weights and
the same seeded NumPy inputs and show, side by side, that they compute the same model:

1. every forward tap, eval mode and train mode (dropout off, BatchNorm on batch statistics);
2. every loss term and the total for each preset and both KL modes;
3. the gradient of every parameter, and every parameter after K optimiser steps on the real
   learning-rate schedule (plus the loss of every step);
4. test features of a small synthetic test set and the resulting CMC / mAP / mINP.

Dropout is switched off (``model.dropout=0``): the two frameworks cannot draw the same masks.
Tolerances come from :mod:`mvd_core.tolerances`. Framework-free: backends come from the registry.

The fp64 arbiter (``arbiter=True``, the default): a third model, torch in float64 from the
reference's weights, gets the same gradient, step and feature calls. The rows after the first
ReLU-flip-exposed computation -- gradients, step losses, parameters after the steps, features,
metrics -- hinge on single ReLU inputs within fp32 rounding of 0, so one fp32 implementation
cannot match another there; such a row that fails its fp32 tolerance passes iff the candidate
is within K × the section's measured fp32 noise floor of the float64 model (:func:`arbitrate`;
K = ``K_NOISE`` for gradients, ``K_NOISE_STEPS`` after the optimiser steps). The floor is the
largest distance from float64 of TWO fp32 samples: the reference, and the reference again on
every batch in another sample order (order-invariant mathematics, other rounding, other flips);
the params section has separate floors for BatchNorm running statistics and for parameters.
Gradients that are 0 in exact arithmetic (a bias feeding a train-mode BatchNorm) are judged
absolutely against their layer's gradient norm (``grad-zero``), never relatively. Forward taps
and loss terms are never arbitrated. MindSpore 2.8 cannot be the float64 model: it has no
float64 Conv2D or train-mode BatchNorm.

Backends are shared between sections: the loss section compares three loss cases that cover
every loss code path, reusing the main pair for the run's own loss (8 backends per run instead
of 15).

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
from mvd_core.tolerances import (
    ARBITER,
    GRAD_ZERO,
    NOISE_FLOOR,
    NOISE_FLOOR_STEPS,
    TOLERANCES,
    ZERO_REL,
    Tolerance,
)

log = logging.getLogger(__name__)

#: the loss settings compared in section 2: (label, loss-section overrides). Three cases cover
#: every loss code path: each term (id, tri, cml, vsd, vcd) and each switch -- label smoothing
#: 0/0.1, batch-hard/ranked-list, KL proper/legacy, CML lse legacy/exact, a VSD temperature
#: (VCD has none) -- and the preset weighting (the other presets' totals are the same sums of
#: the same terms). A case equal to the run's own loss reuses the main pair of backends.
LOSS_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("id+tri+kldiv/proper", {"preset": "id+tri+kldiv", "kl": "proper", "triplet": "batch_hard",
                             "label_smoothing": 0.0, "temperature": 1.0}),
    ("mvd-pt/legacy", {"preset": "mvd-pt", "kl": "legacy", "triplet": "ranked_list",
                       "label_smoothing": 0.1, "cml_lse": "legacy", "temperature": 2.0}),
    ("mvd-pt/proper/batch-hard/exact-lse", {"preset": "mvd-pt", "kl": "proper", "triplet": "batch_hard",
                                            "label_smoothing": 0.0, "cml_lse": "exact"}),
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
    #: noise-floor sections with the fp64 arbiter on: ||cand − fp64|| / ||fp64|| of this row,
    #: the section's fp32 noise floor (max over its rows of rel(reference, fp64)) and the
    #: arbiter's bound max(tolerance rtol, K_NOISE × floor); None elsewhere
    exact_rel: float | None = None
    floor: float | None = None
    bound: float | None = None
    #: True when the row failed its fp32 tolerance and passed by the fp64 arbiter
    via_arbiter: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def note(self) -> str:
        """The arbiter's verdict, for the table ("" when the arbiter did not judge this row)."""
        if self.exact_rel is None or self.floor is None or self.bound is None:
            return ""
        if self.passed and not self.via_arbiter:
            return ""
        k, t = TOLERANCES[ARBITER[self.tolerance]].rtol, TOLERANCES[self.tolerance]
        own = t.atol if t.kind == "abs" else t.rtol
        rule = f"{k:g}x{self.floor:.2g}" if self.bound > own else f"{self.bound:.2g}"
        return f"fp64: {self.exact_rel:.2g} {'<=' if self.exact_rel <= self.bound else '>'} {rule}"


def rel_err(a: Any, b: Any) -> float:
    """||a − b|| / ||b|| (float64; inf when not finite or the shapes differ)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return np.inf
    nd, ny = float(np.linalg.norm(x - y)), float(np.linalg.norm(y))
    return nd / ny if ny > 0 else (0.0 if nd == 0 else np.inf)


def arbiter_error(a: Any, b: Any, tol_name: str) -> float:
    """The arbiter's distance of ``a`` from the fp64 value ``b`` in the units of tolerance
    ``tol_name``'s governing part: relative (||a − b|| / ||b||) for "norm"/"allclose",
    absolute (max |a − b|) for "abs"."""
    if TOLERANCES[tol_name].kind != "abs":
        return rel_err(a, b)
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return np.inf
    return float(np.max(np.abs(x - y))) if x.size else 0.0


def noise_floor(reference: dict[str, Any], exact: dict[str, Any], tol_name: str) -> tuple[float, str]:
    """The fp32 noise floor of a section: the largest arbiter_error(reference, fp64) over its
    rows, and the row it is reached on. Rows whose fp64 value is so small that the tolerance's
    absolute part governs them (||fp64|| * rtol < atol), and rows that are ~0 against their own
    layer (:func:`near_zero`: e.g. the gradient of a bias followed by BatchNorm, 0 in exact
    arithmetic) have no meaningful relative error and are left out."""
    tol = TOLERANCES[tol_name]
    floor, where = 0.0, ""
    zero = near_zero(exact) if tol_name == "grad" else {}
    for name, e in exact.items():
        if tol.kind != "abs" and float(np.linalg.norm(np.asarray(e, np.float64))) * tol.rtol < tol.atol:
            continue
        if name in zero:
            continue
        r = arbiter_error(reference[name], e, tol_name)
        if r > floor or not where:
            floor, where = r, name
    return floor, where


def arbitrate(row: Row, candidate: Any, exact: Any, floor: float) -> Row:
    """The fp64 arbiter (tolerance ``noise-floor``): a row of a noise-floor section that fails
    its fp32 comparison passes iff the candidate is no further from the float64 model than
    ``K_NOISE`` × the fp32 reference is, at worst, in this section of this run:
    error(candidate, fp64) <= max(tolerance rtol (atol for "abs"), K_NOISE × floor). Rows that
    pass fp32 stay passed; the fp64 numbers are recorded on every row."""
    tol = TOLERANCES[row.tolerance]
    if not tol.arbitrated:
        raise ValueError(f"tolerance {row.tolerance!r} is not one the fp64 arbiter may relax")
    e = arbiter_error(candidate, exact, row.tolerance)
    own = tol.atol if tol.kind == "abs" else tol.rtol
    bound = max(own, TOLERANCES[ARBITER[row.tolerance]].rtol * floor)
    rescued = not row.passed and bool(np.isfinite(e)) and e <= bound
    return dataclasses.replace(
        row, exact_rel=e, floor=floor, bound=bound, passed=row.passed or rescued, via_arbiter=rescued
    )


def floor_group(name: str) -> str:
    """The params section's two noise-floor groups: "buffers" (BatchNorm running statistics:
    moved by the forward statistics only, their fp32 noise is ~100x smaller) and "parameters"
    (moved by Adam, which turns rounding in ~0 gradients into lr-sized steps)."""
    return "buffers" if name.endswith(("running_mean", "running_var")) else "parameters"


def layer_scales(values: dict[str, Any]) -> dict[str, float]:
    """The L2 norm of each layer's tensors together ({module path: norm}; a tensor's module is
    its name without the last component: ``v.vib.encoder.3`` for ``v.vib.encoder.3.bias``)."""
    sq: dict[str, float] = {}
    for name, v in values.items():
        module = name.rpartition(".")[0]
        sq[module] = sq.get(module, 0.0) + float(np.sum(np.square(np.asarray(v, np.float64))))
    return {m: float(np.sqrt(x)) for m, x in sq.items()}


def near_zero(values: dict[str, Any], rel: float = ZERO_REL) -> dict[str, float]:
    """Tensors that are ~0 against their own layer: ||v|| <= ``rel`` × the layer's norm (e.g. the
    gradient of a bias that feeds a train-mode BatchNorm: 0 in exact arithmetic, fp32 rounding
    in practice). Returns {name: the layer's norm} for each such tensor."""
    scales = layer_scales(values)
    out: dict[str, float] = {}
    for name, v in values.items():
        scale = scales[name.rpartition(".")[0]]
        if scale > 0 and float(np.linalg.norm(np.asarray(v, np.float64))) <= rel * scale:
            out[name] = scale
    return out


def compare(section: str, name: str, a: Any, b: Any, tol_name: str,
            scale: float | None = None) -> Row:
    """Compare ``a`` (candidate) with ``b`` (reference) under tolerance ``tol_name``; for the
    "scale" kind (``GRAD_ZERO``) ``scale`` is the layer norm the difference is measured against:
    ||a − b|| <= rtol × scale."""
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
    elif tol.kind == "scale":
        if scale is None:
            raise ValueError(f"tolerance {tol_name!r} needs the layer scale")
        ok = nd <= tol.atol + tol.rtol * scale
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
            arb = [r for r in rows if r.via_arbiter and r.bound]
            if arb:  # the arbiter's narrowest margin
                tight = max(arb, key=lambda r: (r.exact_rel or 0.0) / (r.bound or 1.0))
                if tight is not worst:
                    out.append(dataclasses.replace(tight, name=f"tightest fp64: {tight.name}"))
            out.extend(r for r in rows if not r.passed and r is not worst)
        return out

    def to_table(self) -> str:
        head = f"{'section':<22} {'name':<44} {'max|Δ|':>10} {'rel err':>10} {'cosine':>10} {'tolerance':>18} pass"
        arbiter = self.settings.get("arbiter")
        lines = [
            f"parity: {self.backends[0]} (candidate) vs {self.backends[1]} (reference); fp64 arbiter: "
            + (f"{arbiter} (noise-floor sections: a row failing fp32 passes iff rel(candidate, fp64) "
               f"<= max(rtol, K x floor), K = {TOLERANCES[NOISE_FLOOR].rtol:g} for gradients, "
               f"{TOLERANCES[NOISE_FLOOR_STEPS].rtol:g} after the steps)" if arbiter else "off"),
            head, "-" * len(head)]
        for r in self.summary_rows():
            t = TOLERANCES[r.tolerance]
            tol = f"{r.tolerance} " + (f"{t.atol:g}" if t.kind == "abs" else f"{t.rtol:g}/{t.atol:g}")
            lines.append(
                f"{r.section:<22} {r.name[:44]:<44} {r.max_abs:>10.3g} {r.rel:>10.3g} {r.cosine:>10.6f} "
                f"{tol:>18} {'ok' if r.passed else 'FAIL'}" + (f"  {r.note()}" if r.note() else "")
            )
        n_fail = len(self.failures())
        lines.append("-" * len(head))
        groups = self.settings.get("noise_floor_groups", {})
        for sec, (floor, where) in self.settings.get("noise_floor", {}).items():
            n_arb = sum(r.via_arbiter for r in self.rows if r.section == sec)
            if sec in groups:
                where = ", ".join(f"{g} {f:.3g} ({w})" for g, (f, w) in groups[sec].items())
            lines.append(f"fp32 noise floor, {sec}: {floor:.3g} ({where}); {n_arb} rows passed by the fp64 arbiter")
        n_arb = sum(r.via_arbiter for r in self.rows)
        lines.append(
            f"{len(self.rows)} comparisons, {n_fail} failed"
            + (f", {n_arb} passed by the fp64 arbiter" if n_arb else "") + ": "
            + ("PASS" if self.passed else "FAIL")
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
    arbiter: bool = True,
) -> ParityReport:
    """Compare ``backends[0]`` (candidate) against ``backends[1]`` (reference).

    Without ``weights``, the reference's own seeded initialisation with
    ``model.residual_gain = residual_gain`` (None: the config's own). ``perturb`` > 0 adds seeded N(0, perturb²) noise to
    the candidate's weights — a self-check that the comparison can fail.

    ``arbiter``: also run torch in float64 (``run.precision=fp64``) from the reference's weights
    on the same calls, and let it judge the rows of the noise-floor sections (grad, params,
    features) that fail their fp32 tolerance (see :func:`arbitrate`).
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
    exact = noise = None
    if arbiter:  # the float64 model: torch, the reference's (unperturbed) weights
        c64 = replace(cfg, run={"precision": "fp64"})
        exact = _build(c64, "torch", devices[1] if ref_name == "torch" else "cpu", C, params)
        # a second fp32 noise sample: the reference on every batch in another sample order --
        # the same mathematics (every loss and BatchNorm statistic is order-invariant), other
        # summation orders, so other ReLU flips (tolerances.py, noise-floor)
        noise = _build(cfg, ref_name, devices[1], C, params)
    perm_rng = np.random.default_rng((seed, 2))
    report = ParityReport(
        backends=(cand_name, ref_name),
        settings={
            "recipe": cfg.recipe, "batch": batch, "steps": steps, "seed": seed, "classes": C,
            "image": [cfg.data.height, cfg.data.width], "width": cfg.model.width,
            "ms_mode": cfg.run.ms_mode, "weights": str(weights) if weights else "seeded",
            "residual_gain": None if weights else cfg.model.residual_gain,
            "perturb": perturb, "loss": cfg.loss.preset, "kl": cfg.loss.kl,
            "arbiter": "torch fp64" if arbiter else None,
            "k_noise": TOLERANCES[NOISE_FLOOR].rtol if arbiter else None,
            "k_noise_steps": TOLERANCES[NOISE_FLOOR_STEPS].rtol if arbiter else None,
            "noise_samples": 2 if arbiter else 0,
        },
    )
    add = report.rows.append
    floors: dict[str, tuple[float, str]] = {}
    if arbiter:
        report.settings["noise_floor"] = floors

    def add_section(section: str, names: list[str], cand_out: dict, ref_out: dict,
                    exact_out: dict | None, tol: str, noise_out: dict | None = None,
                    zero: dict[str, float] | None = None, split_buffers: bool = False) -> None:
        """Compare a noise-floor section; with the arbiter, judge its failing rows by fp64.
        ``zero``: rows that are ~0 against their layer ({name: layer norm}), judged absolutely
        (GRAD_ZERO) and never arbitrated. The floor is the larger of the two fp32 samples'
        (the reference's, and ``noise_out``: the reference on permuted batches);
        ``split_buffers``: BatchNorm running statistics get their own floor (:func:`floor_group`)."""
        zero = zero or {}
        rows = [compare(section, n, cand_out.get(n, np.full(1, np.nan)), ref_out[n],
                        GRAD_ZERO if n in zero else tol, zero.get(n)) for n in names]
        if exact_out is not None:
            groups: dict[str, list[str]] = {}
            for n in names:
                groups.setdefault(floor_group(n) if split_buffers else section, []).append(n)
            group_floor: dict[str, float] = {}
            for group, members in groups.items():
                floor = noise_floor({n: ref_out[n] for n in members},
                                    {n: exact_out[n] for n in members}, tol)
                if noise_out is not None:
                    f2, where = noise_floor({n: noise_out[n] for n in members},
                                            {n: exact_out[n] for n in members}, tol)
                    if f2 > floor[0]:
                        floor = (f2, f"{where}, permuted batch")
                group_floor[group] = floor[0]
                if split_buffers:
                    floor = (floor[0], f"{floor[1]}; {group}")
                    report.settings.setdefault("noise_floor_groups", {}).setdefault(
                        section, {})[group] = floor
                if section not in floors or floor[0] > floors[section][0]:
                    floors[section] = floor
            rows = [arbitrate(r, cand_out.get(n, np.full(1, np.nan)), exact_out[n],
                              group_floor[floor_group(n) if split_buffers else section])
                    if TOLERANCES[r.tolerance].arbitrated else r
                    for r, n in zip(rows, names, strict=True)]
        report.rows.extend(rows)

    def permuted(b: Batch) -> Batch:
        order = perm_rng.permutation(len(b))
        return Batch(images=b.images[order], labels=b.labels[order], modality=b.modality[order])

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

    # 2. loss terms per loss case (the main pair when the case is the run's own loss, else a
    # fresh pair on the same weights; loss_terms has no side effect)
    for label, loss_over in loss_cases:
        c2 = replace(cfg, loss=loss_over)
        own = c2.loss == cfg.loss
        bc = cand if own else _build(c2, cand_name, devices[0], C, cand_params)
        br = ref if own else _build(c2, ref_name, devices[1], C, params)
        lc, lr_ = bc.loss_terms(b0), br.loss_terms(b0)
        for term in lr_:
            add(compare(f"loss/{label}", term, lc.get(term, np.nan), lr_[term], "loss"))
        del bc, br

    # 3. gradients (the recipe's own loss) and K optimiser steps on the real schedule
    gc, gr = cand.gradients(b0), ref.gradients(b0)
    ge = exact.gradients(b0) if exact is not None else None
    gn = noise.gradients(permuted(b0)) if noise is not None else None
    add_section("grad", list(gr), gc, gr, ge, "grad", gn, zero=near_zero(gr))
    cand.load_state(cand_params)
    ref.load_state(params)
    if exact is not None and noise is not None:
        exact.load_state(params)
        noise.load_state(params)
    step_names, lc, lr_, le, ln = [], {}, {}, {}, {}
    for k in range(1, steps + 1):
        bk = make_batch(rng, cfg, batch, C)
        lr = lr_at(k, cfg.schedule, cfg.optim)
        step_names.append(n := f"step {k} total (lr {lr:.2e})")
        lc[n], lr_[n] = cand.train_step(bk, lr)["total"], ref.train_step(bk, lr)["total"]
        if exact is not None and noise is not None:
            le[n] = exact.train_step(bk, lr)["total"]
            ln[n] = noise.train_step(permuted(bk), lr)["total"]
    add_section("steps/loss", step_names, lc, lr_, le if exact is not None else None, "steps", ln)
    sc, sr = cand.state(), ref.state()
    se = exact.state() if exact is not None else None
    sn = noise.state() if noise is not None else None
    add_section(f"params/after {steps} steps", list(sr), sc, sr, se, "params", sn,
                split_buffers=True)

    # 4. features and metrics on a small synthetic test set
    from mvd_core.metrics import distance, evaluate

    q, qp, g, gp = make_test_set(rng, cfg)
    qc, gcf = cand.extract_features(q, "thermal"), cand.extract_features(g, "visible")
    qr, grf = ref.extract_features(q, "thermal"), ref.extract_features(g, "visible")
    fe = fn = None
    if exact is not None and noise is not None:
        fe = {"query": exact.extract_features(q, "thermal"), "gallery": exact.extract_features(g, "visible")}
        fn = {"query": noise.extract_features(q, "thermal"), "gallery": noise.extract_features(g, "visible")}
    add_section("features", ["query", "gallery"], {"query": qc, "gallery": gcf},
                {"query": qr, "gallery": grf}, fe, "features", fn)
    cams_q, cams_g = np.full(len(qp), 2), np.full(len(gp), 1)

    def metrics(qf: np.ndarray, gf: np.ndarray) -> dict[str, float]:
        m = evaluate(distance(qf, gf), qp, gp, cams_q, cams_g, protocol="regdb", max_rank=5)
        return {"R1": 100 * m.cmc[0], "R5": 100 * m.cmc[4], "mAP": 100 * m.mAP, "mINP": 100 * m.mINP}

    mc, mr = metrics(qc, gcf), metrics(qr, grf)
    me = metrics(fe["query"], fe["gallery"]) if fe is not None else None
    mn = metrics(fn["query"], fn["gallery"]) if fn is not None else None
    names = {f"{k} ({mr[k]:.2f}%)": k for k in mr}
    add_section("metrics", list(names), {n: mc[k] for n, k in names.items()},
                {n: mr[k] for n, k in names.items()},
                {n: me[k] for n, k in names.items()} if me is not None else None, "metrics",
                {n: mn[k] for n, k in names.items()} if mn is not None else None)
    return report
