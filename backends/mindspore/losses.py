"""The MVD losses in MindSpore (SPEC §3).

Same public names and semantics as the NumPy reference (``tests/reference_losses.py``, where
each formula is written out) and ``mvd_backends.torch.losses``; constants come from
:mod:`mvd_core.model.losses`. Every function returns a 0-d float32 Tensor (``mvd_loss`` a dict of
them).

Every function here runs in PyNative mode and inside a ``mindspore.jit``-compiled function (graph
mode): control flow depends only on Python constants (shapes, config values). In particular the
Sinkhorn early stop (Σ|u − u_prev| < thresh) is a fixed-trip loop whose iterates freeze once the
criterion is met — the same values and gradients as breaking out of the loop, without a
data-dependent branch. :class:`MVDLoss` is the graph-friendly form of :func:`mvd_loss`: the
config is resolved to Python constants once, in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Mapping

import mindspore as ms
from mindspore import Tensor, nn, ops

from mvd_core.config import LossConfig
from mvd_core.model.losses import (
    BRANCH_WEIGHTS,
    CML_LSE_MODES,
    CML_PAIR,
    DIST_CLIP,
    KL_MODES,
    METRIC_TAP,
    NORMALIZE_EPS,
    RLL_EPS,
    RLL_TVAL,
    SINKHORN_LSE_EPS,
    SINKHORN_MARGINAL_EPS,
    SINKHORN_THRESH,
    TERMS,
    TRIPLET_KINDS,
    VCD_PAIRS,
    VSD_PAIRS,
    preset_weights,
)

__all__ = [
    "pairwise_distance",
    "cross_entropy",
    "batch_hard_triplet",
    "ranked_list_loss",
    "kl_div",
    "vsd_loss",
    "vcd_loss",
    "sinkhorn_cost",
    "cml_loss",
    "branch_weighted",
    "id_loss",
    "triplet_loss",
    "mvd_loss",
]

_INF = float("inf")


def pairwise_distance(feats: Tensor) -> Tensor:
    """D_ij = sqrt(max(|a_i|² + |a_j|² − 2 a_i·a_j, 1e-12)), (B, D) → (B, B)."""
    a = feats.astype(ms.float32)
    sq = (a * a).sum(axis=1)
    d2 = sq.expand_dims(1) + sq.expand_dims(0) - 2.0 * ops.matmul(a, a.T)
    return ops.sqrt(ops.maximum(d2, DIST_CLIP))


def _l2_normalize(x: Tensor) -> Tensor:
    norm = ops.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / ops.maximum(norm, NORMALIZE_EPS)


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Label-smoothed cross-entropy, batch mean: q = (1 − ε)·onehot + ε/C."""
    x = logits.astype(ms.float32)
    ncls = x.shape[1]
    lp = ops.log_softmax(x, axis=1)
    on = Tensor(1.0 - label_smoothing + label_smoothing / ncls, ms.float32)
    off = Tensor(label_smoothing / ncls, ms.float32)
    q = ops.one_hot(labels.astype(ms.int32), ncls, on, off)
    return -(q * lp).sum(axis=1).mean()


