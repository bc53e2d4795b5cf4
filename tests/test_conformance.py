"""Both backends expose the same files, public names and method signatures, matching the
interface in mvd_core.interface (the array-api-compat habit: one written list of known gaps
instead of silent skips)."""

import importlib
import inspect
from pathlib import Path

import pytest

from mvd_core.interface import BACKEND_METHODS, Backend
from mvd_core.registry import BACKENDS, backend_class

pytestmark = [pytest.mark.torch, pytest.mark.mindspore]

ROOT = Path(__file__).resolve().parent.parent / "backends"
FILES = ("network.py", "losses.py", "optim.py", "backend.py", "convert.py", "export.py", "info.py")
#: public names that exist in one backend only, each with its reason (empty = none)
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "backend": {"TorchBackend": "the class is named after its framework (registry)",
                "MindSporeBackend": "the class is named after its framework (registry)"},
    "optim": {"copy_in_place": "mindspore-only: PyNative copies into a Parameter asynchronously"},
    "convert": {
        # each framework's own file format, named after its framework
        "torch_to_canonical": "torch-only", "canonical_to_torch": "torch-only",
        "torch_name": "torch-only", "read_torchvision_resnet50": "torch-only",
        "TORCH_ONLY_SUFFIXES": "torch-only", "is_torch_only": "torch-only",
        "ms_to_canonical": "mindspore-only", "canonical_to_ms": "mindspore-only",
        "ms_name": "mindspore-only", "read_mindspore_resnet50": "mindspore-only",
        "save_mindspore_resnet50": "mindspore-only", "save_checkpoint": "mindspore-only",
        "load_checkpoint": "mindspore-only", "BN_MODULE": "mindspore-only",
        "RESNET_IGNORED": "mindspore-only", "is_bn_module": "mindspore-only",
    },
}


def _public(module) -> set[str]:
    """Names a module defines itself at top level (functions, classes, constants), not imports."""
    import ast

    tree = ast.parse(Path(module.__file__).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") and n not in ("log", "logger")}


def test_same_files():
    for name in ("torch", "mindspore"):
        present = {p.name for p in (ROOT / name).glob("*.py")} - {"__init__.py"}
        assert set(FILES) <= present, name
    assert {p.name for p in (ROOT / "torch").glob("*.py")} == {p.name for p in (ROOT / "mindspore").glob("*.py")}


@pytest.mark.parametrize("stem", [f[:-3] for f in FILES])
def test_same_public_names(stem):
    t = _public(importlib.import_module(f"mvd_backends.torch.{stem}"))
    m = _public(importlib.import_module(f"mvd_backends.mindspore.{stem}"))
    gaps = set(KNOWN_GAPS.get(stem, {}))
    assert sorted((t ^ m) - gaps) == [], f"{stem}: names in one backend only"


@pytest.mark.parametrize("stem", ["losses", "info"])
def test_same_loss_signatures(stem):
    t = importlib.import_module(f"mvd_backends.torch.{stem}")
    m = importlib.import_module(f"mvd_backends.mindspore.{stem}")
    for name in sorted(_public(t) & _public(m)):
        a, b = getattr(t, name), getattr(m, name)
        if inspect.isfunction(a):
            assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), name


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backends_implement_the_interface(name):
    cls = backend_class(name)
    for method in BACKEND_METHODS:
        proto = inspect.signature(getattr(Backend, method))
        impl = inspect.signature(getattr(cls, method))
        assert list(impl.parameters)[: len(proto.parameters)] == list(proto.parameters), method
    init = list(inspect.signature(cls.__init__).parameters)
    assert init[:5] == ["self", "cfg", "num_classes", "device", "seed"]
    assert isinstance(cls.name, str) and cls.name == name


# ---------------------------------------------------------------- which backend honours each key

def _config_keys() -> set[str]:
    import dataclasses

    from mvd_core.config import Config

    keys = {"recipe"}
    for sec in dataclasses.fields(Config):
        if sec.name != "recipe":
            keys |= {f"{sec.name}.{f.name}" for f in dataclasses.fields(sec.type if isinstance(sec.type, type) else getattr(Config(), sec.name))}
    return keys


def test_every_config_key_says_who_honours_it():
    from mvd_core.registry import HONOURED

    keys = _config_keys()
    assert sorted(keys - set(HONOURED)) == [], "config keys missing from registry.HONOURED"
    assert sorted(set(HONOURED) - keys) == [], "registry.HONOURED names keys the config lacks"
    assert set(HONOURED.values()) <= {"core", "backends", "limited", "mindspore"}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backend_keys_are_read_by_each_backend(name):
    """A key that 'backends' honour appears (as an attribute) in that backend's code or in the
    shared core code that builds its model and losses — never only in the other backend."""
    from mvd_core.registry import HONOURED

    core = Path(__file__).resolve().parent.parent / "mvd_core"
    text = "".join(p.read_text() for p in (ROOT / name).glob("*.py"))
    text += "".join((core / f).read_text() for f in ("model/spec.py", "model/losses.py", "weights/pretrained.py", "devices.py"))
    missing = [k for k, who in HONOURED.items()
               if who in ("backends", "limited") and k not in BACKENDS[name].limits
               and f".{k.split('.')[1]}" not in text]
    assert missing == [], f"{name} never reads {missing}"


@pytest.mark.parametrize("name, key, value, needle", [
    ("mindspore", "run.amp", "fp16", "run.amp=fp16"),
    ("mindspore", "run.amp", "bf16", "run.amp=bf16"),
    ("mindspore", "run.precision", "fp64", "run.precision='fp64'"),
    ("mindspore", "run.channels_last", True, "run.channels_last=True"),
    ("torch", "run.amp", "fp16", "run.amp=fp16"),
])
def test_unsupported_settings_are_refused_not_ignored(name, key, value, needle):
    """On this CPU machine each of these is refused by create_backend with one line naming the
    key, before any model is built."""
    from mvd_core.config import load_config
    from mvd_core.errors import MvdError
    from mvd_core.registry import create_backend

    v = str(value).lower() if isinstance(value, bool) else value
    cfg = load_config("tiny", [f"run.backend={name}", f"run.device={'CPU' if name == 'mindspore' else 'cpu'}", f"{key}={v}"])
    with pytest.raises(MvdError) as e:
        create_backend(cfg, 4)
    assert needle in str(e.value) and "\n" not in str(e.value)
