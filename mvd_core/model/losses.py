"""Framework-free constants of the MVD losses (SPEC §3), shared by both backends and by the
NumPy reference implementation in ``tests/reference_losses.py``.

Nothing here imports a framework. The formulas themselves are documented once, in the
reference implementation; the backends must match it to float tolerance.

Facts taken from the original PyTorch code (FutabaSakuraXD/Farewell-to-Mutual-Information-
Variational-Distiilation-for-Cross-Modal-Person-Re-identification, ``reid/trainers.py``,
``utlis.py``, ``mm01.py``):

- total loss ``CE·id + Triplet·tri + CML·cml + VSD·vsd + VCD·vcd`` with weights 1, 1, 8, 2, 2;
- branch weights 0.5 (i), 0.5 (v), 0.25 (i_ms), 0.25 (v_ms) for both the ID and the
  ranked-list losses, applied to observation and representation alike;
- ranked-list loss ``Rank_loss`` with m1=0.9, m2=1.0, a1=2.2, a2=2.0, tval=1, 1e-5 in the
  normalising denominators;
- ``SinkhornDistance`` with eps=0.01, max_iter=100, stopping threshold 0.1, 1e-8 added to the
  marginals inside the log, and its ``lse(A) = log(Σ exp(A) + 1e-6)``;
- VSD divides the logits by the temperature, VCD does not (``trainers.py``).
"""

from __future__ import annotations

#: loss-term names in the order they are computed/logged ("total" is added on top)
TERMS: tuple[str, ...] = ("id", "tri", "cml", "vsd", "vcd")

#: term weights per ``LossConfig.preset``; a term absent from a preset is not computed
PRESET_WEIGHTS: dict[str, dict[str, float]] = {
    "id": {"id": 1.0},
    "id+tri": {"id": 1.0, "tri": 1.0},
    "id+tri+kldiv": {"id": 1.0, "tri": 1.0, "vsd": 1.0, "vcd": 1.0},
    "mvd-pt": {"id": 1.0, "tri": 1.0, "cml": 8.0, "vsd": 2.0, "vcd": 2.0},
}

#: weight of each of the eight outputs in the ID and triplet losses (they sum to 3)
BRANCH_WEIGHTS: dict[str, float] = {
    "i_obs": 0.5,
    "i_rep": 0.5,
    "v_obs": 0.5,
    "v_rep": 0.5,
    "i_ms_obs": 0.25,
    "i_ms_rep": 0.25,
    "v_ms_obs": 0.25,
    "v_ms_rep": 0.25,
}

#: which tap of an output the metric (triplet / ranked-list) loss uses: "<obs>.feat", "<rep>.z"
METRIC_TAP: dict[str, str] = {
    name: (f"{name}.feat" if name.endswith("_obs") else f"{name}.z") for name in BRANCH_WEIGHTS
}

#: (teacher, student, weight) pairs: VSD = Σ w·KL(teacher ‖ student)
VSD_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("i_obs", "i_rep", 1.0),
    ("v_obs", "v_rep", 1.0),
)
#: (teacher, student, weight) pairs: VCD = Σ w·KL(teacher ‖ student)
VCD_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("v_ms_obs", "i_ms_rep", 0.5),
    ("i_ms_obs", "v_ms_rep", 0.5),
)
#: CML = sinkhorn_cost(softmax(i_obs.logits), softmax(v_obs.logits))
CML_PAIR: tuple[str, str] = ("i_obs", "v_obs")

KL_MODES: tuple[str, ...] = ("proper", "legacy")
TRIPLET_KINDS: tuple[str, ...] = ("batch_hard", "ranked_list")

#: squared distances are clipped below at this value before the square root
DIST_CLIP = 1e-12
#: L2 normalisation: x / max(‖x‖, NORMALIZE_EPS) (torch.nn.functional.normalize)
NORMALIZE_EPS = 1e-12
#: ranked-list loss: added to the positive count and to the negative weight sum
RLL_EPS = 1e-5
#: ranked-list loss: negative weights exp(RLL_TVAL·(a − D))
RLL_TVAL = 1.0

#: Sinkhorn: stop after the iteration where Σ|u − u_prev| < SINKHORN_THRESH
SINKHORN_THRESH = 0.1
#: Sinkhorn: log(mu + SINKHORN_MARGINAL_EPS)
SINKHORN_MARGINAL_EPS = 1e-8
#: Sinkhorn log-sum-exp (``loss.cml_lse``): "legacy" = the PT code's lse(A) = log(Σ exp(A) +
#: SINKHORN_LSE_EPS), not max-shifted; "exact" = a true (max-shifted) logsumexp. Once the
#: softmaxes sharpen the two costs differ by 4-15 % (logits N(0, 3²)-N(0, 10²)), and CML has
#: weight 8: they are different losses, so the faithful one is the default.
CML_LSE_MODES: tuple[str, ...] = ("legacy", "exact")
SINKHORN_LSE_EPS = 1e-6


def preset_weights(preset: str) -> dict[str, float]:
    """The term weights of ``preset`` (a copy); ValueError naming the choices if unknown."""
    try:
        return dict(PRESET_WEIGHTS[preset])
    except KeyError:
        raise ValueError(
            f"loss.preset: {preset!r} is not one of {', '.join(PRESET_WEIGHTS)}"
        ) from None
