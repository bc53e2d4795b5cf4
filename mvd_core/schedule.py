"""Learning-rate schedules (SPEC §4), per epoch e = 1..E. The backend receives the base lr and
applies the per-group multipliers itself.

``ms`` (the MindSpore seed):
    e <  warmup          lr · e / warmup
    e <  start_decay     lr
    e <= end_decay       lr · γ^(e − start_decay + 1)     (seed: lr · 0.1^(e − 14) for 15..27)
    e >  end_decay       lr · γ^(end_decay − start_decay + 1)   (the seed's "≈ 0": held there)
``pt`` (the paper code):
    e <= warmup          lr · (f + (1 − f) · (e − 1) / warmup)    f = warmup_from (0.01)
    otherwise            lr · γ^(number of milestones m with e > m)
"""

from __future__ import annotations

from mvd_core.config import OptimConfig, ScheduleConfig


def lr_at(epoch: int, sched: ScheduleConfig, optim: OptimConfig) -> float:
    """The base learning rate for (1-based) ``epoch``."""
    if epoch < 1:
        raise ValueError(f"epoch: expected >= 1, got {epoch}")
    lr = optim.lr
    if sched.kind == "ms":
        if epoch < sched.warmup:
            return lr * epoch / sched.warmup
        if epoch < sched.start_decay:
            return lr
        if epoch <= sched.end_decay:
            return lr * sched.gamma ** (epoch - sched.start_decay + 1)
        return lr * sched.gamma ** (sched.end_decay - sched.start_decay + 1)
    if sched.kind == "pt":
        if sched.warmup > 0 and epoch <= sched.warmup:
            f = sched.warmup_from
            return lr * (f + (1.0 - f) * (epoch - 1) / sched.warmup)
        n = sum(1 for m in sched.milestones if epoch > m)
        return lr * sched.gamma**n
    raise ValueError(f"schedule.kind: expected ms or pt, got {sched.kind!r}")
