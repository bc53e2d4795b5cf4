"""The one progress display of long jobs (training epochs, feature extraction, preprocessing):
tqdm bars on stderr, with rate and ETA, shown only on a terminal (``disable=None``: a log file or
CI output gets the jobs' own log lines instead)."""

from __future__ import annotations

import sys
from typing import Any


def _tqdm(**kw: Any) -> Any:
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=None, dynamic_ncols=True, mininterval=0.2, **kw)


class Bar:
    """A ``(done, total)`` callback drawing one bar; it closes itself when ``done >= total``."""

    def __init__(self, label: str, unit: str = "img") -> None:
        self.label, self.unit = label, unit
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = _tqdm(total=total, desc=self.label, unit=self.unit)
        self._bar.update(max(0, done - self._bar.n))
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochBar:
    """One bar per training epoch: steps, rate, ETA and the latest loss terms."""

    def __init__(self, epoch: int, epochs: int, steps: int) -> None:
        self._bar = _tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step")

    def step(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
