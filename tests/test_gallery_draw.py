"""SYSU-MM01 gallery draws against plain re-implementations of the public codes, on a synthetic
tree in the real raw layout (empty files: the draws only list folders):

* ``agw``: AGW's ``process_gallery_sysu`` (mangye16/Cross-Modal-Re-ID-baseline ``data_manager.py``,
  with the ``random.seed(trial)`` of its later versions and of the MVD port's ``src/dataset.py``);
* ``official``: the gallery half of the official evaluation's ``get_testing_set`` (the PT code's
  ``evaluation/gen_utils.py``) on a ``rand_perm_cam.mat`` written here in the same structure.
"""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import pytest
import scipy.io

from mvd_core.config import EvalConfig
from mvd_core.data.sysu import load_sysu_test
from mvd_core.errors import MvdError
from mvd_core.eval.metrics import distance, evaluate
from mvd_core.eval.protocols import (
    find_sysu_permutations,
    load_sysu_permutations,
    run_sysu,
    sysu_draw_inputs,
    sysu_file_index,
    sysu_gallery_indices,
)

TEST_IDS = [3, 7, 12, 40, 41, 100, 205]
MAX_ID = 533  # the official cells are indexed by person id - 1 over every SYSU-MM01 id


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """cam1..6/<pid:04d>/<k:04d>.jpg with gaps in the file numbers, missing folders, folders of
    1 and of more than 10 images; exp/{train,val,test}_id.txt."""
    root = tmp_path_factory.mktemp("draw") / "SYSU-MM01"
    rng = np.random.default_rng(5)
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "train_id.txt").write_text("1,2")
    (root / "exp" / "val_id.txt").write_text("4")
    (root / "exp" / "test_id.txt").write_text(",".join(str(i) for i in reversed(TEST_IDS)))
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir()
        for pid in TEST_IDS + [1, 2, 4]:
            if rng.random() < 0.2:
                continue  # this person was not seen by this camera
            n = int(rng.choice([1, 2, 5, 13, 20]))
            folder = root / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir()
            for k in np.sort(rng.choice(60, n, replace=False)) + 1:
                (folder / f"{k:04d}.jpg").touch()
    return root


# -------------------------------------------------------------------------- plain references


def agw_process_gallery_sysu(data_path, mode="all", trial=0, gall_mode="single"):
    """AGW's process_gallery_sysu, as written there (paths returned)."""
    random.seed(trial)
    if mode == "all":
        rgb_cameras = ["cam1", "cam2", "cam4", "cam5"]
    elif mode == "indoor":
        rgb_cameras = ["cam1", "cam2"]
    file_path = os.path.join(data_path, "exp/test_id.txt")
    files_rgb = []
    with open(file_path) as file:
        ids = file.read().splitlines()
        ids = [int(y) for y in ids[0].split(",")]
        ids = ["%04d" % x for x in ids]  # noqa: UP031 - as AGW writes it
    for id in sorted(ids):
        for cam in rgb_cameras:
            img_dir = os.path.join(data_path, cam, id)
            if os.path.isdir(img_dir):
                new_files = sorted([img_dir + "/" + i for i in os.listdir(img_dir)])
                if gall_mode == "single":
                    files_rgb.append(random.choice(new_files))
                if gall_mode == "multi":  # AGW: np.random's global stream; seeded here per trial
                    files_rgb.extend(np.random.choice(new_files, min(10, len(new_files)), replace=False))
    return files_rgb


def official_gallery(data_path, perm_file, mode="all", run_index=0, number_shot=1):
    """The gallery half of the official evaluation's get_testing_set (gen_utils.py): per camera,
    per test id, the first ``number_shot`` entries of the trial's fixed permutation into that
    person's images of that camera (their files in sorted order)."""
    mat_cam_permutations = scipy.io.loadmat(perm_file)["rand_perm_cam"]
    gallery_cams = [1, 2, 4, 5] if mode == "all" else [1, 2]
    test_ids = np.array(sorted(TEST_IDS)) - 1
    out = []
    for cam_index in gallery_cams:
        cam_permutations = mat_cam_permutations[cam_index - 1][0].squeeze()
        for test_id in test_ids:
            img_dir = os.path.join(data_path, f"cam{cam_index}", f"{test_id + 1:04d}")
            current_id_features = sorted(os.listdir(img_dir)) if os.path.isdir(img_dir) else []
            if len(current_id_features) == 0:
                continue
            current_permutation = (cam_permutations[test_id][run_index] - 1).astype(int)  # MATLAB doubles
            current_permutation = current_permutation[:number_shot]
            out += [os.path.join(img_dir, current_id_features[i]) for i in current_permutation]
    return out


