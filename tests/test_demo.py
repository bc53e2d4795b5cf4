"""`mvd demo` and `mvd demo --compare` (issue 18) on a miniature of the demo data: what they
train, evaluate and print, checked against the run folders they write and against
re-implementations of the training-free matchers. The learning claims themselves (numbers
against chance and the untrained network) are in tests/test_learning.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core import demo as D
from mvd_core.config import load_config

pytestmark = pytest.mark.torch

#: a miniature of the demo's data set and recipe: seconds, not minutes
MINI = D.DemoData(train_ids=6, val_ids=1, test_ids=8, images_per_cam=2, size_scale=0.5)
FAST = ["model.width=4", "data.num_ids=4", "data.num_pos=2", "schedule.epochs=1",
        "schedule.steps_per_epoch=2", "run.log_every=1000"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, D.run_demo(out, overrides=FAST, data=MINI)


def test_demo_recipe_is_mvd_with_distillation() -> None:
    cfg = load_config("demo")
    assert cfg.loss.preset == "id+tri+kldiv"
    assert D.DEMO_DATA.test_ids >= 96  # SYSU-MM01's test size: chance R1 ~ 1 %
    assert D.demo_config(Path("x")).eval.trials == 10 and D.demo_config(Path("x")).eval.sysu_mode == "all"


CPUINFO = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse2 avx512f {}\nbugs\t\t: spectre_v1\n"


@pytest.mark.parametrize(("flags", "want"), [("avx512_bf16 amx_tile amx_bf16 amx_int8", True),
                                             ("avx512_bf16 amx_tile", False), ("amx_bf16x", False)])
def test_cpu_has_amx_bf16_reads_the_flags(tmp_path, flags, want) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO.format(flags))
    assert D.cpu_has_amx_bf16(f) is want
    assert D.cpu_has_amx_bf16(tmp_path / "absent") is False


@pytest.mark.parametrize("amx", [True, False])
def test_demo_speeds_up_torch_on_the_cpu_only(monkeypatch, amx) -> None:
    monkeypatch.setattr(D, "cpu_has_amx_bf16", lambda: amx)
    cfg = D.demo_config(Path("x"))
    assert (cfg.run.amp, cfg.run.channels_last) == ("bf16" if amx else "none", True)
    assert D.precision_note(cfg) == ("bf16 autocast, channels_last" if amx else "fp32, channels_last")
    # an explicit setting wins
    cfg = D.demo_config(Path("x"), overrides=["run.amp=none", "run.channels_last=false"])
    assert (cfg.run.amp, cfg.run.channels_last) == ("none", False) and D.precision_note(cfg) == "fp32"
    # MindSpore (refuses both on the CPU) and CUDA get the recipe as it is
    from mvd_core.registry import check_support

    for backend, device in (("mindspore", "cpu"), ("torch", "cuda")):
        cfg = D.demo_config(Path("x"), backend, device)
        assert (cfg.run.amp, cfg.run.channels_last) == ("none", False), backend
    check_support(D.demo_config(Path("x"), "mindspore", "cpu"), "CPU")
    assert load_config("demo").run.amp == "none" and not load_config("demo").run.channels_last


def test_demo_evaluates_untrained_and_trained(demo_run) -> None:
    out, res = demo_run
    assert res.test_ids == MINI.test_ids and res.chance_rank1 == pytest.approx(100 / MINI.test_ids)
    assert len(res.report.rows) == 10 and len(res.untrained.rows) == 10
    assert res.steps == 2
    # the final report is the run's own report.json; demo.json repeats the numbers
    report = json.loads((res.run_dir / "report.json").read_text())
    assert report["mean"]["mAP"] == pytest.approx(res.report.mean["mAP"], abs=0.006)
    doc = json.loads((res.run_dir / "demo.json").read_text())
    assert doc["trained"]["mAP"] == pytest.approx(res.report.mean["mAP"], abs=0.006)
    assert doc["untrained"]["R1"] == pytest.approx(res.untrained.mean["R1"], abs=0.006)
    assert doc["test_ids"] == MINI.test_ids and doc["preset"] == "id+tri+kldiv"
    assert doc["precision"] == D.precision_note(res.cfg)
    run_cfg = yaml.safe_load((res.run_dir / "config.yaml").read_text())["run"]
    assert (run_cfg["amp"], run_cfg["channels_last"]) == (res.cfg.run.amp, res.cfg.run.channels_last)
    assert set(doc["baselines"]) == set(D.BASELINES)
    # the untrained network is the run's seeded starting point: evaluating it again agrees
    from mvd_core.data.sets import load_test, load_train

    again = D.evaluate_untrained(res.cfg, load_train(res.cfg.data).num_classes, load_test(res.cfg.data))
    assert again.mean == res.untrained.mean
    # the data set is synthesised once and reused while its parameters match
    assert D.ensure_data(Path(res.cfg.data.root), MINI) == 0.0
    assert sorted(int(x) for x in (Path(res.cfg.data.root) / "exp" / "test_id.txt").read_text().split(","))
    assert len((Path(res.cfg.data.root) / "exp" / "test_id.txt").read_text().split(",")) == MINI.test_ids


def test_summary_names_the_comparisons(demo_run) -> None:
    _, res = demo_run
    text = D.summary(res)
    for word in ("id+tri+kldiv", "chance", "untrained network", "trained network", "colour histogram",
                 "raw pixels", "x chance", "time", str(res.run_dir), f"{res.steps} steps",
                 f"({D.precision_note(res.cfg)})"):
        assert word in text, word
    r1 = res.report.mean["R1"]
    assert f"{r1 / res.chance_rank1:.0f}x chance" in text


def _histogram_reference(images: np.ndarray, bins: int = 8) -> np.ndarray:
    out = []
    for im in images:
        h, _ = np.histogramdd(im.reshape(-1, 3).astype(float), bins=(bins,) * 3, range=[(0, 256)] * 3)
        f = np.sqrt(h.ravel() / h.sum())
        out.append(f / np.linalg.norm(f))
    return np.array(out)


def test_colour_histogram_matches_a_reference() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 12, 6, 3), dtype=np.uint8)
    imgs[0] = 255  # edge bin
    np.testing.assert_allclose(D.colour_histogram_features(imgs), _histogram_reference(imgs), atol=1e-6)


def test_raw_pixels_ignore_brightness_and_contrast() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(20, 200, (3, 16, 8, 3)).astype(np.float32)
    b = np.clip(0.5 * a + 30, 0, 255)
    fa, fb = D.raw_pixel_features(a), D.raw_pixel_features(b)
    np.testing.assert_allclose(fa, fb, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-6)


def test_cli_demo_prints_the_table_once_and_a_summary(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(D, "DEMO_DATA", MINI)
    args = ["demo", "--out", str(tmp_path)] + [x for s in FAST for x in ("--set", s)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("trial ") == 1 and r.output.count("\nmean ") == 1  # one table
    assert r.output.count("summary") == 1 and "untrained network" in r.output
    assert "x chance" in r.output


def test_compare_trains_both_presets_on_the_same_seeds(tmp_path) -> None:
    res = D.run_compare(tmp_path, overrides=[*FAST, "eval.trials=2"], seeds=(0, 1), data=MINI)
    assert set(res.reports) == set(D.COMPARE_PRESETS) and res.test_ids == MINI.test_ids
    stats = D.compare_stats(res)
    for preset in D.COMPARE_PRESETS:
        # mean ± std over seeds, recomputed from the runs' own report.json files
        maps = []
        for seed in (0, 1):
            run = tmp_path / "runs" / f"compare-{preset}-s{seed}"
            maps.append(json.loads((run / "report.json").read_text())["mean"]["mAP"])
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["loss"]["preset"] == preset and cfg["run"]["seed"] == seed
        assert stats[preset]["mAP"][0] == pytest.approx(np.mean(maps), abs=0.006)
        assert stats[preset]["mAP"][1] == pytest.approx(np.std(maps), abs=0.006)
    # the two presets of a seed differ in the loss only
    a = yaml.safe_load((tmp_path / "runs" / "compare-id+tri-s1" / "config.yaml").read_text())
    b = yaml.safe_load((tmp_path / "runs" / "compare-id+tri+kldiv-s1" / "config.yaml").read_text())
    assert {k: v for k, v in a.items() if k not in ("loss", "run")} == {k: v for k, v in b.items() if k not in ("loss", "run")}
    assert {k: v for k, v in a["run"].items() if k != "tag"} == {k: v for k, v in b["run"].items() if k != "tag"}
    text = D.compare_table(res)
    assert "id+tri " in text and "id+tri+kldiv" in text and "±" in text and "2 seeds" in text


def test_cli_compare_bad_seeds_exit_2(tmp_path) -> None:
    r = CliRunner().invoke(app, ["demo", "--compare", "--seeds", "0", "--out", str(tmp_path)])
    assert r.exit_code == 2
