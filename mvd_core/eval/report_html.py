"""One self-contained HTML page per run (``<run>/report.html``): no network is needed to view it,
every picture is an inline base64 PNG.

Sections: the run (recipe, backend, data, steps, wall time from the log's time stamps); loss
and learning-rate curves from ``log.jsonl``; for every report in the folder (``report.json``,
``eval-*.json``) its per-trial table and CMC curve (the full curve from the per-query ``.npz``
when there, else the four reported ranks); ranked-list pictures of the best and worst queries
of the final test report (from ``report.npz`` and the test set on disk); the parity table when
a ``parity*.json`` is in the folder. Matplotlib draws (its Agg canvas directly, no pyplot: no
global backend state is touched).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.errors import MvdError

log = logging.getLogger(__name__)

#: queries shown at each end (best, worst) of the final report
N_EXAMPLES = 3
LOSS_KEYS = ("id", "tri", "cml", "vsd", "vcd", "total")

_CSS = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} .fail{color:#b00;font-weight:bold} .note{color:#666;font-size:.9em}
img{max-width:100%} .rl{margin:.3em 0}
"""


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _figure(w: float = 7.0, h: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


# --------------------------------------------------------------------------------- sections


def _training(records: list[dict[str, Any]]) -> str:
    steps = [r for r in records if "total" in r and "eval" not in r]
    if not steps:
        return "<p class=note>no training steps in log.jsonl</p>"
    x = np.array([r.get("global_step", i + 1) for i, r in enumerate(steps)])
    fig = _figure()
    ax = fig.add_subplot(1, 2, 1)
    for k in LOSS_KEYS:
        ys = [r.get(k) for r in steps]
        if any(y is not None for y in ys):
            ax.plot(x, [np.nan if y is None else y for y in ys], label=k, lw=1.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("losses")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(x, [r.get("lr", np.nan) for r in steps], color="C3", lw=1.2)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate")
    ax2.set_title("learning rate")
    ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    parts = [_img(_png(fig), "loss and learning-rate curves")]
    ips = [r["images_per_s"] for r in steps if "images_per_s" in r]
    times = [r["time"] for r in records if "time" in r]
    facts = [f"{len(steps)} steps"]
    if ips:
        facts.append(f"median {np.median(ips):.1f} images/s")
    if len(times) > 1:
        facts.append(f"{(max(times) - min(times)) / 60:.1f} min from the first to the last record")
    evals = [r for r in records if "eval" in r]
    parts.append(f"<p>{', '.join(facts)}</p>")
    if evals:
        parts.append(_table(["epoch", "eval", "R1", "mAP", "mINP"],
                            [[r.get("epoch"), r.get("eval"), r.get("R1"), r.get("mAP"), r.get("mINP")]
                             for r in evals]))
    return "\n".join(parts)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.2f}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    th = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{_fmt(v)}</td>" for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _reports(run_dir: Path) -> list[tuple[str, dict[str, Any], Path]]:
    out = []
    for p in [run_dir / "report.json", *sorted(run_dir.glob("eval-*.json"))]:
        if p.exists():
            try:
                out.append((p.stem, json.loads(p.read_text()), p.with_suffix(".npz")))
            except json.JSONDecodeError:
                log.warning("%s: not valid JSON; left out of the report", p)
    return out


def _evaluation(reports: list[tuple[str, dict[str, Any], Path]]) -> str:
    from mvd_core.eval.evaldata import read_eval_npz

    if not reports:
        return "<p class=note>no evaluation report in this run folder</p>"
    cols = ["R1", "R5", "R10", "R20", "mAP", "mINP"]
    parts = []
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, (stem, rep, npz) in enumerate(reports):
        rows = [[t["trial"], *[t.get(c) for c in cols], t.get("num_valid")] for t in rep["trials"]]
        rows.append(["mean", *[rep["mean"].get(c) for c in cols], None])
        rows.append(["std", *[rep["std"].get(c) for c in cols], None])
        parts.append(f"<h3>{html.escape(rep.get('name', stem))} <span class=note>({stem}.json)</span></h3>")
        parts.append(_table(["trial", *cols, "valid"], rows))
        label = f"{stem}: {rep.get('name', '')}"
        if npz.exists():
            _, trials = read_eval_npz(npz)
            curves = [t["cmc"] for t in trials.values() if "cmc" in t]
            if curves:
                n = min(len(c) for c in curves)
                stack = 100 * np.stack([c[:n] for c in curves])
                ranks = np.arange(1, n + 1)
                ax.plot(ranks, stack.mean(0), label=label, color=f"C{i}", lw=1.5)
                if len(curves) > 1:
                    ax.fill_between(ranks, stack.min(0), stack.max(0), color=f"C{i}", alpha=0.15)
                continue
        pts = [(k, rep["mean"].get(f"R{k}")) for k in (1, 5, 10, 20) if rep["mean"].get(f"R{k}") is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label + " (reported ranks)", color=f"C{i}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC (mean over trials; band: min-max)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _img(_png(fig), "CMC curves") + "\n" + "\n".join(parts)


def _examples(run_dir: Path, cfg: Any) -> str:
    """Ranked lists of the best and worst queries of the final report's first trial."""
    from mvd_core.data.sets import direction_of, load_test
    from mvd_core.eval.evaldata import read_eval_npz
    from mvd_core.eval.rankviz import image_of, ranked_list_picture

    npz = run_dir / "report.npz"
    if not npz.exists() or cfg is None:
        return "<p class=note>no per-query data (report.npz) for the final report</p>"
    name, trials = read_eval_npz(npz)
    if not trials or not len(next(iter(trials.values())).get("ap", ())):
        return "<p class=note>no valid query in the final report</p>"
    trial, data = next(iter(trials.items()))
    try:
        test = load_test(cfg.data, direction_of(cfg))
    except MvdError as e:
        return f"<p class=note>test images not readable ({html.escape(str(e))}): no ranked lists</p>"
    q, g = test.query, test.gallery
    ap = data["ap"]
    order = np.lexsort((data["first_rank"], -ap))  # best first
    n = min(N_EXAMPLES, len(order))
    picks = [("best", v) for v in order[:n]] + [("worst", v) for v in order[::-1][:n]]
    parts = [f"<p>{html.escape(name)}, trial {html.escape(trial)}: the {n} queries with the highest "
             f"and the {n} with the lowest average precision; green = same identity, red = another.</p>"]
    for kind, v in picks:
        qi = int(data["query"][v])
        top = data["top"][v].tolist()
        pic = ranked_list_picture(
            image_of(q, qi), [image_of(g, j) for j in top],
            matches=[bool(g.pids[j] == q.pids[qi]) for j in top],
            query_label=f"id {q.pids[qi]}", height=128, width=64,
        )
        buf = io.BytesIO()
        pic.save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        parts.append(f"<div class=rl><b>{kind}</b>: query {qi} (id {q.pids[qi]}), AP "
                     f"{100 * ap[v]:.1f}%, first match at rank {int(data['first_rank'][v])}<br>"
                     f"{_img(b64, f'{kind} query {qi}')}</div>")
    return "\n".join(parts)


def _parity(run_dir: Path) -> str:
    files = sorted(run_dir.glob("parity*.json"))
    if not files:
        return ""
    parts = ["<h2>Parity</h2>"]
    for p in files:
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        rows = data.get("rows", [])
        worst: dict[str, dict[str, Any]] = {}
        for r in rows:
            s = r.get("section", "?")
            key = (not r.get("passed", True), r.get("rel", 0.0) or 0.0)
            if s not in worst or key > (not worst[s].get("passed", True), worst[s].get("rel", 0.0) or 0.0):
                worst[s] = r
        verdict = "PASS" if data.get("passed") else '<span class=fail>FAIL</span>'
        parts.append(f"<p>{html.escape(p.name)}: {' vs '.join(map(str, data.get('backends', [])))}, "
                     f"{len(rows)} comparisons, {sum(not r.get('passed', True) for r in rows)} failed: {verdict}</p>")
        parts.append(_table(
            ["section", "worst row", "max |Δ|", "rel err", "cosine", "tolerance", "pass"],
            [[s, r.get("name"), r.get("max_abs"), r.get("rel"), r.get("cosine"), r.get("tolerance"),
              "ok" if r.get("passed", True) else "FAIL"] for s, r in worst.items()], left=2))
    return "\n".join(parts)


# --------------------------------------------------------------------------------- page


def build_run_report(run_dir: str | os.PathLike[str]) -> str:
    """The HTML text of a run folder's report."""
    from mvd_core.config import load_config

    run = Path(run_dir)
    if not run.is_dir():
        raise MvdError(f"{run}: no such run folder")
    cfg = None
    if (run / "config.yaml").exists():
        try:
            cfg = load_config(str(run / "config.yaml"))
        except MvdError as e:
            log.warning("%s: %s", run / "config.yaml", e)
    records = _read_jsonl(run / "log.jsonl")
    reports = _reports(run)
    if not records and not reports:
        raise MvdError(f"{run}: neither log.jsonl nor a report: not a run folder")
    facts = []
    if cfg is not None:
        facts = [("recipe", cfg.recipe), ("backend", f"{cfg.run.backend} ({cfg.run.device})"),
                 ("data set", f"{cfg.data.dataset} {cfg.data.root}"),
                 ("loss", cfg.loss.preset), ("epochs", cfg.schedule.epochs),
                 ("image", f"{cfg.data.height}x{cfg.data.width}"), ("model width", cfg.model.width)]
    body = [
        f"<h1>MVD run {html.escape(run.name)}</h1>",
        _table(["", ""], [[k, v] for k, v in facts], left=2) if facts else "",
        "<h2>Training</h2>", _training(records),
        "<h2>Evaluation</h2>", _evaluation(reports),
        "<h2>Best and worst queries</h2>", _examples(run, cfg),
        _parity(run),
    ]
    return ("<!DOCTYPE html>\n<html><head><meta charset=utf-8>"
            f"<title>MVD run {html.escape(run.name)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_run_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write :func:`build_run_report` to ``out`` (default ``<run>/report.html``) atomically."""
    from mvd_core.config import atomic_write_text

    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, build_run_report(run_dir))
    return path


def inline_images(page: str) -> list[bytes]:
    """The PNG bytes of every inline image of a page (to look at them or test them)."""
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
