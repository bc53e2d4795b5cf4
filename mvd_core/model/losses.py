"""The MVD losses, framework-free (SPEC §3): the constants, the primitives a backend supplies
(:class:`LossPrimitives`) and the one composition of the terms (:func:`compose`), shared by
both backends; the NumPy reference (``tests/reference_losses.py``) is written independently.

Nothing here imports a framework. The formulas of the primitives are documented once, in the
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

The composition -- which terms a preset computes, which outputs feed which term, the branch and
term weights, the total -- is written once, here (:func:`compose`), over the eight outputs' taps
as a tuple in :data:`~mvd_core.interface.TAP_NAMES` order. A backend supplies only the
elementary losses (:class:`LossPrimitives`); MindSpore compiles :func:`compose` into its train
step (graph mode parses the functions it calls: only constant control flow, tuples, lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from mvd_core.config import LossConfig
from mvd_core.errors import ConfigError
from mvd_core.interface import TAP_NAMES

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
#: the PT code's VCD applies no temperature (VSD divides by ``loss.temperature``)
VCD_TEMPERATURE = 1.0

#: index of each tap in the tuple the composition reads (``TAP_NAMES`` order)
TAP_INDEX: dict[str, int] = {name: i for i, name in enumerate(TAP_NAMES)}


def preset_weights(preset: str) -> dict[str, float]:
    """The term weights of ``preset`` (a copy); ConfigError naming the choices if unknown."""
    try:
        return dict(PRESET_WEIGHTS[preset])
    except KeyError:
        raise ConfigError(
            f"loss.preset: {preset!r} is not one of {', '.join(PRESET_WEIGHTS)}"
        ) from None


# --------------------------------------------------------------------------------------------
# what a backend supplies
# --------------------------------------------------------------------------------------------

Tensor = Any  # a framework tensor; the composition only adds them and scales them by floats


class LossPrimitives(Protocol):
    """The elementary losses a backend supplies (its ``losses`` module satisfies this).

    Each returns a 0-d tensor, computed in float32 whatever the input dtype (float64 inputs may
    stay float64, for tests); the exact formulas are the NumPy reference's
    (``tests/reference_losses.py``). Arguments are the framework's tensors and Python constants.
    """

    def cross_entropy(self, logits: Tensor, labels: Tensor, label_smoothing: float) -> Tensor:
        """Label-smoothed cross-entropy, batch mean: q = (1 − ε)·onehot + ε/C."""
        ...

    def batch_hard_triplet(self, feats: Tensor, labels: Tensor, margin: float) -> Tensor:
        """Mean relu(max_pos d − min_neg d + margin) on unnormalised features, d clipped at
        DIST_CLIP before the square root; positives include the anchor itself."""
        ...

    def ranked_list_loss(
        self, feats: Tensor, labels: Tensor, modality: Tensor,
        m1: float, m2: float, a1: float, a2: float,
    ) -> Tensor:
        """The PT code's ranked-list loss on L2-normalised features: intra/cross-modality
        margins m1/m2 and thresholds a1/a2, RLL_EPS and RLL_TVAL."""
        ...

    def kl_div(
        self, teacher_logits: Tensor, student_logits: Tensor, mode: str, temperature: float,
    ) -> Tensor:
        """Distillation divergence, teacher stop-gradient, both softmaxes at ``temperature``;
        mode "proper" = KL(t ‖ s) batch mean, "legacy" = the public codes' mean s·(log s − t)."""
        ...

    def sinkhorn_cost(
        self, p: Tensor, q: Tensor, eps: float, max_iter: int, thresh: float, lse: str,
    ) -> Tensor:
        """Σ π⊙Cost between the rows of p and q (uniform marginals, squared-L2 cost), log-domain
        Sinkhorn, gradient through the iterations, stopping after the iteration where
        Σ|u − u_prev| < thresh; ``lse`` one of CML_LSE_MODES."""
        ...

    def softmax(self, logits: Tensor) -> Tensor:
        """Row softmax over the classes (axis 1), in float32; returns a (B, C) tensor."""
        ...


# --------------------------------------------------------------------------------------------
# the composition
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossPlan:
    """A :class:`LossConfig` resolved to constants and tap indices (see :func:`loss_plan`).

    Only strings, numbers and tuples of them: MindSpore's graph mode reads it as constants.
    """

    names: tuple[str, ...]  # the returned values: the preset's terms in TERMS order, "total"
    terms: tuple[str, ...]
    weights: tuple[float, ...]  # one per term
    id_taps: tuple[tuple[int, float], ...]  # (index of "<x>.logits", branch weight)
    metric_taps: tuple[tuple[int, float], ...]  # (index of METRIC_TAP[x], branch weight)
    vsd_pairs: tuple[tuple[int, int, float], ...]  # (teacher logits, student logits, weight)
    vcd_pairs: tuple[tuple[int, int, float], ...]
    cml_taps: tuple[int, int]
    label_smoothing: float
    triplet: str
    margin: float
    rll: tuple[float, float, float, float]  # m1, m2, a1, a2
    kl: str
    temperature: float
    sinkhorn_eps: float
    sinkhorn_iters: int
    sinkhorn_thresh: float
    cml_lse: str


def _choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"loss.{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _logits(name: str) -> int:
    return TAP_INDEX[f"{name}.logits"]


