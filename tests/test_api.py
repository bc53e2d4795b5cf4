"""The Python API (mvd_core.api): load a trained run on either backend, extract (with flip),
evaluate, rank — checked against the backend driven directly and against the run's report."""

import dataclasses
import json

import numpy as np
import pytest

from mvd_core import load_model
from mvd_core.api import as_imageset, ids_from_paths, resolve_images, top_k
from mvd_core.config import load_config
from mvd_core.data.base import load_images
from mvd_core.data.sets import load_test
from mvd_core.data.transforms import test_images
from mvd_core.errors import MvdError
from mvd_core.registry import create_backend
from mvd_core.train.driver import train
from mvd_core.train.resume import checkpoint_config
from mvd_core.weights.checkpoint import load_checkpoint

pytestmark = pytest.mark.torch

TINY = ["model.width=4", "data.height=64", "data.width=32", "schedule.steps_per_epoch=2",
        "schedule.epochs=1", "data.workers=1", "eval.trials=2", "eval.batch_size=32"]


@pytest.fixture(scope="module")
def run(sysu_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("api-runs")
    cfg = load_config("tiny", [f"data.root={sysu_root}", f"run.out={out}", "run.tag=t", *TINY])
    return train(cfg)


@pytest.fixture(scope="module")
def model(run):
    return load_model(run.run_dir)


@pytest.fixture(scope="module")
def query(sysu_root):
    return load_test(load_config("tiny", [f"data.root={sysu_root}"]).data).query


def _direct(run_dir, imageset, feat_norm=None, flip=False):
    """Reference: the run's backend built by hand, fed by hand."""
    ck = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    cfg = checkpoint_config(ck, run_dir)
    if feat_norm is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, feat_norm=feat_norm))
    be = create_backend(cfg, int(ck.params["v.classifier.weight"].shape[0]))
    be.load_state(ck.params)
    x = test_images(load_images(imageset, np.arange(len(imageset)), 64, 32), 64, 32)
    f = be.extract_features(x, imageset.modality)
    if flip:
        f = (f + be.extract_features(x[..., ::-1].copy(), imageset.modality)) / 2
    return f


def test_extract_equals_the_backend(run, model, query):
    got = model.extract(query, "thermal")
    want = _direct(run.run_dir, query)
    assert got.shape == want.shape == (len(query), 4 * 4 * 32)  # width 4: 4 x 128
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # chunking does not change anything
    np.testing.assert_allclose(model.extract(query, "thermal", batch_size=7), got, rtol=0, atol=1e-6)


def test_flip_is_mean_then_normalise(run, model, query):
    raw = _direct(run.run_dir, query, feat_norm="none", flip=True)
    blocks = raw.reshape(len(query), 4, -1)
    want = (blocks / np.linalg.norm(blocks, axis=2, keepdims=True)).reshape(len(query), -1)
    got = model.extract(query, "thermal", flip=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert np.abs(got - model.extract(query, "thermal")).max() > 1e-3
    # invariant: the flip feature of the mirrored images is the flip feature of the images
    imgs = load_images(query, np.arange(len(query)), 64, 32)
    mirrored = model.extract(np.ascontiguousarray(imgs[:, :, ::-1]), "thermal", flip=True)
    np.testing.assert_allclose(mirrored, got, rtol=0, atol=2e-6)


def test_evaluate_reproduces_the_run_report(run, model):
    want = json.loads((run.run_dir / "report.json").read_text())["mean"]
    got = model.evaluate().to_dict()["mean"]
    assert got == want


def test_rank_and_ids(model, sysu_root):
    q = f"{sysu_root}/cam3/*/0001.jpg"
    g = sysu_root / "cam1"
    r = model.rank(q, g, top=5)
    qp, gp = resolve_images(q), resolve_images(g)
    assert r.indices.shape == (len(qp), 5)
    qf, gf = model.extract(qp, "thermal"), model.extract(gp, "visible")
    d = np.sqrt(((qf[:, None] - gf[None]) ** 2).sum(-1))
    np.testing.assert_allclose(r.distances, np.sort(d, axis=1)[:, :5], atol=1e-5)
    pids, cams = ids_from_paths(gp)
    assert (cams == 1).all() and r.matches is not None
    np.testing.assert_array_equal(r.matches, pids[r.indices] == ids_from_paths(qp)[0][:, None])
    rr = model.rank(q, g, top=5, rerank=True)
    assert rr.indices.shape == (len(qp), 5) and "k-reciprocal" in rr.metric


def test_inputs_and_errors(tmp_path, sysu_root):
    assert ids_from_paths(["x/Thermal/17/a_t_00001_17.bmp", "y/z.jpg"])[0].tolist() == [17, -1]
    lst = tmp_path / "list.txt"
    lst.write_text(f"{sysu_root}/cam1/0001/0001.jpg 0\n\n# comment\n")
    assert resolve_images(lst) == [f"{sysu_root}/cam1/0001/0001.jpg"]
    lst.write_text("missing.jpg\n")
    with pytest.raises(MvdError, match=r"list.txt:1: missing.jpg"):
        resolve_images(lst)
    with pytest.raises(MvdError, match="no images"):
        resolve_images(tmp_path)
    with pytest.raises(MvdError, match="matches no image"):
        resolve_images(str(tmp_path / "*.png"))
    with pytest.raises(MvdError, match="modality"):
        as_imageset(np.zeros((1, 8, 4, 3), np.uint8), "rgb")
    with pytest.raises(MvdError, match="no checkpoint"):
        load_model(tmp_path)
    idx, d = top_k(np.array([[3.0, 1.0, 1.0, 0.0]]), 3)
    assert idx.tolist() == [[3, 1, 2]] and d.tolist() == [[0.0, 1.0, 1.0]]


class _Tty:
    """A stderr that says it is a terminal (tqdm draws only there)."""

    def __init__(self):
        import io

        self.buf = io.StringIO()

    def isatty(self):
        return True

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass


def test_progress_callback_and_bars(model, query, monkeypatch):
    calls = []
    model.extract(query, "thermal", batch_size=7, progress=lambda d, t: calls.append((d, t)))
    n = len(query)
    assert calls == [(min(n, k), n) for k in range(7, n + 7, 7)]

    from mvd_core.data.imageio import progress_callback
    from mvd_core.train.runlog import ConsoleProgress

    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    bar = progress_callback(True, "extract thermal")
    for d in (4, 8, 10):
        bar(d, 10)
    out = tty.buf.getvalue()
    assert "extract thermal" in out and "10/10" in out and "img/s" in out  # tqdm: rate, ETA
    con = ConsoleProgress(2, 3, 10)
    for s in (1, 2, 3):
        con.update(1, s, 1e-3, {"total": 1.5}, 12.0)
    out = tty.buf.getvalue()
    assert "epoch 1/2" in out and "3/3" in out and "total 1.5000" in out
