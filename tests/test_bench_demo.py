"""benchmarks/bench_demo.py (issue 18) on a miniature of the demo: every contender trains in its
own setting, the ratios are computed from the per-step times it reports, the split is there."""

from __future__ import annotations

import json
import statistics

import pytest
from bench_scripts import load_benchmark

from mvd_core import demo as D

pytestmark = pytest.mark.torch

MINI = D.DemoData(train_ids=6, val_ids=1, test_ids=8, images_per_cam=2, size_scale=0.5)


def _bench():
    return load_benchmark("bench_demo")


def test_parse_contender() -> None:
    b = _bench()
    assert b.parse_contender("bf16+cl@2") == {"amp": "bf16", "channels_last": True, "threads": 2}
    assert b.parse_contender("fp32") == {"amp": "none", "channels_last": False, "threads": 1}
    for bad in ("fp16@1", "bf16+nhwc", "fp32@x"):
        with pytest.raises(SystemExit):
            b.parse_contender(bad)


def test_bench_demo_runs_each_contender_in_its_setting(tmp_path, monkeypatch, capsys) -> None:
    b = _bench()
    monkeypatch.setattr(D, "DEMO_DATA", MINI)
    seen = []
    real = b.contender_config

    def spy(base, name, workers):
        cfg = real(base, name, workers)
        seen.append((name, cfg.run.amp, cfg.run.channels_last, cfg.run.threads))
        return cfg

    monkeypatch.setattr(b, "contender_config", spy)
    out = tmp_path / "bench.json"
    sets = [a for kv in ("model.width=4", "data.num_ids=4", "data.num_pos=2", "eval.trials=2") for a in ("--set", kv)]
    assert b.main(["--out", str(tmp_path / "demo"), "--contenders", "fp32@1", "bf16+cl@1", "--block", "3",
                   "--rounds", "2", *sets, "--json", str(out)]) == 0
    assert ("fp32@1", "none", False, 1) in seen and ("bf16+cl@1", "bf16", True, 1) in seen
    res = json.loads(out.read_text())
    rows = {r["contender"]: r for r in res["rows"]}
    for r in rows.values():
        assert len(r["step_s_all"]) == 2 * 2 and len(r["losses"]) == 2 * 3  # first step of a block untimed
        assert r["step_s"] == pytest.approx(statistics.median(r["step_s_all"]))
        assert 0 < r["step_cpu_s"] <= r["step_s"] * 1.05
    ref = rows["fp32@1"]
    assert ref["speedup"] == 1.0
    assert rows["bf16+cl@1"]["speedup"] == pytest.approx(ref["step_s"] / rows["bf16+cl@1"]["step_s"])
    assert set(res["split"]) >= {"extract test features", "10-trial metrics", "training-free matchers"}
    assert res["fixed_s"] > 0 and "estimated demo" in capsys.readouterr().out
