"""`mvd convert`: bit-exact round trips across formats; strict name/shape checks."""

import numpy as np
import pytest
from typer.testing import CliRunner

from mvd_cli.app import app
from mvd_core.config import load_config
from mvd_core.errors import MvdError
from mvd_core.model.spec import init_params, model_spec, trunk_spec
from mvd_core.weights.convert import convert, infer_model_config, read_params, write_params

pytestmark = [pytest.mark.torch, pytest.mark.mindspore]
runner = CliRunner()


@pytest.fixture(scope="module")
def mvd_params():
    cfg = load_config("tiny", ["model.width=4", "model.cam=true"]).model
    return init_params(model_spec(cfg, 7), seed=3)


@pytest.fixture(scope="module")
def resnet_params():
    return init_params(trunk_spec(8), seed=4)


def _same(a, b):
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_mvd_round_trip_through_every_format(mvd_params, tmp_path):
    write_params(mvd_params, tmp_path / "a.safetensors")
    chain = ["a.safetensors", "b.pth", "c.ckpt", "d.npz", "e.safetensors", "f.ckpt", "g.pth"]
    for src, dst in zip(chain, chain[1:]):
        r = convert(tmp_path / src, tmp_path / dst, "mvd")
        assert r.tensors == len(mvd_params)
        _same(mvd_params, read_params(tmp_path / dst, "mvd"))
    cfg, classes = infer_model_config(mvd_params)
    assert (cfg.width, cfg.cam, classes) == (4, True, 7)


def test_mindspore_checkpoint_uses_mindspore_names(mvd_params, tmp_path):
    from mvd_backends.mindspore.convert import load_checkpoint

    write_params(mvd_params, tmp_path / "m.ckpt")
    names = set(load_checkpoint(tmp_path / "m.ckpt"))
    assert "v.trunk.bn1.gamma" in names and "v.trunk.bn1.moving_variance" in names
    assert "v.trunk.bn1.weight" not in names


def test_resnet50_round_trip(resnet_params, tmp_path):
    write_params(resnet_params, tmp_path / "r.pth", "resnet50")
    for src, dst in [("r.pth", "r.ckpt"), ("r.ckpt", "r.safetensors"), ("r.safetensors", "r2.pth")]:
        convert(tmp_path / src, tmp_path / dst, "resnet50")
        _same(resnet_params, read_params(tmp_path / dst, "resnet50"))


def test_bad_tensors_are_named(mvd_params, tmp_path):
    bad = dict(mvd_params)
    del bad["s.vib.encoder.4.running_var"]
    bad["s.extra.weight"] = np.zeros(3, np.float32)
    bad["i.trunk.layer2.0.conv2.weight"] = np.zeros((1, 2, 3, 3), np.float32)
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(MvdError) as e:
        read_params(tmp_path / "bad.npz")
    msg = str(e.value)
    assert "s.vib.encoder.4.running_var" in msg and "s.extra.weight" in msg
    assert "i.trunk.layer2.0.conv2.weight" in msg
    np.savez(tmp_path / "good.npz", **mvd_params)
    with pytest.raises(MvdError, match="unknown format '.h5'"):
        convert(tmp_path / "good.npz", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(MvdError, match="not an MVD model: missing: v.classifier.weight"):
        write_params({"v.trunk.conv1.weight": np.zeros((4, 3, 7, 7), np.float32)}, tmp_path / "y.npz")
    assert not (tmp_path / "y.npz").exists()


def test_cli_convert(resnet_params, tmp_path):
    write_params(resnet_params, tmp_path / "r.safetensors", "resnet50")
    r = runner.invoke(app, ["convert", str(tmp_path / "r.safetensors"), str(tmp_path / "r.ckpt"), "--kind", "resnet50"])
    assert r.exit_code == 0, r.output
    assert "tensors" in r.output and (tmp_path / "r.ckpt").exists()
    r = runner.invoke(app, ["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.ckpt")])
    assert r.exit_code == 2 and "missing.pth" in r.output and "Traceback" not in r.output


def test_checkpoint_without_the_id_classifier_bias_fails_naming_it(mvd_params, tmp_path):
    """Checkpoints written before the ID classifier had its bias (both public codes have one)
    lack `{v,i,s}.classifier.bias`: reading or loading one fails and names the tensor."""
    from mvd_backends.mindspore.backend import MindSporeBackend
    from mvd_backends.torch.backend import TorchBackend

    old = {k: v for k, v in mvd_params.items() if not k.endswith("classifier.bias")
           or ".vib." in k}
    assert len(old) == len(mvd_params) - 3
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(MvdError, match=r"missing: .*v\.classifier\.bias"):
        read_params(tmp_path / "old.npz")
    cfg = load_config("tiny", ["model.width=4", "model.cam=true"])
    for cls in (TorchBackend, MindSporeBackend):
        be = cls(cfg, 7, "cpu" if cls is TorchBackend else "CPU", 0)
        with pytest.raises(ValueError, match=r"missing: .*classifier\.bias"):
            be.load_state(old)
        be.load_state(mvd_params)  # the full set loads
        assert np.array_equal(be.state()["s.classifier.bias"], mvd_params["s.classifier.bias"])
