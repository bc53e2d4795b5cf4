"""Readers of the real on-disk layouts (SYSU-MM01 raw, RegDB) on hand-made and synthetic folders,
and every bad-input case: a DataError naming the file (and line)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvd_core.config import DataConfig
from mvd_core.data.base import ImageSet, RowView, TrainSet, load_images
from mvd_core.data.regdb import REGDB_THERMAL_CAM, REGDB_VISIBLE_CAM
from mvd_core.data.sets import load_test, load_train
from mvd_core.data.splits import carve_validation
from mvd_core.data.synth import synth_regdb, synth_sysu
from mvd_core.errors import DataError

# ------------------------------------------------------------------------------ hand-made layouts

#: (cam, pid) -> number of images; ids 1,2,3 train, 5 val, 7,8 test (4 and 6 in no split)
SYSU_FILES = {
    (1, 1): 2, (2, 1): 1, (3, 1): 1, (6, 1): 2,
    (1, 2): 1, (4, 2): 1, (5, 2): 1, (3, 2): 1,
    (2, 3): 2, (6, 3): 1,
    (1, 4): 1, (3, 4): 1,
    (5, 5): 1, (3, 5): 1, (6, 5): 1,
    (1, 7): 1, (2, 7): 1, (3, 7): 2,
    (4, 8): 1, (5, 8): 1, (6, 8): 1, (3, 8): 1,
}


def _jpg(path: Path, value: int, size: tuple[int, int] = (20, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = np.clip(value + rng.integers(-10, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=95)


def make_sysu(root: Path) -> Path:
    for (cam, pid), n in SYSU_FILES.items():
        for k in range(1, n + 1):
            _jpg(root / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg", 10 * cam + pid + k)
    for c in range(1, 7):
        (root / f"cam{c}").mkdir(parents=True, exist_ok=True)
    (root / "exp").mkdir(parents=True, exist_ok=True)
    (root / "exp" / "train_id.txt").write_text("3,1,2\n")
    (root / "exp" / "val_id.txt").write_text("5")
    (root / "exp" / "test_id.txt").write_text("7,8\n")
    return root


@pytest.fixture()
def sysu(tmp_path: Path) -> Path:
    return make_sysu(tmp_path / "SYSU-MM01")


def make_regdb(root: Path) -> Path:
    """pids (folders) 10, 20, 30 train with labels 0, 1, 2; 40, 50 test with labels 0, 1."""
    lines: dict[str, list[str]] = {}
    for split, pids in (("train", (10, 20, 30)), ("test", (40, 50))):
        for mod, letter in (("visible", "v"), ("thermal", "t")):
            key = f"{split}_{mod}_1"
            lines[key] = []
            for lab, pid in enumerate(pids):
                for j in range(2):
                    rel = f"{mod.capitalize()}/{pid}/male_front_{letter}_{pid * 10 + j:05d}_{pid}.bmp"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((32, 16, 3), pid + j, np.uint8)).save(root / rel)
                    lines[key].append(f"{rel} {lab}")
    (root / "idx").mkdir(parents=True)
    for key, ls in lines.items():
        (root / "idx" / f"{key}.txt").write_text("\n".join(ls) + "\n")
    return root


@pytest.fixture()
def regdb(tmp_path: Path) -> Path:
    return make_regdb(tmp_path / "RegDB")


def _cfg(root: Path, **kw) -> DataConfig:
    return dataclasses.replace(DataConfig(), root=str(root), **kw)


# ------------------------------------------------------------------------------ SYSU raw


def test_sysu_train_index_hand_derived(sysu: Path) -> None:
    ts = load_train(_cfg(sysu))
    # train ∪ val = {1, 2, 3, 5} → labels 0, 1, 2, 3 in ascending id order
    assert ts.num_classes == 4
    v, t = ts.visible, ts.thermal
    # id-major, then camera (1, 2, 4, 5), then file
    expect_v = [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (2, 4, 1), (2, 5, 1), (3, 2, 1), (3, 2, 2), (5, 5, 1)]
    got_v = [(int(p), int(c), int(Path(f).stem)) for p, c, f in zip(v.pids, v.cams, v.paths)]
    assert got_v == expect_v
    assert v.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3]
    expect_t = [(1, 3, 1), (1, 6, 1), (1, 6, 2), (2, 3, 1), (3, 6, 1), (5, 3, 1), (5, 6, 1)]
    got_t = [(int(p), int(c), int(Path(f).stem)) for p, c, f in zip(t.pids, t.cams, t.paths)]
    assert got_t == expect_t
    assert t.labels.tolist() == [0, 0, 0, 1, 2, 3, 3]
    assert v.modality == "visible" and t.modality == "thermal"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in v.paths + t.paths)
    assert v.labels.dtype == np.int64 and v.cams.dtype == np.int64 and v.pids.dtype == np.int64


def test_sysu_test_index_hand_derived(sysu: Path) -> None:
    te = load_test(_cfg(sysu))
    assert te.protocol == "sysu" and te.query_modality == "thermal" and te.gallery_modality == "visible"
    # query: cameras 3 then 6, each id-ascending; gallery: cameras 1, 2, 4, 5
    assert list(zip(te.query.cams.tolist(), te.query.pids.tolist())) == [(3, 7), (3, 7), (3, 8), (6, 8)]
    assert list(zip(te.gallery.cams.tolist(), te.gallery.pids.tolist())) == [(1, 7), (2, 7), (4, 8), (5, 8)]
    np.testing.assert_array_equal(te.query.labels, te.query.pids)


def test_load_images_decodes_and_resizes(sysu: Path) -> None:
    ts = load_train(_cfg(sysu))
    a = load_images(ts.visible, [2, 0], 40, 20)  # stored size: no resize
    assert a.shape == (2, 40, 20, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[0], np.asarray(Image.open(ts.visible.paths[2]).convert("RGB")))
    b = load_images(ts.visible, [0], 16, 8)
    ref = Image.open(ts.visible.paths[0]).convert("RGB").resize((8, 16), Image.LANCZOS)
    np.testing.assert_array_equal(b[0], np.asarray(ref))
    with pytest.raises(IndexError):
        load_images(ts.visible, [len(ts.visible)], 16, 8)


def test_synthetic_sysu_reads_as_real(tmp_path: Path) -> None:
    info = synth_sysu(tmp_path / "s", ids=10, images_per_cam=2, seed=3)
    ts = load_train(_cfg(tmp_path / "s"))
    ids = sorted(info.splits["train"] + info.splits["val"])
    assert ts.num_classes == len(ids)
    for part, cams in ((ts.visible, {1, 2, 4, 5}), (ts.thermal, {3, 6})):
        assert set(part.cams.tolist()) <= cams
        # labels are the rank of the id among the sorted training ids
        np.testing.assert_array_equal(part.labels, np.searchsorted(ids, part.pids))
        assert np.all(np.diff(part.pids) >= 0)  # id-major
    te = load_test(_cfg(tmp_path / "s"))
    assert set(te.query.pids.tolist()) <= set(info.splits["test"])
    assert len(ts.visible) + len(ts.thermal) + len(te.query) + len(te.gallery) == info.images


# ------------------------------------------------------------------------------ RegDB


def test_regdb_train_and_test(regdb: Path) -> None:
    ts = load_train(_cfg(regdb, dataset="regdb", trial=1))
    assert ts.num_classes == 3
    assert ts.visible.pids.tolist() == [10, 10, 20, 20, 30, 30]
    assert ts.visible.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ts.thermal.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert set(ts.visible.cams.tolist()) == {REGDB_VISIBLE_CAM} == {1}
    assert set(ts.thermal.cams.tolist()) == {REGDB_THERMAL_CAM} == {2}
    v2t = load_test(_cfg(regdb, dataset="regdb", trial=1), "v2t")
    assert v2t.protocol == "regdb" and v2t.query_modality == "visible" and v2t.gallery_modality == "thermal"
    assert v2t.query.pids.tolist() == [40, 40, 50, 50]
    np.testing.assert_array_equal(v2t.query.labels, v2t.query.pids)
    t2v = load_test(_cfg(regdb, dataset="regdb", trial=1), "t2v")
    assert t2v.query_modality == "thermal" and t2v.query.paths == v2t.gallery.paths


def test_regdb_relabels_non_contiguous_labels(regdb: Path) -> None:
    for mod in ("visible", "thermal"):
        p = regdb / "idx" / f"train_{mod}_1.txt"
        p.write_text(p.read_text().replace(" 2\n", " 7\n").replace(" 1\n", " 4\n"))
    ts = load_train(_cfg(regdb, dataset="regdb", trial=1))
    assert ts.visible.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_synthetic_regdb_reads_as_real(tmp_path: Path) -> None:
    synth_regdb(tmp_path / "r", ids=6, images_per_modality=3, seed=1, trials=2)
    for trial in (1, 2):
        ts = load_train(_cfg(tmp_path / "r", dataset="regdb", trial=trial))
        te = load_test(_cfg(tmp_path / "r", dataset="regdb", trial=trial))
        assert ts.num_classes == 3 and len(ts.visible) == len(ts.thermal) == 9
        assert not set(ts.visible.pids.tolist()) & set(te.query.pids.tolist())
        assert set(te.query.pids.tolist()) | set(ts.visible.pids.tolist()) == set(range(1, 7))


# ------------------------------------------------------------------------------ validation carve


def test_carve_validation(sysu: Path) -> None:
    ts = load_train(_cfg(sysu))
    rest, val = carve_validation(ts, 1, seed=0)
    held = set(val.query.pids.tolist()) | set(val.gallery.pids.tolist())
    assert len(held) == 1
    assert rest.num_classes == 3
    assert not held & set(rest.visible.pids.tolist()) and not held & set(rest.thermal.pids.tolist())
    # remaining labels are contiguous and keep the ascending id order
    for part in (rest.visible, rest.thermal):
        kept = sorted(set(part.pids.tolist()))
        np.testing.assert_array_equal(part.labels, np.searchsorted(kept, part.pids))
    assert val.protocol == "regdb" and val.query_modality == "thermal" and val.gallery_modality == "visible"
    np.testing.assert_array_equal(val.query.labels, val.query.pids)
    again = carve_validation(ts, 1, seed=0)[1]
    assert again.query.pids.tolist() == val.query.pids.tolist()
    for bad in (0, 4):
        with pytest.raises(DataError, match="val_ids"):
            carve_validation(ts, bad, seed=0)


def test_carve_validation_keeps_memmap_unCopied(tmp_path: Path) -> None:
    n = 12
    arr = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(n, 4, 2, 3))
    arr[:] = np.arange(n)[:, None, None, None]
    arr.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    labels = np.repeat(np.arange(4), 3)
    vis = ImageSet(pids=labels + 100, labels=labels, cams=np.ones(n, np.int64), modality="visible", images=mm)
    th = ImageSet(pids=labels + 100, labels=labels, cams=np.full(n, 3), modality="thermal", images=mm)
    rest, val = carve_validation(TrainSet(vis, th, 4, "mm"), 2, seed=1)
    assert isinstance(rest.visible.images, RowView) and rest.visible.images.base is mm
    rows = rest.visible.images.rows
    np.testing.assert_array_equal(load_images(rest.visible, np.arange(len(rows)), 4, 2)[:, 0, 0, 0], rows)
    assert len(rest.visible) + len(val.gallery) == n


# ------------------------------------------------------------------------------ bad input


def _raises(fn, *needles: str) -> str:
    with pytest.raises(DataError) as ei:
        fn()
    msg = str(ei.value)
    for s in needles:
        assert s in msg, msg
    assert "\n" not in msg
    return msg


def test_missing_root_folder_id_file_and_camera(sysu: Path, tmp_path: Path) -> None:
    _raises(lambda: load_train(_cfg(tmp_path / "nope")), str(tmp_path / "nope"), "missing folder")
    _raises(lambda: load_train(DataConfig(root="")), "data.root")
    (sysu / "exp" / "val_id.txt").unlink()
    _raises(lambda: load_train(_cfg(sysu)), str(sysu / "exp" / "val_id.txt"), "missing id file")
    make_sysu(sysu)
    import shutil

    shutil.rmtree(sysu / "cam6")
    _raises(lambda: load_train(_cfg(sysu)), str(sysu / "cam6"), "missing folder")
    _raises(lambda: load_test(_cfg(sysu)), str(sysu / "cam6"))


@pytest.mark.parametrize(
    ("text", "line", "token"),
    [("1,2,x\n", 1, "'x'"), ("1 2 3\n", 1, "'1 2 3'"), ("\n1,2\n3;4\n", 3, "'3;4'"), ("1,2.5", 1, "'2.5'")],
)
def test_id_file_not_comma_separated_ints(sysu: Path, text: str, line: int, token: str) -> None:
    p = sysu / "exp" / "train_id.txt"
    p.write_text(text)
    _raises(lambda: load_train(_cfg(sysu)), f"{p}:{line}:", token, "comma-separated")


def test_id_file_duplicates_and_empty(sysu: Path) -> None:
    p = sysu / "exp" / "test_id.txt"
    p.write_text("7,8,7")
    _raises(lambda: load_test(_cfg(sysu)), f"{p}:1:", "twice")
    p.write_text("\n")
    _raises(lambda: load_test(_cfg(sysu)), str(p), "empty split")


def test_split_without_images_is_empty(sysu: Path) -> None:
    (sysu / "exp" / "test_id.txt").write_text("99,98")
    _raises(lambda: load_test(_cfg(sysu)), str(sysu / "exp" / "test_id.txt"), "empty split")
    (sysu / "exp" / "train_id.txt").write_text("4")  # id 4: cams 1 and 3 only
    (sysu / "exp" / "val_id.txt").write_text("97")
    _raises(lambda: load_train(_cfg(sysu)), "[97]", "no visible")


def test_truncated_and_non_image_jpeg(sysu: Path) -> None:
    ts = load_train(_cfg(sysu))
    bad = Path(ts.visible.paths[1])
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    _raises(lambda: load_images(ts.visible, [0, 1], 40, 20), str(bad), "truncated")
    bad.write_bytes(b"this is not a JPEG at all")
    _raises(lambda: load_images(ts.visible, [1], 40, 20), str(bad), "not an image")


def test_regdb_line_without_label(regdb: Path) -> None:
    p = regdb / "idx" / "train_thermal_1.txt"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].split()[0]
    p.write_text("\n".join(lines) + "\n")
    _raises(lambda: load_train(_cfg(regdb, dataset="regdb")), f"{p}:3:", "no label")


def test_regdb_label_disagrees_with_folder_pid(regdb: Path) -> None:
    p = regdb / "idx" / "train_visible_1.txt"
    lines = p.read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 2"  # Visible/10/... given label 2 (pid 10 has 0)
    p.write_text("\n".join(lines) + "\n")
    _raises(lambda: load_train(_cfg(regdb, dataset="regdb")), f"{p}:2:", "disagrees", "pid 10")
    # across modalities: thermal gives pid 20 the label of pid 10
    make_regdb(regdb.parent / "R2")
    p2 = regdb.parent / "R2" / "idx" / "test_thermal_1.txt"
    p2.write_text(p2.read_text().replace(" 1\n", " 0\n"))
    _raises(lambda: load_test(_cfg(regdb.parent / "R2", dataset="regdb")), f"{p2}:3:", "disagrees")


def test_regdb_bad_label_missing_image_missing_file_empty(regdb: Path) -> None:
    p = regdb / "idx" / "test_visible_1.txt"
    good = p.read_text()
    p.write_text(good.replace(" 1\n", " one\n", 1))
    _raises(lambda: load_test(_cfg(regdb, dataset="regdb")), f"{p}:3:", "'one'")
    p.write_text("Visible/40/missing.bmp 0\n")
    _raises(lambda: load_test(_cfg(regdb, dataset="regdb")), f"{p}:1:", "not found")
    p.write_text("\n\n")
    _raises(lambda: load_test(_cfg(regdb, dataset="regdb")), str(p), "empty split")
    _raises(lambda: load_train(_cfg(regdb, dataset="regdb", trial=2)), "train_visible_2.txt", "missing")


def test_unknown_dataset() -> None:
    _raises(lambda: load_train(DataConfig(dataset="market", root="x")), "data.dataset")


def test_imageset_validation() -> None:
    z = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="exactly one"):
        ImageSet(pids=z, labels=z, cams=z, modality="visible")
    with pytest.raises(ValueError, match="length"):
        ImageSet(pids=z, labels=z[:1], cams=z, modality="visible", paths=("a", "b"))
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(pids=z, labels=z, cams=z, modality="visible", images=np.zeros((2, 4, 2, 3), np.float32))
    s = ImageSet(pids=z, labels=z, cams=z, modality="thermal", paths=("a", "b"))
    assert len(s) == 2 and s.size is None and not s.pids.flags.writeable
