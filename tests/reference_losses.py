"""NumPy (float64) reference implementation of every MVD loss (SPEC §3).

Plain, loop-based and meant to be obviously correct: both backends' loss tests compare against
these functions. The elementary losses have the same names and semantics as the backends'
primitives (``mvd_backends.{torch,mindspore}.losses``); the composed terms (``id_loss`` ...
``mvd_loss``) are written here independently of the shared composition
(``mvd_core.model.losses.compose``) they check. Constants come from :mod:`mvd_core.model.losses`.

Source of the exact forms: the original PyTorch code,
FutabaSakuraXD/Farewell-to-Mutual-Information-Variational-Distiilation-for-Cross-Modal-Person-
Re-identification (``reid/trainers.py`` for how the losses are combined, ``utlis.py`` for
``CrossEntropyLabelSmooth``, ``Rank_loss`` and ``SinkhornDistance``, ``mm01.py`` for the
hyper-parameters). Every function returns a Python float.

``out`` is a dict of arrays named as in ``mvd_core.interface.TAP_NAMES``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mvd_core.config import LossConfig
from mvd_core.model.losses import (
    BRANCH_WEIGHTS,
    CML_PAIR,
    DIST_CLIP,
    METRIC_TAP,
    NORMALIZE_EPS,
    RLL_EPS,
    RLL_TVAL,
    SINKHORN_LSE_EPS,
    SINKHORN_MARGINAL_EPS,
    SINKHORN_THRESH,
    VCD_PAIRS,
    VSD_PAIRS,
    preset_weights,
)

__all__ = [
    "log_softmax",
    "softmax",
    "pairwise_distance",
    "cross_entropy",
    "batch_hard_triplet",
    "ranked_list_loss",
    "kl_div",
    "vsd_loss",
    "vcd_loss",
    "sinkhorn_plan",
    "sinkhorn_cost",
    "cml_loss",
    "branch_weighted",
    "id_loss",
    "triplet_loss",
    "mvd_loss",
]

Array = np.ndarray


def _f64(x: object) -> Array:
    return np.asarray(x, dtype=np.float64)


def _logsumexp_1d(x: Array) -> float:
    m = float(np.max(x))
    if not np.isfinite(m):
        return m
    return m + float(np.log(np.sum(np.exp(x - m))))


def log_softmax(logits: Array) -> Array:
    """Row-wise log softmax: log_softmax(x)_c = x_c − log Σ_k exp(x_k), (B, C) → (B, C)."""
    x = _f64(logits)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        out[b] = x[b] - _logsumexp_1d(x[b])
    return out


def softmax(logits: Array) -> Array:
    """Row-wise softmax exp(log_softmax(x))."""
    return np.exp(log_softmax(logits))


def pairwise_distance(feats: Array) -> Array:
    """D_ij = sqrt(max(|a_i|² + |a_j|² − 2 a_i·a_j, DIST_CLIP)) (the diagonal is sqrt(1e-12))."""
    a = _f64(feats)
    n = a.shape[0]
    d = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            sq = a[i] @ a[i] + a[j] @ a[j] - 2.0 * (a[i] @ a[j])
            d[i, j] = np.sqrt(max(sq, DIST_CLIP))
    return d


# --------------------------------------------------------------------------------------------
# identity and metric losses
# --------------------------------------------------------------------------------------------


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> float:
    """Label-smoothed cross-entropy, batch mean.

        loss = (1/B) Σ_b Σ_c −q_bc · log_softmax(logits_b)_c,
        q_bc = (1 − ε)·[c == labels_b] + ε/C

    (``CrossEntropyLabelSmooth`` of the PT code; ε = 0 is plain cross-entropy, = −log p_label.)
    """
    x = _f64(logits)
    y = np.asarray(labels).astype(np.int64)
    bsz, ncls = x.shape
    eps = float(label_smoothing)
    lp = log_softmax(x)
    total = 0.0
    for b in range(bsz):
        for c in range(ncls):
            q = (1.0 - eps) * (1.0 if c == y[b] else 0.0) + eps / ncls
            total += -q * lp[b, c]
    return total / bsz


def batch_hard_triplet(feats: Array, labels: Array, margin: float = 0.3) -> float:
    """Batch-hard triplet loss on UNnormalised features (the MS recipe).

        d_ij = sqrt(max(|a_i|² + |a_j|² − 2 a_i·a_j, 1e-12))
        d_ap(i) = max_{j: y_j = y_i} d_ij     (j = i included: d_ii = 1e-6)
        d_an(i) = min_{j: y_j ≠ y_i} d_ij
        loss = (1/B) Σ_i max(0, d_ap(i) − d_an(i) + margin)

    ValueError if some anchor has no negative (a batch of a single identity).
    """
    y = np.asarray(labels)
    d = pairwise_distance(feats)
    n = d.shape[0]
    total = 0.0
    for i in range(n):
        pos = [d[i, j] for j in range(n) if y[j] == y[i]]
        neg = [d[i, j] for j in range(n) if y[j] != y[i]]
        if not neg:
            raise ValueError("batch_hard_triplet: an anchor has no negative (one identity only)")
        total += max(0.0, max(pos) - min(neg) + margin)
    return total / n


def ranked_list_loss(
    feats: Array,
    labels: Array,
    modality: Array,
    m1: float = 0.9,
    m2: float = 1.0,
    a1: float = 2.2,
    a2: float = 2.0,
) -> float:
    """The PT code's ranked-list loss (``utlis.Rank_loss``), on L2-normalised features.

    x_i ← x_i / max(‖x_i‖, 1e-12);  D_ij = sqrt(max(|x_i|² + |x_j|² − 2 x_i·x_j, 1e-12)).
    For each anchor i, with "intra" = same modality as i (i itself included) and "cross" = the
    other modality, the sets
        P_intra = {j ≠ i: y_j = y_i, intra}      P_cross = {j: y_j = y_i, cross}
        N_intra = {j: y_j ≠ y_i, intra, D_ij < a1}
        N_cross = {j: y_j ≠ y_i, cross, D_ij < a2}
    (self is never a positive; negatives at distance ≥ a are ignored). Then
        L_pos(i) = Σ_{P_intra} [D_ij + m1 − a1]₊ / (|P_intra| + 1e-5)
                 + Σ_{P_cross} [D_ij + m2 − a2]₊ / (|P_cross| + 1e-5)
        w_ij     = exp(tval·(a − D_ij)),  tval = 1, a = a1 on N_intra, a2 on N_cross
        L_neg(i) = Σ_{N_intra} w_ij (a1 − D_ij) / (Σ_{N_intra} w_ij + 1e-5)
                 + Σ_{N_cross} w_ij (a2 − D_ij) / (Σ_{N_cross} w_ij + 1e-5)
        loss = (1/B) Σ_i [L_pos(i) + L_neg(i)]
    An empty set contributes 0 (0 / 1e-5). PT defaults (mm01.py): m1=0.9, m2=1.0, a1=2.2, a2=2.0.
    """
    x = _f64(feats)
    y = np.asarray(labels)
    s = np.asarray(modality)
    n = x.shape[0]
    xn = np.empty_like(x)
    for i in range(n):
        xn[i] = x[i] / max(float(np.sqrt(x[i] @ x[i])), NORMALIZE_EPS)
    d = pairwise_distance(xn)
    total = 0.0
    for i in range(n):
        pos_intra: list[float] = []
        pos_cross: list[float] = []
        neg_intra: list[float] = []
        neg_cross: list[float] = []
        for j in range(n):
            intra = s[j] == s[i]
            if y[j] == y[i]:
                if j == i:
                    continue
                (pos_intra if intra else pos_cross).append(d[i, j])
            else:
                if intra and d[i, j] < a1:
                    neg_intra.append(d[i, j])
                elif not intra and d[i, j] < a2:
                    neg_cross.append(d[i, j])
        l_pos = sum(max(0.0, dij + m1 - a1) for dij in pos_intra) / (len(pos_intra) + RLL_EPS)
        l_pos += sum(max(0.0, dij + m2 - a2) for dij in pos_cross) / (len(pos_cross) + RLL_EPS)
        l_neg = 0.0
        for dists, a in ((neg_intra, a1), (neg_cross, a2)):
            w = [float(np.exp(RLL_TVAL * (a - dij))) for dij in dists]
            l_neg += sum(wk * (a - dij) for wk, dij in zip(w, dists, strict=True)) / (sum(w) + RLL_EPS)
        total += l_pos + l_neg
    return total / n


# --------------------------------------------------------------------------------------------
# distillation
# --------------------------------------------------------------------------------------------


def kl_div(
    teacher_logits: Array,
    student_logits: Array,
    mode: str = "proper",
    temperature: float = 1.0,
) -> float:
    """Distillation divergence between the teacher's and the student's class distributions.

    The teacher side is stop-gradient (in the backends). With t = softmax(teacher/T) and
    s = softmax(student/T):

    ``proper`` (default): KL(t ‖ s), batch mean, in log space (no T² factor)
        (1/B) Σ_b Σ_c t_bc · (log_softmax(teacher/T)_bc − log_softmax(student/T)_bc)

    ``legacy``: the PT code's exact expression. ``reid/trainers.py`` calls
    ``torch.nn.functional.kl_div(input=softmax(obs.detach()/T), target=softmax(rep/T))`` with
    the default 'mean' reduction; torch computes target·(log target − input) averaged over all
    B·C elements. So the TARGET of the original call is the STUDENT (the representation, the
    side that gets the gradient) and the teacher probability stands where a log-probability is
    expected:
        (1/(B·C)) Σ_b Σ_c s_bc · (log s_bc − t_bc)      (0·log 0 := 0)
    This is not a divergence and is usually negative (e.g. −0.5311 for t = (½, ½),
    s = (¾, ¼)). Note the roles: it is s·(log s − t), not t·(log t − s).
    """
    if mode not in ("proper", "legacy"):
        raise ValueError(f"kl_div: mode {mode!r} is not one of proper, legacy")
    tt = _f64(teacher_logits) / temperature
    ss = _f64(student_logits) / temperature
    bsz, ncls = tt.shape
    log_t = log_softmax(tt)
    log_s = log_softmax(ss)
    t = np.exp(log_t)
    s = np.exp(log_s)
    total = 0.0
    for b in range(bsz):
        for c in range(ncls):
            if mode == "proper":
                if t[b, c] > 0.0:
                    total += t[b, c] * (log_t[b, c] - log_s[b, c])
            else:
                if s[b, c] > 0.0:
                    total += s[b, c] * (log_s[b, c] - t[b, c])
    return total / bsz if mode == "proper" else total / (bsz * ncls)


def _pairs_kl(
    out: Mapping[str, Array],
    pairs: tuple[tuple[str, str, float], ...],
    mode: str,
    temperature: float,
) -> float:
    return sum(
        w * kl_div(out[f"{teacher}.logits"], out[f"{student}.logits"], mode, temperature)
        for teacher, student, w in pairs
    )


def vsd_loss(out: Mapping[str, Array], mode: str = "proper", temperature: float = 1.0) -> float:
    """Variational self-distillation:
    kl_div(i_obs.logits, i_rep.logits) + kl_div(v_obs.logits, v_rep.logits)
    (each observation teaches its own representation)."""
    return _pairs_kl(out, VSD_PAIRS, mode, temperature)


def vcd_loss(out: Mapping[str, Array], mode: str = "proper", temperature: float = 1.0) -> float:
    """Variational cross-distillation across the shared views:
    0.5·kl_div(v_ms_obs.logits, i_ms_rep.logits) + 0.5·kl_div(i_ms_obs.logits, v_ms_rep.logits).
    The PT code applies NO temperature here (``self.softmax(v_ms_observation[0].detach())``),
    so :func:`mvd_loss` calls it with T = 1 whatever ``loss.temperature`` (VSD's) is."""
    return _pairs_kl(out, VCD_PAIRS, mode, temperature)


# --------------------------------------------------------------------------------------------
# conventional mutual learning (entropic optimal transport)
# --------------------------------------------------------------------------------------------


def _lse_legacy_1d(x: Array) -> float:
    """The PT code's ``lse``: log(Σ exp(x) + 1e-6), NOT max-shifted (float64 here: no overflow
    for the values a Sinkhorn on probability vectors produces)."""
    return float(np.log(np.sum(np.exp(x)) + SINKHORN_LSE_EPS))


def sinkhorn_plan(
    p: Array,
    q: Array,
    eps: float = 0.01,
    max_iter: int = 100,
    thresh: float = SINKHORN_THRESH,
    lse: str = "legacy",
) -> tuple[Array, Array, int]:
    """Log-domain Sinkhorn between the rows of p (B×C) and q (B×C) (``utlis.SinkhornDistance``).

    Returns (π, Cost, iterations). Not part of the backend API; used by the tests.

        Cost_jk = Σ_c (p_jc − q_kc)²,  mu = nu = 1/B,  u = v = 0
        M(u, v)_jk = (−Cost_jk + u_j + v_k) / eps
        repeat (at most max_iter times):
            u_prev = u
            u = eps·(log(mu + 1e-8) − lse_k M(u, v)_jk) + u
            v = eps·(log(nu + 1e-8) − lse_j M(u, v)_jk) + v     (with the new u)
            stop after this iteration if Σ_j |u_j − u_prev_j| < thresh
              (PT: ``err = (u - u1).abs().sum(-1).mean()``, ``thresh = 1e-1``)
        π = exp(M(u, v))
    ``lse="legacy"`` (the PT code's ``SinkhornDistance.lse``): lse(a) = log(Σ exp(a) + 1e-6),
    not max-shifted -- once the rows of M are all very negative (sharp softmaxes, small eps) the
    1e-6 dominates and the result is not a log-sum-exp; ``lse="exact"``: max-shifted
    logsumexp.
    """
    if lse not in ("legacy", "exact"):
        raise ValueError(f"sinkhorn: lse {lse!r} is not one of legacy, exact")
    row_lse = _lse_legacy_1d if lse == "legacy" else _logsumexp_1d
    pp = _f64(p)
    qq = _f64(q)
    nb = pp.shape[0]
    if qq.shape[0] != nb:
        raise ValueError(f"sinkhorn: p and q must have the same number of rows, got {nb} and "
                         f"{qq.shape[0]}")
    cost = np.empty((nb, qq.shape[0]))
    for j in range(nb):
        for k in range(qq.shape[0]):
            cost[j, k] = float(np.sum((pp[j] - qq[k]) ** 2))
    mu = np.full(nb, 1.0 / nb)
    nu = np.full(nb, 1.0 / nb)
    u = np.zeros(nb)
    v = np.zeros(nb)

    def m_of(uu: Array, vv: Array) -> Array:
        return (-cost + uu[:, None] + vv[None, :]) / eps

    iters = 0
    for _ in range(max_iter):
        u_prev = u
        m = m_of(u, v)
        u = eps * (np.log(mu + SINKHORN_MARGINAL_EPS) - np.array([row_lse(r) for r in m])) + u
        m = m_of(u, v)
        v = eps * (np.log(nu + SINKHORN_MARGINAL_EPS)
                   - np.array([row_lse(col) for col in m.T])) + v
        iters += 1
        if float(np.sum(np.abs(u - u_prev))) < thresh:
            break
    return np.exp(m_of(u, v)), cost, iters


def sinkhorn_cost(
    p: Array,
    q: Array,
    eps: float = 0.01,
    max_iter: int = 100,
    thresh: float = SINKHORN_THRESH,
    lse: str = "legacy",
) -> float:
    """Entropic OT cost Σ_jk π_jk·Cost_jk with π from :func:`sinkhorn_plan` (same arguments)."""
    pi, cost, _ = sinkhorn_plan(p, q, eps, max_iter, thresh, lse)
    return float(np.sum(pi * cost))


def cml_loss(
    out: Mapping[str, Array], eps: float = 0.01, max_iter: int = 100, lse: str = "legacy"
) -> float:
    """Conventional mutual learning (PT only):
    sinkhorn_cost(softmax(i_obs.logits), softmax(v_obs.logits), eps, max_iter, lse=lse)."""
    a, b = CML_PAIR
    return sinkhorn_cost(softmax(out[f"{a}.logits"]), softmax(out[f"{b}.logits"]), eps, max_iter,
                         lse=lse)


# --------------------------------------------------------------------------------------------
# branch weighting and the total
# --------------------------------------------------------------------------------------------


def branch_weighted(values: Mapping[str, float]) -> float:
    """0.5[i_obs + i_rep] + 0.5[v_obs + v_rep] + 0.25[i_ms_obs + i_ms_rep]
    + 0.25[v_ms_obs + v_ms_rep] (weights BRANCH_WEIGHTS, which sum to 3); ``values`` must hold
    the eight output names."""
    missing = [k for k in BRANCH_WEIGHTS if k not in values]
    if missing:
        raise KeyError(f"branch_weighted: missing {', '.join(missing)}")
    return float(sum(w * float(values[k]) for k, w in BRANCH_WEIGHTS.items()))


def id_loss(out: Mapping[str, Array], labels: Array, label_smoothing: float = 0.0) -> float:
    """branch_weighted of cross_entropy(out["<x>.logits"], labels, label_smoothing) over the
    eight outputs."""
    return branch_weighted(
        {k: cross_entropy(out[f"{k}.logits"], labels, label_smoothing) for k in BRANCH_WEIGHTS}
    )


def triplet_loss(
    out: Mapping[str, Array], labels: Array, modality: Array, loss_cfg: LossConfig
) -> float:
    """branch_weighted of the metric loss on "<obs>.feat" and "<rep>.z": batch_hard_triplet
    (margin = loss_cfg.margin) or, when loss_cfg.triplet == "ranked_list", ranked_list_loss
    (loss_cfg.rll_m1, rll_m2, rll_a1, rll_a2)."""
    vals: dict[str, float] = {}
    for k, tap in METRIC_TAP.items():
        if loss_cfg.triplet == "ranked_list":
            vals[k] = ranked_list_loss(
                out[tap], labels, modality,
                loss_cfg.rll_m1, loss_cfg.rll_m2, loss_cfg.rll_a1, loss_cfg.rll_a2,
            )
        elif loss_cfg.triplet == "batch_hard":
            vals[k] = batch_hard_triplet(out[tap], labels, loss_cfg.margin)
        else:
            raise ValueError(f"loss.triplet: {loss_cfg.triplet!r} is not one of batch_hard, "
                             "ranked_list")
    return branch_weighted(vals)


def mvd_loss(
    out: Mapping[str, Array], labels: Array, modality: Array, loss_cfg: LossConfig
) -> dict[str, float]:
    """The loss terms of ``loss_cfg.preset`` (PRESET_WEIGHTS), UNweighted, plus
    "total" = Σ weight·term.

        id  = id_loss(out, labels, loss_cfg.label_smoothing)
        tri = triplet_loss(out, labels, modality, loss_cfg)
        cml = cml_loss(out, loss_cfg.sinkhorn_eps, loss_cfg.sinkhorn_iters, loss_cfg.cml_lse)
        vsd = vsd_loss(out, loss_cfg.kl, loss_cfg.temperature)
        vcd = vcd_loss(out, loss_cfg.kl)     (no temperature, as the PT code)
    """
    weights = preset_weights(loss_cfg.preset)
    terms: dict[str, float] = {}
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
            terms[name] = vcd_loss(out, loss_cfg.kl)  # no temperature in the PT code's VCD
        else:  # pragma: no cover - PRESET_WEIGHTS and this function are written together
            raise ValueError(f"unknown loss term {name!r}")
    terms["total"] = float(sum(weights[k] * terms[k] for k in weights))
    return terms
