"""LLCM in the layout its public code reads (mvd_core.data.llcm): the reader on a hand-written
folder, the gallery draw and the metric against plain re-implementations of the public code's
own expressions (DEEN/data_manager.py process_*_llcm, AGW/eval_metrics.py eval_llcm), every
bad-input error, ``mvd synth --layout llcm`` and the CLI end to end."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvd_core.config import DataConfig, EvalConfig, load_config, replace
from mvd_core.data.llcm import load_llcm_test, load_llcm_train
from mvd_core.data.sets import direction_of, load_test, load_train
from mvd_core.data.synth import MARKER, synth_llcm
from mvd_core.errors import DataError
from mvd_core.eval.protocols import evaluate_all, llcm_gallery_indices, run_llcm

MVD = str(Path(sys.executable).with_name("mvd"))


def _jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 12, 3), value % 256, np.uint8)).save(path, quality=95)


#: test images: (modality folder, cam, pid) -> file names (written unsorted on purpose)
TEST_FILES = {
    ("test_vis", 1, 7): ["b.jpg", "a.jpg"],
    ("test_vis", 9, 7): ["z.jpg"],
    ("test_vis", 3, 8): ["m.jpg"],
    ("test_vis", 2, 10): ["x.jpg"],  # id 10 is not a test id: never read
    ("test_nir", 1, 7): ["q.jpg"],
    ("test_nir", 3, 7): ["ignored.jpg"],  # no infrared camera 3 in the public code
    ("test_nir", 4, 8): ["d.jpg", "c.jpg"],
    ("test_nir", 9, 8): ["e.jpg"],
}


def make_llcm(root: Path) -> Path:
    v = 0
    for (folder, cam, pid), names in TEST_FILES.items():
        for name in names:
            v += 17
            _jpg(root / folder / f"cam{cam}" / f"{pid:04d}" / name, v)
    train = {
        "train_vis.txt": ["train_vis/cam2/0003/1.jpg 5", "", "train_vis/cam4/0003/2.jpg 5", "extra/0009/3.jpg 9"],
        "train_nir.txt": ["train_nir/cam6/0009/1.jpg 9", "train_nir/cam1/0003/2.jpg 5"],
    }
    for name, lines in train.items():
        for line in lines:
            if line:
                _jpg(root / line.split()[0], 100)
        (root / "idx").mkdir(parents=True, exist_ok=True)
        (root / "idx" / name).write_text("\n".join(lines) + "\n")
    (root / "idx" / "test_id.txt").write_text("8,7\n99\n")  # only the first line counts
    return root


@pytest.fixture()
def llcm(tmp_path: Path) -> Path:
    return make_llcm(tmp_path / "LLCM")


def _rel(root: Path, paths) -> list[str]:
    return [str(Path(p).relative_to(root.resolve())) for p in paths]


def test_reader_hand_made(llcm: Path) -> None:
    tr = load_llcm_train(llcm)
    assert tr.num_classes == 2
    assert tr.visible.labels.tolist() == [0, 0, 1] and tr.visible.pids.tolist() == [5, 5, 9]
    assert tr.visible.cams.tolist() == [2, 4, -1]  # no camN folder: unknown
    assert tr.thermal.labels.tolist() == [1, 0] and tr.thermal.cams.tolist() == [6, 1]
    assert _rel(llcm, tr.visible.paths) == ["train_vis/cam2/0003/1.jpg", "train_vis/cam4/0003/2.jpg", "extra/0009/3.jpg"]

    t2v = load_llcm_test(llcm)  # the public default: IR to VIS
    assert t2v.protocol == "llcm" and t2v.direction == "t2v"
    # ids ascending, then cameras in order, then names sorted; nir cam3 and id 10 never read
    assert _rel(llcm, t2v.query.paths) == ["test_nir/cam1/0007/q.jpg", "test_nir/cam4/0008/c.jpg",
                                           "test_nir/cam4/0008/d.jpg", "test_nir/cam9/0008/e.jpg"]
    assert t2v.query.pids.tolist() == [7, 8, 8, 8] and t2v.query.cams.tolist() == [1, 4, 4, 9]
    assert _rel(llcm, t2v.gallery.paths) == ["test_vis/cam1/0007/a.jpg", "test_vis/cam1/0007/b.jpg",
                                             "test_vis/cam9/0007/z.jpg", "test_vis/cam3/0008/m.jpg"]
    assert t2v.gallery.cams.tolist() == [1, 1, 9, 3] and t2v.gallery.labels.tolist() == [7, 7, 7, 8]
    v2t = load_llcm_test(llcm, "v2t")
    assert v2t.direction == "v2t" and v2t.query.modality == "visible"
    assert v2t.query.paths == t2v.gallery.paths and v2t.gallery.paths == t2v.query.paths
    # dispatch by data.dataset
    cfg = DataConfig(dataset="llcm", root=str(llcm))
    assert load_train(cfg).num_classes == 2
    assert load_test(cfg, "t2v").query.paths == t2v.query.paths
    # a run's direction: eval.llcm_mode, by default the public code's "IR to VIS"
    assert load_test(cfg).direction == "t2v"
    full = load_config("tiny", [f"data.root={llcm}", "data.dataset=llcm"])
    assert direction_of(full) == "t2v" and direction_of(replace(full, eval={"llcm_mode": "v2t"})) == "v2t"
    assert direction_of(replace(full, data={"dataset": "regdb"})) == "v2t"  # RegDB: eval.regdb_mode


# ---------------------------------------------------------------- the public code, re-written plainly

PUBLIC_CAMS = {1: [f"test_vis/cam{c}" for c in (1, 2, 3, 4, 5, 6, 7, 8, 9)],
               2: [f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)]}


def _public_ids(data_path: str) -> list[str]:
    with open(os.path.join(data_path, "idx/test_id.txt")) as f:
        ids = f.read().splitlines()
    return ["%04d" % int(y) for y in ids[0].split(",")]  # noqa: UP031 (the public expression)


def _public_parse(data_path: str, img_path: str) -> tuple[int, int]:
    # the public expressions, on the path as the public code spells it ('./Datasets/LLCM/' + ...)
    p = "./Datasets/LLCM/" + img_path[len(data_path):].lstrip("/")
    return int(p.split("cam")[1][0]), int(p.split("cam")[1][2:6])


def public_query(data_path: str, mode: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    files = []
    for pid in sorted(_public_ids(data_path)):
        for cam in PUBLIC_CAMS[mode]:
            img_dir = os.path.join(data_path, cam, pid)
            if os.path.isdir(img_dir):
                files.extend(sorted([img_dir + "/" + i for i in os.listdir(img_dir)]))
    parsed = [_public_parse(data_path, f) for f in files]
    return files, np.array([p for _, p in parsed]), np.array([c for c, _ in parsed])


def public_gallery(data_path: str, mode: int, trial: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    random.seed(trial)
    files = []
    for pid in sorted(_public_ids(data_path)):
        for cam in PUBLIC_CAMS[mode]:
            img_dir = os.path.join(data_path, cam, pid)
            if os.path.isdir(img_dir):
                files.append(random.choice(sorted([img_dir + "/" + i for i in os.listdir(img_dir)])))
    parsed = [_public_parse(data_path, f) for f in files]
    return files, np.array([p for _, p in parsed]), np.array([c for c, _ in parsed])


def public_eval_llcm(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=5):
    """eval_llcm, one query at a time: same-(pid, camera) removal, de-duplicated CMC."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    pred_label = g_pids[indices]
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    cmcs, aps, inps, valid = [], [], [], 0
    for i in range(distmat.shape[0]):
        order = indices[i]
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        ranked = pred_label[i][keep]
        first = np.unique(ranked, return_index=True)[1]
        dedup = np.array([ranked[j] for j in sorted(first)])
        cmc_i = (dedup == q_pids[i]).astype(np.int32).cumsum()[:max_rank]
        cmcs.append(np.pad(cmc_i, (0, max_rank - cmc_i.shape[0]), mode="edge"))
        orig = matches[i][keep]
        if not orig.any():
            continue
        c = orig.cumsum()
        last = np.max(np.where(orig == 1))
        inps.append(c[last] / (last + 1.0))
        aps.append((np.asarray([x / (k + 1.0) for k, x in enumerate(c)]) * orig).sum() / orig.sum())
        valid += 1
    return np.asarray(cmcs, np.float64).sum(0) / valid, float(np.mean(aps)), float(np.mean(inps))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("llcm-synth") / "LLCM"
    synth_llcm(root, ids=21, images_per_cam=3, seed=4, missing_cam_p=0.4)
    return root


