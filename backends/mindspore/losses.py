"""The elementary MVD losses in MindSpore: this module is the MindSpore backend's
:class:`mvd_core.model.losses.LossPrimitives` (where each primitive is specified); the terms are
composed by the shared :func:`mvd_core.model.losses.compose`, which :class:`_MVDLoss` compiles.

Every function runs in PyNative mode and inside a ``mindspore.jit``-compiled function (graph
mode): control flow depends only on Python constants (shapes, config values). In particular the
Sinkhorn early stop (Σ|u − u_prev| < thresh) is a fixed-trip loop whose iterates freeze once the
criterion is met — the same values and gradients as breaking out of the loop, without a
data-dependent branch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import mindspore as ms
from mindspore import Tensor, nn, ops

from mvd_core.config import LossConfig
from mvd_core.model import losses as shared

_INF = float("inf")


def pairwise_distance(feats: Tensor) -> Tensor:
    """D_ij = sqrt(max(|a_i|² + |a_j|² − 2 a_i·a_j, 1e-12)), (B, D) → (B, B)."""
    a = feats.astype(ms.float32)
    sq = (a * a).sum(axis=1)
    d2 = sq.expand_dims(1) + sq.expand_dims(0) - 2.0 * ops.matmul(a, a.T)
    return ops.sqrt(ops.maximum(d2, shared.DIST_CLIP))


def _l2_normalize(x: Tensor) -> Tensor:
    norm = ops.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / ops.maximum(norm, shared.NORMALIZE_EPS)


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy against a smoothed one-hot (ops.one_hot on, off values)."""
    x = logits.astype(ms.float32)
    ncls = x.shape[1]
    lp = ops.log_softmax(x, axis=1)
    on = Tensor(1.0 - label_smoothing + label_smoothing / ncls, ms.float32)
    off = Tensor(label_smoothing / ncls, ms.float32)
    q = ops.one_hot(labels.astype(ms.int32), ncls, on, off)
    return -(q * lp).sum(axis=1).mean()


