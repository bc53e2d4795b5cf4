"""Nothing lost, nothing escapes (issue 13): bad input and faults through the CLI.

Every row: exit code 2, exactly one line on stderr naming the field / path / tensor, nothing
left behind (no run folder, no temp file, a user's files untouched). Most rows fail before any
training (in-process through typer's CliRunner, a few in real subprocesses); one tiny run is
trained once per module to make the checkpoints the checkpoint rows corrupt; the kill -9 row
trains twice more.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.config import load_config
from mvd_core.errors import CheckpointError
from mvd_core.weights.checkpoint import load_checkpoint

pytestmark = pytest.mark.torch
runner = CliRunner()

#: a tiny, fast run (1 thread: bit-exact between processes)
TINY = [
    "model.width=4", "data.height=32", "data.width=16", "data.num_ids=4", "data.num_pos=2",
    "data.workers=1", "schedule.steps_per_epoch=3", "schedule.warmup=1",
    "schedule.start_decay=2", "schedule.end_decay=3", "eval.trials=1", "eval.batch_size=64",
    "run.threads=1", "run.ckpt_every=1",
]


def _sets(items: list[str]) -> list[str]:
    out: list[str] = []
    for s in items:
        out += ["--set", s]
    return out


def _mvd() -> list[str]:
    exe = Path(sys.executable).with_name("mvd")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from mvd_cli.app import main; main()"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_v": "3"}


def _snapshot(*folders: Path) -> dict[str, bytes | None]:
    """Every path under ``folders`` (files with their bytes): what 'nothing left behind' means."""
    snap: dict[str, bytes | None] = {}
    for f in folders:
        if not f.exists():
            continue
        for p in sorted(f.rglob("*")):
            snap[str(p)] = p.read_bytes() if p.is_file() else None
    return snap


def _one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def _invoke(args: list[str]) -> tuple[int, str]:
    r = runner.invoke(app, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stderr


# --------------------------------------------------------------------------- config rows

CONFIG_ROWS = [
    (["--set", "model.width=0"], "model.width=0", ">= 1"),
    (["--set", "model.vib_dim=0"], "model.vib_dim=0", ">= 1"),
    (["--set", "data.height=0"], "data.height=0", ">= 32"),
    (["--set", "data.height=1"], "data.height=1", ">= 32"),
    (["--set", "data.width=8"], "data.width=8", ">= 16"),
    (["--set", "model.dropout=2"], "model.dropout=2.0", "[0, 1)"),
    (["--lr", "nan"], "optim.lr=nan", "> 0"),
    (["--lr", "-1"], "optim.lr=-1.0", "> 0"),
    (["--set", "optim.lr=.inf"], "optim.lr=inf", "> 0"),
    (["--set", "schedule.epochs=0"], "schedule.epochs=0", ">= 1"),
    (["--epochs", "0"], "schedule.epochs=0", ">= 1"),
    (["--set", "data.flip_p=7"], "data.flip_p=7.0", "[0, 1]"),
    (["--set", "data.pad=-5"], "data.pad=-5", ">= 0"),
    (["--set", "eval.batch_size=0"], "eval.batch_size=0", ">= 1"),
    (["--set", "run.threads=-1"], "run.threads=-1", ">= 0"),
    (["--set", "eval.trials=0"], "eval.trials=0", ">= 1"),
    (["--set", "optim.betas=[0.9,2]"], "optim.betas=[0.9, 2.0]", "[0, 1)"),
    (["--ckpt", "../../escape"], "run.tag/--ckpt='../../escape'", "plain folder name"),
    (["--ckpt", "../projdir"], "run.tag/--ckpt='../projdir'", "plain folder name"),
    (["--ckpt", "."], "run.tag/--ckpt='.'", "plain folder name"),
    (["--ckpt", ".."], "run.tag/--ckpt='..'", "plain folder name"),
    (["--ckpt", "/abs/run"], "run.tag/--ckpt='/abs/run'", "plain folder name"),
    (["--ckpt", "a/b"], "run.tag/--ckpt='a/b'", "plain folder name"),
]


@pytest.fixture()
def workspace(tmp_path, sysu_root):
    """out/ for runs and, next to it, a user's project folder a bad tag must not touch."""
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    proj = tmp_path / "work" / "projdir"
    proj.mkdir()
    (proj / "config.yaml").write_text("mine: 1\n")
    (proj / "report.json").write_text('{"mine": true}\n')
    return tmp_path / "work", out, sysu_root


