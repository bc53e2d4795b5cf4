"""`mvd parity`: the torch and MindSpore MVDs compute the same model (both MindSpore modes),
and the check can fail."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.parity import compare

pytestmark = [pytest.mark.parity, pytest.mark.torch, pytest.mark.mindspore]
runner = CliRunner()


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 7 open): train-mode BatchNorm differs at ~1e-4 relative between "
    "MindSpore 2.8 CPU and torch, gradients at ~2e-2, so params after 5 Adam steps and metrics "
    "miss their tolerances; forward (eval) and every loss term already agree",
)
def test_parity_tiny_passes(mode, tmp_path):
    out = tmp_path / f"parity-{mode}.json"
    r = runner.invoke(app, ["parity", "--config", "tiny", "--ms-mode", mode, "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["passed"] and data["settings"]["ms_mode"] == mode
    sections = {row["section"].split("/")[0] for row in data["rows"]}
    assert sections == {"forward", "loss", "grad", "steps", "params", "features", "metrics"}
    assert "PASS" in r.output


def test_parity_fails_when_weights_are_perturbed(tmp_path):
    r = runner.invoke(app, ["parity", "--config", "tiny", "--perturb", "1e-2", "--steps", "1",
                            "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 1, r.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert not data["passed"]
    failed = {row["section"].split("/")[0] for row in data["rows"] if not row["passed"]}
    assert {"forward", "loss", "features"} <= failed


def test_compare_rules():
    ref = np.array([1.0, -2.0, 0.0])
    assert compare("s", "same", ref, ref, "forward").passed
    assert compare("s", "tiny", ref + 1e-6, ref, "forward").passed
    assert not compare("s", "off", ref + 1e-3, ref, "forward").passed
    assert not compare("s", "nan", np.array([np.nan, 0, 0]), ref, "forward").passed
    assert not compare("s", "shape", ref[:2], ref, "forward").passed
    assert compare("m", "pp", 50.05, 50.0, "metrics").passed
    assert not compare("m", "pp", 50.2, 50.0, "metrics").passed
