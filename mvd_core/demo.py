"""The main job, end to end on one CPU: synthesise a SYSU-MM01-layout data set, train the
``tiny`` MVD (recipe ``demo``: tiny with a longer schedule) with ``id+tri+kldiv``, evaluate
all-search single-shot over 10 trials, report.

Everything runs through the real code paths (the synthetic data is written in the real
on-disk layout and read back by the real SYSU-MM01 reader).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvd_core.config import Config, apply_overrides, load_config
from mvd_core.devices import normalize_device

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    run_dir: Path
    report: Any
    chance_rank1: float
    test_ids: int


def demo_config(out: Path, backend: str = "torch", device: str = "cpu", overrides: list[str] | None = None) -> Config:
    cfg = load_config("demo")  # the tiny recipe with a longer, learnable schedule
    cfg = apply_overrides(
        cfg,
        [
            f"data.root={out / 'data' / 'synth-sysu'}",
            "data.synthetic=true",
            f"run.out={out / 'runs'}",
            f"run.backend={backend}",
            "loss.preset=id+tri+kldiv",
            "eval.sysu_mode=all",
            "eval.trials=10",
            *(overrides or []),
        ],
    )
    if not cfg.run.tag:
        cfg = apply_overrides(cfg, [f"run.tag=demo-{backend}"])
    dev = normalize_device(cfg.run.backend, device)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=dev))


def run_demo(
    out: Path = Path("out/demo"),
    backend: str = "torch",
    device: str = "cpu",
    overrides: list[str] | None = None,
    fresh: bool = True,
) -> DemoResult:
    """Synthesise (once), train, evaluate; returns the report. ``fresh`` replaces an earlier
    demo run folder."""
    import shutil

    from mvd_core.data.datasets import load_test
    from mvd_core.data.synth import synth_sysu
    from mvd_core.driver import train

    out = Path(out)
    cfg = demo_config(out, backend, device, overrides)
    data_root = Path(cfg.data.root)
    if not (data_root / "exp" / "test_id.txt").exists():
        log.info("synthesising a SYSU-MM01-layout data set in %s", data_root)
        synth_sysu(data_root, seed=cfg.run.seed)
    run_dir = Path(cfg.run.out) / cfg.run.tag
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    result = train(cfg)
    test_ids = len(set(load_test(cfg.data).query.pids.tolist()))
    return DemoResult(result.run_dir, result.report, 1.0 / test_ids, test_ids)
