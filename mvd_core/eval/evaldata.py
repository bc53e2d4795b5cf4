"""Per-query evaluation data of a report, kept next to its JSON (``<stem>.npz``), so any plot
can be made later without the model: per trial, every valid query's AP and INP, the rank of its
first match (as the CMC counts it), the rank of every true match, its top-K gallery items and
the full CMC curve.

Keys: ``<trial>/<field>`` with the fields of :class:`mvd_core.eval.metrics.PerQuery` plus ``cmc``
(``trial`` = the report's row label: the SYSU-MM01 seed, the RegDB split or ``val``); and
``name`` (the report's name). ``top`` holds rows of the test set's gallery (SYSU-MM01: of the
whole visible test set, whatever the trial's draw).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.errors import MvdError


def report_arrays(report: Any) -> dict[str, np.ndarray]:
    """Flat ``<trial>/<field>`` arrays of every row that carries per-query data."""
    out: dict[str, np.ndarray] = {"name": np.array(report.name)}
    for label, result in report.rows:
        if result.per_query is None:
            continue
        for k, v in result.per_query.arrays().items():
            out[f"{label}/{k}"] = v
    return out


def write_eval_npz(report: Any, path: str | os.PathLike[str]) -> Path | None:
    """Write :func:`report_arrays` atomically; None (nothing written) if no row has any."""
    from mvd_core.config import atomic_write_bytes

    arrays = report_arrays(report)
    if len(arrays) == 1:
        return None
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def read_eval_npz(path: str | os.PathLike[str]) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """(report name, ``{trial: {field: array}}``) of a file written by :func:`write_eval_npz`."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        raise MvdError(f"{p}: not a readable per-query evaluation file ({e})") from None
    trials: dict[str, dict[str, np.ndarray]] = {}
    for k, v in flat.items():
        if "/" in k:
            t, f = k.split("/", 1)
            trials.setdefault(t, {})[f] = v
    return str(flat.get("name", np.array(p.stem))), trials
