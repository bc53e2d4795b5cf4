"""The elementary MVD losses in PyTorch: this module is the torch backend's
:class:`mvd_core.model.losses.LossPrimitives` (where each primitive is specified); the
composition of the terms is the shared one (:func:`mvd_core.model.losses.compose`).

Every function returns a 0-d float32 tensor and computes in float32 whatever the input dtype
(autocast outputs are upcast; float64 stays float64, for the tests).

No function here synchronises with the device (no ``.item()``): the Sinkhorn early stop is
done by freezing converged iterates on accelerators, which gives the same values and gradients
as breaking out of the loop (on the CPU it simply breaks).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mvd_core.config import LossConfig
from mvd_core.model import losses as shared
from mvd_core.model.losses import (
    CML_LSE_MODES,
    DIST_CLIP,
    KL_MODES,
    NORMALIZE_EPS,
    RLL_EPS,
    RLL_TVAL,
    SINKHORN_LSE_EPS,
    SINKHORN_MARGINAL_EPS,
    SINKHORN_THRESH,
)


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
    """F.cross_entropy with label_smoothing."""
    return F.cross_entropy(_f(logits), labels, label_smoothing=float(label_smoothing))


def batch_hard_triplet(feats: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet (torch.amax/amin; single-identity batches are refused on the host)."""
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
    """Ranked-list loss, F.normalize then the four masked hinge/weight terms."""
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
    """KL in log space (F.kl_div log_target); "legacy" the public codes' expression."""
    if mode not in KL_MODES:
        raise ValueError(f"kl_div: mode {mode!r} is not one of {', '.join(KL_MODES)}")
    t_log = F.log_softmax(_f(teacher_logits.detach()) / temperature, dim=1)
    s_log = F.log_softmax(_f(student_logits) / temperature, dim=1)
    if mode == "proper":
        return F.kl_div(s_log, t_log, reduction="batchmean", log_target=True)
    s = torch.exp(s_log)
    return torch.mean(s * (s_log - torch.exp(t_log)))


def sinkhorn_cost(
    p: Tensor,
    q: Tensor,
    eps: float = 0.01,
    max_iter: int = 100,
    thresh: float = SINKHORN_THRESH,
    lse: str = "legacy",
) -> Tensor:
    """Sinkhorn cost; on accelerators the early stop freezes converged iterates (no sync)."""
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


def softmax(logits: Tensor) -> Tensor:
    """Row softmax over the classes, float32 (float64 kept)."""
    return torch.softmax(_f(logits), dim=1)


def mvd_loss(
    out: Mapping[str, Tensor], labels: Tensor, modality: Tensor, loss_cfg: LossConfig
) -> dict[str, Tensor]:
    """The shared composition (:func:`mvd_core.model.losses.mvd_loss`) over this module's
    primitives: the preset's terms (unweighted) and "total"."""
    return shared.mvd_loss(sys.modules[__name__], out, labels, modality, loss_cfg)