def write_perm_mat(root, path, trials=10, seed=0):
    """rand_perm_cam.mat in the official structure: a 6x1 cell of MAX_ID x 1 cells, each a
    trials x n double matrix of 1-based permutations (empty where a person has no image)."""
    rng = np.random.default_rng(seed)
    outer = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        inner = np.empty((MAX_ID, 1), dtype=object)
        for pid in range(1, MAX_ID + 1):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            n = len(os.listdir(folder)) if folder.is_dir() else 0
            inner[pid - 1, 0] = (np.stack([rng.permutation(n) + 1 for _ in range(trials)]).astype(float)
                                 if n else np.zeros((0, 0)))
        outer[cam - 1, 0] = inner
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"rand_perm_cam": outer})
    return path


# -------------------------------------------------------------------------- agw


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_agw_draw_is_agws_process_gallery_sysu(tree, mode):
    g = load_sysu_test(tree).gallery
    fidx = sysu_file_index(g.pids, g.cams, g.paths)
    for trial in range(10):
        ref = agw_process_gallery_sysu(str(tree), mode, trial)
        idx = sysu_gallery_indices(g.pids, g.cams, mode, "single", trial, "agw", file_index=fidx)
        assert [os.path.normpath(g.paths[i]) for i in idx] == [os.path.normpath(p) for p in ref]
        # the loader lists every folder sorted: the appearance order gives the same draw
        np.testing.assert_array_equal(idx, sysu_gallery_indices(g.pids, g.cams, mode, "single", trial))


def test_agw_multi_shot_is_numpy_choice_seeded_per_trial(tree):
    g = load_sysu_test(tree).gallery
    for trial in range(3):
        np.random.seed(trial)
        ref = agw_process_gallery_sysu(str(tree), "all", trial, "multi")
        idx = sysu_gallery_indices(g.pids, g.cams, "all", "multi", trial, "agw")
        assert [os.path.normpath(g.paths[i]) for i in idx] == [os.path.normpath(str(p)) for p in ref]


def test_file_index_comes_from_the_names_not_the_listing_order(tree):
    g = load_sysu_test(tree).gallery
    perm = np.random.default_rng(1).permutation(len(g.paths))
    paths = [g.paths[i] for i in perm]
    fidx = sysu_file_index(g.pids[perm], g.cams[perm], paths)
    for trial in (0, 4):
        idx = sysu_gallery_indices(g.pids[perm], g.cams[perm], "all", "single", trial, "agw", file_index=fidx)
        assert [paths[i] for i in idx] == [g.paths[i] for i in sysu_gallery_indices(g.pids, g.cams, "all", "single", trial)]


def test_agw_per_trial_numbers_are_those_of_the_agw_gallery(tree):
    """run_sysu with the agw draw = evaluating on exactly AGW's gallery, trial by trial."""
    ts = load_sysu_test(tree)
    q, g = ts.query, ts.gallery
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(max(TEST_IDS) + 1, 8))
    qf = centers[q.pids] + rng.normal(size=(len(q), 8))
    gf = centers[g.pids] + rng.normal(size=(len(g), 8))
    report = run_sysu(qf, q.pids, q.cams, gf, g.pids, g.cams, trials=range(10),
                      **sysu_draw_inputs(ts, EvalConfig(gallery_draw="agw")))
    row = {os.path.normpath(p): i for i, p in enumerate(g.paths)}
    for trial, result in report.rows:
        sel = np.array([row[os.path.normpath(p)] for p in agw_process_gallery_sysu(str(tree), "all", trial)])
        ref = evaluate(distance(qf, gf[sel]), q.pids, g.pids[sel], q.cams, g.cams[sel], protocol="sysu")
        np.testing.assert_allclose(result.cmc, ref.cmc, atol=1e-12)
        assert (result.mAP, result.mINP) == pytest.approx((ref.mAP, ref.mINP), abs=1e-12)
    assert report.settings["gallery_draw"] == "agw"


# -------------------------------------------------------------------------- official


@pytest.fixture(scope="module")
def perm_file(tree):
    return write_perm_mat(tree, tree / "exp" / "rand_perm_cam.mat")


