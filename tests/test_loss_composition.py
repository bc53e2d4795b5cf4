"""The MVD loss composition (mvd_core.model.losses.compose) is written once and is the one both
backends run: a fake backend whose primitives return symbols records which primitive each term
calls, on which taps, with which constants and weights; the expectation is a table written out
by hand from SPEC §3 below, not the code's own tables."""

from __future__ import annotations

import dataclasses
import os

import pytest

from mvd_core.config import LossConfig
from mvd_core.errors import ConfigError
from mvd_core.interface import TAP_NAMES
from mvd_core.model import losses as shared


@dataclasses.dataclass(frozen=True)
class Sym:
    """A linear combination of primitive calls: {call: coefficient}."""

    coef: tuple[tuple[tuple, float], ...]

    @staticmethod
    def call(*key) -> Sym:
        return Sym(((key, 1.0),))

    def as_dict(self) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for k, c in self.coef:
            out[k] = out.get(k, 0.0) + c
        return out

    def __add__(self, other: Sym) -> Sym:
        return Sym(self.coef + other.coef)

    def __rmul__(self, w: float) -> Sym:
        assert isinstance(w, float)
        return Sym(tuple((k, w * c) for k, c in self.coef))


class FakePrimitives:
    """The LossPrimitives protocol, returning symbols; tap "tensors" are the tap names."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _rec(self, *key) -> Sym:
        self.calls.append(key)
        return Sym.call(*key)

    def cross_entropy(self, logits, labels, label_smoothing):
        assert labels == "labels"
        return self._rec("ce", logits, label_smoothing)

    def batch_hard_triplet(self, feats, labels, margin):
        assert labels == "labels"
        return self._rec("triplet", feats, margin)

    def ranked_list_loss(self, feats, labels, modality, m1, m2, a1, a2):
        assert (labels, modality) == ("labels", "modality")
        return self._rec("rll", feats, m1, m2, a1, a2)

    def kl_div(self, teacher_logits, student_logits, mode, temperature):
        return self._rec("kl", teacher_logits, student_logits, mode, temperature)

    def sinkhorn_cost(self, p, q, eps, max_iter, thresh, lse):
        return self._rec("sinkhorn", p, q, eps, max_iter, thresh, lse)

    def softmax(self, logits):
        return ("softmax", logits)


# ------------------------------------------------------------------ the hand-written table (SPEC §3)

PRESETS = {  # term: weight in the total
    "id": {"id": 1.0},
    "id+tri": {"id": 1.0, "tri": 1.0},
    "id+tri+kldiv": {"id": 1.0, "tri": 1.0, "vsd": 1.0, "vcd": 1.0},
    "mvd-pt": {"id": 1.0, "tri": 1.0, "cml": 8.0, "vsd": 2.0, "vcd": 2.0},
}
BRANCH = [("i_obs", 0.5), ("i_rep", 0.5), ("v_obs", 0.5), ("v_rep", 0.5),
          ("i_ms_obs", 0.25), ("i_ms_rep", 0.25), ("v_ms_obs", 0.25), ("v_ms_rep", 0.25)]
METRIC_TAP = {"i_obs": "i_obs.feat", "v_obs": "v_obs.feat", "i_ms_obs": "i_ms_obs.feat",
              "v_ms_obs": "v_ms_obs.feat", "i_rep": "i_rep.z", "v_rep": "v_rep.z",
              "i_ms_rep": "i_ms_rep.z", "v_ms_rep": "v_ms_rep.z"}


def expected(term: str, cfg: LossConfig) -> dict[tuple, float]:
    if term == "id":
        return {("ce", f"{o}.logits", cfg.label_smoothing): w for o, w in BRANCH}
    if term == "tri" and cfg.triplet == "batch_hard":
        return {("triplet", METRIC_TAP[o], cfg.margin): w for o, w in BRANCH}
    if term == "tri":
        rll = (cfg.rll_m1, cfg.rll_m2, cfg.rll_a1, cfg.rll_a2)
        return {("rll", METRIC_TAP[o], *rll): w for o, w in BRANCH}
    if term == "vsd":  # each observation teaches its representation, at the temperature
        return {("kl", "i_obs.logits", "i_rep.logits", cfg.kl, cfg.temperature): 1.0,
                ("kl", "v_obs.logits", "v_rep.logits", cfg.kl, cfg.temperature): 1.0}
    if term == "vcd":  # across the shared views, no temperature
        return {("kl", "v_ms_obs.logits", "i_ms_rep.logits", cfg.kl, 1.0): 0.5,
                ("kl", "i_ms_obs.logits", "v_ms_rep.logits", cfg.kl, 1.0): 0.5}
    assert term == "cml"
    return {("sinkhorn", ("softmax", "i_obs.logits"), ("softmax", "v_obs.logits"),
             cfg.sinkhorn_eps, cfg.sinkhorn_iters, 0.1, cfg.cml_lse): 1.0}


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        assert got[k] == pytest.approx(w, rel=1e-12), k


CONFIGS = [
    LossConfig(preset=p) for p in PRESETS
] + [
    LossConfig(preset="mvd-pt", label_smoothing=0.1, triplet="ranked_list", kl="legacy",
               temperature=3.0, sinkhorn_eps=0.05, sinkhorn_iters=7, cml_lse="exact",
               rll_m1=0.7, rll_m2=0.8, rll_a1=1.9, rll_a2=1.7),
    LossConfig(preset="id+tri+kldiv", margin=0.5, temperature=2.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.preset}-{c.triplet}-{c.kl}")
def test_compose_asks_for_exactly_the_presets_terms(cfg: LossConfig) -> None:
    prims = FakePrimitives()
    plan = shared.loss_plan(cfg)
    values = shared.compose(prims, TAP_NAMES, "labels", "modality", plan)
    weights = PRESETS[cfg.preset]
    assert plan.names == (*weights, "total")  # term order: id, tri, cml, vsd, vcd
    assert len(values) == len(plan.names)
    total: dict[tuple, float] = {}
    for name, value in zip(plan.names, values, strict=True):
        if name == "total":
            _close(value.as_dict(), total)
            continue
        want = expected(name, cfg)
        _close(value.as_dict(), want)
        for k, c in want.items():
            total[k] = total.get(k, 0.0) + weights[name] * c
    # every primitive call feeds a term: nothing computed that the preset does not use
    assert sorted(map(repr, prims.calls)) == sorted(map(repr, total))


def test_mvd_loss_dict_and_missing_taps() -> None:
    cfg = LossConfig(preset="mvd-pt")
    out = {k: k for k in TAP_NAMES if k != "feat"}  # the test feature is not read
    got = shared.mvd_loss(FakePrimitives(), out, "labels", "modality", cfg)
    assert list(got) == ["id", "tri", "cml", "vsd", "vcd", "total"]
    _close(got["vcd"].as_dict(), expected("vcd", cfg))
    del out["v_ms_rep.logits"]
    with pytest.raises(KeyError, match="v_ms_rep.logits"):
        shared.mvd_loss(FakePrimitives(), out, "labels", "modality", cfg)


@pytest.mark.parametrize("key, value", [("preset", "mvd"), ("triplet", "lifted"),
                                        ("kl", "reverse"), ("cml_lse", "max")])
def test_plan_refuses_unknown_choices_in_one_line(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^loss.{key}: '{value}' is not one of [^\n]+$"):
        shared.loss_plan(dataclasses.replace(LossConfig(), **{key: value}))


# ------------------------------------------------------------------ both backends run it


class _Spy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prims: list[object] = []
        real = shared.compose

        def spy(prims, taps, labels, modality, plan):
            self.prims.append(prims)
            return real(prims, taps, labels, modality, plan)

        monkeypatch.setattr(shared, "compose", spy)


@pytest.mark.torch
def test_torch_backend_loss_is_the_shared_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from mvd_backends.torch import losses as tl

    spy = _Spy(monkeypatch)
    out = {k: torch.randn(8, 5) for k in TAP_NAMES}
    labels, modality = torch.arange(4).repeat(2), torch.tensor([0, 1] * 4)
    got = tl.mvd_loss(out, labels, modality, LossConfig(preset="mvd-pt"))
    assert spy.prims == [tl] and list(got) == ["id", "tri", "cml", "vsd", "vcd", "total"]


@pytest.mark.mindspore
def test_mindspore_loss_cell_is_the_shared_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ.setdefault("MVD_MS_THREADS", "1")
    pytest.importorskip("mindspore")
    import numpy as np
    from mindspore import Tensor

    from mvd_backends.mindspore import losses as L

    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(0)
    outs = tuple(Tensor(rng.standard_normal((8, 5)).astype(np.float32)) for _ in TAP_NAMES)
    labels = Tensor(np.repeat(np.arange(4), 2).astype(np.int32))
    modality = Tensor(np.tile([0, 1], 4).astype(np.int32))
    cfg = LossConfig(preset="id+tri+kldiv")
    cell = L._MVDLoss(cfg)  # what the backend compiles into its train step
    values = cell(outs, labels, modality)
    assert spy.prims == [L] and cell.terms == ("id", "tri", "vsd", "vcd", "total")
    assert values.shape == (5,)
    host = L._MVDLoss(cfg, host_stop=True)
    host(outs, labels, modality)
    assert spy.prims[-1].kl_div is L.kl_div and spy.prims[-1].sinkhorn_cost is not L.sinkhorn_cost


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.torch),
                                     pytest.param("mindspore", marks=pytest.mark.mindspore)])
def test_backend_supplies_every_primitive_with_the_protocols_parameters(backend: str) -> None:
    import importlib
    import inspect

    os.environ.setdefault("MVD_MS_THREADS", "1")
    pytest.importorskip(backend)
    module = importlib.import_module(f"mvd_backends.{backend}.losses")
    names = [n for n, f in vars(shared.LossPrimitives).items()
             if inspect.isfunction(f) and not n.startswith("_")]
    assert sorted(names) == ["batch_hard_triplet", "cross_entropy", "kl_div", "ranked_list_loss",
                             "sinkhorn_cost", "softmax"]
    for name in names:
        want = list(inspect.signature(getattr(shared.LossPrimitives, name)).parameters)[1:]
        assert list(inspect.signature(getattr(module, name)).parameters) == want, name