@pytest.mark.parametrize("mode", ["t2v", "v2t"])
def test_query_and_gallery_draw_match_the_public_code(synth: Path, mode: str) -> None:
    ts = load_llcm_test(synth, mode)
    q_mode, g_mode = (2, 1) if mode == "t2v" else (1, 2)  # test_mode = [g_mode, q_mode]
    data_path = str(synth.resolve())
    files, pids, cams = public_query(data_path, q_mode)
    assert list(ts.query.paths) == files
    assert ts.query.pids.tolist() == pids.tolist() and ts.query.cams.tolist() == cams.tolist()
    g = ts.gallery
    draws = set()
    for trial in range(10):
        files, pids, cams = public_gallery(data_path, g_mode, trial)
        idx = llcm_gallery_indices(g.pids, g.cams, trial)
        assert [g.paths[i] for i in idx] == files, trial
        assert g.pids[idx].tolist() == pids.tolist() and g.cams[idx].tolist() == cams.tolist()
        draws.add(tuple(idx.tolist()))
    assert len(draws) == 10  # the trials differ (a draw that ignores the seed fails here)


@pytest.mark.parametrize("ties", [False, True])
def test_run_llcm_matches_public_eval(synth: Path, ties: bool) -> None:
    """Same metric as eval_llcm (ties: integer features, so equal distances are common; both
    sides break them by gallery order)."""
    ts = load_llcm_test(synth, "t2v")
    rng = np.random.default_rng(0)
    qf = rng.normal(size=(len(ts.query), 6)).astype(np.float32)
    gf = rng.normal(size=(len(ts.gallery), 6)).astype(np.float32)
    if ties:
        qf, gf = np.rint(qf), np.rint(gf)
    q, g = ts.query, ts.gallery
    report = run_llcm(qf, q.pids, q.cams, gf, g.pids, g.cams, direction="t2v", trials=range(3), max_rank=5)
    assert report.name == "LLCM infrared->visible" and [t for t, _ in report.rows] == [0, 1, 2]
    removed = 0
    for trial, result in report.rows:
        _, gp, gc = public_gallery(str(synth.resolve()), 1, trial)
        idx = llcm_gallery_indices(g.pids, g.cams, trial)
        d = np.sqrt(((qf[:, None, :].astype(np.float64) - gf[idx][None].astype(np.float64)) ** 2).sum(-1))
        cmc, mAP, mINP = public_eval_llcm(d, q.pids, gp, q.cams, gc)
        np.testing.assert_allclose(result.cmc, cmc, atol=1e-6)
        assert abs(result.mAP - mAP) < 1e-6 and abs(result.mINP - mINP) < 1e-6
        removed += int(((q.pids[:, None] == gp[None]) & (q.cams[:, None] == gc[None])).sum())
    assert removed > 0  # the same-camera removal was exercised


