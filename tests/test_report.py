"""Per-query evaluation data (metrics.PerQuery, the run's <stem>.npz) against a plain
per-query loop, and the HTML run report."""

import numpy as np
import pytest

from mvd_core.eval.evaldata import read_eval_npz, write_eval_npz
from mvd_core.eval.metrics import TOP_K, evaluate
from mvd_core.eval.protocols import Report


def _plain(dist, q_pids, g_pids, q_cams, g_cams, sysu):
    """One query at a time: stable order, the SYSU cam-3/cam-2 exclusion, AP, INP, ranks."""
    out = {}
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        if sysu and q_cams[i] == 3:
            order = order[g_cams[order] != 2]
        match = g_pids[order] == q_pids[i]
        if not match.any():
            continue
        ranks = np.flatnonzero(match) + 1
        ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
        inp = len(ranks) / ranks[-1]
        if sysu:
            seen, first = [], None
            for p in g_pids[order]:
                if p not in seen:
                    seen.append(p)
                if p == q_pids[i]:
                    first = len(seen)
                    break
        else:
            first = ranks[0]
        out[i] = (ap, inp, first, ranks, order[:TOP_K])
    return out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("protocol", ["sysu", "regdb"])
def test_per_query_equals_a_plain_loop(protocol, ties):
    rng = np.random.default_rng(1)
    nq, ng = 40, 60
    q_pids, g_pids = rng.integers(0, 12, nq), rng.integers(0, 12, ng)
    q_cams, g_cams = rng.choice([3, 6], nq), rng.choice([1, 2, 4, 5], ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    dist[:, 5] = dist[:, 6]  # ties are broken by gallery order
    if ties:
        dist = rng.integers(0, 6, (nq, ng)).astype(np.float32)
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol=protocol, chunk=7)
    pq = res.per_query
    want = _plain(dist, q_pids, g_pids, q_cams, g_cams, protocol == "sysu")
    assert pq.query.tolist() == sorted(want)
    for v, q in enumerate(pq.query.tolist()):
        ap, inp, first, ranks, top = want[q]
        assert pq.ap[v] == pytest.approx(ap) and pq.inp[v] == pytest.approx(inp)
        assert pq.first_rank[v] == first
        assert pq.match_ranks[pq.offsets[v]:pq.offsets[v + 1]].tolist() == ranks.tolist()
        assert pq.top[v].tolist() == top.tolist()
    assert pq.ap.mean() == pytest.approx(res.mAP)
    np.testing.assert_allclose(pq.cmc()[:20], res.cmc)  # the full curve starts as the CMC
    assert pq.cmc()[-1] == 1.0


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    pids = np.repeat(np.arange(5), 3)
    rows = []
    for t in (1, 2):
        d = rng.random((15, 15))
        rows.append((t, evaluate(d, pids, pids, np.ones(15, int), 2 * np.ones(15, int), protocol="regdb")))
    rep = Report.from_results(rows, name="x")
    path = write_eval_npz(rep, tmp_path / "r.npz")
    name, trials = read_eval_npz(path)
    assert name == "x" and sorted(trials) == ["1", "2"]
    for (t, r) in rows:
        np.testing.assert_array_equal(trials[str(t)]["ap"], r.per_query.ap)
        np.testing.assert_array_equal(trials[str(t)]["match_ranks"], r.per_query.match_ranks)


# ------------------------------------------------------------------ the HTML run report