def batch_hard_triplet(feats: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet on unnormalised features: mean relu(max_pos d − min_neg d + margin),
    positives include the anchor itself. (An anchor without negatives contributes 0; the
    backend rejects single-identity batches on the host.)"""
    d = pairwise_distance(feats)
    same = labels.expand_dims(1) == labels.expand_dims(0)
    # amax/amin (ReduceMax/ReduceMin, gradient shared among ties as torch.amax) rather than
    # Tensor.max/min (ArgMaxWithValue, whose scatter-based gradient MindSpore 2.8 warns about)
    d_ap = ops.amax(ops.where(same, d, ops.full_like(d, -_INF)), 1)
    d_an = ops.amin(ops.where(same, ops.full_like(d, _INF), d), 1)
    return ops.relu(d_ap - d_an + margin).mean()


def ranked_list_loss(
    feats: Tensor,
    labels: Tensor,
    modality: Tensor,
    m1: float = 0.9,
    m2: float = 1.0,
    a1: float = 2.2,
    a2: float = 2.0,
) -> Tensor:
    """The PT code's ranked-list loss on L2-normalised features (intra/cross-modality margins
    m1/m2 and thresholds a1/a2); exact form in the reference's docstring."""
    x = _l2_normalize(feats.astype(ms.float32))
    d = pairwise_distance(x)
    n = d.shape[0]
    same_id = labels.expand_dims(1) == labels.expand_dims(0)
    intra = modality.expand_dims(1) == modality.expand_dims(0)
    not_eye = ops.logical_not(ops.eye(n, n, ms.bool_))
    zero = ops.zeros_like(d)
    p_intra = ops.logical_and(ops.logical_and(same_id, intra), not_eye)
    p_cross = ops.logical_and(same_id, ops.logical_not(intra))
    diff = ops.logical_not(same_id)
    n_intra = ops.logical_and(ops.logical_and(diff, intra), d < a1)
    n_cross = ops.logical_and(ops.logical_and(diff, ops.logical_not(intra)), d < a2)

    hinge_i = ops.where(p_intra, ops.relu(d + (m1 - a1)), zero)
    hinge_c = ops.where(p_cross, ops.relu(d + (m2 - a2)), zero)
    pos = hinge_i.sum(axis=1) / (p_intra.astype(ms.float32).sum(axis=1) + RLL_EPS)
    pos = pos + hinge_c.sum(axis=1) / (p_cross.astype(ms.float32).sum(axis=1) + RLL_EPS)
    w_i = ops.where(n_intra, ops.exp(RLL_TVAL * (a1 - d)), zero)
    w_c = ops.where(n_cross, ops.exp(RLL_TVAL * (a2 - d)), zero)
    neg = (w_i * (a1 - d)).sum(axis=1) / (w_i.sum(axis=1) + RLL_EPS)
    neg = neg + (w_c * (a2 - d)).sum(axis=1) / (w_c.sum(axis=1) + RLL_EPS)
    return (pos + neg).mean()


def kl_div(
    teacher_logits: Tensor,
    student_logits: Tensor,
    mode: str = "proper",
    temperature: float = 1.0,
) -> Tensor:
    """Distillation divergence, teacher stop-gradient; t = softmax(teacher/T), s =
    softmax(student/T).

    proper: KL(t ‖ s) = batch mean of Σ_c t·(log t − log s), in log space (log_softmax).
    legacy: the public codes' misuse of kl_div with probabilities for log-probabilities,
    mean over B·C of s·(log s − t) (not a divergence; usually negative).
    """
    if mode not in KL_MODES:
        raise ValueError(f"kl_div: mode {mode} is not one of proper, legacy")
    t_log = ops.log_softmax(ops.stop_gradient(teacher_logits).astype(ms.float32) / temperature, 1)
    s_log = ops.log_softmax(student_logits.astype(ms.float32) / temperature, 1)
    if mode == "proper":
        return (ops.exp(t_log) * (t_log - s_log)).sum() / t_log.shape[0]
    s = ops.exp(s_log)
    return (s * (s_log - ops.exp(t_log))).mean()


def _pairs_kl(
    out: Mapping[str, Tensor],
    pairs: tuple[tuple[str, str, float], ...],
    mode: str,
    temperature: float,
) -> Tensor:
    total = None
    for teacher, student, w in pairs:
        term = w * kl_div(out[teacher + ".logits"], out[student + ".logits"], mode, temperature)
        total = term if total is None else total + term
    return total


def vsd_loss(out: Mapping[str, Tensor], mode: str = "proper", temperature: float = 1.0) -> Tensor:
    """Variational self-distillation: kl(i_obs → i_rep) + kl(v_obs → v_rep)."""
    return _pairs_kl(out, VSD_PAIRS, mode, temperature)


def vcd_loss(out: Mapping[str, Tensor], mode: str = "proper", temperature: float = 1.0) -> Tensor:
    """Variational cross-distillation: 0.5 kl(v_ms_obs → i_ms_rep) + 0.5 kl(i_ms_obs → v_ms_rep)."""
    return _pairs_kl(out, VCD_PAIRS, mode, temperature)