@lru_cache(maxsize=32)
def loss_plan(cfg: LossConfig) -> LossPlan:
    """The plan of ``cfg``; ConfigError (one line) for an unknown preset, triplet, kl or cml_lse."""
    weights = preset_weights(cfg.preset)
    terms = tuple(t for t in TERMS if t in weights)
    return LossPlan(
        names=terms + ("total",),
        terms=terms,
        weights=tuple(float(weights[t]) for t in terms),
        id_taps=tuple((_logits(k), float(w)) for k, w in BRANCH_WEIGHTS.items()),
        metric_taps=tuple((TAP_INDEX[METRIC_TAP[k]], float(w)) for k, w in BRANCH_WEIGHTS.items()),
        vsd_pairs=tuple((_logits(t), _logits(s), float(w)) for t, s, w in VSD_PAIRS),
        vcd_pairs=tuple((_logits(t), _logits(s), float(w)) for t, s, w in VCD_PAIRS),
        cml_taps=(_logits(CML_PAIR[0]), _logits(CML_PAIR[1])),
        label_smoothing=float(cfg.label_smoothing),
        triplet=_choice("triplet", cfg.triplet, TRIPLET_KINDS),
        margin=float(cfg.margin),
        rll=(float(cfg.rll_m1), float(cfg.rll_m2), float(cfg.rll_a1), float(cfg.rll_a2)),
        kl=_choice("kl", cfg.kl, KL_MODES),
        temperature=float(cfg.temperature),
        sinkhorn_eps=float(cfg.sinkhorn_eps),
        sinkhorn_iters=int(cfg.sinkhorn_iters),
        sinkhorn_thresh=SINKHORN_THRESH,
        cml_lse=_choice("cml_lse", cfg.cml_lse, CML_LSE_MODES),
    )


def weighted_sum(pairs: list) -> Tensor:
    """Σ w·v over ``[(w, v), ...]`` in order, starting from the first (no zero tensor needed)."""
    total = pairs[0][0] * pairs[0][1]
    for w, v in pairs[1:]:
        total = total + w * v
    return total


def id_term(prims: LossPrimitives, taps: tuple, labels: Tensor, plan: LossPlan) -> Tensor:
    """Branch-weighted cross-entropy over the eight outputs' logits."""
    return weighted_sum(
        [(w, prims.cross_entropy(taps[i], labels, plan.label_smoothing)) for i, w in plan.id_taps]
    )


def metric_term(
    prims: LossPrimitives, taps: tuple, labels: Tensor, modality: Tensor, plan: LossPlan
) -> Tensor:
    """Branch-weighted metric loss on "<obs>.feat" / "<rep>.z": batch-hard triplet, or the
    ranked-list loss when ``plan.triplet == "ranked_list"``."""
    if plan.triplet == "ranked_list":
        m1, m2, a1, a2 = plan.rll
        return weighted_sum([
            (w, prims.ranked_list_loss(taps[i], labels, modality, m1, m2, a1, a2))
            for i, w in plan.metric_taps
        ])
    return weighted_sum(
        [(w, prims.batch_hard_triplet(taps[i], labels, plan.margin)) for i, w in plan.metric_taps]
    )


def kl_term(
    prims: LossPrimitives, taps: tuple, pairs: tuple, mode: str, temperature: float
) -> Tensor:
    """Σ w·kl_div(teacher, student) over ``pairs`` of (teacher, student, weight) logits."""
    return weighted_sum(
        [(w, prims.kl_div(taps[t], taps[s], mode, temperature)) for t, s, w in pairs]
    )


def cml_term(prims: LossPrimitives, taps: tuple, plan: LossPlan) -> Tensor:
    """sinkhorn_cost(softmax(i_obs.logits), softmax(v_obs.logits))."""
    a, b = plan.cml_taps
    return prims.sinkhorn_cost(
        prims.softmax(taps[a]), prims.softmax(taps[b]),
        plan.sinkhorn_eps, plan.sinkhorn_iters, plan.sinkhorn_thresh, plan.cml_lse,
    )


def term(
    prims: LossPrimitives, name: str, taps: tuple, labels: Tensor, modality: Tensor,
    plan: LossPlan,
) -> Tensor:
    """The unweighted loss term ``name`` (one of TERMS)."""
    if name == "id":
        return id_term(prims, taps, labels, plan)
    if name == "tri":
        return metric_term(prims, taps, labels, modality, plan)
    if name == "cml":
        return cml_term(prims, taps, plan)
    if name == "vsd":
        return kl_term(prims, taps, plan.vsd_pairs, plan.kl, plan.temperature)
    return kl_term(prims, taps, plan.vcd_pairs, plan.kl, VCD_TEMPERATURE)


def compose(
    prims: LossPrimitives, taps: tuple, labels: Tensor, modality: Tensor, plan: LossPlan
) -> tuple:
    """The values named ``plan.names``: each term of the preset (unweighted), then the total
    Σ weight·term. ``taps``: the network's outputs in ``TAP_NAMES`` order."""
    vals = [term(prims, name, taps, labels, modality, plan) for name in plan.terms]
    return tuple(vals) + (weighted_sum(list(zip(plan.weights, vals))),)


def taps_of(out: Mapping[str, Tensor]) -> tuple:
    """``out`` (tap name → tensor) as the tuple :func:`compose` reads; KeyError naming the taps
    a loss reads that ``out`` lacks (the test feature "feat" is not read and may be absent)."""
    missing = [k for k in TAP_NAMES if k != "feat" and k not in out]
    if missing:
        raise KeyError(f"loss taps missing: {', '.join(missing)}")
    return tuple(out.get(k) for k in TAP_NAMES)


def mvd_loss(
    prims: LossPrimitives, out: Mapping[str, Tensor], labels: Tensor, modality: Tensor,
    loss_cfg: LossConfig,
) -> dict[str, Tensor]:
    """:func:`compose` over a dict of taps, as a dict {term: value, ..., "total": value}."""
    plan = loss_plan(loss_cfg)
    return dict(zip(plan.names, compose(prims, taps_of(out), labels, modality, plan), strict=True))