@pytest.mark.parametrize("args, field, expected", CONFIG_ROWS, ids=[" ".join(r[0]) for r in CONFIG_ROWS])
def test_bad_config_values_fail_before_anything(workspace, args, field, expected):
    work, out, root = workspace
    before = _snapshot(work)
    code, err = _invoke(["train", "--config", "tiny", "--data-path", str(root), "--out", str(out),
                         *_sets(TINY), *args])
    line = _one_line(err)
    assert code == 2
    assert field in line and expected in line, line
    assert _snapshot(work) == before  # no run folder, no config.yaml, projdir untouched


def test_bad_values_in_a_yaml_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ndata:\n  erasing_p: 1.5\n")
    code, err = _invoke(["train", "--config", str(bad), "--out", str(tmp_path / "out")])
    line = _one_line(err)
    assert code == 2 and str(bad) in line and "data.erasing_p=1.5" in line and "[0, 1]" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, field", [
    (["--set", "model.width=0"], "model.width=0"),
    (["--ckpt", "../../escape"], "run.tag/--ckpt='../../escape'"),
    (["--lr", "nan"], "optim.lr=nan"),
])
def test_bad_input_real_process(workspace, args, field):
    work, out, root = workspace
    before = _snapshot(work)
    r = subprocess.run([*_mvd(), "train", "--config", "tiny", "--data-path", str(root), "--out",
                        str(out), *_sets(TINY), *args],
                       capture_output=True, text=True, timeout=300, env=_env(), cwd=work)
    assert r.returncode == 2, r.stderr
    assert field in _one_line(r.stderr)
    assert _snapshot(work) == before


# --------------------------------------------------------------------------- run folders and I/O

def test_existing_folder_without_checkpoint_is_refused(workspace):
    work, out, root = workspace
    run = out / "taken"
    run.mkdir()
    (run / "config.yaml").write_text("user: 1\n")
    (run / "report.json").write_text("{}\n")
    before = _snapshot(work)
    code, err = _invoke(["train", "--config", "tiny", "--data-path", str(root), "--out", str(out),
                         "--ckpt", "taken", *_sets(TINY)])
    line = _one_line(err)
    assert code == 2 and str(run) in line and "not empty" in line and "--resume" in line
    assert _snapshot(work) == before


def test_output_path_is_a_file(workspace):
    work, out, root = workspace
    (out / "afile").write_text("x")
    before = _snapshot(work)
    code, err = _invoke(["train", "--config", "tiny", "--data-path", str(root),
                         "--out", str(out / "afile" / "sub"), "--ckpt", "t", *_sets(TINY)])
    line = _one_line(err)
    assert code == 2 and str(out / "afile") in line and "Not a directory" in line
    assert _snapshot(work) == before


def _try_mount(target: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True)


