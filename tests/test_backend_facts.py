"""The one table of backend facts (mvd_core.registry.BACKENDS): devices, sysinfo, convert,
pretrained and the config read it; core imports no framework except through a backend module."""

import ast
import dataclasses
import importlib.metadata
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mvd_core import registry
from mvd_core.devices import accepted_devices, normalize_device
from mvd_core.errors import BackendUnavailable, MvdError
from mvd_core.registry import BACKENDS, BackendFacts, Device

CORE = Path(__file__).resolve().parent.parent / "mvd_core"
FRAMEWORKS = {f.framework for f in BACKENDS.values()}
assert FRAMEWORKS == {"torch", "mindspore"}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ core imports no framework

def test_every_core_module_imports_no_framework():
    """Each mvd_core module, imported one after another in a fresh interpreter, leaves every
    framework out of sys.modules (the first module that pulls one in is named)."""
    code = (
        "import importlib, json, pkgutil, sys, mvd_core\n"
        f"fw = {sorted(FRAMEWORKS)!r}\n"
        "seen = []\n"
        "for m in pkgutil.walk_packages(mvd_core.__path__, 'mvd_core.'):\n"
        "    importlib.import_module(m.name); seen.append(m.name)\n"
        "    bad = sorted(k for k in sys.modules if k.split('.')[0] in fw)\n"
        "    if bad: print(json.dumps({'module': m.name, 'frameworks': bad[:3]})); sys.exit(1)\n"
        "print(json.dumps({'modules': seen}))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])["modules"]
    files = {".".join(p.relative_to(CORE.parent).with_suffix("").parts) for p in CORE.rglob("*.py")}
    files = {f.removesuffix(".__init__") for f in files} - {"mvd_core"}
    assert set(seen) == files  # every module was imported, none skipped


def framework_uses(source: str, filename: str) -> list[str]:
    """Framework imports and calls in a core module's code (docstrings and comments do not
    count): ``import torch`` / ``from mindspore import ...`` anywhere (functions too),
    ``importlib.import_module`` / ``__import__`` of anything but an ``mvd_`` module (the
    registry may import the module names its table holds), and ``torch.x`` / ``mindspore.x``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in FRAMEWORKS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FRAMEWORKS:
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name not in ("import_module", "__import__") or not node.args:
                continue
            arg = node.args[0]
            head = (arg.value if isinstance(arg, ast.Constant) else
                    arg.values[0].value if isinstance(arg, ast.JoinedStr) and arg.values
                    and isinstance(arg.values[0], ast.Constant) else None)
            if isinstance(head, str) and head.startswith(("mvd_backends.", "mvd_core.")):
                continue
            if head is None and filename.endswith("registry.py"):
                continue  # the table's module names (facts.framework, .converter, .info, .cls)
            found.append(f"{node.lineno}: {name}({ast.unparse(arg)})")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in FRAMEWORKS:
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_framework_check_catches_framework_code():
    bad = (
        "import os, torch.nn\nfrom mindspore import ops\n"
        "def f():\n    import mindspore as ms\n    importlib.import_module('torch')\n"
        "    importlib.import_module(name)\n    __import__('mindspore.hal')\n    torch.cuda.is_available()\n"
    )
    assert len(framework_uses(bad, "x.py")) == 7
    ok = ('"""import torch in a docstring"""\n# import mindspore\n'
          "importlib.import_module(f'mvd_backends.{b}.convert')\nx = 'torch'\n")
    assert framework_uses(ok, "x.py") == []
    # the registry alone may import a module name read from its table, never a literal one
    assert framework_uses("importlib.import_module(f.framework)", "mvd_core/registry.py") == []
    assert framework_uses("importlib.import_module('torch')", "mvd_core/registry.py") != []


def test_core_code_calls_no_framework():
    found = {}
    for p in sorted(CORE.rglob("*.py")):
        uses = framework_uses(p.read_text(), str(p))
        if uses:
            found[str(p.relative_to(CORE))] = uses
    assert found == {}


def test_the_modules_the_table_names_exist():
    """Every backend module the table names exists, with the functions its readers call."""
    for f in BACKENDS.values():
        info = (CORE.parent / "backends" / f.name / "info.py").read_text()
        tree = ast.parse(info)
        defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"version", "list_devices"} <= defs, f.name
        assert f.info == f"mvd_backends.{f.name}.info"
        assert f.converter == f"mvd_backends.{f.name}.convert"
        conv = (CORE.parent / "backends" / f.name / "convert.py").read_text()
        assert f"def {f.resnet50_reader}(" in conv
        for fn in ("read_state", "write_state", "write_resnet50"):
            assert f"def {fn}(" in conv, (f.name, fn)


# ------------------------------------------------------------------ readers of the table

@pytest.fixture
def fake_backend(monkeypatch):
    """A third backend in the table: framework ``json`` (always importable), its info and
    converter modules fakes in sys.modules, device TPU, weight files ``.fakew``."""
    info = types.ModuleType("fake_mvd_info")
    info.version = lambda: "9.9"
    info.list_devices = lambda: ["TPU:0 (fake)", "TPU:1 (fake)"]
    conv = types.ModuleType("fake_mvd_convert")
    conv.read_fake_resnet = lambda p: {"fc.weight": np.zeros(2), "conv1.weight": np.ones((4, 3, 7, 7))}
    monkeypatch.setitem(sys.modules, "fake_mvd_info", info)
    monkeypatch.setitem(sys.modules, "fake_mvd_convert", conv)
    fake = BackendFacts(
        name="fake", cls="fake_mvd_info:Nope", framework="json", extra="mvd[fake]",
        info="fake_mvd_info", converter="fake_mvd_convert", resnet50_reader="read_fake_resnet",
        suffixes=(".fakew",), precisions=("fp32", "fp8"), precision_why="",
        devices=(Device("TPU", ("tpu",), True, ("none", "fp8"), {"bf16": "no bf16 here"}),),
        launcher="msrun", rng_layout={"fake.state": ("int64", 1)},
    )
    gone = dataclasses.replace(fake, name="gone", framework="no_such_framework_h2b",
                               extra="mvd[gone]", suffixes=(".gonew",), devices=(), converter="no_such_mod_h2b")
    table = {**BACKENDS, "fake": fake, "gone": gone}
    monkeypatch.setattr(registry, "BACKENDS", table)
    return fake


def test_devices_read_the_table(fake_backend):
    assert normalize_device("fake", "tpu:1") == "TPU:1"
    assert "TPU, TPU:N (fake)" in accepted_devices()
    with pytest.raises(MvdError, match=r"TPU is not supported by the torch backend \(use --backend fake --device TPU\)"):
        normalize_device("torch", "TPU")
    with pytest.raises(MvdError, match=r"cuda is not supported by the fake backend \(use --backend torch --device cuda\)"):
        normalize_device("fake", "cuda")


def test_precision_and_amp_checks_read_the_table(fake_backend):
    registry.check_precision("fake", "fp8")
    registry.check_amp("fake", "fp8", "TPU:0")
    with pytest.raises(MvdError, match=r"run.amp=bf16: the fake backend on TPU:0 supports only none, fp8 \(no bf16 here\)"):
        registry.check_amp("fake", "bf16", "TPU:0")
    assert "fp8" in registry.amp_values() and "fp8" in registry.precision_values()


def test_sysinfo_reads_the_table(fake_backend):
    from mvd_core.sysinfo import collect

    got = collect()["backends"]
    assert got["fake"] == {"available": True, "version": "9.9", "devices": ["TPU:0 (fake)", "TPU:1 (fake)"],
                           "precisions": ["fp32", "fp8"], "amp": {"TPU": ["none", "fp8"]}, "extra": "mvd[fake]"}
    assert got["gone"]["available"] is False and got["gone"]["extra"] == "mvd[gone]"
    assert "no_such_framework_h2b" in got["gone"]["error"]


def test_weight_readers_read_the_table(fake_backend, tmp_path):
    from mvd_core.weights import pretrained

    f = tmp_path / "r.fakew"
    f.write_bytes(b"x")
    params = pretrained.read_resnet50(f)  # the fake converter's reader, fc.* dropped
    assert sorted(params) == ["conv1.weight"] and params["conv1.weight"].dtype == np.float32
    g = tmp_path / "r.gonew"
    g.write_bytes(b"x")
    with pytest.raises(BackendUnavailable, match=r"r.gonew: reading .gonew files needs mvd\[gone\]"):
        pretrained.read_resnet50(g)
    h = tmp_path / "r.h5"
    h.write_bytes(b"x")
    with pytest.raises(MvdError, match=r"expected .safetensors, .npz or .pth/.pt/.bin \(torch\), .ckpt \(mindspore\), .fakew \(fake\)"):
        pretrained.read_resnet50(h)


def test_convert_formats_are_the_tables():
    from mvd_core.weights.convert import SUFFIXES

    assert SUFFIXES == (".safetensors", ".npz", ".pth", ".pt", ".bin", ".ckpt")
    assert registry.suffix_backend(".ckpt").name == "mindspore"
    assert registry.suffix_backend(".pt").name == "torch"
    assert registry.suffix_backend(".npz") is None


def test_config_choices_come_from_the_table():
    from mvd_core.config import RunConfig, choices

    assert choices(RunConfig)["backend"] == tuple(BACKENDS) == ("torch", "mindspore")
    assert choices(RunConfig)["amp"] == ("none", "bf16", "fp16")
    assert choices(RunConfig)["precision"] == ("fp32", "fp64")


# ------------------------------------------------------------------ mvd info

def test_mvd_info_shows_each_backend():
    """Versions as the installed distributions say (importlib.metadata, not the frameworks'
    own attributes), this CPU machine's devices and what each trains in there."""
    out = _run("from mvd_cli.app import main; import sys; sys.argv = ['mvd', 'info']; main()")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    torch_line = next(ln for ln in lines if ln.startswith("torch "))
    ms_line = next(ln for ln in lines if ln.startswith("mindspore "))
    assert torch_line.split()[1] == importlib.metadata.version("torch")
    assert ms_line.split()[1] == importlib.metadata.version("mindspore")
    assert torch_line.endswith("devices: cpu") or "devices: cpu, cuda:0" in torch_line
    assert ms_line.split("devices: ")[1].split(", ")[0] == "CPU"
    assert "run.precision: fp32, fp64; run.amp on cpu: none, bf16" in out.stdout
    assert "run.precision: fp32; run.amp on CPU: none" in out.stdout
    assert "is not available" not in out.stderr  # MindSpore's plugin warnings are not shown


def test_mvd_info_without_a_framework():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'mindspore': raise ModuleNotFoundError(\"No module named 'mindspore'\")\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mvd_cli.app import main; sys.argv = ['mvd', 'info']; main()"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert ("mindspore  not available (ModuleNotFoundError: No module named 'mindspore'); "
            "install mvd[mindspore]") in out.stdout
    assert any(ln.startswith("torch ") and "devices: cpu" in ln for ln in out.stdout.splitlines())


def test_launcher_and_rng_layout_read_the_table(fake_backend, tmp_path):
    """The multi-process launcher and a checkpoint's RNG entries are the backend's facts: a
    third backend launches under the launcher it names and its checkpoints carry its RNG keys."""
    from mvd_core.errors import CheckpointError
    from mvd_core.train import distributed
    from mvd_core.weights.checkpoint import Checkpoint, validate

    cmd = distributed.launch_command("fake", 2, ["train"], port=1234, log_dir=tmp_path, script=tmp_path / "mvd")
    assert Path(cmd[0]).name == "msrun" and "--worker_num" in cmd
    with pytest.raises(MvdError, match="started by torchrun; the fake backend trains multi-process under msrun"):
        distributed.check_backend(distributed.DistEnv(world_size=2, launcher="torchrun"), "fake")
    with pytest.raises(MvdError, match="unknown backend"):
        distributed.launch_command("nope", 2, ["train"], port=1, log_dir=tmp_path)
    meta = {"backend": "fake", "epoch": 1, "global_step": 1}
    with pytest.raises(CheckpointError, match="rng state of a fake run: missing fake.state"):
        validate(Checkpoint(params={}, rng={"torch.cpu": np.zeros(4, np.uint8)}, meta=meta), "f.safetensors")
    validate(Checkpoint(params={}, rng={"fake.state": np.zeros(2, np.int64)}, meta=meta), "f.safetensors")
