"""Training learns (issues 5, 6, 18), measured against the same network before training and
against two training-free matchers, cross-modally (thermal query, visible gallery).

- ``test_demo_meets_its_claims`` (slow: it is the whole demo, ~4 min on an idle 2-core CPU):
  `mvd demo`'s own run on its 96-test-identity data set reaches Rank-1 >= 15x chance and mAP >=
  3x the untrained network's, and a colour-histogram matcher and raw-pixel nearest neighbour
  stay far below it.
- ``test_short_training_learns`` (CI, ~1 min): the demo recipe for 40 steps on a smaller
  version of the demo data set (24 test ids), the same comparisons with margins for the short run.

Everything goes through the real code paths (synthetic data in the real SYSU-MM01 layout, the
real reader, loader and driver); all runs are seeded. Thresholds come from measurement
(``MEASURED``) with margin.
"""

from __future__ import annotations

import pytest

from mvd_core import demo as D
from mvd_core.registry import framework_available

#: the short CI run: 24 test identities (chance R1 4.2 %), 4 epochs of the sampler's 10 steps
SHORT_DATA = D.DemoData(train_ids=36, val_ids=4, test_ids=24, images_per_cam=4)
SHORT = ["schedule.epochs=4", "schedule.steps_per_epoch=12", "schedule.start_decay=4",
         "schedule.end_decay=4", "run.log_every=1000"]

#: (R1, mAP) percent, 10-trial means, measured when the thresholds were set (torch CPU fp32, seed 0;
#: short: 2 min 17 s, demo: 6 min 45 s, both on the 2-core machine under a load of 5-7). The demo
#: now trains in bf16 + channels_last on an AMX CPU (mvd_core.demo): measured there, idle, R1
#: 17.68 %, mAP 19.51 % against the untrained 2.95 % (README "Demo"), the same bar met.
MEASURED = {
    "short/torch": {"chance": (4.17, None), "colour histogram": (4.11, 9.84), "raw pixels": (9.05, 12.16),
                    "untrained": (4.29, 9.21), "trained": (14.29, 20.83)},
    "demo/torch": {"chance": (1.04, None), "colour histogram": (1.15, 3.00), "raw pixels": (2.99, 4.38),
                   "untrained": (1.40, 2.96), "trained": (17.42, 20.00)},
}


def _check(res: D.DemoResult, r1_chance: float, map_gain: float, baseline_factor: float) -> None:
    r1, mAP = res.report.mean["R1"], res.report.mean["mAP"]
    msg = D.summary(res)
    assert r1 >= r1_chance * res.chance_rank1, msg
    assert mAP >= map_gain * res.untrained.mean["mAP"], msg
    for name, rep in res.baselines.items():  # far below the trained model, cross-modally
        assert rep.mean["R1"] * baseline_factor <= r1, (name, msg)
        assert rep.mean["mAP"] * min(baseline_factor, map_gain) <= mAP, (name, msg)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("torch", marks=pytest.mark.torch),
        # MindSpore PyNative steps are ~10x torch's on the 2-core CI machine: slow
        pytest.param("mindspore", marks=[pytest.mark.mindspore, pytest.mark.slow]),
    ],
)
def test_short_training_learns(backend, tmp_path):
    if not framework_available(backend):
        pytest.fail(f"{backend} is not installed (both frameworks are part of the test set-up)")
    device = "cpu" if backend == "torch" else "CPU"
    res = D.run_demo(tmp_path, backend, device, SHORT, data=SHORT_DATA)
    assert res.steps == 40 and res.test_ids == 24
    # 40 steps: measured 3.4x chance, 2.3x the untrained mAP, 1.6x the best baseline's R1
    _check(res, r1_chance=2.5, map_gain=1.6, baseline_factor=1.3)


@pytest.mark.slow
@pytest.mark.torch
def test_demo_meets_its_claims(tmp_path):
    """Issue 18's bar, on the demo exactly as `make demo` runs it."""
    res = D.run_demo(tmp_path)
    assert res.test_ids >= 96 and len(res.report.rows) == 10
    assert res.cfg.loss.preset == "id+tri+kldiv"
    # measured 17x chance, 6.8x the untrained mAP, 5.8x the best baseline's R1 (raw pixels)
    _check(res, r1_chance=15.0, map_gain=3.0, baseline_factor=5.0)
