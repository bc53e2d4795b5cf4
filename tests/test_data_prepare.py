"""`prepare_sysu` / `mvd prepare sysu`: round trip (cache = raw read + Lanczos resize, memory-mapped
on read), manifest, safe re-runs, no partial outputs, --skip-bad, exit 2 on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.config import DataConfig
from mvd_core.data.base import load_images
from mvd_core.data.sets import load_train
from mvd_core.data.synth import synth_sysu
from mvd_core.data.sysu import (
    SYSU_CACHE_FILES,
    SYSU_MANIFEST,
    find_sysu_cache,
    load_sysu_raw_train,
    prepare_sysu,
    verify_sysu_cache,
)
from mvd_core.errors import DataError

runner = CliRunner()


@pytest.fixture(scope="module")
def raw_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prep") / "sysu"
    synth_sysu(root, ids=8, images_per_cam=2, seed=9)
    return root


@pytest.fixture()
def raw(raw_master: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "sysu"
    shutil.copytree(raw_master, dst)
    return dst


def _listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def test_round_trip(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    calls: list[tuple[int, int]] = []
    res = prepare_sysu(raw, out, progress=lambda d, t: calls.append((d, t)), workers=2)
    raw_set = load_sysu_raw_train(raw)
    assert calls[-1][0] == calls[-1][1] == len(raw_set.visible) + len(raw_set.thermal)
    assert res.counts == {"rgb": len(raw_set.visible), "ir": len(raw_set.thermal)} and not res.up_to_date
    cached = load_train(DataConfig(root=str(raw), cache=str(out)))
    for a, b in ((raw_set.visible, cached.visible), (raw_set.thermal, cached.thermal)):
        assert isinstance(b.images, np.memmap) and b.images.shape[1:] == (288, 144, 3) and b.images.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(b.images), load_images(a, np.arange(len(a)), 288, 144))
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.pids, b.pids)  # restored from the manifest
        np.testing.assert_array_equal(a.cams, b.cams)
    assert cached.num_classes == raw_set.num_classes
    lab = np.load(out / "train_rgb_resized_label.npy", allow_pickle=False)
    assert lab.dtype == np.int64
    m = json.loads((out / SYSU_MANIFEST).read_text())
    assert m["counts"] == res.counts and m["height"] == 288 and m["width"] == 144
    assert m["ids"] == sorted(set(raw_set.visible.pids.tolist()))
    assert set(m["files"]) == set(SYSU_CACHE_FILES.values())
    verify_sysu_cache(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cache_in_root_is_found_and_preferred(raw: Path) -> None:
    prepare_sysu(raw, progress=False)  # out defaults to the root
    ts = load_train(DataConfig(root=str(raw)))
    assert isinstance(ts.visible.images, np.memmap)
    (raw / "train_ir_resized_label.npy").unlink()
    with pytest.raises(DataError, match="incomplete SYSU-MM01 cache"):
        load_train(DataConfig(root=str(raw)))


def test_rerun_is_safe_and_cheap(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_sysu(raw, out, progress=False)
    before = _listing(out)
    again = prepare_sysu(raw, out, progress=False)
    assert again.up_to_date and _listing(out) == before  # nothing rewritten
    forced = prepare_sysu(raw, out, progress=False, force=True)
    assert not forced.up_to_date and _listing(out).keys() == before.keys()
    verify_sysu_cache(out)
    # a changed source is noticed
    victim = next(raw.glob("cam1/*/*.jpg"))
    victim.unlink()
    changed = prepare_sysu(raw, out, progress=False)
    assert not changed.up_to_date and changed.counts["rgb"] == forced.counts["rgb"] - 1


def test_public_code_cache_without_manifest(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_sysu(raw, out, progress=False)
    (out / SYSU_MANIFEST).unlink()
    ts = load_train(DataConfig(root=str(raw), cache=str(out)))
    np.testing.assert_array_equal(ts.visible.pids, ts.visible.labels)
    assert set(ts.visible.cams.tolist()) == {-1}


def test_bad_cache_files(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_sysu(raw, out, progress=False)
    np.save(out / "train_ir_resized_label.npy", np.zeros(3, np.int64))
    with pytest.raises(DataError, match="train_ir_resized_label.npy: 3 labels"):
        load_train(DataConfig(root=str(raw), cache=str(out)))
    np.save(out / "train_ir_resized_label.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="integer label"):
        load_train(DataConfig(root=str(raw), cache=str(out)))
    (out / "train_ir_resized_label.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="train_ir_resized_label.npy: not a readable"):
        load_train(DataConfig(root=str(raw), cache=str(out)))
    with pytest.raises(DataError, match="missing cache file"):
        load_train(DataConfig(root=str(raw), cache=str(tmp_path)))


def test_verify_detects_modification(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_sysu(raw, out, progress=False)
    arr = np.load(out / "train_rgb_resized_img.npy", mmap_mode="r+")
    arr[0, 0, 0, 0] ^= 1
    arr.flush()
    del arr
    with pytest.raises(DataError, match="checksum"):
        verify_sysu_cache(out)


def _truncate_one(raw: Path) -> Path:
    ts = load_sysu_raw_train(raw)
    bad = Path(ts.thermal.paths[1])
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return bad


def test_bad_image_fails_without_partial_outputs(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    prepare_sysu(raw, out, progress=False)
    before = _listing(out)
    bad = _truncate_one(raw)
    with pytest.raises(DataError, match=str(bad)):
        prepare_sysu(raw, out, progress=False)
    assert _listing(out) == before  # old cache untouched, no temp files
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError):
        prepare_sysu(raw, fresh, progress=False)
    assert _listing(fresh) == {}


def test_skip_bad(raw: Path, tmp_path: Path) -> None:
    bad = _truncate_one(raw)
    full = load_sysu_raw_train(raw)
    res = prepare_sysu(raw, tmp_path / "c", skip_bad=True, progress=False)
    assert res.skipped == (str(bad),)
    assert res.counts == {"rgb": len(full.visible), "ir": len(full.thermal) - 1}
    m = json.loads((tmp_path / "c" / SYSU_MANIFEST).read_text())
    assert m["skipped"] == [str(bad)]
    ts = load_train(DataConfig(root=str(raw), cache=str(tmp_path / "c")))
    keep = [i for i, p in enumerate(full.thermal.paths) if p != str(bad)]
    np.testing.assert_array_equal(ts.thermal.pids, full.thermal.pids[keep])
    np.testing.assert_array_equal(ts.thermal.cams, full.thermal.cams[keep])
    np.testing.assert_array_equal(np.asarray(ts.thermal.images[1]), load_images(full.thermal, [keep[1]], 288, 144)[0])


def test_skip_bad_cannot_empty_an_id(raw: Path, tmp_path: Path) -> None:
    ts = load_sysu_raw_train(raw)
    pid = int(ts.thermal.pids[0])
    for p, q in zip(ts.thermal.paths, ts.thermal.pids):
        if q == pid:
            Path(p).write_bytes(b"x")
    with pytest.raises(DataError, match=f"ids \\[{pid}\\] have no thermal image left"):
        prepare_sysu(raw, tmp_path / "c", skip_bad=True, progress=False)
    assert _listing(tmp_path / "c") == {}


# ------------------------------------------------------------------------------ CLI


def test_cli_prepare(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    r = runner.invoke(app, ["prepare", "sysu", "--root", str(raw), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "visible" in r.output and (out / "train_rgb_resized_img.npy").is_file()
    r = runner.invoke(app, ["prepare", "sysu", "--root", str(raw), "--out", str(out)])
    assert r.exit_code == 0 and "up to date" in r.output


@pytest.mark.parametrize("case", ["missing_root", "missing_id_file", "bad_id_file", "truncated", "empty_split"])
def test_cli_prepare_bad_input_exit_2(raw: Path, tmp_path: Path, case: str) -> None:
    root, needle = raw, ""
    if case == "missing_root":
        root = tmp_path / "absent"
        needle = str(root)
    elif case == "missing_id_file":
        (raw / "exp" / "train_id.txt").unlink()
        needle = "train_id.txt"
    elif case == "bad_id_file":
        (raw / "exp" / "val_id.txt").write_text("1,2,three")
        needle = "val_id.txt:1:"
    elif case == "truncated":
        needle = str(_truncate_one(raw))
    elif case == "empty_split":
        (raw / "exp" / "train_id.txt").write_text("")
        needle = "empty split"
    out = tmp_path / "out"
    r = runner.invoke(app, ["prepare", "sysu", "--root", str(root), "--out", str(out), "--no-progress"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert _listing(out) == {}  # no partial outputs


def test_cli_prepare_skip_bad_reports(raw: Path, tmp_path: Path) -> None:
    bad = _truncate_one(raw)
    r = runner.invoke(app, ["prepare", "sysu", "--root", str(raw), "--out", str(tmp_path / "c"), "--skip-bad", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable image" in r.output and str(bad) in r.output


def test_cli_prepare_unknown_dataset() -> None:
    r = runner.invoke(app, ["prepare", "regdb", "--root", "x"])
    assert r.exit_code == 2


def test_raw_folder_without_cache_reads_raw(raw: Path) -> None:
    assert find_sysu_cache(DataConfig(root=str(raw))) is None
    ts = load_train(DataConfig(root=str(raw)))
    assert ts.visible.paths is not None and ts.visible.images is None
