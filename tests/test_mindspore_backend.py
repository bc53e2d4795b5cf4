"""The MindSpore backend through the shared driver, the CLI and the framework-free checkpoints
(issue 6): training, exact resume, evaluation, both execution modes, checkpoints interchangeable
with the torch backend's, and pretrained trunks from torchvision and MindSpore files."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("mindspore")

from mvd_backends.mindspore import convert as ms_convert  # noqa: E402
from mvd_backends.mindspore.backend import MindSporeBackend  # noqa: E402
from mvd_cli.app import app  # noqa: E402
from mvd_core.config import load_config  # noqa: E402
from mvd_core.errors import MvdError  # noqa: E402
from mvd_core.interface import Batch  # noqa: E402
from mvd_core.model.spec import BRANCHES, init_params, model_spec, trunk_spec  # noqa: E402
from mvd_core.parity.inputs import make_batch  # noqa: E402
from mvd_core.train.driver import evaluate_checkpoint, train  # noqa: E402
from mvd_core.weights.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.mindspore
runner = CliRunner()
C = 6


def _cfg(root, out, tag, *extra):
    return load_config(
        "tiny",
        [
            f"data.root={root}", f"run.out={out}", f"run.tag={tag}", "run.backend=mindspore",
            "run.device=CPU", "data.num_ids=4", "data.num_pos=2", "data.workers=1",
            "model.width=4", "model.blocks=[2,1,1,1]", "schedule.epochs=3", "schedule.steps_per_epoch=3",
            "schedule.warmup=1", "schedule.start_decay=2", "schedule.end_decay=3",
            "eval.trials=2", "eval.batch_size=64", *extra,
        ],
    )


def _losses(steps):
    return [(r["epoch"], r["step"], r["total"]) for r in steps]


def _batch(seed: int, n: int = 16) -> Batch:
    """A seeded tiny-size batch laid out as the sampler lays it out (parity's own maker)."""
    return make_batch(np.random.default_rng(seed), load_config("tiny"), n, C)


def test_driver_trains_resumes_exactly_and_evaluates(sysu_root, tmp_path):
    """As the torch driver test: a run stopped after epoch 2 and resumed gives the same per-step
    losses, bit for bit, and the same final parameters as the uninterrupted run."""
    full = train(_cfg(sysu_root, tmp_path, "full"), evaluate_at_end=False)
    assert len(full.steps) == 9 and full.epochs_done == 3
    assert all(np.isfinite(r["total"]) for r in full.steps)
    part = train(_cfg(sysu_root, tmp_path, "part"), max_epochs=2, evaluate_at_end=False)
    rest = train(resume=part.run_dir, evaluate_at_end=False)
    assert _losses(part.steps) + _losses(rest.steps) == _losses(full.steps)
    a = load_checkpoint(full.last_checkpoint)
    b = load_checkpoint(rest.last_checkpoint)
    assert a.params.keys() == b.params.keys()
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert int(a.optimizer["adam.step"]) == 9 and set(a.rng) == {"dropout.seed", "dropout.draws"}
    report = evaluate_checkpoint(full.run_dir).reports["sysu-all-single"]
    assert [r for r, _ in report.rows] == [0, 1]
    assert 0.0 <= report.to_dict()["mean"]["mAP"] <= 100.0


@pytest.fixture(scope="module")
def cli_run(sysu_root, tmp_path_factory):
    """A short MindSpore run trained through the CLI (shared: each run compiles its step)."""
    out = tmp_path_factory.mktemp("ms-cli")
    r = runner.invoke(app, [
        "train", "--config", "tiny", "--backend", "mindspore", "--device", "CPU",
        "--ms-mode", "pynative", "--dataset", "SYSU", "--data-path", str(sysu_root),
        "--ckpt", "ms-cli", "--out", str(out), "--epochs", "1", "--warmup-steps", "1",
        "--loss-func", "id+tri+kldiv",
        "--set", "model.width=4", "--set", "model.blocks=[2,1,1,1]", "--set", "schedule.steps_per_epoch=2", "--set", "eval.trials=1",
    ])
    assert r.exit_code == 0, r.output
    return out / "ms-cli"


@pytest.mark.slow  # the acceptance matrix (tests/test_e2e.py) trains and evaluates MindSpore runs through the CLI
def test_cli_train_and_eval_with_mindspore(cli_run, tmp_path):
    saved = load_config(str(cli_run / "config.yaml"))
    assert saved.run.backend == "mindspore" and saved.loss.preset == "id+tri+kldiv"
    assert (cli_run / "checkpoints" / "last.safetensors").exists()
    r = runner.invoke(app, ["eval", "--resume", str(cli_run), "--backend", "mindspore",
                            "--device", "CPU", "--ms-mode", "graph", "--trials", "2",
                            "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "e.json").read_text())["sysu-all-single"]["trials"]) == 2


@pytest.mark.slow  # the acceptance matrix evaluates every MindSpore-trained cell on torch (0.1 pp)
def test_checkpoints_are_interchangeable_with_torch(cli_run):
    """A checkpoint trained by MindSpore evaluates with torch to the same metrics: the
    checkpoint holds canonical names and plain arrays, nothing framework specific."""
    pytest.importorskip("torch")
    ms_rep = evaluate_checkpoint(cli_run, ["eval.trials=2"], backend="mindspore", device="CPU",
                                 ms_mode="pynative").reports["sysu-all-single"]
    pt_rep = evaluate_checkpoint(cli_run, ["eval.trials=2"], backend="torch", device="cpu").reports["sysu-all-single"]
    m, t = ms_rep.to_dict()["mean"], pt_rep.to_dict()["mean"]
    for key in ("R1", "mAP", "mINP"):
        assert abs(m[key] - t[key]) <= 0.1, (key, m[key], t[key])  # the metrics tolerance (pp)


def test_graph_and_pynative_modes_compute_the_same_model():
    """The modes differ only in forward / loss_terms / extract_features (compiled in graph
    mode, eager in PyNative; the training step is the same two compiled blocks in both, and the
    driver test trains it): the same weights give the same taps, loss terms and features (the
    last evaluation chunk padded to the compiled shape in graph mode)."""
    be = {m: MindSporeBackend(load_config("tiny", ["model.width=4", "model.blocks=[2,1,1,1]", "eval.batch_size=8",
                                                   "model.dropout=0", f"run.ms_mode={m}"]),
                              C, "CPU", 3)
          for m in ("graph", "pynative")}
    b = _batch(0)
    for mode in (False, True):
        tg, tp = be["graph"].forward(b, mode), be["pynative"].forward(b, mode)
        for k in tp:
            np.testing.assert_allclose(tg[k], tp[k], rtol=1e-5, atol=1e-6, err_msg=k)
    lg, lp = be["graph"].loss_terms(b), be["pynative"].loss_terms(b)
    assert lg.keys() == lp.keys()
    for k in lp:
        assert abs(lg[k] - lp[k]) <= 1e-5 * max(1.0, abs(lp[k])), (k, lg[k], lp[k])
    imgs = _batch(9, n=12).images  # the driver's chunks of 8: 8, then 4 padded to the compiled 8
    fg = np.concatenate([be["graph"].extract_features(imgs[:8], "visible"),
                         be["graph"].extract_features(imgs[8:], "visible")])
    assert be["graph"]._extract_shapes == {8}  # the last chunk ran the compiled shape
    fp = be["pynative"].extract_features(imgs, "visible")
    assert fg.shape == fp.shape and fg.shape[0] == 12
    np.testing.assert_allclose(fg, fp, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".safetensors"])
def test_pretrained_resnet50_loads_into_all_trunks_strictly(tmp_path: Path, suffix: str):
    """``model.pretrain`` with a torchvision state dict, a MindSpore checkpoint or the
    framework-free file: every trunk gets the weights; a missing tensor is an error naming it."""
    spec = trunk_spec(4)
    rng = np.random.default_rng(11)
    params = {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in spec.items()}
    path = tmp_path / f"r50{suffix}"

    def write(p: dict[str, np.ndarray]) -> None:
        if suffix == ".pth":
            torch = pytest.importorskip("torch")
            sd = {k: torch.from_numpy(v) for k, v in p.items()}
            sd["fc.weight"] = torch.zeros(1000, 128)  # an ImageNet head is dropped
            sd["fc.bias"] = torch.zeros(1000)
            torch.save(sd, path)
        elif suffix == ".ckpt":
            ms_convert.save_mindspore_resnet50(p, path)
        else:
            from safetensors.numpy import save_file

            save_file(p, str(path))

    write(params)
    cfg = load_config("tiny", ["model.width=4", f"model.pretrain={path}"])
    be = MindSporeBackend(cfg, C, "CPU", 0)
    state = be.state()
    init = init_params(model_spec(cfg.model, C), 0)
    for br in BRANCHES:
        for k in spec:
            np.testing.assert_array_equal(state[f"{br}.trunk.{k}"], params[k])
    np.testing.assert_array_equal(state["v.classifier.weight"], init["v.classifier.weight"])
    del params["layer2.0.conv1.weight"]
    write(params)
    with pytest.raises(MvdError, match=r"layer2\.0\.conv1\.weight"):
        MindSporeBackend(cfg, C, "CPU", 0)


def test_bad_mode_and_device_are_clear_errors(sysu_root, tmp_path):
    import dataclasses

    cfg = load_config("tiny", ["model.width=4"])
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, ms_mode="eager"))
    with pytest.raises(MvdError, match="run.ms_mode: 'eager' is not one of graph, pynative"):
        MindSporeBackend(cfg, C, "CPU", 0)
    cfg = load_config("tiny", ["model.width=4", "run.precision=fp64"])
    with pytest.raises(MvdError, match="no float64 Conv2D"):
        MindSporeBackend(cfg, C, "CPU", 0)
    r = runner.invoke(app, ["train", "--config", "tiny", "--backend", "mindspore",
                            "--device", "cuda:0", "--data-path", str(sysu_root),
                            "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "GPU:0" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
