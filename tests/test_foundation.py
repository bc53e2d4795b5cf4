"""Package layout, import hygiene, the backend registry, device names and the CLI skeleton."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core import __version__, devices
from mvd_core.devices import cpu_threads, normalize_device
from mvd_core.errors import BackendUnavailable, MvdError
from mvd_core.registry import backend_class, backend_names

runner = CliRunner()


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_core_imports_no_framework():
    mods = _modules_after(
        "import mvd_core, mvd_core.config, mvd_core.registry, mvd_core.interface, "
        "mvd_core.model.spec, mvd_core.devices, mvd_core.weights.pretrained, mvd_core.sysinfo\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(mvd_core.__path__, 'mvd_core.'): importlib.import_module(m.name)"
    )
    assert "mvd_core.config" in mods
    assert not {m for m in mods if m.split(".")[0] in ("torch", "mindspore")}


def test_cli_help_imports_no_framework():
    mods = _modules_after(
        "import sys\nfrom mvd_cli.app import app\nsys.argv=['mvd','--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert "mvd_cli.app" in mods
    assert not {m for m in mods if m.split(".")[0] in ("torch", "mindspore")}


def test_no_generic_top_level_names_installed(tmp_path):
    # run outside the checkout so only what is installed can be found
    code = (
        "import importlib.util as u, json; "
        "print(json.dumps({n: u.find_spec(n) is not None for n in "
        "('mvd_core', 'mvd_backends', 'mvd_cli', 'backends', 'cli')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    found = json.loads(out.stdout)
    assert found == {"mvd_core": True, "mvd_backends": True, "mvd_cli": True,
                     "backends": False, "cli": False}


@pytest.mark.parametrize(
    "backend, given, expected",
    [
        ("torch", "cpu", "cpu"), ("torch", "CPU", "cpu"), ("torch", "cuda", "cuda"),
        ("torch", "cuda:1", "cuda:1"), ("torch", "GPU", "cuda"), ("torch", "GPU:2", "cuda:2"),
        ("mindspore", "CPU", "CPU"), ("mindspore", "cpu", "CPU"), ("mindspore", "GPU", "GPU"),
        ("mindspore", "cuda", "GPU"), ("mindspore", "cuda:1", "GPU:1"),
        ("mindspore", "Ascend", "Ascend"), ("mindspore", "ascend:3", "Ascend:3"),
    ],
)
def test_device_names_map(backend, given, expected):
    assert normalize_device(backend, given) == expected


def test_bad_devices():
    with pytest.raises(MvdError, match="Ascend is not supported by the torch backend"):
        normalize_device("torch", "Ascend")
    with pytest.raises(MvdError, match="unknown device.*CPU, GPU, Ascend"):
        normalize_device("mindspore", "tpu")
    with pytest.raises(MvdError, match="takes no index"):
        normalize_device("torch", "cpu:1")
    with pytest.raises(MvdError, match="unknown backend"):
        normalize_device("jax", "cpu")


def test_cpu_thread_policy(monkeypatch):
    monkeypatch.setattr(devices, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads(0, workers=2) == 6  # one core per loader worker is left free
    assert cpu_threads(0, workers=0) == 8
    assert cpu_threads(3, workers=2) == 3  # run.threads / --threads wins
    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    assert cpu_threads(0, workers=2) == 1  # never below one
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(0, workers=2) == 2  # an explicit environment is respected
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert cpu_threads(0, workers=1) == 1


def test_registry_resolves_lazily_and_names_the_extra(monkeypatch):
    assert backend_names() == ["torch", "mindspore"]
    with pytest.raises(MvdError, match="'jax': unknown backend.*torch, mindspore"):
        backend_class("jax")
    import builtins

    real_import = builtins.__import__

    def no_mindspore(name, *a, **k):
        if name.split(".")[0] == "mindspore":
            raise ImportError("No module named 'mindspore'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mindspore)
    monkeypatch.delitem(sys.modules, "mindspore", raising=False)
    with pytest.raises(BackendUnavailable, match=r"install mvd\[mindspore\]"):
        backend_class("mindspore")


def test_cli_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"mvd {__version__}"
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "info" in r.stdout


def test_cli_info_json():
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout[r.stdout.index("{"):])
    assert data["mvd"] == __version__ and data["numpy"].startswith("1.")
    # both frameworks are installed in CI (mvd[all])
    assert data["backends"]["torch"]["available"] and "cpu" in data["backends"]["torch"]["devices"]
    assert data["backends"]["mindspore"]["available"]
    assert "CPU" in data["backends"]["mindspore"]["devices"]


def test_cli_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "mvd_cli.app", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_model_spec_lr_groups_and_residual_gain():
    """As the MindSpore code: a whole backbone (trunk, CAM, BN-neck, ID classifier) at
    trunk_lr_mult, only the VIB heads at head_lr_mult; bn3 γ starts at model.residual_gain."""
    from mvd_core.config import ModelConfig
    from mvd_core.model.spec import init_params, model_spec

    spec = model_spec(ModelConfig(width=8, cam=True, residual_gain=0.25), 5)
    for name, s in spec.items():
        assert s.group == ("head" if ".vib." in name else "trunk"), name
    assert spec["v.bnneck.weight"].group == spec["s.classifier.weight"].group == "trunk"
    params = init_params(spec, 0)
    bn3 = [k for k in params if k.endswith(".bn3.weight")]
    assert len(bn3) == 3 * 16
    assert all(np.all(params[k] == np.float32(0.25)) for k in bn3)
    assert np.all(params["v.trunk.layer1.0.bn2.weight"] == 1.0)
    assert np.all(params["i.trunk.layer2.0.downsample.1.weight"] == 1.0)
    with pytest.raises(ValueError, match="residual_gain"):
        model_spec(ModelConfig(width=8, residual_gain=-1.0), 5)
