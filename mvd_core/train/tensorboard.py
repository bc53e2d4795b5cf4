"""TensorBoard event files for a run (``<run>/tensorboard/``), written by tensorboardX — a
framework-free writer, so both backends log the same way — as a sink of the run log
(:class:`mvd_core.train.runlog.RunLog`).

Scalars, x = the global step: ``loss/<term>`` (id, tri, cml, vsd, vcd, total), ``train/lr``,
``train/images_per_s``, and ``eval/<kind>/<metric>`` (R1, R5, R10, R20, mAP, mINP; kind =
val, test-monitor, test) for evaluation records. On resume the writer purges the events past
the checkpoint's step (they are re-done), as the run log drops its records.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def prefer_python_protobuf() -> None:
    """Before importing a protobuf user (tensorboardX, onnx): choose protobuf's pure-Python
    implementation, as ``import mindspore`` does (``_set_pb_env``) before loading its own
    descriptors. The implementation is fixed by the first protobuf import of the process; had
    tensorboardX chosen the default (upb) one, a later ``import mindspore`` would fail with
    "Descriptors cannot be created directly". An explicit user setting is kept."""
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

#: sub-folder of the run folder holding the event files
FOLDER = "tensorboard"
_LOSSES = ("id", "tri", "cml", "vsd", "vcd", "total")
_TRAIN = ("lr", "images_per_s")
_METRICS = ("R1", "R5", "R10", "R20", "mAP", "mINP")


class TensorBoardSink:
    """``sink(record)`` for every run-log record; ``close()`` flushes the event file."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        prefer_python_protobuf()
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), purge_step=purge_step, flush_secs=30)

    def __call__(self, rec: dict[str, Any]) -> None:
        step = int(rec.get("global_step", 0))
        wall = rec.get("time")
        if "eval" in rec:
            for k in _METRICS:
                if isinstance(rec.get(k), (int, float)):
                    self.writer.add_scalar(f"eval/{rec['eval']}/{k}", rec[k], step, walltime=wall)
            return
        for group, keys in (("loss", _LOSSES), ("train", _TRAIN)):
            for k in keys:
                if isinstance(rec.get(k), (int, float)):
                    self.writer.add_scalar(f"{group}/{k}", rec[k], step, walltime=wall)

    def close(self) -> None:
        self.writer.close()


def tensorboard_sink(run_dir: Path, resume_step: int | None) -> TensorBoardSink | None:
    """A sink writing to ``<run_dir>/tensorboard``; None (and one log line) if tensorboardX is
    not installed."""
    try:
        return TensorBoardSink(Path(run_dir) / FOLDER, None if resume_step is None else resume_step + 1)
    except ImportError:
        log.info("tensorboardX is not installed: no TensorBoard event files (pip install tensorboardX)")
        return None
