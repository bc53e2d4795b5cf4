"""A run's step/evaluation log (``log.jsonl``, one JSON record per line, each with a ``time``
stamp) and its console progress."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvd_core.config import atomic_write_text

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]


class RunLog:
    """Appends records to ``log.jsonl``. On resume, records past the checkpoint's global step
    (which will be re-done) are dropped first; a fresh run starts an empty file. Extra sinks
    (e.g. a TensorBoard writer) receive every record too."""

    def __init__(self, path: Path, resume_step: int | None, sinks: tuple[Sink, ...] = (),
                 tensorboard: bool = True) -> None:
        self.path = path
        self.sinks = list(sinks)
        if tensorboard:  # event files next to the log (mvd_core.train.tensorboard)
            from mvd_core.train.tensorboard import tensorboard_sink

            tb = tensorboard_sink(path.parent, resume_step)
            if tb is not None:
                self.sinks.append(tb)
        if resume_step is not None and path.exists():
            keep = []
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if rec.get("global_step", 0) <= resume_step:
                    keep.append(line)
            atomic_write_text(path, "".join(k + "\n" for k in keep))
            self.f = open(path, "a")
        else:
            self.f = open(path, "w")

    def write(self, rec: dict[str, Any]) -> dict[str, Any]:
        rec = {"time": round(time.time(), 3), **rec}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        for sink in self.sinks:
            sink(rec)
        return rec

    def close(self) -> None:
        self.f.close()
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a ``log.jsonl`` (a line cut by a kill is skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class ConsoleProgress:
    """A live tqdm bar per epoch on a terminal (:mod:`mvd_core.progress`), a log line every
    ``every`` steps otherwise."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, every: int) -> None:
        self.total_epochs = total_epochs
        self.steps = steps_per_epoch
        self.every = max(1, every)
        self.tty = sys.stderr.isatty()
        self._bar: Any = None

    def update(self, epoch: int, step: int, lr: float, losses: dict[str, float], ips: float) -> None:
        terms = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        if self.tty:
            from mvd_core.progress import EpochBar

            if self._bar is None or step == 1:
                if self._bar is not None:
                    self._bar.close()
                self._bar = EpochBar(epoch, self.total_epochs, self.steps)
            self._bar.step(f"lr {lr:.2e} {terms} {ips:.0f} img/s")
            if step == self.steps:
                self._bar.close()
                self._bar = None
        elif step % self.every == 0 or step == self.steps:
            log.info("epoch %d/%d step %d/%d lr %.2e %s %.0f img/s",
                     epoch, self.total_epochs, step, self.steps, lr, terms, ips)
