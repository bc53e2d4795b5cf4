"""Every numerical tolerance the project uses to call two results "the same", in one table, each
with its reason. fp32 throughout (parity runs both backends in float32 on the same device kind).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    rtol: float  # relative part (see `kind`)
    atol: float  # absolute part
    kind: str  # "allclose": |a-b| <= atol + rtol*|b| elementwise; "norm": ||a-b|| <= atol + rtol*||b||;
    #            "abs": |a-b| <= atol (scalars, e.g. metrics in percentage points)
    reason: str


TOLERANCES: dict[str, Tolerance] = {
    "forward": Tolerance(
        1e-4, 1e-5, "allclose",
        "fp32 forward taps: the two frameworks' convolution/matmul kernels sum in different orders "
        "(oneDNN vs MindSpore CPU kernels); through 50+ layers that leaves ~1e-6 relative noise.",
    ),
    "loss": Tolerance(
        1e-4, 1e-6, "allclose",
        "loss terms are reductions of the forward taps: the forward noise plus one more summation.",
    ),
    "grad": Tolerance(
        1e-3, 1e-7, "norm",
        "per-parameter gradient (whole tensor, L2): backward kernels differ in summation order and "
        "BatchNorm backward amplifies fp32 noise; elementwise tests fail on entries that are ~0.",
    ),
    "params": Tolerance(
        1e-3, 1e-7, "norm",
        "parameters after K optimiser steps (per tensor, L2): Adam divides by sqrt(v), so entries "
        "whose gradient is ~0 move by up to lr on noise; the tensor as a whole must agree.",
    ),
    "features": Tolerance(
        1e-4, 1e-5, "allclose",
        "extracted (L2-normalised) test features: as forward taps.",
    ),
    "metrics": Tolerance(
        0.0, 0.1, "abs",
        "CMC/mAP/mINP in percentage points: a feature difference at the 1e-5 level can swap two "
        "near-tied gallery items; 0.1 pp allows that, not a systematic gap.",
    ),
}


def get(name: str) -> Tolerance:
    try:
        return TOLERANCES[name]
    except KeyError:
        raise KeyError(f"no tolerance named {name!r} (have {', '.join(TOLERANCES)})") from None
