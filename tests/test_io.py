"""The one atomic writer (mvd_core.io) and run folders (mvd_core.train.rundir): modes, fsync, temp
clean-up, injected I/O faults, tag checks and the run lock across two real processes."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mvd_core import io as mio
from mvd_core.errors import ConfigError, MvdError, RunInUse
from mvd_core.train.rundir import LOCK_NAME, RunLock, check_tag, create_run_dir, run_contents


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _umask() -> int:
    # an independent reading: set and restore (single-threaded test process)
    old = os.umask(0o022)
    os.umask(old)
    return old


# --------------------------------------------------------------------------- writer

def test_umask_read_matches_os_umask():
    assert mio.umask() == _umask()
    assert mio.file_mode() == 0o666 & ~_umask()


def test_atomic_writes_content_mode_and_no_temp(tmp_path):
    p = mio.atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _mode(p) == 0o666 & ~_umask()  # not mkstemp's 0600
    mio.atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    mio.atomic_write_json(tmp_path / "j.json", {"x": [1, 2]})
    assert (tmp_path / "j.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    with mio.atomic_writer(tmp_path / "x.npy") as f:
        np.save(f, np.arange(5, dtype=np.int16))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(5, dtype=np.int16))
    with mio.atomic_path(tmp_path / "z.npz", suffix=".npz") as tmp:
        assert mio.is_temp_name(tmp.name)
        np.savez(tmp, a=np.ones(3))
    assert _mode(tmp_path / "z.npz") == 0o666 & ~_umask()
    np.testing.assert_array_equal(np.load(tmp_path / "z.npz")["a"], np.ones(3))
    left = sorted(q.name for q in tmp_path.rglob("*") if q.is_file())
    assert left == ["b.bin", "j.json", "t.txt", "x.npy", "z.npz"]


def test_mode_follows_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(mio, "_umask", 0o077)
    p = mio.atomic_write_bytes(tmp_path / "private", b"x")
    assert _mode(p) == 0o600
    monkeypatch.setattr(mio, "_umask", 0o002)
    p = mio.atomic_write_bytes(tmp_path / "group", b"x")
    assert _mode(p) == 0o664


def test_fsync_before_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    mio.atomic_write_bytes(tmp_path / "f", b"data")
    # the file before the rename, the folder after it
    assert events == ["fsync", "replace", "fsync"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    p = tmp_path / "keep.txt"
    mio.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with mio.atomic_writer(p) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


@pytest.mark.parametrize("where", ["stream", "fsync"])
def test_enospc_names_the_path_and_cleans_up(tmp_path, monkeypatch, where):
    def full(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as ei:
        if where == "fsync":  # delayed allocation: the error surfaces at fsync
            monkeypatch.setattr(os, "fsync", full)
            mio.atomic_write_bytes(tmp_path / "big.bin", b"x" * 100_000)
        else:  # a library streaming into the writer fails half-way
            with mio.atomic_writer(tmp_path / "big.bin") as f:
                f.write(b"x" * 1000)
                full()
    monkeypatch.undo()
    assert ei.value.errno == errno.ENOSPC
    assert ei.value.filename == str(tmp_path / "big.bin")
    assert os.listdir(tmp_path) == []


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError) as ei:
        mio.atomic_write_bytes(tmp_path / "file" / "out.json", b"{}")
    assert ei.value.errno == errno.ENOTDIR
    assert "file" in ei.value.filename


def test_read_only_folder(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def erofs(path, *a, **k):  # a read-only mount, as root sees it too
        if str(path).startswith(str(ro)) and a and a[0] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", erofs)
    with pytest.raises(OSError) as ei:
        mio.atomic_write_bytes(ro / "x", b"1")
    monkeypatch.undo()
    assert ei.value.errno == errno.EROFS
    assert ei.value.filename is not None and ei.value.filename.startswith(str(ro))
    assert os.listdir(ro) == []


def test_remove_stale_temps_spares_live_writers_and_other_files(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".last.safetensors.ab12cd_z.tmp", tmp_path / "sub" / ".x.ckpt.0123abcd.tmp.ckpt"]
    for s in stale:
        s.write_bytes(b"partial")
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "sub" / "a.npy"]
    for k in keep:
        k.write_bytes(b"k")
    with mio.atomic_writer(tmp_path / "live.bin") as f:
        f.write(b"in progress")
        live = [q for q in tmp_path.iterdir() if q.name.startswith(".live.bin.")]
        assert len(live) == 1 and mio.is_temp_name(live[0].name)
        removed = mio.remove_stale_temps(tmp_path)
        assert sorted(removed) == sorted(stale)
        assert live[0].exists()  # held by this writer
    for k in keep:
        assert k.exists()
    assert (tmp_path / "live.bin").read_bytes() == b"in progress"
    assert mio.remove_stale_temps(tmp_path / "missing") == []


# --------------------------------------------------------------------------- tags

@pytest.mark.parametrize(
    "tag", ["", ".", "..", "../escape", "../../escape", "a/b", "/abs", "a\\b", ".hidden", "-x", " t"]
)
def test_check_tag_refuses(tag):
    with pytest.raises(ConfigError) as ei:
        check_tag(tag)
    msg = str(ei.value)
    assert "run.tag" in msg and "\n" not in msg


@pytest.mark.parametrize("tag", ["tiny", "run-1", "a.b", "x_y+z", "2026-12-01"])
def test_check_tag_accepts(tag):
    assert check_tag(tag) == tag


# --------------------------------------------------------------------------- run folders

def test_create_run_dir_refuses_non_empty_unless_resume(tmp_path):
    d = tmp_path / "runs" / "t"
    assert create_run_dir(d) is True
    assert create_run_dir(d) is False  # empty: fine
    (d / "config.yaml").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        create_run_dir(d)
    assert create_run_dir(d, resume=True) is False
    with pytest.raises(ConfigError, match="no such run folder"):
        create_run_dir(tmp_path / "runs" / "none", resume=True)
    (tmp_path / "runs" / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        create_run_dir(tmp_path / "runs" / "f")


def test_runlock_removes_an_empty_folder_it_created(tmp_path):
    d = tmp_path / "r"
    with pytest.raises(RuntimeError):
        with RunLock(d, create=True):
            assert (d / LOCK_NAME).read_text().strip() == str(os.getpid())
            raise RuntimeError("failed before writing anything")
    assert not d.exists()
    with RunLock(d, create=True):
        (d / "config.yaml").write_text("x")
    assert sorted(os.listdir(d)) == ["config.yaml"]  # lock file gone, outputs kept
    with pytest.raises(ConfigError, match="not empty"):
        RunLock(d, create=True).acquire()
    with RunLock(d, create=True, resume=True) as lk:
        assert lk.held
    assert run_contents(d) == ["config.yaml"]


def test_runlock_clears_stale_temps(tmp_path):
    d = tmp_path / "r"
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.yaml").write_text("x")
    t = d / "checkpoints" / ".last.safetensors.zz99yy88.tmp"
    t.write_bytes(b"half")
    with RunLock(d, resume=True):
        assert not t.exists()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from mvd_core.train.rundir import RunLock
    with RunLock(sys.argv[1], create=True):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_lock_held_by_another_process(tmp_path):
    d = tmp_path / "runs" / "same"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(d)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse) as ei:
            RunLock(d, create=True).acquire()
        msg = str(ei.value)
        assert f"process {holder.pid}" in msg and "\n" not in msg
        with pytest.raises(RunInUse, match=str(holder.pid)):
            RunLock(d, create=True, resume=True).acquire()
        # the same through a real second process: fails at once
        t0 = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-c", _HOLDER, str(d)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert second.returncode != 0 and f"process {holder.pid}" in second.stderr
        assert time.monotonic() - t0 < 50  # did not wait for the holder's 60 s
    finally:
        holder.kill()
        holder.wait()
    # kill -9 drops the lock: the folder can be taken (resumed) at once
    with RunLock(d, create=True, resume=True) as lk:
        assert lk.held
    assert issubclass(RunInUse, MvdError)
