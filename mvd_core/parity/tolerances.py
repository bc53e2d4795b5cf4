"""Every numerical tolerance the project uses to call two results "the same", in one table, each
with its one-line reason; the measurements behind each value: docs/tolerances.md. fp32 throughout (parity runs both backends in float32 on the same device kind),
except the fp64 arbiter of `mvd parity` (``NOISE_FLOOR``): torch in float64 judges the rows of
the ``arbitrated`` tolerances that fail at fp32 (see mvd_core.parity.compare.arbitrate).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    rtol: float  # relative part (see `kind`)
    atol: float  # absolute part
    kind: str  # "allclose": |a-b| <= atol + rtol*|b| elementwise; "norm": ||a-b|| <= atol + rtol*||b||;
    #            "abs": |a-b| <= atol (scalars, e.g. metrics in percentage points);
    #            "scale": ||a-b|| <= atol + rtol*S, S = the norm of the tensor's layer (GRAD_ZERO);
    #            "floor": the fp64 arbiter's rule, rtol = K_NOISE (see NOISE_FLOOR)
    reason: str
    #: a row under this tolerance that fails it may still pass by the fp64 arbiter (NOISE_FLOOR)
    arbitrated: bool = False


#: the name of the fp64 arbiter's entry in TOLERANCES
NOISE_FLOOR = "noise-floor"
#: the fp64 arbiter's entry for the sections after the optimiser steps (steps, params,
#: features, metrics): flips compound over the K steps of both frameworks
NOISE_FLOOR_STEPS = "noise-floor-steps"
#: the entry for gradients that are ~0 against their own layer (judged absolutely)
GRAD_ZERO = "grad-zero"
#: a tensor is "~0 against its layer" when ||t|| <= ZERO_REL x the layer's norm (all its tensors)
ZERO_REL = 1e-4

TOLERANCES: dict[str, Tolerance] = {
    "forward": Tolerance(
        1e-4, 1e-5, "allclose",
        "fp32 forward taps: the frameworks' kernels sum in different orders (~1e-6 relative "
        "through 50+ layers); holds at a well-conditioned point (residual_gain 0.1).",
    ),
    "loss": Tolerance(
        1e-4, 1e-6, "allclose",
        "loss terms are reductions of the forward taps: the forward noise plus one more "
        "summation.",
    ),
    "steps": Tolerance(
        1e-4, 1e-6, "allclose",
        "loss of every optimiser step: as loss for step 1; later steps carry the ReLU-flip drift "
        "of earlier updates (arbitrated).",
        arbitrated=True,
    ),
    "grad": Tolerance(
        1e-3, 1e-7, "norm",
        "per-parameter gradient (L2): what a flip-free tensor must meet; trunk rows moved by a "
        "ReLU sign flip go to the fp64 arbiter.",
        arbitrated=True,
    ),
    GRAD_ZERO: Tolerance(
        1e-4, 0.0, "scale",
        "a gradient that is 0 in exact arithmetic (a bias feeding a train-mode BatchNorm) is "
        "rounding in both: judged against its layer's norm.",
    ),
    "params": Tolerance(
        1e-3, 1e-7, "norm",
        "parameters after K steps (L2): Adam moves ~0-gradient entries by up to lr on noise, and "
        "flips carry into the trunk (arbitrated).",
        arbitrated=True,
    ),
    "features": Tolerance(
        1e-4, 1e-5, "allclose",
        "extracted L2-normalised test features: as forward taps, plus the parameters' drift after"
        " the steps (arbitrated).",
        arbitrated=True,
    ),
    "export": Tolerance(
        0.0, 1e-5, "abs",
        "an exported ONNX file in onnxruntime against its exporting backend: the same fp32 "
        "network, kernels reordered (never arbitrated).",
    ),
    "metrics": Tolerance(
        0.0, 0.1, "abs",
        "CMC/mAP/mINP in percentage points: 1e-5 feature noise can swap near-tied gallery items; "
        "0.1 pp allows that, not a gap.",
        arbitrated=True,
    ),
    NOISE_FLOOR: Tolerance(
        2.0, 0.0, "floor",
        "the fp64 arbiter (K_NOISE): a failing row passes iff MindSpore is within K x torch "
        "fp32's own distance from torch fp64 in that section.",
    ),
    NOISE_FLOOR_STEPS: Tolerance(
        8.0, 0.0, "floor",
        "the fp64 arbiter after the optimiser steps (K_NOISE_STEPS): drift compounds step by "
        "step, so a larger multiple of the floor.",
    ),
    # mixed precision (mvd_core.parity.amp: torch bf16 autocast vs torch fp32, same weights)
    "amp-forward": Tolerance(
        3e-2, 0.0, "norm",
        "bf16 autocast vs fp32 forward taps on the same weights: bf16's 8-bit mantissa through "
        "the trunk (per tensor, L2).",
    ),
    "amp-loss": Tolerance(
        2e-2, 1e-5, "allclose",
        "bf16 loss terms, computed in fp32 from bf16 taps: reductions of the forward error.",
    ),
    "amp-steps": Tolerance(
        2e-2, 1e-5, "allclose",
        "loss of each of 5 optimiser steps, bf16 vs fp32 on the same batches: the trajectories "
        "drift by the gradient rounding.",
    ),
}

#: the fp64 arbiter's multiplier of the measured fp32 noise floor (gradients)
K_NOISE: float = TOLERANCES[NOISE_FLOOR].rtol
#: ... and of the sections after the optimiser steps
K_NOISE_STEPS: float = TOLERANCES[NOISE_FLOOR_STEPS].rtol
#: which arbiter entry judges the failing rows of each arbitrated tolerance
ARBITER: dict[str, str] = {
    "grad": NOISE_FLOOR,
    "steps": NOISE_FLOOR_STEPS,
    "params": NOISE_FLOOR_STEPS,
    "features": NOISE_FLOOR_STEPS,
    "metrics": NOISE_FLOOR_STEPS,
}


def get(name: str) -> Tolerance:
    try:
        return TOLERANCES[name]
    except KeyError:
        raise KeyError(f"no tolerance named {name!r} (have {', '.join(TOLERANCES)})") from None
