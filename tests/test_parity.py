"""`mvd parity`: the torch and MindSpore MVDs compute the same model (both MindSpore modes),
and the check can fail.

One `mvd parity --config tiny` run per MindSpore mode (a module fixture) serves two tests:

- every comparison that fp32 rounding cannot move past its tolerance must pass: forward taps
  (eval and train), every loss term of every preset, the loss of every optimiser step, the
  metrics, and the gradient and final value of every *head* parameter (BN-neck, classifier, VIB);
- the whole report passing is an expected failure (issue 7): the trunk gradients, the trunk
  parameters after the steps and the features extracted after them hinge on the sign of single
  ReLU inputs that lie within fp32 rounding of 0 (~1 per batch and framework among the ~1.5 M
  trunk pre-activations of an observation), and one such flip moves a whole trunk's gradients
  by 0.3–1 % (see mvd_core/tolerances.py, "grad"). Which batches flip depends on the kernels'
  summation order, so it is not strict.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.parity import compare

pytestmark = [pytest.mark.parity, pytest.mark.torch, pytest.mark.mindspore]
runner = CliRunner()

SECTIONS = {"forward", "loss", "grad", "steps", "params", "features", "metrics"}


@pytest.fixture(scope="module", params=["pynative", "graph"])
def tiny_parity(request, tmp_path_factory):
    mode = request.param
    out = tmp_path_factory.mktemp("parity") / f"parity-{mode}.json"
    r = runner.invoke(app, ["parity", "--config", "tiny", "--ms-mode", mode, "--json", str(out)])
    assert r.exit_code in (0, 1), r.output
    return mode, r, json.loads(out.read_text())


def _flip_exposed(row: dict) -> bool:
    """Trunk gradients/parameters and the features extracted after the steps (module doc)."""
    section = row["section"].split("/")[0]
    return section == "features" or (section in ("grad", "params") and ".trunk." in row["name"])


def test_parity_tiny_agrees_where_rounding_cannot_flip(tiny_parity):
    mode, r, data = tiny_parity
    assert data["settings"]["ms_mode"] == mode
    assert data["settings"]["residual_gain"] == 0.1
    rows = data["rows"]
    assert {row["section"].split("/")[0] for row in rows} == SECTIONS
    checked = [row for row in rows if not _flip_exposed(row)]
    # 34 taps, 27 loss terms, 5 step losses, 4 metrics, 57 head gradients, 81 head parameters
    assert len(checked) >= 34 + 27 + 5 + 4 + 57 + 81
    failed = [f"{row['section']} {row['name']} rel {row['rel']:.3g}" for row in checked if not row["passed"]]
    assert not failed, "\n".join(failed)


@pytest.mark.xfail(
    strict=False,
    reason="issue 7: trunk gradients/parameters hinge on ReLU inputs within fp32 rounding of 0 "
    "(one sign flip moves a trunk's gradients by 0.3-1 %, torch fp32 against torch fp64 too)",
)
def test_parity_tiny_passes(tiny_parity):
    mode, r, data = tiny_parity
    assert r.exit_code == 0, r.output
    assert data["passed"] and "PASS" in r.output


def test_parity_fails_when_weights_are_perturbed(tmp_path):
    r = runner.invoke(app, ["parity", "--config", "tiny", "--perturb", "1e-2", "--steps", "1",
                            "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 1, r.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert not data["passed"]
    failed = {row["section"].split("/")[0] for row in data["rows"] if not row["passed"]}
    assert {"forward", "loss", "features"} <= failed
    # the flip-free comparisons above catch it too: head gradients and forward taps
    assert any(not row["passed"] for row in data["rows"] if row["section"] == "grad" and ".vib." in row["name"])


def test_compare_rules():
    ref = np.array([1.0, -2.0, 0.0])
    assert compare("s", "same", ref, ref, "forward").passed
    assert compare("s", "tiny", ref + 1e-6, ref, "forward").passed
    assert not compare("s", "off", ref + 1e-3, ref, "forward").passed
    assert not compare("s", "nan", np.array([np.nan, 0, 0]), ref, "forward").passed
    assert not compare("s", "shape", ref[:2], ref, "forward").passed
    assert compare("m", "pp", 50.05, 50.0, "metrics").passed
    assert not compare("m", "pp", 50.2, 50.0, "metrics").passed
