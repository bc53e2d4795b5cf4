"""mvd_core.eval.protocols: SYSU-MM01 gallery draws, run_sysu / run_regdb, and the report."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mvd_core.errors import MvdError
from mvd_core.eval import protocols
from mvd_core.eval.metrics import EvalResult, distance, evaluate
from mvd_core.eval.protocols import (
    RegDBTrial,
    Report,
    regdb_trial,
    run_regdb,
    run_sysu,
    sysu_gallery_indices,
)


def visible_set(seed: int = 0, n_ids: int = 30):
    """A SYSU-like visible test set: each identity in a random subset of cams 1, 2, 4, 5 with
    1..25 images per camera, listed in shuffled order."""
    rng = np.random.default_rng(seed)
    pids, cams = [], []
    for pid in range(1, n_ids + 1):
        for cam in (1, 2, 4, 5):
            if rng.random() < 0.7:
                n = int(rng.integers(1, 26))
                pids += [pid] * n
                cams += [cam] * n
    perm = rng.permutation(len(pids))
    return np.array(pids)[perm], np.array(cams)[perm]


def groups(pids, cams, idx):
    keys, counts = np.unique(np.stack([pids[idx], cams[idx]]), axis=1, return_counts=True)
    return {tuple(k): c for k, c in zip(keys.T.tolist(), counts.tolist())}


# --------------------------------------------------------------------------------------------
# gallery draws (the seeded draw here; agw and official: tests/test_gallery_draw.py)


@pytest.mark.parametrize("draw", ["seeded", "agw"])
@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("shot", ["single", "multi"])
def test_draws_are_deterministic_and_differ_across_seeds(mode, shot, draw):
    pids, cams = visible_set()
    draws = [sysu_gallery_indices(pids, cams, mode, shot, t, draw) for t in range(10)]
    for t in range(10):
        np.testing.assert_array_equal(draws[t], sysu_gallery_indices(pids, cams, mode, shot, t, draw))
    assert len({d.tobytes() for d in draws}) == 10


@pytest.mark.parametrize("draw", ["seeded", "agw"])
@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("trial", [0, 7])
def test_single_shot_one_image_per_identity_and_camera(mode, trial, draw):
    pids, cams = visible_set(1)
    idx = sysu_gallery_indices(pids, cams, mode, "single", trial, draw)
    if draw == "seeded":
        assert np.all(np.diff(idx) > 0)  # ascending, unique: gallery order is kept
    else:  # id-major, cameras in order
        assert np.all(np.diff(pids[idx] * 10 + cams[idx]) > 0)
    allowed = {"all": {1, 2, 4, 5}, "indoor": {1, 2}}[mode]
    present = {k for k in groups(pids, cams, np.arange(len(pids))) if k[1] in allowed}
    drawn = groups(pids, cams, idx)
    assert set(drawn) == present
    assert set(drawn.values()) == {1}
    assert set(cams[idx]) <= allowed


@pytest.mark.parametrize("draw", ["seeded", "agw"])
@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_multi_shot_up_to_ten_per_identity_and_camera(mode, draw):
    pids, cams = visible_set(2)
    idx = sysu_gallery_indices(pids, cams, mode, "multi", 3, draw)
    assert len(set(idx.tolist())) == idx.shape[0]
    available = groups(pids, cams, np.arange(len(pids)))
    drawn = groups(pids, cams, idx)
    assert max(available.values()) > 10  # the test set needs groups larger than 10
    for key, n in drawn.items():
        assert n == min(10, available[key])
    allowed = {"all": {1, 2, 4, 5}, "indoor": {1, 2}}[mode]
    assert set(cams[idx]) <= allowed and {k for k in available if k[1] in allowed} == set(drawn)


def test_indoor_draw_is_all_search_draw_restricted():
    pids, cams = visible_set(3)
    for t in range(3):
        every = sysu_gallery_indices(pids, cams, "all", "single", t, "seeded")
        indoor = sysu_gallery_indices(pids, cams, "indoor", "single", t, "seeded")
        np.testing.assert_array_equal(indoor, every[np.isin(cams[every], [1, 2])])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mode": "outdoor"}, r"mode: expected one of \('all', 'indoor'\)"),
        ({"shot": "few"}, r"shot: expected one of \('single', 'multi'\)"),
        ({"trial": -1}, "trial: expected a non-negative integer"),
        ({"trial": 1.5}, "trial: expected a non-negative integer"),
        ({"draw": "random"}, r"draw: expected one of \('agw', 'official', 'seeded'\)"),
        ({"draw": "official"}, "perms: gallery_draw=official needs"),
    ],
)
def test_draw_bad_input(kwargs, pattern):
    pids, cams = visible_set()
    with pytest.raises(ValueError, match=pattern):
        sysu_gallery_indices(pids, cams, **kwargs)
    with pytest.raises(ValueError, match="g_cams: expected a 1-D integer array of length"):
        sysu_gallery_indices(pids, cams[:-1])


# --------------------------------------------------------------------------------------------
# run_sysu / run_regdb


def sysu_features(seed: int = 0, dim: int = 16):
    rng = np.random.default_rng(seed)
    g_pids, g_cams = visible_set(seed, n_ids=12)
    centers = rng.normal(size=(13, dim))
    g_feats = centers[g_pids] + rng.normal(size=(len(g_pids), dim))
    q_pids = rng.integers(1, 13, 80)
    q_cams = rng.choice([3, 6], 80)
    q_feats = centers[q_pids] + rng.normal(size=(80, dim))
    return q_feats, q_pids, q_cams, g_feats, g_pids, g_cams


@pytest.mark.parametrize(("mode", "shot", "draw"), [("all", "single", "agw"), ("indoor", "multi", "seeded")])
def test_run_sysu_equals_a_loop_of_evaluate(mode, shot, draw):
    qf, qp, qc, gf, gp, gc = sysu_features()
    report = run_sysu(
        qf, qp, qc, gf, gp, gc, mode=mode, shot=shot, trials=range(4), metric="cosine",
        gallery_draw=draw,
    )
    assert [label for label, _ in report.rows] == [0, 1, 2, 3]
    assert report.settings["gallery_draw"] == draw
    for trial, result in report.rows:
        idx = sysu_gallery_indices(gp, gc, mode, shot, trial, draw)
        ref = evaluate(distance(qf, gf[idx], "cosine"), qp, gp[idx], qc, gc[idx], protocol="sysu")
        np.testing.assert_allclose(result.cmc, ref.cmc, atol=1e-12)
        assert (result.mAP, result.mINP, result.num_valid) == pytest.approx(
            (ref.mAP, ref.mINP, ref.num_valid), abs=1e-12
        )
    r1 = [100 * r.cmc[0] for _, r in report.rows]
    assert report.mean["R1"] == pytest.approx(np.mean(r1))
    assert report.std["R1"] == pytest.approx(np.std(r1))
    assert report.settings["mode"] == mode and report.settings["shot"] == shot


def test_run_sysu_bad_input():
    qf, qp, qc, gf, gp, gc = sysu_features()
    with pytest.raises(ValueError, match=r"q_cams: expected SYSU-MM01 cameras \(3, 6\)"):
        run_sysu(qf, qp, np.where(qc == 3, 1, qc), gf, gp, gc)
    with pytest.raises(ValueError, match=r"g_cams: expected SYSU-MM01 cameras \(1, 2, 4, 5\)"):
        run_sysu(qf, qp, qc, gf, gp, np.where(gc == 4, 3, gc))
    with pytest.raises(ValueError, match="q_pids: expected a 1-D integer array of length 80"):
        run_sysu(qf, qp[:-1], qc, gf, gp, gc)
    with pytest.raises(ValueError, match="trials: expected at least one"):
        run_sysu(qf, qp, qc, gf, gp, gc, trials=[])
    with pytest.raises(ValueError, match="metric: expected one of"):
        run_sysu(qf, qp, qc, gf, gp, gc, metric="l1")


def regdb_data(trial: int) -> RegDBTrial:
    rng = np.random.default_rng(trial)
    centers = rng.normal(size=(10, 8))
    vp, tp = np.repeat(np.arange(10), 3), np.repeat(np.arange(10), 2)
    return RegDBTrial(
        centers[vp] + rng.normal(size=(30, 8)), vp, centers[tp] + rng.normal(size=(20, 8)), tp
    )


def test_regdb_directions():
    vf, vp, tf, tp = regdb_data(1)
    v2t = regdb_trial(vf, vp, tf, tp, direction="v2t")
    t2v = regdb_trial(vf, vp, tf, tp, direction="t2v")
    ones, twos = np.ones(30, int), np.full(20, 2)
    ref_v2t = evaluate(distance(vf, tf), vp, tp, ones, twos, protocol="regdb")
    ref_t2v = evaluate(distance(tf, vf), tp, vp, twos, ones, protocol="regdb")
    assert (v2t.mAP, v2t.num_valid) == (ref_v2t.mAP, 30)
    assert (t2v.mAP, t2v.num_valid) == (ref_t2v.mAP, 20)
    with pytest.raises(ValueError, match=r"direction: expected one of \('v2t', 't2v'\)"):
        regdb_trial(vf, vp, tf, tp, direction="up")


def test_run_regdb_from_mapping_and_generator():
    data = {t: regdb_data(t) for t in (1, 2, 3)}
    a = run_regdb(data, direction="t2v")
    b = run_regdb(((t, regdb_data(t)) for t in (1, 2, 3)), direction="t2v")
    assert [t for t, _ in a.rows] == [1, 2, 3]
    assert a.to_dict() == b.to_dict()
    assert a.name == "RegDB thermal->visible"
    with pytest.raises(ValueError, match="trials: expected trial numbers in 1..10"):
        run_regdb({0: regdb_data(0)})


# --------------------------------------------------------------------------------------------
# report


def result(r1: float, r5: float, m_ap: float, m_inp: float, max_rank: int = 20) -> EvalResult:
    cmc = np.full(max_rank, 1.0)
    cmc[:4] = r1
    cmc[4:9] = r5
    return EvalResult(cmc=cmc, mAP=m_ap, mINP=m_inp, num_valid=3)


def test_report_numbers_table_and_json(tmp_path):
    # trial 1: R1 1/3, R5 0.5; trial 2: R1 2/3, R5 1 -> mean R1 50.00, std R1 16.67
    report = Report.from_results(
        [(1, result(1 / 3, 0.5, 0.25, 0.125)), (2, result(2 / 3, 1.0, 0.75, 0.5))],
        name="demo",
        settings={"metric": "euclidean"},
    )
    d = report.to_dict()
    assert d["trials"][0] == {
        "trial": 1,
        "num_valid": 3,
        "R1": 33.33,
        "R5": 50.0,
        "R10": 100.0,
        "R20": 100.0,
        "mAP": 25.0,
        "mINP": 12.5,
    }
    assert d["mean"] == {
        "R1": 50.0,
        "R5": 75.0,
        "R10": 100.0,
        "R20": 100.0,
        "mAP": 50.0,
        "mINP": 31.25,
    }
    assert d["std"]["R1"] == 16.67 and d["std"]["mAP"] == 25.0 and d["std"]["R20"] == 0.0
    assert json.loads(report.to_json()) == d

    table = report.to_table()
    lines = table.splitlines()
    assert lines[0] == "demo"
    assert lines[1].split() == ["trial", "R1", "R5", "R10", "R20", "mAP", "mINP", "valid"]
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width
    assert lines[3].split() == ["1", "33.33", "50.00", "100.00", "100.00", "25.00", "12.50", "3"]
    assert lines[-2].split() == ["mean", "50.00", "75.00", "100.00", "100.00", "50.00", "31.25"]
    assert lines[-1].split()[:2] == ["std", "16.67"]

    path = report.write_json(tmp_path / "sub" / "eval.json")
    assert json.loads(path.read_text()) == d
    assert os.listdir(tmp_path / "sub") == ["eval.json"]


def test_report_missing_rank_is_null():
    report = Report.from_results([("a", result(0.5, 1.0, 0.5, 0.5, max_rank=5))])
    d = report.to_dict()
    assert d["trials"][0]["R10"] is None and d["mean"]["R20"] is None
    assert d["trials"][0]["R5"] == 100.0
    assert report.to_table().splitlines()[3].split()[3:5] == ["-", "-"]


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    path.write_text("old")
    report = Report.from_results([(0, result(0.5, 1.0, 0.5, 0.5))])

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(protocols.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        report.write_json(path)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["eval.json"]  # no temporary file left behind


def test_report_bad_rows():
    with pytest.raises(ValueError, match="rows: expected at least one"):
        Report.from_results([])
    with pytest.raises(ValueError, match="rows: expected unique trial labels"):
        Report.from_results([(1, result(1, 1, 1, 1)), (1, result(1, 1, 1, 1))])
    with pytest.raises(ValueError, match="rows: trial 1: expected an EvalResult"):
        Report.from_results([(1, {"mAP": 1.0})])  # type: ignore[list-item]
    with pytest.raises(MvdError):
        Report.from_results([])