def test_read_only_output(workspace, monkeypatch):
    """A read-only mount (root: a real ro tmpfs) or an unwritable folder (non-root: mode 0555);
    where neither is possible, EROFS injected at mkdir."""
    work, out, root = workspace
    ro = out / "ro"
    mounted = _try_mount(ro, "ro,size=64k")
    try:
        if not mounted:
            ro.mkdir()
            if os.geteuid() != 0:
                ro.chmod(0o555)
            else:
                real_mkdir = os.mkdir

                def erofs(path, *a, **k):
                    if str(path).startswith(str(ro)):
                        raise OSError(errno.EROFS, "Read-only file system", str(path))
                    return real_mkdir(path, *a, **k)

                monkeypatch.setattr(os, "mkdir", erofs)
                monkeypatch.setattr(os, "access", lambda p, m, **k: not str(p).startswith(str(ro)))
        before = _snapshot(work)
        code, err = _invoke(["train", "--config", "tiny", "--data-path", str(root),
                             "--out", str(ro), "--ckpt", "t", *_sets(TINY)])
        line = _one_line(err)
        assert code == 2 and str(ro) in line
        assert "Read-only file system" in line or "Permission denied" in line
        assert _snapshot(work) == before
    finally:
        if mounted:
            _umount(ro)
        elif ro.exists():
            ro.chmod(0o755)