def test_evaluate_all_both_directions(synth: Path) -> None:
    ts = load_llcm_test(synth)
    rng = np.random.default_rng(1)
    qf, gf = rng.normal(size=(len(ts.query), 4)), rng.normal(size=(len(ts.gallery), 4))
    reports = evaluate_all(ts, qf, gf, EvalConfig(trials=2))
    assert list(reports) == ["llcm-t2v", "llcm-v2t"]
    assert reports["llcm-v2t"].name == "LLCM visible->infrared"
    assert reports["llcm-v2t"].settings["num_query"] == len(ts.gallery)
    assert all(len(r.rows) == 2 for r in reports.values())


# ---------------------------------------------------------------- bad input: one line, file (and line)


def _edit(root: Path, rel: str, text: str) -> Path:
    (root / rel).write_text(text)
    return root / rel


@pytest.mark.parametrize("text, expect", [
    ("train_vis/cam2/0003/1.jpg\n", ":1: expected 'relative/path label', got 1 field"),
    ("train_vis/cam2/0003/1.jpg 5 x\n", ":1: expected 'relative/path label', got 3 field"),
    ("\ntrain_vis/cam2/0003/1.jpg five\n", ":2: label 'five' is not an integer"),
    ("train_vis/cam2/0003/1.jpg -1\n", ":1: label -1 is negative"),
    ("train_vis/cam2/0003/nope.jpg 5\n", ":1: image train_vis/cam2/0003/nope.jpg not found"),
    ("", "empty split"),
])
def test_bad_train_list(llcm: Path, text: str, expect: str) -> None:
    path = _edit(llcm, "idx/train_vis.txt", text)
    with pytest.raises(DataError) as e:
        load_llcm_train(llcm)
    msg = str(e.value)
    assert str(path) in msg and expect in msg and "\n" not in msg


def test_train_label_in_one_modality_only(llcm: Path) -> None:
    _edit(llcm, "idx/train_nir.txt", "train_nir/cam1/0003/2.jpg 5\n")
    with pytest.raises(DataError, match=r"train_nir.txt: labels \[9\] appear in train_vis.txt but have no image"):
        load_llcm_train(llcm)


