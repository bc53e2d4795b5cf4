"""benchmarks/bench_amp.py (issue 16) runs on tiny, side by side, and writes its JSON; with
``--same-weights`` every contender's step starts from the fp32 contender's weights, so fp32 +
channels_last (the same arithmetic, other kernels) gives fp32's losses to float32 rounding at
every step and bf16 its rounding of them."""

from __future__ import annotations

import json

import pytest
from bench_scripts import load_benchmark

pytestmark = pytest.mark.torch



def _bench():
    return load_benchmark("bench_amp")


def test_bench_amp_same_weights(tmp_path) -> None:
    out = tmp_path / "amp.json"
    rc = _bench().main(["--config", "tiny", "--batch", "16", "--steps", "4", "--warmup", "1",
                        "--classes", "16", "--threads", "1", "--same-weights",
                        "--contenders", "fp32+cl", "amp+cl", "--set", "model.blocks=[2,1,1,1]",
                        "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["same_weights"] is True and res["steps"] == 4
    rows = {r["contender"]: r for r in res["rows"]}
    assert set(rows) == {"fp32", "fp32+cl", "amp+cl"}
    assert all(len(r["losses"]) == 4 and len(r["step_s_all"]) == 3 for r in rows.values())
    assert rows["fp32+cl"]["max_rel_loss_gap"] < 1e-5
    assert 0 < rows["amp+cl"]["max_rel_loss_gap"] < 1e-2
    assert rows["fp32"]["speedup_vs_fp32"] == 1.0