def test_prepare_disk_full_is_one_line_and_leaves_nothing(tmp_path, sysu_root, monkeypatch):
    """`mvd prepare` on a full disk: the staged arrays are reserved up front, so a 64 KiB tmpfs
    (or, without mount rights, an injected ENOSPC from posix_fallocate) fails with one line and
    no temp file, never SIGBUS. The real tmpfs case runs in a subprocess (a SIGBUS kills it)."""
    full = tmp_path / "full"
    if _try_mount(full, "size=64k"):
        try:
            r = subprocess.run([*_mvd(), "prepare", "sysu", "--root", str(sysu_root), "--out", str(full)],
                               capture_output=True, text=True, timeout=300, env=_env())
            assert r.returncode == 2, (r.returncode, r.stderr)  # -7 would be SIGBUS
            line = _one_line(r.stderr)
            assert str(full / "train_rgb_resized_img.npy") in line and "No space left" in line
            assert os.listdir(full) == []
        finally:
            _umount(full)
        return
    full.mkdir()

    def enospc(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", enospc)
    code, err = _invoke(["prepare", "sysu", "--root", str(sysu_root), "--out", str(full)])
    line = _one_line(err)
    assert code == 2 and "train_rgb_resized_img.npy" in line and "No space left" in line
    assert os.listdir(full) == []


def test_prepare_write_failure_mid_stream_cleans_up(tmp_path, sysu_root, monkeypatch):
    """ENOSPC while streaming images (a file system without fallocate): one line, no temps, an
    earlier cache left as it was."""
    from mvd_core.data import sysu as prep

    out = tmp_path / "cache"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    real_decode = prep._decode_all

    def failing(paths, workers):
        for n, item in enumerate(real_decode(paths, workers)):
            if n == 5:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield item

    monkeypatch.setattr(prep, "_decode_all", failing)
    code, err = _invoke(["prepare", "sysu", "--root", str(sysu_root), "--out", str(out), "--no-progress"])
    line = _one_line(err)
    assert code == 2 and "train_rgb_resized_img.npy" in line and "No space left" in line
    assert sorted(os.listdir(out)) == ["keep.txt"]


def test_stale_temp_of_a_killed_prepare_is_removed_on_the_next_start(tmp_path, sysu_root):
    out = tmp_path / "cache"
    out.mkdir()
    stale = out / ".train_ir_resized_img.npy.ab12cd34.tmp"
    stale.write_bytes(b"\0" * 1000)
    code, err = _invoke(["prepare", "sysu", "--root", str(sysu_root), "--out", str(out)])
    assert code == 0, err
    assert not stale.exists()
    mode = 0o666 & ~_umask()
    for name in os.listdir(out):  # 0o666 & ~umask: colleagues can read the cache
        assert (os.stat(out / name).st_mode & 0o777) == mode, name


def test_cache_label_out_of_range_names_the_label_file(tmp_path, sysu_root):
    from mvd_core.data.sysu import prepare_sysu

    cache = tmp_path / "cache"
    prepare_sysu(sysu_root, cache, progress=False)
    lab = cache / "train_ir_resized_label.npy"
    labels = np.load(lab)
    labels[-1] = 999
    np.save(lab, labels)
    before = _snapshot(tmp_path)
    code, err = _invoke(["train", "--config", "tiny", "--data-path", str(sysu_root), "--out",
                         str(tmp_path / "out"), *_sets([*TINY, f"data.cache={cache}"])])
    line = _one_line(err)
    assert code == 2 and str(lab) in line and "label 999 out of range" in line, line
    assert _snapshot(tmp_path) == before


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


# --------------------------------------------------------------------------- one trained run

@pytest.fixture(scope="module")
def trained(tmp_path_factory, sysu_root):
    """One tiny run (2 epochs of 3 steps, uninterrupted) trained once for the module: the
    checkpoint the corrupt rows start from and the reference losses of the kill -9 row."""
    from mvd_core.train.driver import train

    out = tmp_path_factory.mktemp("robust-runs")
    cfg = load_config("tiny", [f"data.root={sysu_root}", f"run.out={out}", "run.tag=ref",
                               "schedule.epochs=2", *TINY])
    res = train(cfg, evaluate_at_end=False)
    return res.run_dir


def _corrupt(run: Path, dest: Path, fn) -> Path:
    """A copy of ``run``'s checkpoint with ``fn(tensors, meta)`` applied (a new run folder)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    shutil.copytree(run, dest)
    path = dest / "checkpoints" / "last.safetensors"
    with safe_open(str(path), framework="np") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["mvd"])
    fn(tensors, meta)
    header["mvd"] = json.dumps(meta)
    save_file(tensors, str(path), metadata=header)
    return path


def _cast(key, dtype):
    def fn(t, m):
        t[key] = t[key].astype(dtype)
    return fn


def _drop(key):
    def fn(t, m):
        del t[key]
    return fn


def _meta(field, value):
    def fn(t, m):
        m[field] = value
    return fn


def _trim(key):
    def fn(t, m):
        t[key] = np.ascontiguousarray(t[key][:-1])
    return fn


CKPT_ROWS = [
    ("int32-conv", _cast("param/v.trunk.conv1.weight", np.int32), ["v.trunk.conv1.weight", "float32", "int32"]),
    ("uint8-bn-var", _cast("param/i.bnneck.running_var", np.uint8), ["i.bnneck.running_var", "float32", "uint8"]),
    ("float16", _cast("param/s.classifier.weight", np.float16), ["s.classifier.weight", "float32", "float16"]),
    ("float64", _cast("param/v.vib.encoder.0.bias", np.float64), ["v.vib.encoder.0.bias", "float64"]),
    ("mis-shaped", _trim("param/i.vib.encoder.0.weight"), ["mis-shaped", "i.vib.encoder.0.weight", "expected (128, 128), got (127, 128)"]),
    ("missing", _drop("param/v.trunk.bn1.bias"), ["missing", "v.trunk.bn1.bias"]),
    ("epoch-abc", _meta("epoch", "abc"), ["'epoch'", "integer", "'abc'"]),
    ("epoch-negative", _meta("epoch", -1), ["'epoch'", ">= 0"]),
    ("step-float", _meta("global_step", 2.5), ["'global_step'", "integer"]),
    ("config-bad", _meta("config", {"model": {"width": 0}}), ["model.width=0", ">= 1"]),
    ("adam-step-float", _cast("optim/adam.step", np.float32), ["optim/adam.step", "int64", "float32"]),
    ("adam-moment-f16", _cast("optim/adam.m.v.trunk.conv1.weight", np.float16), ["optim/adam.m.v.trunk.conv1.weight", "float16"]),
    ("optim-missing", _drop("optim/adam.v.s.bnneck.weight"), ["optimizer state", "adam.v.s.bnneck.weight"]),
    ("rng-missing", _drop("rng/torch.cpu"), ["rng state", "torch.cpu"]),
    ("rng-dtype", _cast("rng/torch.cpu", np.int64), ["rng/torch.cpu", "uint8", "int64"]),
]


@pytest.mark.parametrize("name, fn, needles", CKPT_ROWS, ids=[r[0] for r in CKPT_ROWS])
def test_corrupt_checkpoint_is_one_line_naming_file_and_tensor(trained, tmp_path, name, fn, needles):
    path = _corrupt(trained, tmp_path / name, fn)
    with pytest.raises(CheckpointError if name != "config-bad" else ValueError) as ei:
        load_checkpoint(path)
    assert str(path) in str(ei.value)
    before = _snapshot(tmp_path)
    for cmd in (["eval", "--resume", str(path)], ["train", "--resume", str(tmp_path / name)]):
        code, err = _invoke(cmd)
        line = _one_line(err)
        assert code == 2, line
        assert str(path) in line and all(n in line for n in needles), line
    assert _snapshot(tmp_path) == before  # nothing trained, evaluated or rewritten


def test_corrupt_checkpoint_real_processes(trained, tmp_path):
    path = _corrupt(trained, tmp_path / "bad", _cast("param/v.trunk.conv1.weight", np.int32))
    for cmd in (["eval", "--resume", str(path)], ["train", "--resume", str(tmp_path / "bad")]):
        r = subprocess.run([*_mvd(), *cmd], capture_output=True, text=True, timeout=300, env=_env())
        assert r.returncode == 2, r.stderr
        line = _one_line(r.stderr)
        assert str(path) in line and "v.trunk.conv1.weight: expected float32, got int32" in line


def test_truncated_checkpoint(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "cut")
    path = tmp_path / "cut" / "checkpoints" / "last.safetensors"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    code, err = _invoke(["eval", "--resume", str(path)])
    line = _one_line(err)
    assert code == 2 and str(path) in line and "not a readable safetensors checkpoint" in line


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.float64])
def test_backend_load_state_refuses_other_dtypes(trained, dtype):
    """The backends' own barrier (a state handed over in memory, no file involved)."""
    from mvd_core.registry import create_backend

    ck = load_checkpoint(trained)
    cfg = load_config(str(trained / "config.yaml"))
    b = create_backend(cfg, int(ck.params["v.classifier.weight"].shape[0]))
    params = dict(ck.params)
    params["v.bnneck.running_var"] = params["v.bnneck.running_var"].astype(dtype)
    with pytest.raises(CheckpointError, match=rf"v\.bnneck\.running_var: expected float32, got {np.dtype(dtype)}"):
        b.load_state(params)
    b.load_state(ck.params)  # the checked original loads


def test_bn_counters_are_accepted_as_int64_scalars(trained, tmp_path):
    path = _corrupt(trained, tmp_path / "nbt", lambda t, m: t.update(
        {"param/v.trunk.bn1.num_batches_tracked": np.array([3], np.int64)}))
    ck = load_checkpoint(path)
    assert "v.trunk.bn1.num_batches_tracked" not in ck.params
    bad = _corrupt(trained, tmp_path / "nbt32", lambda t, m: t.update(
        {"param/v.trunk.bn1.num_batches_tracked": np.array([3], np.int32)}))
    with pytest.raises(CheckpointError, match="num_batches_tracked: expected dtype int64, got int32"):
        load_checkpoint(bad)


# --------------------------------------------------------------------------- one process per run

_HOLD = textwrap.dedent(
    """
    import sys, time
    from mvd_core.train.rundir import RunLock
    with RunLock(sys.argv[1], resume=True):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_second_train_on_a_locked_run_fails_at_once_naming_the_pid(trained, tmp_path):
    run = tmp_path / "held"
    shutil.copytree(trained, run)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = _snapshot(tmp_path)
        for cmd in (["train", "--resume", str(run)],
                    ["train", "--config", "tiny", "--out", str(tmp_path), "--ckpt", "held", *_sets(TINY)]):
            r = subprocess.run([*_mvd(), *cmd], capture_output=True, text=True, timeout=300, env=_env())
            assert r.returncode == 2, r.stderr
            line = _one_line(r.stderr)
            assert f"in use by process {holder.pid}" in line or "a run with this tag exists" in line, line
            assert str(run) in line
        assert _snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- kill -9, then resume

_KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import mvd_backends.torch.backend as tb

    marker, after = Path(sys.argv[1]), int(sys.argv[2])
    real = tb.TorchBackend.train_step
    calls = [0]

    def step(self, batch, lr):
        calls[0] += 1
        if calls[0] > after:  # mid-epoch: wait here to be killed
            marker.write_text("waiting")
            time.sleep(600)
        return real(self, batch, lr)

    tb.TorchBackend.train_step = step
    from mvd_cli.app import main
    sys.argv = ["mvd", *sys.argv[3:]]
    main()
    """
)


def _step_losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [(r["global_step"], r["total"]) for r in recs if "total" in r]


def test_kill_9_mid_epoch_then_resume_reproduces_every_loss(trained, tmp_path, sysu_root):
    sets = [f"data.root={sysu_root}", "schedule.epochs=2", *TINY]
    ref_losses = _step_losses(trained)  # the same config, uninterrupted
    assert [s for s, _ in ref_losses] == list(range(1, 7))

    marker = tmp_path / "marker"
    args = ["train", "--config", "tiny", "--out", str(tmp_path), "--ckpt", "killed", *_sets(sets)]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(marker), "4", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run never reached step 5"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # in epoch 2, after its step 1 (global step 4)
    finally:
        proc.kill()
        proc.wait()
    run = tmp_path / "killed"
    assert load_checkpoint(run).epoch == 1
    assert [s for s, _ in _step_losses(run)] == [1, 2, 3, 4]
    # a killed write's temp and the dead process's lock do not block the resume
    (run / "checkpoints" / ".last.safetensors.dead1234.tmp").write_bytes(b"partial")
    code, err = _invoke(["train", "--resume", str(run)])
    assert code == 0, err
    assert _step_losses(run) == ref_losses  # bit for bit, each step once
    assert not (run / "checkpoints" / ".last.safetensors.dead1234.tmp").exists()
    assert not (run / ".lock").exists()
    a, b = load_checkpoint(trained).params, load_checkpoint(run).params
    assert all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- file modes

def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in sorted(folder.rglob("*"))}


