"""The MVD losses in PyTorch (SPEC §3).

Same public names and semantics as the NumPy reference (``tests/reference_losses.py``, where
each formula is written out) and ``mvd_backends.mindspore.losses``; constants come from
:mod:`mvd_core.model.losses`. Every function returns a 0-d float32 tensor (``mvd_loss`` a dict of
them) and computes in float32 whatever the input dtype (autocast outputs are upcast).

No function here synchronises with the device (no ``.item()``): the Sinkhorn early stop is
done by freezing converged iterates on accelerators, which gives the same values and gradients
as breaking out of the loop (on the CPU it simply breaks).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

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


def _f(x: Tensor) -> Tensor:
    """float32, or float64 if given (tests); half/bfloat16 autocast outputs are upcast."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def pairwise_distance(feats: Tensor) -> Tensor:
    """D_ij = sqrt(max(|a_i|² + |a_j|² − 2 a_i·a_j, 1e-12)), (B, D) → (B, B)."""
    a = _f(feats)
    sq = torch.sum(a * a, dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.t())
    return torch.sqrt(torch.clamp(d2, min=DIST_CLIP))


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Label-smoothed cross-entropy, batch mean: q = (1 − ε)·onehot + ε/C."""
    return F.cross_entropy(_f(logits), labels, label_smoothing=float(label_smoothing))


def batch_hard_triplet(feats: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet on unnormalised features: mean relu(max_pos d − min_neg d + margin),
    positives include the anchor itself. (An anchor without negatives contributes 0; the
    backend rejects single-identity batches on the host, so no device sync is needed here.)"""
    d = pairwise_distance(feats)
    same = labels[:, None] == labels[None, :]
    d_ap = torch.amax(torch.where(same, d, torch.full_like(d, -torch.inf)), dim=1)
    d_an = torch.amin(torch.where(same, torch.full_like(d, torch.inf), d), dim=1)
    return torch.mean(F.relu(d_ap - d_an + margin))


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
    x = F.normalize(_f(feats), p=2.0, dim=1, eps=NORMALIZE_EPS)
    d = pairwise_distance(x)
    n = d.shape[0]
    same_id = labels[:, None] == labels[None, :]
    intra = modality[:, None] == modality[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    zero = torch.zeros_like(d)

    def pos_term(mask: Tensor, m: float, a: float) -> Tensor:
        hinge = torch.where(mask, F.relu(d + (m - a)), zero)
        return hinge.sum(dim=1) / (mask.sum(dim=1).to(d.dtype) + RLL_EPS)

    def neg_term(mask: Tensor, a: float) -> Tensor:
        w = torch.where(mask, torch.exp(RLL_TVAL * (a - d)), zero)
        return (w * (a - d)).sum(dim=1) / (w.sum(dim=1) + RLL_EPS)

    p_intra = same_id & intra & ~eye
    p_cross = same_id & ~intra
    n_intra = ~same_id & intra & (d < a1)
    n_cross = ~same_id & ~intra & (d < a2)
    per_anchor = (
        pos_term(p_intra, m1, a1)
        + pos_term(p_cross, m2, a2)
        + neg_term(n_intra, a1)
        + neg_term(n_cross, a2)
    )
    return per_anchor.mean()


def kl_div(
    teacher_logits: Tensor,
    student_logits: Tensor,
    mode: str = "proper",
    temperature: float = 1.0,
) -> Tensor:
    """Distillation divergence, teacher stop-gradient; t = softmax(teacher/T), s =
    softmax(student/T).

    proper: KL(t ‖ s) = batch mean of Σ_c t·(log t − log s), in log space.
    legacy: the public codes' misuse of kl_div with probabilities for log-probabilities,
    mean over B·C of s·(log s − t) (not a divergence; usually negative).
    """
    if mode not in KL_MODES:
        raise ValueError(f"kl_div: mode {mode!r} is not one of {', '.join(KL_MODES)}")
    t_log = F.log_softmax(_f(teacher_logits.detach()) / temperature, dim=1)
    s_log = F.log_softmax(_f(student_logits) / temperature, dim=1)
    if mode == "proper":
        return F.kl_div(s_log, t_log, reduction="batchmean", log_target=True)
    s = torch.exp(s_log)
    return torch.mean(s * (s_log - torch.exp(t_log)))


def _pairs_kl(
    out: Mapping[str, Tensor],
    pairs: tuple[tuple[str, str, float], ...],
    mode: str,
    temperature: float,
) -> Tensor:
    total: Tensor | None = None
    for teacher, student, w in pairs:
        term = w * kl_div(out[f"{teacher}.logits"], out[f"{student}.logits"], mode, temperature)
        total = term if total is None else total + term
    assert total is not None
    return total


def vsd_loss(out: Mapping[str, Tensor], mode: str = "proper", temperature: float = 1.0) -> Tensor:
    """Variational self-distillation: kl(i_obs → i_rep) + kl(v_obs → v_rep)."""
    return _pairs_kl(out, VSD_PAIRS, mode, temperature)


def vcd_loss(out: Mapping[str, Tensor], mode: str = "proper", temperature: float = 1.0) -> Tensor:
    """Variational cross-distillation: 0.5 kl(v_ms_obs → i_ms_rep) + 0.5 kl(i_ms_obs → v_ms_rep)."""
    return _pairs_kl(out, VCD_PAIRS, mode, temperature)


def sinkhorn_cost(
    p: Tensor,
    q: Tensor,
    eps: float = 0.01,
    max_iter: int = 100,
    thresh: float = SINKHORN_THRESH,
    lse: str = "legacy",
) -> Tensor:
    """Entropic OT cost Σ π⊙Cost between the rows of p and q (uniform marginals, squared-L2
    cost), log-domain Sinkhorn with gradient through the iterations; stops after the iteration
    where Σ|u − u_prev| < thresh (see the reference's ``sinkhorn_plan``). ``lse``: "legacy" =
    the PT code's log(Σ exp + 1e-6), "exact" = torch.logsumexp (``loss.cml_lse``)."""
    p = _f(p)
    q = _f(q).to(p.dtype)
    nb = p.shape[0]
    if q.shape[0] != nb:
        raise ValueError(
            f"sinkhorn: p and q must have the same number of rows, got {nb} and {q.shape[0]}"
        )
    cost = torch.sum((p[:, None, :] - q[None, :, :]) ** 2, dim=-1)
    pi = _sinkhorn_plan(cost, eps, max_iter, thresh, sync_free=p.device.type != "cpu", lse=lse)
    return torch.sum(pi * cost)


def _sinkhorn_plan(
    cost: Tensor,
    eps: float = 0.01,
    max_iter: int = 100,
    thresh: float = SINKHORN_THRESH,
    sync_free: bool = False,
    lse: str = "legacy",
) -> Tensor:
    """The transport plan π for a square ``cost`` matrix (uniform marginals), log domain.

    ``sync_free``: instead of breaking out of the loop when converged (which needs the host to
    read a device value every iteration), keep iterating with the converged u, v frozen via
    ``where`` -- the same values and the same gradients, no device→host synchronisation.
    """
    if lse not in CML_LSE_MODES:
        raise ValueError(f"loss.cml_lse: {lse!r} is not one of {', '.join(CML_LSE_MODES)}")

    def row_lse(a: Tensor, dim: int) -> Tensor:
        if lse == "exact":
            return torch.logsumexp(a, dim=dim)
        return torch.log(torch.exp(a).sum(dim=dim) + SINKHORN_LSE_EPS)  # PT: not max-shifted

    nb = cost.shape[0]
    log_marg = torch.log(
        torch.full((nb,), 1.0 / nb, dtype=cost.dtype, device=cost.device) + SINKHORN_MARGINAL_EPS
    )
    u = torch.zeros(nb, dtype=cost.dtype, device=cost.device)
    v = torch.zeros(nb, dtype=cost.dtype, device=cost.device)

    def m_of(uu: Tensor, vv: Tensor) -> Tensor:
        return (-cost + uu[:, None] + vv[None, :]) / eps

    done = torch.zeros((), dtype=torch.bool, device=cost.device)
    for _ in range(max_iter):
        u_prev = u
        u_new = eps * (log_marg - row_lse(m_of(u, v), 1)) + u
        v_new = eps * (log_marg - row_lse(m_of(u_new, v), 0)) + v
        converged = torch.sum(torch.abs(u_new - u_prev)) < thresh
        if sync_free:
            u = torch.where(done, u, u_new)
            v = torch.where(done, v, v_new)
            done = done | converged
        else:
            u, v = u_new, v_new
            if bool(converged):
                break
    return torch.exp(m_of(u, v))


def cml_loss(
    out: Mapping[str, Tensor], eps: float = 0.01, max_iter: int = 100, lse: str = "legacy"
) -> Tensor:
    """Conventional mutual learning: sinkhorn_cost(softmax(i_obs.logits), softmax(v_obs.logits))."""
    a, b = CML_PAIR
    return sinkhorn_cost(
        torch.softmax(_f(out[f"{a}.logits"]), dim=1),
        torch.softmax(_f(out[f"{b}.logits"]), dim=1),
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
    total: Tensor | None = None
    for k, w in BRANCH_WEIGHTS.items():
        term = w * values[k]
        total = term if total is None else total + term
    assert total is not None
    return total


def id_loss(out: Mapping[str, Tensor], labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """branch_weighted cross-entropy over the eight "<x>.logits"."""
    return branch_weighted(
        {k: cross_entropy(out[f"{k}.logits"], labels, label_smoothing) for k in BRANCH_WEIGHTS}
    )


def triplet_loss(
    out: Mapping[str, Tensor], labels: Tensor, modality: Tensor, loss_cfg: LossConfig
) -> Tensor:
    """branch_weighted metric loss on "<obs>.feat" / "<rep>.z": batch-hard triplet or, when
    ``loss_cfg.triplet == "ranked_list"``, the ranked-list loss."""
    vals: dict[str, Tensor] = {}
    for k, tap in METRIC_TAP.items():
        if loss_cfg.triplet == "ranked_list":
            vals[k] = ranked_list_loss(
                out[tap],
                labels,
                modality,
                loss_cfg.rll_m1,
                loss_cfg.rll_m2,
                loss_cfg.rll_a1,
                loss_cfg.rll_a2,
            )
        elif loss_cfg.triplet == "batch_hard":
            vals[k] = batch_hard_triplet(out[tap], labels, loss_cfg.margin)
        else:
            raise ValueError(
                f"loss.triplet: {loss_cfg.triplet!r} is not one of batch_hard, ranked_list"
            )
    return branch_weighted(vals)


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
            terms[name] = cml_loss(
                out, loss_cfg.sinkhorn_eps, loss_cfg.sinkhorn_iters, loss_cfg.cml_lse
            )
        elif name == "vsd":
            terms[name] = vsd_loss(out, loss_cfg.kl, loss_cfg.temperature)
        elif name == "vcd":
            terms[name] = vcd_loss(out, loss_cfg.kl)  # the PT code's VCD has no temperature
        else:  # pragma: no cover - PRESET_WEIGHTS and this function are written together
            raise ValueError(f"unknown loss term {name!r}")
    total: Tensor | None = None
    for k, w in weights.items():
        term = w * terms[k]
        total = term if total is None else total + term
    assert total is not None
    terms["total"] = total
    return terms