@pytest.mark.parametrize(("mode", "shot", "k"), [("all", "single", 1), ("indoor", "single", 1), ("all", "multi", 10)])
def test_official_draw_is_the_official_evaluation(tree, perm_file, mode, shot, k):
    ts = load_sysu_test(tree)
    g = ts.gallery
    inputs = sysu_draw_inputs(ts, EvalConfig(gallery_draw="official"))
    assert inputs["perms"].source == str(perm_file)
    for trial in range(10):
        idx = sysu_gallery_indices(g.pids, g.cams, mode, shot, trial, "official",
                                   file_index=inputs["g_file_index"], perms=inputs["perms"])
        ref = official_gallery(str(tree), perm_file, mode, trial, k)
        assert [os.path.normpath(g.paths[i]) for i in idx] == [os.path.normpath(p) for p in ref]


def test_official_draw_differs_from_agw_and_runs_in_run_sysu(tree, perm_file):
    ts = load_sysu_test(tree)
    q, g = ts.query, ts.gallery
    rng = np.random.default_rng(2)
    qf, gf = rng.normal(size=(len(q), 4)), rng.normal(size=(len(g), 4))
    inputs = sysu_draw_inputs(ts, EvalConfig(gallery_draw="official"))
    rep = run_sysu(qf, q.pids, q.cams, gf, g.pids, g.cams, trials=range(3), **inputs)
    assert rep.settings["gallery_draw"] == "official" and len(rep.rows) == 3
    agw = [sysu_gallery_indices(g.pids, g.cams, "all", "single", t) for t in range(10)]
    off = [sysu_gallery_indices(g.pids, g.cams, "all", "single", t, "official", perms=inputs["perms"])
           for t in range(10)]
    assert any(set(a.tolist()) != set(o.tolist()) for a, o in zip(agw, off))


def test_official_file_lookup_and_errors(tree, perm_file, tmp_path):
    assert find_sysu_permutations(tree) == perm_file
    other = write_perm_mat(tree, tmp_path / "evaluation" / "rand_perm_cam.mat", trials=3, seed=1)
    assert find_sysu_permutations(tree, tmp_path / "evaluation") == other
    with pytest.raises(MvdError, match="rand_perm_cam.mat: not found in"):
        find_sysu_permutations(tmp_path / "nowhere")
    g = load_sysu_test(tree).gallery
    perms = load_sysu_permutations(other)
    with pytest.raises(MvdError, match=r"trial: expected 0..2 \(the 3 trials of"):
        sysu_gallery_indices(g.pids, g.cams, "all", "single", 3, "official", perms=perms)
    # a permutation file that does not match the data set's folders
    short = dataclasses.replace(perms, table={k: v[:, :-1] if v.shape[1] > 1 else v for k, v in perms.table.items()})
    with pytest.raises(MvdError, match=r"camera \d person \d+: a permutation of \d+ images, the data set has"):
        sysu_gallery_indices(g.pids, g.cams, "all", "single", 0, "official", perms=short)
    missing = dataclasses.replace(perms, table={k: v for k, v in perms.table.items() if k != (1, 3)})
    with pytest.raises(MvdError, match=r"no permutation for camera 1 person 3"):
        sysu_gallery_indices(g.pids, g.cams, "all", "single", 0, "official", perms=missing)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file")
    with pytest.raises(MvdError, match="junk.mat: not a readable MAT file"):
        load_sysu_permutations(tmp_path / "junk.mat")
    scipy.io.savemat(str(tmp_path / "other.mat"), {"x": np.zeros(3)})
    with pytest.raises(MvdError, match="expected a variable rand_perm_cam"):
        load_sysu_permutations(tmp_path / "other.mat")


@pytest.mark.parametrize("draw", ["agw", "official", "seeded"])
def test_evaluate_honours_eval_gallery_draw(tree, perm_file, draw):
    from mvd_core.eval.protocols import evaluate as evaluate_testset

    ts = load_sysu_test(tree)
    q, g = ts.query, ts.gallery
    rng = np.random.default_rng(3)
    qf, gf = rng.normal(size=(len(q), 4)), rng.normal(size=(len(g), 4))
    cfg = EvalConfig(gallery_draw=draw, trials=4)
    rep = evaluate_testset(ts, qf, gf, cfg)
    ref = run_sysu(qf, q.pids, q.cams, gf, g.pids, g.cams, trials=range(4), **sysu_draw_inputs(ts, cfg))
    assert rep.settings["gallery_draw"] == draw
    assert [r.mAP for _, r in rep.rows] == [r.mAP for _, r in ref.rows]
