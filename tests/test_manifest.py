"""Your own data: a manifest CSV through the same reader -> sampler -> loader -> protocol path,
with one-line file:line errors for bad rows."""

import json
import os

import numpy as np
import pytest

from mvd_core import load_model
from mvd_core.config import load_config
from mvd_core.data.manifest import read_manifest_csv
from mvd_core.data.sets import load_test, load_train
from mvd_core.data.sysu import read_id_file
from mvd_core.errors import DataError
from mvd_core.eval.metrics import distance, evaluate
from mvd_core.train.driver import train

HEADER = "path,identity,camera,modality,split\n"


def _rows(root, base):
    """The synthetic SYSU-MM01 tree as manifest lines (paths relative to ``base``): train ids
    -> train, test ids -> test."""
    train_ids = set(read_id_file(root / "exp" / "train_id.txt")) | set(read_id_file(root / "exp" / "val_id.txt"))
    lines = []
    for cam in range(1, 7):
        mod = "thermal" if cam in (3, 6) else "visible"
        for d in sorted((root / f"cam{cam}").iterdir()):
            for f in sorted(d.glob("*.jpg")):
                split = "train" if int(d.name) in train_ids else "test"
                lines.append(f"{os.path.relpath(f, base)},{int(d.name)},{cam},{mod},{split}\n")
    return lines


@pytest.fixture(scope="module")
def manifest(sysu_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("own-data") / "manifest.csv"
    path.write_text(HEADER + "".join(_rows(sysu_root, path.parent)))
    return path


def test_reads_as_the_sysu_reader(manifest, sysu_root):
    cfg = load_config("tiny", [f"data.root={manifest}", "data.dataset=manifest"]).data
    sysu = load_train(load_config("tiny", [f"data.root={sysu_root}"]).data)
    ts = load_train(cfg)
    assert ts.num_classes == sysu.num_classes
    for a, b in ((ts.visible, sysu.visible), (ts.thermal, sysu.thermal)):
        assert sorted(zip(a.paths, a.labels.tolist())) == sorted(zip(b.paths, b.labels.tolist()))
    test = load_test(cfg, "t2v")
    assert test.query.modality == "thermal" and test.gallery.modality == "visible"
    assert set(test.query.cams.tolist()) == {3, 6} and set(test.gallery.cams.tolist()) == {1, 2, 4, 5}


@pytest.mark.torch
def test_trains_and_evaluates(manifest, tmp_path):
    cfg = load_config("tiny", [
        f"data.root={manifest}", "data.dataset=manifest", f"run.out={tmp_path}", "run.tag=m",
        "model.width=4", "data.height=64", "data.width=32", "schedule.steps_per_epoch=2",
        "schedule.epochs=1", "data.workers=1", "eval.regdb_mode=t2v"])
    res = train(cfg)
    rep = json.loads((res.run_dir / "report.json").read_text())
    # the same number by hand: features through the API, the plain metric
    model = load_model(res.run_dir)
    test = load_test(cfg.data, "t2v")
    qf, gf = model.extract(test.query, "thermal"), model.extract(test.gallery, "visible")
    want = evaluate(distance(qf, gf), test.query.pids, test.gallery.pids, test.query.cams,
                    test.gallery.cams, protocol="regdb")
    assert rep["mean"]["mAP"] == pytest.approx(100 * want.mAP, abs=0.006)


@pytest.mark.parametrize("line,needle", [
    ("cam1/0001/0001.jpg,x,1,visible,train", "identity 'x': expected an integer"),
    ("cam1/0001/0001.jpg,1,1,nir,train", "modality 'nir': expected visible or thermal"),
    ("cam1/0001/0001.jpg,1,1,visible,val", "split 'val': expected one of train, query, gallery, test"),
    ("cam1/0001/missing.jpg,1,1,visible,train", "cam1/0001/missing.jpg: image file not found"),
    ("cam1/0001/0001.jpg,1,1", "3 fields, expected 5"),
    ("cam1/0001/0001.jpg,-2,1,visible,train", "identity -2: expected >= 0"),
])
def test_bad_rows_name_file_and_line(sysu_root, tmp_path, line, needle):
    path = tmp_path / "m.csv"
    ok = f"{sysu_root}/cam1/0001/0001.jpg,1,1,visible,train"
    path.write_text(HEADER + ok + "\n" + line.replace("cam1/", f"{sysu_root}/cam1/", 1) + "\n")
    with pytest.raises(DataError) as e:
        read_manifest_csv(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: ") and needle in msg and "\n" not in msg


def test_structural_errors(sysu_root, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,identity,modality,split\n")
    with pytest.raises(DataError, match=r"m.csv:1: header lacks column\(s\) camera"):
        read_manifest_csv(path)
    img = f"{sysu_root}/cam1/0001/0001.jpg"
    path.write_text(HEADER + f"{img},1,1,visible,train\n")
    cfg = load_config("tiny", [f"data.root={path}", "data.dataset=manifest"]).data
    with pytest.raises(DataError, match=r"m.csv:2: identity 1 has train images but no thermal one"):
        load_train(cfg)
    with pytest.raises(DataError, match="no query images"):
        load_test(cfg)
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest_csv(tmp_path)
    np.testing.assert_array_equal(read_manifest_csv(path).pids, [1])


def test_prepare_cache_is_read_instead_of_the_files(manifest, tmp_path):
    from typer.testing import CliRunner

    from mvd_cli.app import app
    from mvd_core.data.base import load_images

    out = tmp_path / "cache"
    args = ["prepare", "manifest", "--root", str(manifest), "--out", str(out), "--height", "64",
            "--width", "32", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "written" in r.output, r.output
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "up to date" in r.output
    raw_cfg = load_config("tiny", [f"data.root={manifest}", "data.dataset=manifest"]).data
    cached_cfg = load_config("tiny", [f"data.root={manifest}", "data.dataset=manifest", f"data.cache={out}"]).data
    raw, cached = load_train(raw_cfg), load_train(cached_cfg)
    assert raw.visible.paths is not None and cached.visible.images is not None
    for a, b in ((raw.visible, cached.visible), (raw.thermal, cached.thermal)):
        np.testing.assert_array_equal(a.labels, b.labels)
        idx = np.arange(len(a))
        np.testing.assert_array_equal(load_images(a, idx, 64, 32), load_images(b, idx, 64, 32))
    stale = load_config("tiny", [f"data.root={manifest}", "data.dataset=manifest", f"data.cache={out}",
                                 "data.height=128", "data.width=64"]).data
    with pytest.raises(DataError, match="stale .* re-run mvd prepare manifest"):
        load_train(stale)
