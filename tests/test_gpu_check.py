"""benchmarks/gpu_check.sh (issue 16) -- the prepared check for a CUDA machine -- runs as
written: ``--dry-run`` does every step on the CPU at toy size (tiny recipe, gloo), so the script
a GPU session will run once has run here, on every CI run; a failing step makes it exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path) -> None:
    venv = Path(sys.prefix)  # the venv running the tests (the Makefile's VENV)
    if not (venv / "bin" / "mvd").exists():
        pytest.fail(f"gpu_check.sh runs $VENV/bin/mvd: not installed in {venv}")
    out = tmp_path / "check"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VENV": str(venv)}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "distributed smoke: ok" in r.stdout, r.stdout[-3000:]
    assert "parity: " in r.stdout and " 0 failing" in r.stdout, r.stdout[-3000:]
    steps = json.loads((out / "steps-tiny-bf16.json").read_text())
    assert {row["contender"] for row in steps["rows"]} >= {"fp32", "amp+cl"}
    assert json.loads((out / "env.json").read_text())["torch"]
    # a failing step fails the script: again into the same folder, the smoke's run tag exists
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "distributed smoke FAILED" in r.stdout and "1 step(s) failed" in r.stdout, (
        r.stdout[-3000:])