def test_outputs_are_0666_minus_umask_not_0600(trained, tmp_path):
    """Run outputs, converted weights (.npz, .pth, .safetensors) and synthetic data sets get the
    mode a plain open()/mkdir gives (mkstemp's 0600 / mkdtemp's 0700 used to leak through)."""
    from mvd_core.data.synth import synth_regdb
    from mvd_core.weights.convert import write_params

    files, dirs = 0o666 & ~_umask(), 0o777 & ~_umask()
    for name, mode in _modes(trained).items():
        assert mode == (dirs if (trained / name).is_dir() else files), name
    params = load_checkpoint(trained).params
    for suffix in (".npz", ".pth", ".safetensors"):
        p = write_params(params, tmp_path / f"w{suffix}")
        assert p.stat().st_mode & 0o777 == files, suffix
    synth_regdb(tmp_path / "regdb", ids=4, images_per_modality=2, seed=0)
    for name, mode in _modes(tmp_path / "regdb").items():
        assert mode == (dirs if (tmp_path / "regdb" / name).is_dir() else files), name
    assert (tmp_path / "regdb").stat().st_mode & 0o777 == dirs
    assert sorted(x.name for x in tmp_path.iterdir()) == ["regdb", "w.npz", "w.pth", "w.safetensors"]


@pytest.mark.mindspore
def test_mindspore_ckpt_is_not_0400(tmp_path):
    """MindSpore's save_checkpoint leaves 0400; the writer gives 0o666 & ~umask."""
    from mvd_backends.mindspore.convert import save_checkpoint

    save_checkpoint({"a": np.ones(3, np.float32)}, tmp_path / "x.ckpt")
    assert (tmp_path / "x.ckpt").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert os.listdir(tmp_path) == ["x.ckpt"]
