"""`mvd parity`: build two backends (torch and MindSpore by default) from the same weights and
the same seeded NumPy inputs and show, side by side, that they compute the same model:

1. every forward tap, eval mode and train mode (dropout off, BatchNorm on batch statistics);
2. every loss term and the total for each preset and both KL modes;
3. the gradient of every parameter, and every parameter after K optimiser steps on the real
   learning-rate schedule (plus the loss of every step);
4. test features of a small synthetic test set and the resulting CMC / mAP / mINP.

Dropout is switched off (``model.dropout=0``): the two frameworks cannot draw the same masks.
Tolerances come from :mod:`mvd_core.parity.tolerances`. Framework-free: backends come from the registry.

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
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.config import Config, replace
from mvd_core.devices import normalize_device
from mvd_core.errors import MvdError
from mvd_core.interface import TAP_NAMES, Batch
from mvd_core.parity.compare import arbitrate, compare, floor_group, near_zero, noise_floor
from mvd_core.parity.inputs import RESIDUAL_GAIN, make_batch, make_test_set
from mvd_core.parity.report import ParityReport
from mvd_core.parity.tolerances import GRAD_ZERO, NOISE_FLOOR, NOISE_FLOOR_STEPS, TOLERANCES
from mvd_core.registry import create_backend
from mvd_core.train.schedule import lr_at

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


def _num_classes(params: dict[str, np.ndarray] | None, default: int) -> int:
    if params is None:
        return default
    return int(params["v.classifier.weight"].shape[0])


def _load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    from mvd_core.weights.checkpoint import load_checkpoint

    return load_checkpoint(path).params


def _build(cfg: Config, name: str, device: str, num_classes: int, params: dict[str, np.ndarray]):
    c = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, backend=name, device=normalize_device(name, device)))
    b = create_backend(c, num_classes)
    b.load_state(params, strict=True)
    return b


def _onnx_features(net, cfg: Config, q: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    """``net`` exported to a temporary ONNX file (at the query batch: MindSpore's ONNX has a fixed
    batch), run by onnxruntime on the query and gallery images."""
    import tempfile

    from mvd_core.weights.export import export_backend, onnx_features

    with tempfile.TemporaryDirectory(prefix="mvd-parity-") as tmp:
        path = export_backend(net, "onnx", Path(tmp) / "model.onnx", cfg.data.height,
                              cfg.data.width, len(q))
        return {"query": onnx_features(path, q), "gallery": onnx_features(path, g)}


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
    onnx: str | None = None,
) -> ParityReport:
    """Compare ``backends[0]`` (candidate) against ``backends[1]`` (reference).

    Without ``weights``, the reference's own seeded initialisation with
    ``model.residual_gain = residual_gain`` (None: the config's own). ``perturb`` > 0 adds seeded N(0, perturb²) noise to
    the candidate's weights — a self-check that the comparison can fail.

    ``arbiter``: also run torch in float64 (``run.precision=fp64``) from the reference's weights
    on the same calls, and let it judge the rows of the noise-floor sections (grad, params,
    features) that fail their fp32 tolerance (see :func:`arbitrate`).

    ``onnx``: one of ``backends`` — after the steps, export that backend's test-feature network
    to ONNX and run it in onnxruntime on the test images: a third contender, judged against its
    exporter ("export" tolerance) and, exported by the candidate, against the reference as the
    candidate's own features are ("features", arbitrated).
    """
    if onnx is not None and onnx not in backends:
        raise MvdError(f"--onnx {onnx!r}: expected one of the compared backends ({', '.join(backends)})")
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
        # summation orders, so other ReLU flips (docs/tolerances.md, noise-floor)
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
    from mvd_core.eval.metrics import distance, evaluate

    q, qp, g, gp = make_test_set(rng, cfg)
    qc, gcf = cand.extract_features(q, "thermal"), cand.extract_features(g, "visible")
    qr, grf = ref.extract_features(q, "thermal"), ref.extract_features(g, "visible")
    fe = fn = None
    if exact is not None and noise is not None:
        fe = {"query": exact.extract_features(q, "thermal"), "gallery": exact.extract_features(g, "visible")}
        fn = {"query": noise.extract_features(q, "thermal"), "gallery": noise.extract_features(g, "visible")}
    add_section("features", ["query", "gallery"], {"query": qc, "gallery": gcf},
                {"query": qr, "gallery": grf}, fe, "features", fn)
    if onnx is not None:
        of = _onnx_features(cand if onnx == cand_name else ref, cfg, q, g)
        own = {"query": qc, "gallery": gcf} if onnx == cand_name else {"query": qr, "gallery": grf}
        report.settings["onnx"] = onnx
        for n in ("query", "gallery"):
            add(compare(f"export/onnx ({onnx})", f"{n} vs {onnx}", of[n], own[n], "export"))
        if onnx == cand_name:
            add_section(f"features/onnx ({onnx})", ["query", "gallery"], of,
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
