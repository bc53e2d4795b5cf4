"""`mvd export`: the exported test-feature network (torch ONNX with a dynamic batch, MindSpore
ONNX at a fixed batch and MINDIR) run outside the toolkit matches the backend's features."""

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core import load_model
from mvd_core.api import as_imageset
from mvd_core.config import load_config
from mvd_core.data.base import load_images
from mvd_core.data.transforms import test_images
from mvd_core.train.driver import train
from mvd_core.weights.export import onnx_features

pytestmark = pytest.mark.torch
runner = CliRunner()
TOL = 1e-5


@pytest.fixture(scope="module")
def run_dir(sysu_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-runs")
    cfg = load_config("tiny", [
        f"data.root={sysu_root}", f"run.out={out}", "run.tag=t", "model.width=4", "data.height=64",
        "data.width=32", "schedule.steps_per_epoch=2", "schedule.epochs=1", "data.workers=1"])
    return train(cfg, evaluate_at_end=False).run_dir


@pytest.fixture(scope="module")
def images(sysu_root):
    iset = as_imageset(sysu_root / "cam3", "thermal")
    return test_images(load_images(iset, np.arange(7), 64, 32), 64, 32)


@pytest.fixture(scope="module")
def reference(run_dir, images):
    """The torch backend's own features of the same images (through mvd_core.api)."""
    m = load_model(run_dir)
    return m.features().extract_features(images, "thermal")


def _export(*args):
    r = runner.invoke(app, ["export", *args])
    assert r.exit_code == 0, r.output
    return r


def test_torch_onnx_dynamic_batch(run_dir, images, reference, tmp_path):
    from mvd_core.train.tensorboard import prefer_python_protobuf

    prefer_python_protobuf()  # before onnx's protobuf import, so MindSpore still imports later
    import onnx

    out = tmp_path / "mvd.onnx"
    r = _export("--resume", str(run_dir), "--format", "onnx", "--out", str(out), "--check")
    assert "onnxruntime check passed" in r.output
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch
    np.testing.assert_allclose(onnx_features(out, images), reference, rtol=0, atol=TOL)
    np.testing.assert_allclose(onnx_features(out, images[:2]), reference[:2], rtol=0, atol=TOL)


@pytest.mark.mindspore
def test_mindspore_onnx_fixed_batch(run_dir, images, reference, tmp_path):
    out = tmp_path / "mvd-ms.onnx"
    _export("--resume", str(run_dir), "--format", "onnx", "--out", str(out),
            "--backend", "mindspore", "--device", "CPU", "--batch", "4")
    import onnxruntime as ort

    assert ort.InferenceSession(str(out)).get_inputs()[0].shape == [4, 3, 64, 32]
    # 7 images = a chunk of 4 and a zero-padded chunk of 3
    np.testing.assert_allclose(onnx_features(out, images), reference, rtol=0, atol=TOL)


@pytest.mark.mindspore
@pytest.mark.slow
def test_mindspore_mindir(run_dir, images, reference, tmp_path):
    import mindspore as ms

    out = tmp_path / "mvd.mindir"
    _export("--resume", str(run_dir), "--format", "mindir", "--out", str(out),
            "--backend", "mindspore", "--device", "CPU", "--batch", "7")
    cell = ms.nn.GraphCell(ms.load(str(out)))
    np.testing.assert_allclose(cell(ms.Tensor(images)).asnumpy(), reference, rtol=0, atol=TOL)


def test_check_catches_a_different_network(run_dir, tmp_path):
    from mvd_core.api import load_backend
    from mvd_core.errors import MvdError
    from mvd_core.weights.export import check_onnx, export_model

    out = export_model(run_dir, "onnx", tmp_path / "a.onnx")
    other, _, _ = load_backend(run_dir, overrides=["model.feat_norm=joint"])  # another test feature
    with pytest.raises(MvdError, match="onnxruntime features differ from the torch backend's"):
        check_onnx(out, other, 64, 32)


def test_export_errors(run_dir, tmp_path):
    r = runner.invoke(app, ["export", "--resume", str(run_dir), "--format", "mindir",
                            "--out", str(tmp_path / "x.mindir")])
    assert r.exit_code == 2 and "MINDIR is MindSpore's format" in r.output
    r = runner.invoke(app, ["export", "--resume", str(run_dir), "--format", "onnx",
                            "--out", str(tmp_path / "x.bin")])
    assert r.exit_code == 2 and "expected a .onnx file name" in r.output
    assert list(tmp_path.iterdir()) == []
