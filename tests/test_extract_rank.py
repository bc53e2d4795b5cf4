"""`mvd extract` and `mvd rank` on a run trained on synthetic SYSU-MM01 data (torch), and on
the same run loaded by the MindSpore backend."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core import load_model
from mvd_core.api import load_features, resolve_images
from mvd_core.config import load_config
from mvd_core.eval.rankviz import BORDER, GREEN, QUERY, RED, tile_origin
from mvd_core.train.driver import train

pytestmark = pytest.mark.torch
runner = CliRunner()

TINY = ["model.width=4", "data.height=64", "data.width=32", "schedule.steps_per_epoch=2",
        "schedule.epochs=1", "data.workers=1", "eval.trials=1", "eval.batch_size=32"]


@pytest.fixture(scope="module")
def run_dir(sysu_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("xr-runs")
    cfg = load_config("tiny", [f"data.root={sysu_root}", f"run.out={out}", "run.tag=t", *TINY])
    return train(cfg, evaluate_at_end=False).run_dir


@pytest.fixture(scope="module")
def model(run_dir):
    return load_model(run_dir)


def _ok(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".npy"])
def test_extract_formats(run_dir, model, sysu_root, tmp_path, suffix):
    out = tmp_path / f"feats{suffix}"
    _ok(["extract", "--resume", str(run_dir), "--images", str(sysu_root / "cam3"),
         "--modality", "thermal", "--out", str(out), "--batch-size", "16"])
    feats, paths = load_features(out)
    want_paths = resolve_images(sysu_root / "cam3")
    assert paths == want_paths
    np.testing.assert_allclose(feats, model.extract(want_paths, "thermal"), rtol=0, atol=1e-6)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []  # written through a temp file and a rename


def test_extract_flip_glob_list_and_mindspore(run_dir, model, sysu_root, tmp_path):
    pattern = str(sysu_root / "cam1" / "000[1-3]" / "*.jpg")
    _ok(["extract", "--resume", str(run_dir), "--images", pattern, "--modality", "visible",
         "--out", str(tmp_path / "f.npz"), "--flip"])
    feats, paths = load_features(tmp_path / "f.npz")
    assert len(paths) == 9
    np.testing.assert_allclose(feats, model.extract(paths, "visible", flip=True), rtol=0, atol=1e-6)
    lst = tmp_path / "images.txt"
    lst.write_text("".join(p + "\n" for p in paths))
    _ok(["extract", "--resume", str(run_dir), "--images", str(lst), "--modality", "visible",
         "--out", str(tmp_path / "ms.safetensors"), "--backend", "mindspore", "--device", "CPU"])
    ms, ms_paths = load_features(tmp_path / "ms.safetensors")
    assert ms_paths == paths
    np.testing.assert_allclose(ms, model.extract(paths, "visible"), rtol=0, atol=1e-5)


def test_extract_bad_input_is_one_line(run_dir, tmp_path):
    r = runner.invoke(app, ["extract", "--resume", str(run_dir), "--images", str(tmp_path / "nope"),
                            "--modality", "visible", "--out", str(tmp_path / "f.npz")])
    assert r.exit_code == 2 and "nope: no such file or folder" in r.output
    r = runner.invoke(app, ["extract", "--resume", str(run_dir), "--images", str(tmp_path),
                            "--modality", "visible", "--out", str(tmp_path / "f.csv")])
    assert r.exit_code == 2 and "f.csv: expected a .safetensors, .npz or .npy" in r.output


def _frame_colour(pic, position, width=64):
    x = tile_origin(position, width) + BORDER // 2
    return pic.getpixel((x, 40))


def test_rank_json_and_pictures(run_dir, model, sysu_root, tmp_path):
    q, g = str(sysu_root / "cam3" / "*" / "0001.jpg"), str(sysu_root / "cam1")
    out = tmp_path / "rank"
    _ok(["rank", "--resume", str(run_dir), "--query", q, "--gallery", g, "--top", "6",
         "--out", str(out), "--pictures", "3"])
    data = json.loads((out / "ranking.json").read_text())
    ranking = model.rank(q, g, top=6)
    assert len(data["queries"]) == ranking.indices.shape[0] and data["top"] == 6
    for qi, item in enumerate(data["queries"]):
        gal = [r["gallery"] for r in item["ranked"]]
        assert gal == [ranking.gallery.paths[j] for j in ranking.indices[qi]]
        dist = [r["distance"] for r in item["ranked"]]
        assert dist == sorted(dist)
        assert all(r["match"] == (r["pid"] == item["pid"]) for r in item["ranked"])
    pngs = sorted(out.glob("rank_*.png"))
    assert [p.name for p in pngs] == ["rank_00000.png", "rank_00001.png", "rank_00002.png"]
    for qi, p in enumerate(pngs):
        pic = Image.open(p).convert("RGB")
        assert _frame_colour(pic, 0) == QUERY
        for k, r in enumerate(data["queries"][qi]["ranked"], start=1):
            assert _frame_colour(pic, k) == (GREEN if r["match"] else RED)


def test_rank_rerank_and_unknown_ids(run_dir, sysu_root, tmp_path):
    flat = tmp_path / "gallery"
    flat.mkdir()
    for i, p in enumerate(resolve_images(sysu_root / "cam2")[:30]):
        (flat / f"{i:03d}.jpg").write_bytes(open(p, "rb").read())
    out = tmp_path / "rr"
    _ok(["rank", "--resume", str(run_dir), "--query", str(sysu_root / "cam6" / "0002"),
         "--gallery", str(flat), "--top", "4", "--out", str(out), "--rerank", "--pictures", "1"])
    data = json.loads((out / "ranking.json").read_text())
    assert data["rerank"] is True and data["metric"].startswith("k-reciprocal")
    assert all("match" not in r for item in data["queries"] for r in item["ranked"])
    pic = Image.open(out / "rank_00000.png").convert("RGB")
    assert _frame_colour(pic, 1) not in (GREEN, RED)  # identity unknown: grey
    # the same with the identities given by a manifest
    lines = ["path,identity,camera,modality,split"]
    truth = {}
    for i, p in enumerate(resolve_images(sysu_root / "cam2")[:30]):
        pid = int(p.split("/")[-2])
        truth[str(flat / f"{i:03d}.jpg")] = pid
        lines.append(f"gallery/{i:03d}.jpg,{pid},2,visible,gallery")
    for p in resolve_images(sysu_root / "cam6" / "0002"):
        lines.append(f"{p},2,6,thermal,query")
    (tmp_path / "ids.csv").write_text("\n".join(lines) + "\n")
    out2 = tmp_path / "rr2"
    _ok(["rank", "--resume", str(run_dir), "--query", str(sysu_root / "cam6" / "0002"),
         "--gallery", str(flat), "--top", "4", "--out", str(out2), "--ids", str(tmp_path / "ids.csv")])
    data = json.loads((out2 / "ranking.json").read_text())
    for item in data["queries"]:
        assert item["pid"] == 2
        for r in item["ranked"]:
            assert r["pid"] == truth[r["gallery"]] and r["match"] == (r["pid"] == 2)


def test_eval_flip_rerank(run_dir, model, tmp_path):
    out = tmp_path / "ev"
    _ok(["eval", "--resume", str(run_dir), "--sysu-mode", "all", "--trials", "1",
         "--flip", "--rerank", "--out", str(out)])
    got = json.loads((out / "eval-sysu-all-single-flip-rerank.json").read_text())
    assert "flip, rerank" in got["name"] and got["settings"]["rerank"] == "k-reciprocal"
    want = model.evaluate(flip=True, rerank=True, trials=1).to_dict()
    assert got["mean"] == want["mean"]
    plain = model.evaluate(trials=1).to_dict()
    assert plain["mean"] != want["mean"]


@pytest.mark.mindspore
@pytest.mark.slow
def test_every_command_on_a_mindspore_trained_run(sysu_root, tmp_path):
    """Train on MindSpore (the first compiled step costs ~1 min on CPU: slow), then extract,
    rank, report and export its run with the MindSpore backend."""
    from mvd_core.weights.export import onnx_features

    cfg = load_config("tiny", [f"data.root={sysu_root}", f"run.out={tmp_path}", "run.tag=ms",
                               "run.backend=mindspore", "run.device=CPU", *TINY])
    run = train(cfg).run_dir
    model = load_model(run)
    assert model.backend.name == "mindspore"
    _ok(["extract", "--resume", str(run), "--images", str(sysu_root / "cam3"), "--modality", "thermal",
         "--out", str(tmp_path / "f.npz")])
    feats, paths = load_features(tmp_path / "f.npz")
    np.testing.assert_allclose(feats, model.extract(paths, "thermal"), rtol=0, atol=1e-6)
    _ok(["rank", "--resume", str(run), "--query", str(sysu_root / "cam3" / "0001"),
         "--gallery", str(sysu_root / "cam1"), "--top", "3", "--out", str(tmp_path / "rk")])
    assert (tmp_path / "rk" / "rank_00000.png").exists()
    _ok(["report", str(run)])
    assert "data:image/png;base64," in (run / "report.html").read_text()
    _ok(["export", "--resume", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
         "--batch", "8"])
    from mvd_core.api import as_imageset
    from mvd_core.data.base import load_images
    from mvd_core.data.transforms import test_images

    x = test_images(load_images(as_imageset(paths[:8], "thermal"), np.arange(8), 64, 32), 64, 32)
    np.testing.assert_allclose(onnx_features(tmp_path / "m.onnx", x), feats[:8], rtol=0, atol=1e-5)
