"""The shared driver with the torch backend on synthetic SYSU-MM01-layout data: training,
exact resume, checkpoints, evaluation, and the train/eval commands."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.config import load_config
from mvd_core.model.spec import model_spec
from mvd_core.train.driver import evaluate_checkpoint, train
from mvd_core.weights.checkpoint import load_checkpoint

pytestmark = pytest.mark.torch
runner = CliRunner()


def _cfg(root, out, tag, *extra):
    return load_config(
        "tiny",
        [
            f"data.root={root}", f"run.out={out}", f"run.tag={tag}",
            "data.num_ids=4", "data.num_pos=2", "data.workers=1",
            "model.width=4", "schedule.epochs=3", "schedule.steps_per_epoch=3",
            "schedule.warmup=1", "schedule.start_decay=2", "schedule.end_decay=3",
            "eval.trials=2", "eval.batch_size=64", *extra,
        ],
    )


def _losses(steps):
    return [(r["epoch"], r["step"], r["total"]) for r in steps]


def test_resume_continues_exactly(sysu_root, tmp_path):
    full = train(_cfg(sysu_root, tmp_path, "full"), evaluate_at_end=False)
    assert len(full.steps) == 9 and full.epochs_done == 3
    part = train(_cfg(sysu_root, tmp_path, "part"), max_epochs=2, evaluate_at_end=False)
    assert part.epochs_done == 2
    assert load_checkpoint(part.last_checkpoint).epoch == 2
    rest = train(resume=part.run_dir, evaluate_at_end=False)
    assert rest.run_dir == part.run_dir
    resumed = _losses(part.steps) + _losses(rest.steps)
    assert resumed == _losses(full.steps)  # bit for bit, every step
    # the resumed run's log holds each step once
    recs = [json.loads(x) for x in (part.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in recs if "total" in r] == list(range(1, 10))
    # and its final parameters equal the uninterrupted run's
    a = load_checkpoint(full.last_checkpoint).params
    b = load_checkpoint(rest.last_checkpoint).params
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_checkpoint_is_complete_and_evaluates_like_the_run(sysu_root, tmp_path):
    res = train(_cfg(sysu_root, tmp_path, "ck", "schedule.epochs=1", "schedule.steps_per_epoch=2"))
    ck = load_checkpoint(res.last_checkpoint)
    cfg = load_config(str(res.run_dir / "config.yaml"))
    assert ck.meta["config"]["recipe"] == "tiny" and ck.epoch == 1 and ck.meta["global_step"] == 2
    spec = model_spec(cfg.model, int(ck.params["v.classifier.weight"].shape[0]))
    assert set(ck.params) == set(spec)
    assert "adam.step" in ck.optimizer and int(ck.optimizer["adam.step"]) == 2
    assert ck.rng, "framework RNG state is saved for exact resume"
    assert (res.run_dir / "report.json").exists() and (res.run_dir / "report.txt").exists()
    again = evaluate_checkpoint(res.run_dir).reports["sysu-all-single"]
    assert again.to_dict()["mean"] == res.report.to_dict()["mean"]
    assert [r for r, _ in again.rows] == [0, 1]  # SYSU trials 0..1 as configured


def test_existing_run_is_not_overwritten(sysu_root, tmp_path):
    cfg = _cfg(sysu_root, tmp_path, "same", "schedule.epochs=1", "schedule.steps_per_epoch=1")
    train(cfg, evaluate_at_end=False)
    with pytest.raises(ValueError, match="a run with this tag exists"):
        train(cfg, evaluate_at_end=False)


def test_cli_train_and_eval(sysu_root, tmp_path):
    r = runner.invoke(app, [
        "train", "--config", "tiny", "--backend", "torch", "--device", "cpu",
        "--dataset", "SYSU", "--data-path", str(sysu_root), "--ckpt", "cli", "--out", str(tmp_path),
        "--epochs", "1", "--warmup-steps", "1", "--loss-func", "id+tri",
        "--set", "model.width=4", "--set", "schedule.steps_per_epoch=2", "--set", "eval.trials=1",
    ])
    assert r.exit_code == 0, r.output
    run = tmp_path / "cli"
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.safetensors").exists()
    saved = load_config(str(run / "config.yaml"))
    assert saved.loss.preset == "id+tri" and saved.model.width == 4 and saved.schedule.epochs == 1
    r = runner.invoke(app, ["eval", "--resume", str(run), "--trials", "2", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data) == {"sysu-all-single", "sysu-indoor-single"}
    assert len(data["sysu-all-single"]["trials"]) == 2 and "R1" in r.output
    assert (run / "eval-sysu-all-single.json").exists() and (run / "eval-sysu-indoor-single.txt").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--config", "nope"], "unknown recipe 'nope'"),
        (["train", "--config", "tiny", "--backend", "torch", "--device", "Ascend"], "Ascend is not supported by the torch backend"),
        (["train", "--config", "tiny", "--set", "model.widht=3"], "unknown key model.widht"),
        (["train", "--config", "tiny", "--data-path", "/nonexistent/sysu"], "/nonexistent/sysu"),
        (["eval", "--resume", "/nonexistent/run"], "/nonexistent/run"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    r = runner.invoke(app, args + (["--out", str(tmp_path)] if args[0] == "train" else []))
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output
