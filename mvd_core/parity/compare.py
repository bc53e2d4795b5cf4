"""The comparison of `mvd parity`: one :class:`Row` per compared tensor under its tolerance
(:mod:`mvd_core.parity.tolerances`), and the fp64 arbiter's noise floor and verdict
(:func:`arbitrate`; the method is described in :mod:`mvd_core.parity.runner`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from mvd_core.parity.tolerances import ARBITER, TOLERANCES, ZERO_REL, Tolerance


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
