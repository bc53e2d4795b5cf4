"""Learning-rate schedules (SPEC §4), per epoch e = 1..E. The backend receives the base lr and
applies the per-group multipliers itself.

``ms`` (the MindSpore port's ``LRScheduler.getlr`` in ``src/utils.py``):
    e <  warmup          lr · e / warmup
    e <  start_decay     lr
    e <= end_decay       lr · γ^(e − start_decay + 1)     (seed: lr · 0.1^(e − 14) for 15..27)
    e >  end_decay       lr · γ^(end_decay − start_decay + 1)   (the seed's "≈ 0": held there)
``pt`` (the paper code's ``WarmupMultiStepLR`` in ``utlis.py``, linear warm-up): the scheduler is
stepped once in its constructor and once *before* every epoch, so (1-based) epoch e trains with
the scheduler's ``last_epoch = e``:
    f(e) = warmup_from · (1 − e/warmup) + e/warmup   for e < warmup, else 1
    lr(e) = lr · f(e) · γ^(number of milestones m with m <= e)       (``bisect_right``)
    e.g. warmup 10, warmup_from 0.01: epoch 1 = 0.109·lr, epoch 10 = lr; milestone 210: epochs
    210.. train at 0.1·lr.
"""

from __future__ import annotations

from bisect import bisect_right

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
        factor = 1.0
        if epoch < sched.warmup:
            alpha = epoch / sched.warmup
            factor = sched.warmup_from * (1.0 - alpha) + alpha
        return lr * factor * sched.gamma ** bisect_right(sorted(sched.milestones), epoch)
    raise ValueError(f"schedule.kind: expected ms or pt, got {sched.kind!r}")
