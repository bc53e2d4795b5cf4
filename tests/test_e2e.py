"""The acceptance matrix: every shipped recipe, data layout and backend through the real CLI.

Each cell runs, as a user would, in subprocesses of the installed ``mvd`` command, on synthetic
data written in the real layouts:

    mvd train (periodic evaluation; --val-ids in half the cells) --stop-after 1   # interrupted
    mvd train --resume RUN                                   # finishes, final evaluation
    mvd eval --resume RUN                                    # every protocol, one file each
    mvd convert last.safetensors model.{ckpt|pth}            # the other framework's format
    mvd eval --resume model.* --config RUN/config.yaml --backend OTHER   # equal metrics

Recipes are shrunk by overrides only (network width, VIB sizes, image size, batch, steps per
epoch, epochs, trials): every code path of the recipe is kept (CAM, last stride 1, CML, the
ranked-list loss, label smoothing, the PT sampler, periodic evaluation).

Cells: every recipe × every layout (12); MindSpore trains one cell per recipe (graph mode in
two, PyNative in two, meeting all three layouts) and evaluates every torch-trained cell, so
every recipe, layout and backend meet; torch trains the other eight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mvd_core.train.runlog import read_log
from mvd_core.weights.checkpoint import load_checkpoint

pytestmark = [pytest.mark.torch, pytest.mark.mindspore, pytest.mark.e2e]

MVD = str(Path(sys.executable).with_name("mvd"))
RECIPES = ("mvd-ms", "mvd-pt", "tiny", "demo")
LAYOUTS = ("sysu-raw", "sysu-npy", "regdb")
#: MindSpore in one cell per recipe (a MindSpore process spends ~60 s compiling its training
#: step, so 8 MindSpore cells alone would cost the suite ~25 CPU minutes), both modes twice,
#: meeting every layout; every torch-trained cell is evaluated on MindSpore (PyNative) too
_MINDSPORE_CELLS = {("mvd-ms", "sysu-npy"): "graph", ("mvd-pt", "regdb"): "graph",
                    ("tiny", "sysu-raw"): "pynative", ("demo", "sysu-npy"): "pynative"}
CELLS = [
    (recipe, layout, *(("mindspore", _MINDSPORE_CELLS[recipe, layout])
                       if (recipe, layout) in _MINDSPORE_CELLS else ("torch", None)))
    for recipe in RECIPES
    for layout in LAYOUTS
]

#: shrink a recipe without removing any of its code paths (a trunk of 5 bottlenecks, the first
#: stage's second one an identity-shortcut block, compiles ~2x faster than ResNet-50's 16)
SHRINK = [
    "model.width=2", "model.blocks=[2,1,1,1]", "model.vib_hidden=[16,16]", "model.vib_dim=16", "model.vib_cls_hidden=16",
    "data.height=64", "data.width=32", "data.num_ids=2", "data.num_pos=2", "data.workers=1",
    "schedule.steps_per_epoch=2", "eval.every=1", "eval.trials=2", "eval.batch_size=64",
]


def mvd(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_v": "3"}
    r = subprocess.run([MVD, *args], capture_output=True, text=True, env=env, timeout=900)
    if ok:
        assert r.returncode == 0, f"mvd {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict[str, Path]:
    """Synthetic SYSU-MM01 (raw + the .npy cache `mvd prepare` writes) and RegDB, each written
    by the CLI in the real layouts."""
    root = tmp_path_factory.mktemp("e2e-data")
    mvd("synth", "--layout", "sysu", "--out", str(root / "SYSU-MM01"), "--ids", "16", "-k", "2")
    mvd("synth", "--layout", "regdb", "--out", str(root / "RegDB"), "--ids", "12", "-k", "3")
    mvd("prepare", "sysu", "--root", str(root / "SYSU-MM01"), "--out", str(root / "sysu-cache"), "--no-progress")
    return {"sysu": root / "SYSU-MM01", "cache": root / "sysu-cache", "regdb": root / "RegDB"}


def _data_flags(layout: str, data: dict[str, Path]) -> list[str]:
    if layout == "regdb":
        return ["--dataset", "RegDB", "--data-path", str(data["regdb"]), "--trial", "2"]
    flags = ["--dataset", "SYSU", "--data-path", str(data["sysu"])]
    if layout == "sysu-npy":
        flags += ["--set", f"data.cache={data['cache']}"]
    return flags


def _backend_flags(backend: str, mode: str | None) -> list[str]:
    if backend == "torch":
        return ["--backend", "torch", "--device", "cpu"]
    return ["--backend", "mindspore", "--device", "CPU", "--ms-mode", str(mode)]


def _means(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())["mean"]


@pytest.mark.parametrize("recipe, layout, backend, mode", CELLS, ids=[f"{c[0]}-{c[1]}-{c[2]}{'-' + c[3] if c[3] else ''}" for c in CELLS])
def test_cell(recipe, layout, backend, mode, data, tmp_path):
    out = tmp_path / "runs"
    val = CELLS.index((recipe, layout, backend, mode)) % 2 == 1
    sets = [a for kv in SHRINK for a in ("--set", kv)]
    train = [
        "train", "--config", recipe, *_backend_flags(backend, mode), *_data_flags(layout, data),
        "--ckpt", "cell", "--out", str(out), "--epochs", "2", *sets,
        *(["--val-ids", "3" if layout != "regdb" else "2"] if val else []),
    ]
    run = out / "cell"

    # 1. train with periodic evaluation, interrupted after epoch 1
    r = mvd(*train, "--stop-after", "1")
    assert "continue with: mvd train --resume" in r.stdout
    assert load_checkpoint(run / "checkpoints" / "last.safetensors").epoch == 1
    assert not (run / "report.json").exists()
    evals = [rec for rec in read_log(run / "log.jsonl") if "eval" in rec]
    assert [e["eval"] for e in evals] == (["val"] if val else ["test-monitor"])
    if val:
        assert (run / "checkpoints" / "best.safetensors").exists()

    # 2. resume: the run keeps its own backend, mode and config
    r = mvd("train", "--resume", str(run))
    assert "R1" in r.stdout and r.stdout.count("mean ") == 1  # the final table, once
    saved = (run / "config.yaml").read_text()
    assert f"backend: {backend}" in saved and f"recipe: {recipe}" in saved
    if mode:
        assert f"ms_mode: {mode}" in saved
    recs = read_log(run / "log.jsonl")
    steps = [rec["global_step"] for rec in recs if "total" in rec]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 4, steps
    assert all("time" in rec for rec in recs)
    assert load_checkpoint(run / "checkpoints" / "last.safetensors").epoch == 2
    # resuming a finished run does nothing, in one line
    r = mvd("train", "--resume", str(run))
    assert "is complete" in r.stdout and len(r.stdout.strip().splitlines()) == 1

    # 3. every protocol of the data set, one report file each, in the run folder
    mvd("eval", "--resume", str(run))
    expected = (["regdb-v2t-trial2", "regdb-t2v-trial2"] if layout == "regdb"
                else ["sysu-all-single", "sysu-indoor-single"])
    for key in expected:
        assert (run / f"eval-{key}.json").exists() and (run / f"eval-{key}.txt").exists()
    main = expected[0]
    assert _means(run / f"eval-{main}.json") == _means(run / "report.json")

    # 4. convert to the other framework's format, 5. evaluate there: the same metrics
    other = "torch" if backend == "mindspore" else "mindspore"
    model = tmp_path / ("model.pth" if other == "torch" else "model.ckpt")
    mvd("convert", str(run / "checkpoints" / "last.safetensors"), str(model))
    elsewhere = tmp_path / "other"
    mvd("eval", "--resume", str(model), "--config", str(run / "config.yaml"),
        *_backend_flags(other, "pynative"), "--out", str(elsewhere))
    for key in expected:
        a, b = _means(run / f"eval-{key}.json"), _means(elsewhere / f"eval-{key}.json")
        for metric in ("R1", "mAP", "mINP"):
            assert abs(a[metric] - b[metric]) <= 0.1, (key, metric, a[metric], b[metric])