import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from mvd_cli.app import app  # noqa: E402
from mvd_core.eval.rankviz import BORDER, GREEN, RED, tile_origin  # noqa: E402
from mvd_core.eval.report_html import N_EXAMPLES, inline_images  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(sysu_root, tmp_path_factory):
    """`mvd train` (torch, tiny) writes the HTML report at the end and prints its path."""
    out = tmp_path_factory.mktemp("report-runs")
    sets = [f"data.root={sysu_root}", f"run.out={out}", "run.tag=r", "model.width=4",
            "data.height=64", "data.width=32", "schedule.steps_per_epoch=2", "data.workers=1",
            "eval.trials=2", "schedule.epochs=1"]
    r = runner.invoke(app, ["train", "--config", "tiny", "--backend", "torch", "--device", "cpu",
                            *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 0, r.output
    m = re.search(r"html report: (\S+)", r.output)
    assert m, r.output
    return out / "r", m.group(1)


@pytest.mark.torch
def test_train_writes_a_self_contained_report(trained):
    run, printed = trained
    page = (run / "report.html").read_text()
    assert printed == str(run / "report.html")
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch
    imgs = inline_images(page)
    assert len(imgs) == page.count("<img") == 2 + 2 * N_EXAMPLES
    for b in imgs:
        assert Image.open(io.BytesIO(b)).format == "PNG"
    rep = json.loads((run / "report.json").read_text())
    for t in rep["trials"]:
        assert f"<td>{t['mAP']:.2f}</td>" in page and f"<td>{t['R1']:.2f}</td>" in page
    assert "<h2>Parity</h2>" not in page


@pytest.mark.torch
def test_ranked_lists_of_best_and_worst(trained):
    from mvd_core.config import load_config
    from mvd_core.data.sets import load_test

    run, _ = trained
    page = (run / "report.html").read_text()
    name, trials = read_eval_npz(run / "report.npz")
    data = next(iter(trials.values()))
    order = np.lexsort((data["first_rank"], -data["ap"]))
    test = load_test(load_config(str(run / "config.yaml")).data)
    pics = inline_images(page)[2:]
    for pic_bytes, v in zip(pics, [*order[:N_EXAMPLES], *order[::-1][:N_EXAMPLES]]):
        pic = Image.open(io.BytesIO(pic_bytes)).convert("RGB")
        q = int(data["query"][v])
        for k, j in enumerate(data["top"][v].tolist(), start=1):
            want = GREEN if test.gallery.pids[j] == test.query.pids[q] else RED
            assert pic.getpixel((tile_origin(k, 64) + BORDER // 2, 40)) == want
    assert f"query {int(data['query'][order[0]])} " in page


@pytest.mark.torch
def test_report_command_with_parity_and_errors(trained, tmp_path):
    run, _ = trained
    (run / "parity-test.json").write_text(json.dumps({
        "backends": ["mindspore", "torch"], "passed": False,
        "rows": [{"section": "forward", "name": "v_obs.feat", "max_abs": 1e-3, "rel": 2e-3,
                  "cosine": 0.999, "tolerance": "forward", "passed": False}]}))
    out = tmp_path / "page.html"
    r = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "<h2>Parity</h2>" in page and "v_obs.feat" in page and "FAIL" in page
    (run / "parity-test.json").unlink()
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no such run folder" in r.output


# ------------------------------------------------------------------ TensorBoard event files


def _events(folder):
    """(tag, step, value) of every scalar in the TFRecord event files (read by hand)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = []
    for f in sorted(folder.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.append((v.tag, ev.step, v.simple_value))
    return out


@pytest.mark.torch
def test_tensorboard_events_follow_the_log(trained):
    run, _ = trained
    events = _events(run / "tensorboard")
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "total" in r]
    for k in ("total", "id", "tri", "vsd", "vcd"):
        got = [(s, v) for t, s, v in events if t == f"loss/{k}"]
        assert got == [(r["global_step"], pytest.approx(r[k], rel=1e-6)) for r in steps]
    assert [s for t, s, _ in events if t == "train/lr"] == [r["global_step"] for r in steps]
    final = [r for r in recs if r.get("eval") == "test"][-1]
    (m,) = [v for t, s, v in events if t == "eval/test/mAP"]
    assert m == pytest.approx(final["mAP"], rel=1e-6)


@pytest.mark.torch
def test_train_no_html(sysu_root, tmp_path):
    sets = [f"data.root={sysu_root}", f"run.out={tmp_path}", "run.tag=n", "model.width=4",
            "data.height=64", "data.width=32", "schedule.steps_per_epoch=1", "data.workers=1",
            "eval.trials=1", "schedule.epochs=1"]
    r = runner.invoke(app, ["train", "--config", "tiny", "--no-html", *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 0, r.output
    assert "html report" not in r.output and not (tmp_path / "n" / "report.html").exists()
    assert (tmp_path / "n" / "report.json").exists()
