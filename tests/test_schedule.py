"""LR schedules, epoch by epoch, against the formulas written out by hand."""

import pytest

from mvd_core.config import load_config
from mvd_core.schedule import lr_at


def test_ms_schedule_matches_the_seed():
    cfg = load_config("mvd-ms")
    lr = 3.5e-4
    expected = {1: lr / 5, 2: 2 * lr / 5, 4: 4 * lr / 5, 5: lr, 14: lr, 15: lr * 0.1,
                16: lr * 0.01, 20: lr * 1e-6, 27: lr * 1e-13, 28: lr * 1e-13, 80: lr * 1e-13}
    for e, want in expected.items():
        assert lr_at(e, cfg.schedule, cfg.optim) == pytest.approx(want, rel=1e-12), e


def test_pt_schedule_matches_the_paper_code():
    cfg = load_config("mvd-pt")
    lr = 2.6e-4
    assert lr_at(1, cfg.schedule, cfg.optim) == pytest.approx(0.01 * lr)
    assert lr_at(6, cfg.schedule, cfg.optim) == pytest.approx(lr * (0.01 + 0.99 * 5 / 10))
    assert lr_at(10, cfg.schedule, cfg.optim) == pytest.approx(lr * (0.01 + 0.99 * 9 / 10))
    assert lr_at(11, cfg.schedule, cfg.optim) == pytest.approx(lr)
    assert lr_at(210, cfg.schedule, cfg.optim) == pytest.approx(lr)
    assert lr_at(211, cfg.schedule, cfg.optim) == pytest.approx(0.1 * lr)
    assert lr_at(600, cfg.schedule, cfg.optim) == pytest.approx(0.1 * lr)


def test_every_epoch_is_positive_and_never_above_lr():
    for name in ("mvd-ms", "mvd-pt", "tiny"):
        cfg = load_config(name)
        lrs = [lr_at(e, cfg.schedule, cfg.optim) for e in range(1, cfg.schedule.epochs + 1)]
        assert all(0 < x <= cfg.optim.lr * (1 + 1e-12) for x in lrs)


def test_bad_epoch():
    cfg = load_config("tiny")
    with pytest.raises(ValueError, match="epoch"):
        lr_at(0, cfg.schedule, cfg.optim)
