"""`mvd eval`: every test protocol of a checkpoint's data set (SYSU-MM01 trials or RegDB).

Accepts the public test scripts' flags too (``--dataset``, ``--data-path``, ``--resume``,
``--device-target``/``--gpu``/``--device-id``, ``--test-batch``, ``--img-h``/``--img-w``,
``--sysu_mode``, ``--regdb_mode v2i|i2v``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mvd_cli.common import (
    BackendOpt,
    ConfigOpt,
    MsModeOpt,
    SetOpt,
    choice_option,
    cli_errors,
    device_help,
    flag_settings,
)
from mvd_core.config import field_choice

#: RegDB direction names: the config's and the public scripts' (v2i = visible to infrared)
REGDB_MODES = {**{m: m for m in field_choice("eval.regdb_mode").values}, "v2i": "v2t", "i2v": "t2v"}
#: the options that each set one config key: parameter name -> key (typed values, before --set)
CONFIG_FLAGS = {"dataset": "data.dataset", "data_path": "data.root", "trial": "data.trial",
                "trials": "eval.trials", "test_batch": "eval.batch_size", "img_h": "data.height",
                "img_w": "data.width"}
DatasetOpt = choice_option("data.dataset", "--dataset", default="the run's", more="Any case (SYSU, RegDB).",
                           case_sensitive=False)
SysuModeOpt = choice_option("eval.sysu_mode", "--sysu-mode", "--sysu_mode", default="all and indoor",
                            more="Only this one.")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def eval_device(device: Optional[str], gpu: Optional[str]) -> Optional[str]:
    """``--device`` with the public scripts' ``--gpu N`` / ``--device-id N`` index: the index
    applies to a GPU device (and alone implies one); a CPU device ignores it, as those scripts do."""
    if gpu is None:
        return device
    from mvd_core.errors import MvdError

    if not gpu.strip().isdigit():
        raise MvdError(f"--gpu {gpu!r}: expected one device index (e.g. 0)")
    if device is None:
        return f"GPU:{int(gpu)}"
    kind = device.split(":")[0].lower()
    if kind == "cpu":
        return device
    return f"{device.split(':')[0]}:{int(gpu)}"


@cli_errors
def evaluate(
    resume: Annotated[Path, typer.Option("--resume", "-r", help="Checkpoint file or run folder to evaluate.")],
    config: ConfigOpt = None,
    backend: BackendOpt = None,
    device: Annotated[Optional[str], typer.Option("--device", "-d", "--device-target", help=device_help("(default: the run's)"))] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", "--device-id", help="GPU index (the public scripts' flag).")] = None,
    sets: SetOpt = None,
    ms_mode: MsModeOpt = None,
    dataset: DatasetOpt = None,
    data_path: Annotated[Optional[Path], typer.Option("--data-path", help="Data set root (default: the run's).")] = None,
    sysu_mode: SysuModeOpt = None,
    regdb_mode: Annotated[Optional[str], typer.Option("--regdb-mode", "--regdb_mode", help=f"Only this RegDB / LLCM direction: {'|'.join(REGDB_MODES)}; default both.")] = None,
    trial: Annotated[Optional[int], typer.Option("--trial", help="RegDB split 1..10 (default: the run's).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="SYSU-MM01 gallery draws (default 10).")] = None,
    multi_shot: Annotated[bool, typer.Option("--multi-shot", help="SYSU-MM01: multi-shot galleries as well.")] = False,
    test_batch: Annotated[Optional[int], typer.Option("--test-batch", help="Images per feature-extraction batch.")] = None,
    img_h: Annotated[Optional[int], typer.Option("--img-h", help="Test image height (default: the run's).")] = None,
    img_w: Annotated[Optional[int], typer.Option("--img-w", help="Test image width (default: the run's).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the reports (default: the run's folder).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write all reports as one JSON file here.")] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Test feature = mean of the image's and its mirror's, then normalised.")] = False,
    rerank: Annotated[bool, typer.Option("--rerank", help="k-reciprocal re-ranking (Zhong et al. 2017: k1=20, k2=6, lambda=0.3).")] = False,
) -> None:
    """Evaluate a checkpoint on every protocol of its data set: one report per protocol."""
    given = {k: v for k, v in locals().items() if k in CONFIG_FLAGS}  # the options as typer parsed them
    from mvd_core.config import Setting, atomic_write_text, load_config
    from mvd_core.errors import MvdError
    from mvd_core.train.driver import evaluate_checkpoint

    extra = flag_settings(CONFIG_FLAGS, given)
    regdb_modes: tuple[str, ...] = field_choice("eval.regdb_mode").values
    if regdb_mode is not None:
        if regdb_mode not in REGDB_MODES:
            raise MvdError(f"--regdb-mode {regdb_mode!r}: expected one of {', '.join(REGDB_MODES)}")
        regdb_modes = (REGDB_MODES[regdb_mode],)
        extra.append(Setting("eval.regdb_mode", regdb_modes[0], "--regdb-mode"))
    evaluation = evaluate_checkpoint(
        resume,
        extra + list(sets or []),
        backend=backend.value if backend is not None else None,
        device=eval_device(device, gpu),
        ms_mode=ms_mode.value if ms_mode is not None else None,
        config=load_config(config) if config is not None else None,
        sysu_modes=(sysu_mode.value,) if sysu_mode is not None else None,
        shots=("single", "multi") if multi_shot else ("single",),
        regdb_modes=regdb_modes,
        flip=flip,
        rerank=rerank,
    )
    paths = evaluation.write(out)
    for report in evaluation.reports.values():
        typer.echo(report.to_table())
        typer.echo("")
    if json_out is not None:
        blob = {key: r.to_dict() for key, r in evaluation.reports.items()}
        atomic_write_text(json_out, json.dumps(blob, indent=2) + "\n")
        paths.append(json_out)
    for p in paths:
        typer.echo(f"report: {p}")
