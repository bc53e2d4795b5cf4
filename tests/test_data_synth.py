"""Synthetic data: the real layouts, determinism for a seed, identity consistency, a real modality
gap, safe output, and `mvd synth`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.data import synth as S
from mvd_core.errors import DataError


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != S.MARKER
    }


def test_sysu_layout(tmp_path: Path) -> None:
    info = S.synth_sysu(tmp_path / "s", ids=10, images_per_cam=3, seed=1)
    root = tmp_path / "s"
    assert sorted(p.name for p in root.iterdir()) == ["cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp", S.MARKER]
    # exp files: one comma-separated line of ints; 60/10/30 % split, disjoint, covering 1..10
    split = {}
    for name in ("train", "val", "test"):
        text = (root / "exp" / f"{name}_id.txt").read_text()
        assert text.count("\n") == 1 and text.endswith("\n")
        split[name] = [int(x) for x in text.strip().split(",")]
    assert [len(split[k]) for k in ("train", "val", "test")] == [6, 1, 3]
    assert sorted(sum(split.values(), [])) == list(range(1, 11))
    assert split == info.splits
    n = 0
    for pid in range(1, 11):
        vis = [c for c in (1, 2, 4, 5) if (root / f"cam{c}" / f"{pid:04d}").is_dir()]
        th = [c for c in (3, 6) if (root / f"cam{c}" / f"{pid:04d}").is_dir()]
        assert vis and th  # every id has both modalities
        for c in vis + th:
            files = sorted(p.name for p in (root / f"cam{c}" / f"{pid:04d}").iterdir())
            assert files == ["0001.jpg", "0002.jpg", "0003.jpg"]
            im = Image.open(root / f"cam{c}" / f"{pid:04d}" / files[0])
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == S.SYSU_CAM_SIZES[c][::-1]
            n += 3
    assert n == info.images
    marker = json.loads((root / S.MARKER).read_text())
    assert marker["layout"] == "sysu" and marker["seed"] == 1 and marker["images"] == n


def test_thermal_is_one_channel_replicated(tmp_path: Path) -> None:
    S.synth_sysu(tmp_path / "s", ids=4, images_per_cam=2, seed=0)
    files = sorted((tmp_path / "s").glob("cam[36]/*/*.jpg"))
    assert files
    for f in files:
        a = np.asarray(Image.open(f).convert("RGB"))
        assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    vis = [np.asarray(Image.open(f)) for f in sorted((tmp_path / "s").glob("cam1/*/*.jpg"))]
    assert any(not np.array_equal(v[..., 0], v[..., 2]) for v in vis)  # visible is in colour


def test_determinism_for_a_seed(tmp_path: Path) -> None:
    S.synth_sysu(tmp_path / "a", ids=6, images_per_cam=2, seed=11)
    S.synth_sysu(tmp_path / "b", ids=6, images_per_cam=2, seed=11)
    S.synth_sysu(tmp_path / "c", ids=6, images_per_cam=2, seed=12)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    S.synth_regdb(tmp_path / "ra", ids=4, images_per_modality=2, seed=3, trials=2)
    S.synth_regdb(tmp_path / "rb", ids=4, images_per_modality=2, seed=3, trials=2)
    assert _digest(tmp_path / "ra") == _digest(tmp_path / "rb")


def test_adding_ids_keeps_existing_people(tmp_path: Path) -> None:
    S.synth_sysu(tmp_path / "a", ids=4, images_per_cam=2, seed=2)
    S.synth_sysu(tmp_path / "b", ids=7, images_per_cam=2, seed=2)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    images = {k: v for k, v in da.items() if k.startswith("cam")}
    assert images and all(db[k] == v for k, v in images.items())


def test_identity_consistent_and_distinct() -> None:
    a, b = S.make_identity(0, 5), S.make_identity(0, 5)
    assert a.height == b.height and np.array_equal(a.shirt, b.shirt) and a.pattern == b.pattern
    people = [S.make_identity(0, p) for p in range(1, 41)]
    shirts = np.stack([p.shirt for p in people])
    assert len({tuple(np.round(s, 3)) for s in shirts}) == 40
    assert len({p.pattern for p in people}) >= 4 and len({p.bag for p in people}) >= 3


def _person_pixels(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idt = S.make_identity(seed, 1)
    cam_v = S.make_camera(0, 1, False, (128, 64))
    cam_t = S.make_camera(0, 3, True, (128, 64))
    pose = S._draw_poses(np.random.default_rng(1), 6, cam_v)
    pose["n_clutter"][:] = 0
    pose["occluder"][:] = 0
    vis = S.render(idt, pose, cam_v, np.random.default_rng(2))
    th = S.render(idt, pose, cam_t, np.random.default_rng(2))
    return vis, th, S._geometry(idt, pose, 128, 64)["torso"]


def test_thermal_is_not_the_grey_visible_image() -> None:
    """Same person, same pose: thermal is not an affine function of the visible luma."""
    r2 = []
    for seed in range(6):
        vis, th, _ = _person_pixels(seed)
        for i in range(vis.shape[0]):
            g = vis[i].astype(float) @ [0.299, 0.587, 0.114]
            t = th[i, ..., 0].astype(float)
            A = np.stack([g.ravel(), np.ones(g.size)], 1)
            _, res, _, _ = np.linalg.lstsq(A, t.ravel(), rcond=None)
            r2.append(1 - res[0] / ((t - t.mean()) ** 2).sum())
    assert np.median(r2) < 0.5


def test_thermal_person_is_warmer_than_background() -> None:
    _, th, torso = _person_pixels(0)
    inside = th[..., 0][torso > 0.99].mean()
    border = np.concatenate([th[:, :, :3, 0].ravel(), th[:, :, -3:, 0].ravel()]).mean()
    assert inside > border + 40


def test_regdb_layout(tmp_path: Path) -> None:
    info = S.synth_regdb(tmp_path / "r", ids=6, images_per_modality=2, seed=0, trials=3)
    root = tmp_path / "r"
    assert info.images == 24
    idx = sorted(p.name for p in (root / "idx").iterdir())
    assert idx == sorted(f"{s}_{m}_{t}.txt" for s in ("train", "test") for m in ("visible", "thermal") for t in (1, 2, 3))
    lines = (root / "idx" / "train_visible_1.txt").read_text().splitlines()
    assert len(lines) == 6  # 3 ids × 2 images
    rel, lab = lines[0].split(" ")
    assert rel.startswith("Visible/") and (root / rel).is_file() and lab == "0"
    name = Path(rel).name
    assert name.endswith(f"_{Path(rel).parent.name}.bmp") and "_v_" in name
    thermal = (root / "idx" / "train_thermal_1.txt").read_text().splitlines()
    assert [ln.replace("Thermal", "Visible").replace("_t_", "_v_") for ln in thermal] == lines
    assert Image.open(root / rel).size == (64, 128)


def test_refuses_foreign_folder_and_replaces_its_own(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "precious.txt").write_text("keep")
    with pytest.raises(DataError, match="not written by `mvd synth`"):
        S.synth_sysu(user, ids=3, images_per_cam=1)
    assert [p.name for p in user.iterdir()] == ["precious.txt"]
    out = tmp_path / "s"
    S.synth_sysu(out, ids=3, images_per_cam=1, seed=0)
    S.synth_sysu(out, ids=5, images_per_cam=1, seed=0)  # replaces its own output
    ids = [i for n in ("train", "val", "test") for i in (out / "exp" / f"{n}_id.txt").read_text().split(",")]
    assert len(ids) == 5 and json.loads((out / S.MARKER).read_text())["ids"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "s"]  # no temp folders left


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--ids"):
        S.synth_sysu(tmp_path / "x", ids=2)
    with pytest.raises(DataError, match="images-per-cam"):
        S.synth_regdb(tmp_path / "x", ids=4, images_per_modality=0)
    assert not (tmp_path / "x").exists()


runner = CliRunner()


def test_cli_synth(tmp_path: Path) -> None:
    r = runner.invoke(app, ["synth", "--layout", "sysu", "--out", str(tmp_path / "s"), "--ids", "5", "--images-per-cam", "1", "--seed", "4"])
    assert r.exit_code == 0, r.output
    assert "5 ids" in r.output and (tmp_path / "s" / "exp" / "test_id.txt").is_file()
    r = runner.invoke(app, ["synth", "--layout", "regdb", "--out", str(tmp_path / "r"), "--ids", "4", "-k", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "idx" / "test_thermal_10.txt").is_file()


def test_cli_synth_help_documents_the_rendering() -> None:
    r = runner.invoke(app, ["synth", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for word in ("pattern", "Thermal images", "not the grey RGB image", "sysu", "regdb", "--seed"):
        assert word in text


def test_cli_synth_bad_input_exit_2(tmp_path: Path) -> None:
    user = tmp_path / "u"
    user.mkdir()
    (user / "a.txt").write_text("x")
    r = runner.invoke(app, ["synth", "--layout", "sysu", "--out", str(user)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "error:" in r.output and str(user) in r.output
    r = runner.invoke(app, ["synth", "--layout", "market", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and not (tmp_path / "m").exists()


def test_size_scale_halves_the_crops(tmp_path: Path) -> None:
    info = S.synth_sysu(tmp_path / "s", ids=4, images_per_cam=1, seed=0, size_scale=0.5)
    assert info.params["size_scale"] == 0.5
    for c, (h, w) in S.SYSU_CAM_SIZES.items():
        for f in (tmp_path / "s" / f"cam{c}").glob("*/*.jpg"):
            assert Image.open(f).size == (round(w / 2), round(h / 2))
    with pytest.raises(DataError, match="size_scale"):
        S.synth_sysu(tmp_path / "x", ids=4, size_scale=0.1)


def _torso_rows(idt: S.Identity, thermal: bool) -> np.ndarray:
    """Mean intensity per image row inside the torso (front view, no clutter, no noise)."""
    cam = S.make_camera(0, 3 if thermal else 1, thermal, (128, 64))
    cam = S.dataclasses.replace(cam, noise=0.0, blur=0, gain=1.0)
    pose = S._draw_poses(np.random.default_rng(1), 1, cam, view=np.zeros(1, np.int64))
    for key in ("n_clutter", "occluder"):
        pose[key][:] = 0
    pose["grad"][:] = 0
    img = S.render(idt, pose, cam, np.random.default_rng(2))[0, ..., 0].astype(float)
    torso = S._geometry(idt, pose, 128, 64)["torso"][0] > 0.99
    ys = np.flatnonzero(torso.sum(axis=1) >= 3)
    ys = ys[len(ys) // 5: len(ys) - len(ys) // 5]  # the middle of the torso (no arms, bag, neck)
    xs = [np.flatnonzero(torso[y]) for y in ys]
    return np.array([img[y, x[len(x) // 2 - 1: len(x) // 2 + 2]].mean() for y, x in zip(ys, xs)])


def test_patterns_show_in_thermal_and_caps_are_cool() -> None:
    """Fabric pattern geometry survives into thermal (weaker than in colour); a cap is colder
    than the skin it covers."""
    people = [S.make_identity(0, p) for p in range(1, 200)]
    striped = [p for p in people if p.pattern == 1][:12]  # horizontal stripes: rows alternate
    assert len(striped) == 12
    contrast = np.array([np.ptp(_torso_rows(p, thermal=True)) for p in striped])
    # the contrast varies with the two fabrics (lightness and material), typically far above the
    # sensor noise (std 4-9 grey levels), never invisible
    assert contrast.min() > 5 and np.median(contrast) > 0.15 * 255, contrast
    solid = [p for p in people if p.pattern == 0][:5]
    for p in solid:
        rows = _torso_rows(p, thermal=True)
        assert rows.max() - rows.min() < 3, p.pid
    hats = [p for p in people if p.hat]
    assert 0.1 < len(hats) / len(people) < 0.3
    p = hats[0]
    assert p.t_hat < p.t_skin - 0.3
    cam = S.make_camera(0, 3, True, (128, 64))
    pose = S._draw_poses(np.random.default_rng(1), 1, cam, view=np.zeros(1, np.int64))
    g = S._geometry(p, pose, 128, 64)
    assert (g["hat"] > 0.99).sum() > 10 and (g["hat"] * g["head"]).sum() > 0


def test_training_free_matchers_are_near_chance_cross_modally(tmp_path: Path) -> None:
    """Colour does not survive into thermal and raw pixels are dominated by pose, place and
    background: a colour-histogram matcher and raw-pixel nearest neighbour stay near chance
    thermal->visible (the trained model is compared with them in tests/test_learning.py)."""
    from mvd_core.config import apply_overrides, load_config
    from mvd_core.data.sets import load_test
    from mvd_core.demo import baseline_reports

    S.synth_sysu(tmp_path / "s", ids=80, images_per_cam=3, seed=0, split=(0.5, 0.1, 0.4), size_scale=0.5)
    cfg = apply_overrides(load_config("demo"), [f"data.root={tmp_path / 's'}", "eval.trials=10"])
    test = load_test(cfg.data)
    n_ids = len(set(test.query.pids.tolist()))
    assert n_ids == 32
    chance = 100 / n_ids
    for name, rep in baseline_reports(test, cfg).items():
        assert rep.mean["R1"] < 2.5 * chance, (name, rep.mean["R1"])