def test_missing_files_and_folders(llcm: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing folder"):
        load_llcm_train(tmp_path / "nowhere")
    (llcm / "idx" / "train_nir.txt").unlink()
    with pytest.raises(DataError, match=r"train_nir.txt: missing LLCM index file"):
        load_llcm_train(llcm)
    import shutil

    shutil.rmtree(llcm / "test_nir")
    with pytest.raises(DataError, match=r"test_nir: missing folder"):
        load_llcm_test(llcm)
    (llcm / "idx" / "test_id.txt").unlink()
    with pytest.raises(DataError, match=r"test_id.txt: missing LLCM test id file"):
        load_llcm_test(llcm)
    with pytest.raises(DataError, match="eval.llcm_mode: expected t2v or v2t"):
        load_llcm_test(llcm, "both")


@pytest.mark.parametrize("text, expect", [
    ("7,x\n", ":1: test id 'x' is not a non-negative integer"),
    ("\n7,8\n", ":1: expected comma-separated test ids, got an empty line"),
    ("7,8,7\n", ":1: test ids [7] are listed twice"),
    ("55\n", "no image of the test ids"),
])
def test_bad_test_ids(llcm: Path, text: str, expect: str) -> None:
    _edit(llcm, "idx/test_id.txt", text)
    with pytest.raises(DataError) as e:
        load_llcm_test(llcm)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_empty_camera_folder(llcm: Path) -> None:
    (llcm / "test_vis" / "cam5" / "0008").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cam5/0008: empty folder"):
        load_llcm_test(llcm)


# ---------------------------------------------------------------- synth and the CLI


def test_synth_llcm_layout(synth: Path) -> None:
    info = json.loads((synth / MARKER).read_text())
    assert info["layout"] == "llcm" and info["ids"] == 21
    test_ids = [int(x) for x in (synth / "idx" / "test_id.txt").read_text().strip().split(",")]
    assert test_ids == info["splits"]["test"] and not set(test_ids) & set(info["splits"]["train"])
    assert not (synth / "test_nir" / "cam3").exists() and not (synth / "train_nir" / "cam3").exists()
    for pid in test_ids:  # every test id in both modalities
        for mod in ("vis", "nir"):
            assert list((synth / f"test_{mod}").glob(f"cam*/{pid:04d}/*.jpg")), (pid, mod)
    tr = load_llcm_train(synth)
    assert tr.num_classes == len(info["splits"]["train"])
    assert sorted(set(tr.visible.pids.tolist())) == list(range(tr.num_classes))
    n_files = sum(1 for _ in synth.glob("*/cam*/*/*.jpg"))
    assert n_files == info["images"] and n_files > len(tr.visible) + len(tr.thermal)
    # a pure function of the arguments
    again = synth.parent / "again"
    synth_llcm(again, ids=21, images_per_cam=3, seed=4, missing_cam_p=0.4)
    for name in ("train_vis.txt", "train_nir.txt", "test_id.txt"):
        assert (again / "idx" / name).read_text() == (synth / "idx" / name).read_text()


def _mvd(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([MVD, *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"mvd {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.torch
def test_cli_synth_train_eval(tmp_path: Path) -> None:
    data, runs = tmp_path / "LLCM", tmp_path / "runs"
    r = _mvd("synth", "--layout", "llcm", "--out", str(data), "--ids", "12", "-k", "2")
    assert "wrote synthetic LLCM" in r.stdout and (data / "idx" / "train_vis.txt").is_file()
    sets = ["model.width=2", "model.blocks=[2,1,1,1]", "data.height=64", "data.width=32",
            "data.num_ids=2", "data.num_pos=2", "data.workers=1", "schedule.steps_per_epoch=2", "eval.trials=2"]
    _mvd("train", "--config", "tiny", "--backend", "torch", "--device", "cpu", "--dataset", "llcm",
         "--data-path", str(data), "--ckpt", "run", "--out", str(runs), "--epochs", "1",
         *[a for kv in sets for a in ("--set", kv)])
    run = runs / "run"
    final = json.loads((run / "report.json").read_text())
    assert final["settings"]["dataset"] == "llcm"
    assert final["name"] == "LLCM infrared->visible"  # eval.llcm_mode: the public default
    r = _mvd("eval", "--resume", str(run))
    for key, name in (("llcm-v2t", "LLCM visible->infrared"), ("llcm-t2v", "LLCM infrared->visible")):
        rep = json.loads((run / f"eval-{key}.json").read_text())
        assert rep["name"] == name and rep["num_trials"] == 2 and (run / f"eval-{key}.txt").is_file()
        assert rep["trials"][0]["num_valid"] > 0
    _mvd("eval", "--resume", str(run), "--regdb-mode", "t2v", "--out", str(tmp_path / "one"))
    assert sorted(p.name for p in (tmp_path / "one").glob("eval-*.json")) == ["eval-llcm-t2v.json"]
