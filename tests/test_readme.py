"""The README's commands run as written.

Every line of a ```bash block that starts with ``mvd `` is run, in order, in one scratch folder,
as a subprocess of the installed command — with these substitutions only:

* data paths: ``/data/SYSU-MM01`` and ``/data/RegDB`` → synthetic data sets in the real layouts;
  ``resnet50.pth`` → a torchvision-format ResNet-50 state dict of the shrunk width;
* devices this machine lacks (``--device Ascend|GPU|cuda``) → the CPU;
* ``mvd train`` gets the acceptance matrix's shrinking overrides appended (width, sizes, steps,
  epochs: the recipe's code paths stay) — the README shows full-size commands;
* ``mvd train --resume RUN --epochs N`` extends the shrunk 1-epoch run to 2 epochs;
* ``mvd parity`` gets ``--batch 8 --steps 1``.

A line that cannot run here says so in its comment (``# not here: <reason>``); the test counts
them and requires a reason. Every ```python block runs too (with the same path substitutions).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_e2e import SHRINK, mvd

pytestmark = [pytest.mark.torch, pytest.mark.mindspore, pytest.mark.e2e]

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_HERE = re.compile(r"#\s*not here:\s*\S")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def commands() -> list[tuple[str, bool]]:
    """(command, runnable here) for every ``mvd`` line of the README's bash blocks."""
    out = []
    for block in blocks("bash"):
        for raw in block.replace("\\\n", " ").splitlines():
            line = " ".join(raw.split())
            if not line.startswith("mvd "):
                continue
            out.append((line, not NOT_HERE.search(line)))
    return out


def _resnet50(path: Path, width: int, stages: tuple[int, ...]) -> Path:
    import torch

    from mvd_core.model.spec import trunk_spec

    rng = torch.Generator().manual_seed(0)
    state = {k: (torch.rand(shape, generator=rng) * 0.1 if len(shape) else torch.tensor(0))
             for k, shape in ((k, tuple(v.shape)) for k, v in trunk_spec(width, blocks=stages).items())}
    for k in list(state):
        if k.endswith("running_var"):
            state[k] = state[k] + 1.0
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(0, dtype=torch.int64)
    torch.save(state, path)
    return path


def _substitute(line: str, env: dict[str, str]) -> list[str]:
    line = line.split(" #", 1)[0]
    for token, value in env.items():
        line = line.replace(token, value)
    args = shlex.split(line)[1:]
    for i, a in enumerate(args[:-1]):
        if a in ("--device", "-d") and re.match(r"(?i)(ascend|gpu|cuda)", args[i + 1]):
            args[i + 1] = "CPU" if "mindspore" in args else "cpu"
    if args[0] == "train" and "--resume" not in args:
        args += [a for kv in SHRINK for a in ("--set", kv)] + ["--epochs", "1"]
    if args[0] == "train" and "--resume" in args and "--epochs" in args:
        args[args.index("--epochs") + 1] = "2"  # extend the shrunk (1-epoch) run by one epoch
    if args[0] == "parity":
        args += ["--batch", "8", "--steps", "1"]
    return args


def test_readme_commands_and_python_examples_run_as_written(tmp_path):
    cmds = commands()
    assert len(cmds) >= 8, "the README shows the CLI"
    skipped = [c for c, ok in cmds if not ok]
    assert len(skipped) <= len(cmds) // 3, f"too many README commands cannot run here: {skipped}"
    mvd("synth", "--layout", "sysu", "--out", str(tmp_path / "SYSU-MM01"), "--ids", "16", "-k", "2")
    mvd("synth", "--layout", "regdb", "--out", str(tmp_path / "RegDB"), "--ids", "44", "-k", "2")
    env = {
        "/data/SYSU-MM01": str(tmp_path / "SYSU-MM01"),
        "/data/RegDB": str(tmp_path / "RegDB"),
        "resnet50.pth": str(_resnet50(tmp_path / "resnet50.pth", 2, (2, 1, 1, 1))),
    }
    sub_env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_v": "3"}
    for line, ok in cmds:
        if ok:
            args = _substitute(line, env)
            r = subprocess.run([str(Path(sys.executable).with_name("mvd")), *args], cwd=tmp_path,
                               capture_output=True, text=True, timeout=900, env=sub_env)
            assert r.returncode == 0, f"README: {line}\n-> mvd {' '.join(args)}\n{r.stdout}\n{r.stderr[-3000:]}"
    # the Python examples, in the same folder (they use the runs the commands made)
    for code in blocks("python"):
        if NOT_HERE.search(code):
            continue
        for token, value in env.items():
            code = code.replace(token, value)
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                           text=True, timeout=900, env=sub_env)
        assert r.returncode == 0, f"README python block failed:\n{code}\n{r.stderr[-3000:]}"