def batch_hard_triplet(feats: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet with ops.amax/amin (the backend refuses single-identity batches)."""
    d = pairwise_distance(feats)
    same = labels.expand_dims(1) == labels.expand_dims(0)
    # amax/amin (ReduceMax/ReduceMin, gradient shared among ties as torch.amax) rather than
    # Tensor.max/min (ArgMaxWithValue, whose scatter-based gradient MindSpore 2.8 warns about)
    d_ap = ops.amax(ops.where(same, d, ops.full_like(d, -_INF)), 1)
    d_an = ops.amin(ops.where(same, ops.full_like(d, _INF), d), 1)
    return ops.relu(d_ap - d_an + margin).mean()


def ranked_list_loss(feats: Tensor, labels: Tensor, modality: Tensor, m1: float = 0.9,
                     m2: float = 1.0, a1: float = 2.2, a2: float = 2.0) -> Tensor:
    """Ranked-list loss: the four masks written out, each term divided by its count + RLL_EPS."""
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
    pos = hinge_i.sum(axis=1) / (p_intra.astype(ms.float32).sum(axis=1) + shared.RLL_EPS)
    pos = pos + hinge_c.sum(axis=1) / (p_cross.astype(ms.float32).sum(axis=1) + shared.RLL_EPS)
    w_i = ops.where(n_intra, ops.exp(shared.RLL_TVAL * (a1 - d)), zero)
    w_c = ops.where(n_cross, ops.exp(shared.RLL_TVAL * (a2 - d)), zero)
    neg = (w_i * (a1 - d)).sum(axis=1) / (w_i.sum(axis=1) + shared.RLL_EPS)
    neg = neg + (w_c * (a2 - d)).sum(axis=1) / (w_c.sum(axis=1) + shared.RLL_EPS)
    return (pos + neg).mean()


def kl_div(teacher_logits: Tensor, student_logits: Tensor, mode: str = "proper",
           temperature: float = 1.0) -> Tensor:
    """KL from log_softmax; "legacy" the public codes' mean s·(log s − t)."""
    if mode not in shared.KL_MODES:
        raise ValueError(f"kl_div: mode {mode} is not one of proper, legacy")
    t_log = ops.log_softmax(ops.stop_gradient(teacher_logits).astype(ms.float32) / temperature, 1)
    s_log = ops.log_softmax(student_logits.astype(ms.float32) / temperature, 1)
    if mode == "proper":
        return (ops.exp(t_log) * (t_log - s_log)).sum() / t_log.shape[0]
    s = ops.exp(s_log)
    return (s * (s_log - ops.exp(t_log))).mean()


def _logsumexp(x: Tensor, axis: int, lse: str = "exact") -> Tensor:
    """exact: max-shifted logsumexp; legacy: the PT code's log(Σ exp(x) + 1e-6), not shifted."""
    if lse == "legacy":
        return ops.log(ops.exp(x).sum(axis=axis) + shared.SINKHORN_LSE_EPS)
    m = ops.stop_gradient(x.max(axis=axis, keepdims=True))
    return (ops.log(ops.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def sinkhorn_cost(p: Tensor, q: Tensor, eps: float = 0.01, max_iter: int = 100,
                  thresh: float = shared.SINKHORN_THRESH, lse: str = "legacy") -> Tensor:
    """Entropic OT cost Σ π⊙Cost between the rows of p and q (uniform marginals, squared-L2
    cost), log-domain Sinkhorn with gradient through the iterations, stopping after the
    iteration where Σ|u − u_prev| < thresh (the reference's ``sinkhorn_plan``). ``lse``:
    "legacy" = the PT code's log(Σ exp + 1e-6), "exact" = a max-shifted logsumexp.

    The stop is data-dependent; to stay one static graph the loop always runs ``max_iter``
    trips and freezes u, v (``where(done, old, new)``) from the trip after the criterion first
    holds: identical values, and identical gradients (a frozen trip passes the gradient to the
    old iterate only). (The backend's eager loss evaluation, ``loss_terms`` in PyNative mode,
    uses :class:`_HostStop`: it reads the criterion back each trip and leaves the loop — the
    same values, fewer kernel launches.)
    """
    return _sinkhorn(p, q, eps, max_iter, thresh, False, lse)


def _sinkhorn(p: Tensor, q: Tensor, eps: float, max_iter: int, thresh: float,
              host_stop: bool, lse: str = "legacy") -> Tensor:
    if lse not in shared.CML_LSE_MODES:
        raise ValueError(f"loss.cml_lse: {lse} is not one of legacy, exact")
    p = p.astype(ms.float32)
    q = q.astype(ms.float32)
    nb = p.shape[0]
    if q.shape[0] != nb:
        raise ValueError("sinkhorn: p and q must have the same number of rows")
    cost = ((p.expand_dims(1) - q.expand_dims(0)) ** 2).sum(axis=-1)
    log_marg = ops.log(ops.full((nb,), 1.0 / nb, dtype=ms.float32) + shared.SINKHORN_MARGINAL_EPS)
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


def softmax(logits: Tensor) -> Tensor:
    """ops.softmax over axis 1, in float32."""
    return ops.softmax(logits.astype(ms.float32), 1)


def mvd_loss(
    out: Mapping[str, Tensor], labels: Tensor, modality: Tensor, loss_cfg: LossConfig
) -> dict[str, Tensor]:
    """:class:`_MVDLoss` (the backend's loss cell) run on a dict of taps, as {name: value}."""
    cell = _MVDLoss(loss_cfg)
    values = cell(shared.taps_of(out), labels, modality)
    return {name: values[j] for j, name in enumerate(cell.terms)}


class _HostStop:
    """This module's primitives, but the Sinkhorn stop is read back on the host each trip and
    the loop left (PyNative only: the same values, fewer kernel launches)."""

    def __getattr__(self, name: str):
        try:
            return globals()[name]
        except KeyError:
            raise AttributeError(name) from None

    @staticmethod
    def sinkhorn_cost(p, q, eps, max_iter, thresh, lse):
        return _sinkhorn(p, q, eps, max_iter, thresh, True, lse)


class _MVDLoss(nn.Cell):
    """The shared composition over the network's tuple output (``TAP_NAMES`` order), the config
    resolved to a :class:`~mvd_core.model.losses.LossPlan` in ``__init__`` so that
    ``construct`` compiles in graph mode.

    ``construct(outs, labels, modality)`` returns a 1-D float32 Tensor: the values named
    :data:`terms` (the preset's terms unweighted, then the weighted total). ``host_stop``: see
    :class:`_HostStop` (PyNative only).
    """

    def __init__(self, loss_cfg: LossConfig, host_stop: bool = False) -> None:
        super().__init__()
        self.plan = shared.loss_plan(loss_cfg)
        #: the names of the returned values, "total" last
        self.terms: tuple[str, ...] = self.plan.names
        self.prims = _HostStop() if host_stop else sys.modules[__name__]

    def construct(self, outs: tuple, labels: Tensor, modality: Tensor) -> Tensor:
        return ops.stack(shared.compose(self.prims, outs, labels, modality, self.plan))
