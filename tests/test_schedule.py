"""LR schedules, epoch by epoch, against plain re-implementations of the public codes' own
expressions: the paper code's ``WarmupMultiStepLR`` (``utlis.py``) driven as its ``mm01.py`` /
``regdb.py`` drive it (stepped once in the constructor, then once before every epoch), and the
MindSpore port's ``LRScheduler.getlr`` (``src/utils.py``)."""

from __future__ import annotations

import dataclasses
from bisect import bisect_right

import numpy as np
import pytest

from mvd_core.config import OptimConfig, ScheduleConfig, load_config
from mvd_core.train.schedule import lr_at


class PaperWarmupMultiStepLR:
    """``WarmupMultiStepLR`` as written in the paper code (linear method), with the
    ``_LRScheduler`` bookkeeping: ``last_epoch`` starts at -1 and the constructor steps once."""

    def __init__(self, base_lr, milestones, gamma, warmup_factor, warmup_iters):
        self.base_lr, self.milestones, self.gamma = base_lr, list(milestones), gamma
        self.warmup_factor, self.warmup_iters = warmup_factor, warmup_iters
        self.last_epoch = -1
        self.step()

    def get_lr(self):
        warmup_factor = 1
        if self.last_epoch < self.warmup_iters:
            alpha = self.last_epoch / self.warmup_iters
            warmup_factor = self.warmup_factor * (1 - alpha) + alpha
        return self.base_lr * warmup_factor * self.gamma ** bisect_right(self.milestones, self.last_epoch)

    def step(self):
        self.last_epoch += 1
        self.lr = self.get_lr()


def paper_code_lrs(base_lr, epochs, milestones=(210,), gamma=0.1, warmup_factor=0.01, warmup_iters=10):
    """The lr each epoch of ``mm01.py``'s loop trains with: ``for epoch in range(0, epochs):
    scheduler.step(); trainer.train(...)``."""
    sched = PaperWarmupMultiStepLR(base_lr, milestones, gamma, warmup_factor, warmup_iters)
    out = []
    for _ in range(epochs):
        sched.step()
        out.append(sched.lr)
    return np.array(out)


def ms_port_lrs(learning_rate, epochs, warmup_steps=5, start_decay=15, end_decay=27):
    """``LRScheduler.getlr`` of the MindSpore port, one value per epoch (it repeats it for every
    step of the epoch)."""
    lr, final_lr = [], 0.0
    for epoch in range(1, epochs + 1):
        if epoch < warmup_steps:
            current_lr = learning_rate * (epoch / warmup_steps)
        elif epoch < start_decay:
            current_lr = learning_rate
        elif epoch <= end_decay:
            current_lr = learning_rate
            for decay in range(start_decay, end_decay + 1):
                if decay <= epoch:
                    current_lr = current_lr * 0.1
                else:
                    break
            if epoch == end_decay:
                final_lr = current_lr
        else:
            current_lr = final_lr
        lr.append(current_lr)
    return np.array(lr)


def test_pt_schedule_every_epoch_matches_the_paper_code():
    cfg = load_config("mvd-pt")
    assert cfg.schedule.epochs == 600
    ours = np.array([lr_at(e, cfg.schedule, cfg.optim) for e in range(1, 601)])
    ref = paper_code_lrs(cfg.optim.lr, 600)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_pt_schedule_landmarks():
    cfg = load_config("mvd-pt")
    lr = 2.6e-4
    at = {e: lr_at(e, cfg.schedule, cfg.optim) for e in (1, 9, 10, 11, 209, 210, 600)}
    assert at[1] == pytest.approx(0.109 * lr, rel=1e-12)  # never 0.01·lr
    assert at[9] == pytest.approx((0.01 * 0.1 + 0.9) * lr, rel=1e-12)
    assert at[10] == pytest.approx(lr, rel=1e-12)
    assert at[11] == at[209] == pytest.approx(lr, rel=1e-12)
    assert at[210] == at[600] == pytest.approx(0.1 * lr, rel=1e-12)  # bisect_right: 210 included


@pytest.mark.parametrize(
    ("warmup", "warmup_from", "milestones", "gamma"),
    [(10, 0.01, (210,), 0.1), (5, 0.1, (3, 40, 41), 0.5), (1, 0.0, (), 0.1), (0, 0.01, (2,), 0.1)],
)
def test_pt_schedule_other_settings_match_the_paper_code(warmup, warmup_from, milestones, gamma):
    sched = ScheduleConfig(kind="pt", epochs=60, warmup=warmup, warmup_from=warmup_from,
                           milestones=milestones, gamma=gamma)
    optim = OptimConfig(lr=1.0e-3)
    ours = np.array([lr_at(e, sched, optim) for e in range(1, 61)])
    if warmup == 0:  # the paper code would divide by zero at last_epoch 0; no warm-up here
        ref = 1e-3 * gamma ** np.array([bisect_right(milestones, e) for e in range(1, 61)])
    else:
        ref = paper_code_lrs(1e-3, 60, milestones, gamma, warmup_from, warmup)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("lr", [3.5e-3, 3.5e-4])
def test_ms_schedule_every_epoch_matches_the_port(lr):
    cfg = load_config("mvd-ms")
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr),
                              schedule=dataclasses.replace(cfg.schedule, epochs=80))
    ours = np.array([lr_at(e, cfg.schedule, cfg.optim) for e in range(1, 81)])
    np.testing.assert_allclose(ours, ms_port_lrs(lr, 80), rtol=1e-12, atol=0)
    # the port's own landmarks: lr/5 at epoch 1, full lr 5..14, 0.1^(e-14) for 15..27, held after
    assert ours[0] == pytest.approx(lr / 5) and ours[4] == ours[13] == pytest.approx(lr)
    assert ours[14] == pytest.approx(0.1 * lr) and ours[26] == pytest.approx(lr * 1e-13)
    assert np.all(ours[27:] == ours[26])


def test_every_epoch_is_positive_and_never_above_lr():
    for name in ("mvd-ms", "mvd-pt", "tiny", "demo"):
        cfg = load_config(name)
        lrs = [lr_at(e, cfg.schedule, cfg.optim) for e in range(1, cfg.schedule.epochs + 1)]
        assert all(0 < x <= cfg.optim.lr * (1 + 1e-12) for x in lrs)


def test_bad_epoch():
    cfg = load_config("tiny")
    with pytest.raises(ValueError, match="epoch"):
        lr_at(0, cfg.schedule, cfg.optim)
