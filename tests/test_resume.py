"""Resume semantics and `mvd eval` flags, through the CLI (README "Resuming a run"):
the run keeps its own config, backend and device; what the user gives explicitly wins and is
logged; --epochs extends; model/data changes are refused in one line; a finished run says so."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.config import load_config
from mvd_core.train.runlog import read_log
from mvd_core.train.schedule import lr_at
from mvd_core.weights.checkpoint import load_checkpoint

pytestmark = pytest.mark.torch
runner = CliRunner()

SHRINK = ["model.width=2", "model.blocks=[2,1,1,1]", "model.vib_hidden=[16,16]", "model.vib_dim=16", "model.vib_cls_hidden=16",
          "data.height=64", "data.width=32", "data.num_ids=2", "data.num_pos=2", "data.workers=1",
          "schedule.steps_per_epoch=1", "eval.trials=1", "eval.every=0"]


def _invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def finished(sysu_root, tmp_path_factory):
    """A finished 2-epoch torch run of the tiny recipe."""
    out = tmp_path_factory.mktemp("resume")
    r = _invoke("train", "--config", "tiny", "--backend", "torch", "--data-path", str(sysu_root),
                "--ckpt", "done", "--out", str(out), "--epochs", "2",
                *[a for kv in SHRINK for a in ("--set", kv)])
    assert r.exit_code == 0, r.output
    return out / "done"


@pytest.fixture
def run(finished, tmp_path):
    dst = tmp_path / "runs" / "done"
    shutil.copytree(finished, dst)
    return dst


def test_finished_run_says_so_and_does_nothing(run):
    before = (run / "log.jsonl").read_text()
    r = _invoke("train", "--resume", str(run))
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines() == [
        f"run {run} is complete (2 epochs): nothing to do (pass --epochs N to extend it)"]
    assert (run / "log.jsonl").read_text() == before


def test_epochs_extends_the_run_with_the_new_schedule(run):
    r = _invoke("train", "--resume", str(run), "--epochs", "4")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run / "checkpoints" / "last.safetensors").epoch == 4
    cfg = load_config(str(run / "config.yaml"))
    assert cfg.schedule.epochs == 4 and cfg.run.backend == "torch"
    steps = [r for r in read_log(run / "log.jsonl") if "total" in r]
    assert [s["global_step"] for s in steps] == [1, 2, 3, 4]
    for s in steps[2:]:  # epochs 3, 4 follow the new 4-epoch schedule
        assert s["lr"] == pytest.approx(lr_at(s["epoch"], cfg.schedule, cfg.optim))
    assert json.loads((run / "report.json").read_text())["num_trials"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--set", "model.width=4"], "model.width: a resumed run cannot change it (2 -> 4)"),
    (["--dataset", "RegDB"], "data.dataset: a resumed run cannot change it"),
    (["--config", "mvd-pt"], "--config mvd-pt: the run at"),
    (["--ckpt", "other"], "run.tag: a resumed run cannot change it"),
    (["--epochs", "1"], "schedule.epochs=1: the run at"),
    (["--set", "loss.preset=id"], "loss.preset: a resumed run cannot change it"),
])
def test_changes_to_model_or_data_are_refused_in_one_line(run, args, needle):
    before = sorted(p.name for p in run.rglob("*"))
    r = _invoke("train", "--resume", str(run), *args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(p.name for p in run.rglob("*")) == before


def test_explicit_backend_wins_and_is_logged(run, caplog):
    """A torch run continued on MindSpore (explicitly): the config records the new backend,
    the device name is translated, the change is logged, and the run goes on from epoch 3."""
    import logging

    caplog.set_level(logging.INFO)
    r = _invoke("train", "--resume", str(run), "--backend", "mindspore", "--ms-mode", "pynative", "--epochs", "3")
    assert r.exit_code == 0, r.output
    cfg = load_config(str(run / "config.yaml"))
    assert (cfg.run.backend, cfg.run.device, cfg.run.ms_mode) == ("mindspore", "CPU", "pynative")
    assert "resume: run.backend 'torch' -> 'mindspore' (given explicitly)" in caplog.text
    ck = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert ck.epoch == 3 and ck.meta["backend"] == "mindspore"
    assert np.isfinite([s["total"] for s in read_log(run / "log.jsonl") if "total" in s]).all()


def test_eval_takes_the_seed_test_script_flags(run, sysu_root):
    r = _invoke("eval", "--dataset", "SYSU", "--data-path", str(sysu_root), "--resume",
                str(run / "checkpoints" / "last.safetensors"), "--device-target", "CPU",
                "--gpu", "0", "--sysu_mode", "indoor", "--test-batch", "16")
    assert r.exit_code == 0, r.output
    assert (run / "eval-sysu-indoor-single.json").exists()
    assert not (run / "eval-sysu-all-single.json").exists()
    assert not (run.parent / "eval.json").exists() and not (run.parent.parent / "eval.json").exists()


def test_eval_multi_shot_writes_one_report_per_protocol(run):
    r = _invoke("eval", "--resume", str(run), "--multi-shot")
    assert r.exit_code == 0, r.output
    for key in ("all-single", "indoor-single", "all-multi", "indoor-multi"):
        data = json.loads((run / f"eval-sysu-{key}.json").read_text())
        mode, shot = key.split("-")
        assert data["settings"]["mode"] == mode and data["settings"]["shot"] == shot
    assert r.output.count("mean ") == 4


def test_bare_parameter_file_needs_its_config(run, tmp_path):
    model = tmp_path / "model.npz"
    r = _invoke("convert", str(run / "checkpoints" / "last.safetensors"), str(model))
    assert r.exit_code == 0, r.output
    r = _invoke("eval", "--resume", str(model))
    assert r.exit_code == 2 and "pass --config" in r.output and "Traceback" not in r.output
    r = _invoke("eval", "--resume", str(model), "--config", "tiny")  # the wrong width: one line
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    r = _invoke("eval", "--resume", str(model), "--config", str(run / "config.yaml"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "eval-sysu-all-single.json").exists()  # next to the file, not above it