def _logsumexp(x: Tensor, axis: int, lse: str = "exact") -> Tensor:
    """exact: max-shifted logsumexp; legacy: the PT code's log(Σ exp(x) + 1e-6), not shifted."""
    if lse == "legacy":
        return ops.log(ops.exp(x).sum(axis=axis) + SINKHORN_LSE_EPS)
    m = ops.stop_gradient(x.max(axis=axis, keepdims=True))
    return (ops.log(ops.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def sinkhorn_cost(
    p: Tensor,
    q: Tensor,
    eps: float = 0.01,
    max_iter: int = 100,
    thresh: float = SINKHORN_THRESH,
    lse: str = "legacy",
) -> Tensor:
    """Entropic OT cost Σ π⊙Cost between the rows of p and q (uniform marginals, squared-L2
    cost), log-domain Sinkhorn with gradient through the iterations, stopping after the
    iteration where Σ|u − u_prev| < thresh (the reference's ``sinkhorn_plan``). ``lse``:
    "legacy" = the PT code's log(Σ exp + 1e-6), "exact" = a max-shifted logsumexp.

    The stop is data-dependent; to stay one static graph the loop always runs ``max_iter``
    trips and freezes u, v (``where(done, old, new)``) from the trip after the criterion first
    holds: identical values, and identical gradients (a frozen trip passes the gradient to the
    old iterate only). (The backend's eager loss evaluation, ``loss_terms`` in PyNative mode,
    uses :func:`_sinkhorn` with ``host_stop=True``: it reads the criterion back each trip and
    leaves the loop — the same values, fewer kernel launches.)
    """
    return _sinkhorn(p, q, eps, max_iter, thresh, False, lse)


def _sinkhorn(p: Tensor, q: Tensor, eps: float, max_iter: int, thresh: float,
              host_stop: bool, lse: str = "legacy") -> Tensor:
    if lse not in CML_LSE_MODES:
        raise ValueError(f"loss.cml_lse: {lse} is not one of legacy, exact")
    p = p.astype(ms.float32)
    q = q.astype(ms.float32)
    nb = p.shape[0]
    if q.shape[0] != nb:
        raise ValueError("sinkhorn: p and q must have the same number of rows")
    cost = ((p.expand_dims(1) - q.expand_dims(0)) ** 2).sum(axis=-1)
    log_marg = ops.log(ops.full((nb,), 1.0 / nb, dtype=ms.float32) + SINKHORN_MARGINAL_EPS)
    u = ops.zeros((nb,), ms.float32)
    v = ops.zeros((nb,), ms.float32)
    done = ops.zeros((), ms.bool_)
    for _ in range(max_iter):
        m = (-cost + u.expand_dims(1) + v.expand_dims(0)) / eps
        u_new = eps * (log_marg - _logsumexp(m, 1, lse)) + u
        m = (-cost + u_new.expand_dims(1) + v.expand_dims(0)) / eps
        v_new = eps * (log_marg - _logsumexp(m, 0, lse)) + v
        converged = ops.abs(u_new - u).sum() < thresh
        if host_stop:
            u, v = u_new, v_new
            if bool(converged.asnumpy()):
                break
            continue
        # fixed trips, converged iterates frozen: the early-stopping loop's values and gradients
        u = ops.where(done, u, u_new)
        v = ops.where(done, v, v_new)
        done = ops.logical_or(done, converged)
    pi = ops.exp((-cost + u.expand_dims(1) + v.expand_dims(0)) / eps)
    return (pi * cost).sum()


def cml_loss(
    out: Mapping[str, Tensor], eps: float = 0.01, max_iter: int = 100, lse: str = "legacy"
) -> Tensor:
    """Conventional mutual learning: sinkhorn_cost(softmax(i_obs.logits), softmax(v_obs.logits))."""
    a, b = CML_PAIR
    return sinkhorn_cost(
        ops.softmax(out[a + ".logits"].astype(ms.float32), 1),
        ops.softmax(out[b + ".logits"].astype(ms.float32), 1),
        eps,
        max_iter,
        lse=lse,
    )


def branch_weighted(values: Mapping[str, Tensor]) -> Tensor:
    """Σ BRANCH_WEIGHTS[k]·values[k] over the eight outputs (0.5 i, 0.5 v, 0.25 i_ms, 0.25 v_ms,
    observation and representation alike)."""
    missing = [k for k in BRANCH_WEIGHTS if k not in values]
    if missing:
        raise KeyError(f"branch_weighted: missing {', '.join(missing)}")
    total = None
    for k, w in BRANCH_WEIGHTS.items():
        term = w * values[k]
        total = term if total is None else total + term
    return total


def id_loss(out: Mapping[str, Tensor], labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """branch_weighted cross-entropy over the eight "<x>.logits"."""
    return branch_weighted(
        {k: cross_entropy(out[k + ".logits"], labels, label_smoothing) for k in BRANCH_WEIGHTS}
    )


def _metric(feats: Tensor, labels: Tensor, modality: Tensor, loss_cfg: LossConfig) -> Tensor:
    if loss_cfg.triplet == "ranked_list":
        return ranked_list_loss(
            feats, labels, modality,
            loss_cfg.rll_m1, loss_cfg.rll_m2, loss_cfg.rll_a1, loss_cfg.rll_a2,
        )
    if loss_cfg.triplet == "batch_hard":
        return batch_hard_triplet(feats, labels, loss_cfg.margin)
    raise ValueError(f"loss.triplet: {loss_cfg.triplet!r} is not one of batch_hard, ranked_list")


def triplet_loss(
    out: Mapping[str, Tensor], labels: Tensor, modality: Tensor, loss_cfg: LossConfig
) -> Tensor:
    """branch_weighted metric loss on "<obs>.feat" / "<rep>.z": batch-hard triplet or, when
    ``loss_cfg.triplet == "ranked_list"``, the ranked-list loss."""
    return branch_weighted(
        {k: _metric(out[tap], labels, modality, loss_cfg) for k, tap in METRIC_TAP.items()}
    )


def mvd_loss(
    out: Mapping[str, Tensor], labels: Tensor, modality: Tensor, loss_cfg: LossConfig
) -> dict[str, Tensor]:
    """The terms of ``loss_cfg.preset`` (unweighted) plus "total" = Σ PRESET_WEIGHTS·term."""
    weights = preset_weights(loss_cfg.preset)
    terms: dict[str, Tensor] = {}
    for name in weights:
        if name == "id":
            terms[name] = id_loss(out, labels, loss_cfg.label_smoothing)
        elif name == "tri":
            terms[name] = triplet_loss(out, labels, modality, loss_cfg)
        elif name == "cml":
            terms[name] = cml_loss(out, loss_cfg.sinkhorn_eps, loss_cfg.sinkhorn_iters,
                                   loss_cfg.cml_lse)
        elif name == "vsd":
            terms[name] = vsd_loss(out, loss_cfg.kl, loss_cfg.temperature)
        elif name == "vcd":
            terms[name] = vcd_loss(out, loss_cfg.kl)  # the PT code's VCD has no temperature
        else:  # pragma: no cover - PRESET_WEIGHTS and this function are written together
            raise ValueError(f"unknown loss term {name!r}")
    total = None
    for k, w in weights.items():
        term = w * terms[k]
        total = term if total is None else total + term
    terms["total"] = total
    return terms


# --------------------------------------------------------------------------------------------
# the graph-friendly form
# --------------------------------------------------------------------------------------------

_OBS_TAPS = {  # output name → index of its logits / metric tap in the network's tuple output
    "v_obs": (1, 0), "i_obs": (3, 2), "v_ms_obs": (5, 4), "i_ms_obs": (7, 6),
    "v_rep": (9, 8), "i_rep": (11, 10), "v_ms_rep": (13, 12), "i_ms_rep": (15, 14),
}


class _MVDLoss(nn.Cell):
    """:func:`mvd_loss` over the network's tuple output (:class:`MVDNet` order), with the
    config resolved to constants in ``__init__`` so ``construct`` compiles in graph mode.

    ``construct(outs, labels, modality)`` returns a 1-D float32 Tensor: the preset's terms in
    :data:`terms` order (unweighted), then the weighted total. ``host_stop``: see
    :func:`_sinkhorn` (PyNative only).
    """

    def __init__(self, loss_cfg: LossConfig, host_stop: bool = False) -> None:
        super().__init__()
        weights = preset_weights(loss_cfg.preset)
        if loss_cfg.triplet not in TRIPLET_KINDS:
            raise ValueError(f"loss.triplet: {loss_cfg.triplet!r} is not one of "
                             f"{', '.join(TRIPLET_KINDS)}")
        if loss_cfg.kl not in KL_MODES:
            raise ValueError(f"loss.kl: {loss_cfg.kl!r} is not one of {', '.join(KL_MODES)}")
        #: the names of the returned values, "total" last
        self.terms = tuple(t for t in TERMS if t in weights) + ("total",)
        self.use = {t: (t in weights) for t in TERMS}
        self.w = {t: float(weights.get(t, 0.0)) for t in TERMS}
        self.ls = float(loss_cfg.label_smoothing)
        self.ranked = loss_cfg.triplet == "ranked_list"
        self.margin = float(loss_cfg.margin)
        self.rll = (float(loss_cfg.rll_m1), float(loss_cfg.rll_m2),
                    float(loss_cfg.rll_a1), float(loss_cfg.rll_a2))
        self.kl = loss_cfg.kl
        self.temp = float(loss_cfg.temperature)
        self.sk_eps = float(loss_cfg.sinkhorn_eps)
        self.sk_iters = int(loss_cfg.sinkhorn_iters)
        if loss_cfg.cml_lse not in CML_LSE_MODES:
            raise ValueError(f"loss.cml_lse: {loss_cfg.cml_lse!r} is not one of "
                             f"{', '.join(CML_LSE_MODES)}")
        self.sk_lse = loss_cfg.cml_lse
        self.host_stop = bool(host_stop)
        self.bw = tuple((_OBS_TAPS[k][0], _OBS_TAPS[k][1], float(w))
                        for k, w in BRANCH_WEIGHTS.items())
        self.vsd_pairs = tuple((_OBS_TAPS[t][0], _OBS_TAPS[s][0], float(w))
                               for t, s, w in VSD_PAIRS)
        self.vcd_pairs = tuple((_OBS_TAPS[t][0], _OBS_TAPS[s][0], float(w))
                               for t, s, w in VCD_PAIRS)
        self.cml_pair = (_OBS_TAPS[CML_PAIR[0]][0], _OBS_TAPS[CML_PAIR[1]][0])

    def construct(self, outs: tuple, labels: Tensor, modality: Tensor) -> Tensor:
        vals = []
        total = ops.zeros((), ms.float32)
        if self.use["id"]:
            t = ops.zeros((), ms.float32)
            for li, _, w in self.bw:
                t = t + w * cross_entropy(outs[li], labels, self.ls)
            vals.append(t)
            total = total + self.w["id"] * t
        if self.use["tri"]:
            t = ops.zeros((), ms.float32)
            for _, fi, w in self.bw:
                if self.ranked:
                    m1, m2, a1, a2 = self.rll
                    t = t + w * ranked_list_loss(outs[fi], labels, modality, m1, m2, a1, a2)
                else:
                    t = t + w * batch_hard_triplet(outs[fi], labels, self.margin)
            vals.append(t)
            total = total + self.w["tri"] * t
        if self.use["cml"]:
            a, b = self.cml_pair
            t = _sinkhorn(ops.softmax(outs[a], 1), ops.softmax(outs[b], 1),
                          self.sk_eps, self.sk_iters, SINKHORN_THRESH, self.host_stop,
                          self.sk_lse)
            vals.append(t)
            total = total + self.w["cml"] * t
        if self.use["vsd"]:
            t = ops.zeros((), ms.float32)
            for ti, si, w in self.vsd_pairs:
                t = t + w * kl_div(outs[ti], outs[si], self.kl, self.temp)
            vals.append(t)
            total = total + self.w["vsd"] * t
        if self.use["vcd"]:
            t = ops.zeros((), ms.float32)
            for ti, si, w in self.vcd_pairs:  # no temperature, as the PT code's VCD
                t = t + w * kl_div(outs[ti], outs[si], self.kl, 1.0)
            vals.append(t)
            total = total + self.w["vcd"] * t
        vals.append(total)
        return ops.stack(vals)
