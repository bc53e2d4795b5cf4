"""Load a data set by ``data.dataset`` name (sysu, regdb, llcm, manifest): the training and test sets
the driver, the demo and the API read."""

from __future__ import annotations

from pathlib import Path

from mvd_core.config import Config, DataConfig, EvalConfig
from mvd_core.data.base import TestSet, TrainSet
from mvd_core.data.regdb import load_regdb_test, load_regdb_train
from mvd_core.data.sysu import find_sysu_cache, load_sysu_cache, load_sysu_raw_train, load_sysu_test
from mvd_core.errors import DataError


def _root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DataError("data.root: not set (expected the data set folder, e.g. --set data.root=data/synth-sysu)")
    return Path(cfg.root)


def load_train(cfg: DataConfig) -> TrainSet:
    """The training set of ``cfg.dataset``: SYSU-MM01 from its cache (``cfg.cache``, or
    ``cfg.root`` when the four .npy files are there) or else its raw folder; RegDB split
    ``cfg.trial``; LLCM its idx/train_{vis,nir}.txt. Images are resized to ``(cfg.height, cfg.width)`` when loaded."""
    if cfg.dataset == "sysu":
        if not cfg.cache:
            _root(cfg)
        cache = find_sysu_cache(cfg)
        if cache is not None:
            return load_sysu_cache(cache)
        return load_sysu_raw_train(_root(cfg))
    if cfg.dataset == "regdb":
        return load_regdb_train(_root(cfg), cfg.trial)
    if cfg.dataset == "llcm":
        from mvd_core.data.llcm import load_llcm_train

        return load_llcm_train(_root(cfg))
    if cfg.dataset == "manifest":  # your own data: a CSV (mvd_core.data.manifest)
        from mvd_core.data.manifest import load_manifest_train

        return load_manifest_train(_root(cfg), cfg.cache or None, (cfg.height, cfg.width), cfg.resize)
    raise DataError(f"data.dataset: expected sysu, regdb, llcm or manifest, got {cfg.dataset!r}")


def direction_of(cfg: Config) -> str:
    """The direction of the run's test set: ``eval.llcm_mode`` on LLCM, ``eval.regdb_mode`` on
    RegDB and a manifest (SYSU-MM01 has one: infrared queries)."""
    return _direction(cfg.data.dataset, cfg.eval)


def _direction(dataset: str, ev: EvalConfig) -> str:
    return ev.llcm_mode if dataset == "llcm" else ev.regdb_mode


def load_test(cfg: DataConfig, direction: str | None = None) -> TestSet:
    """The test set of ``cfg.dataset`` (SYSU-MM01: always the raw folder ``cfg.root``; RegDB:
    split ``cfg.trial``). ``direction`` (``v2t`` | ``t2v``) for RegDB, LLCM and a manifest; None:
    the data set's default (the default :class:`EvalConfig`'s: LLCM ``t2v``, the others ``v2t``)."""
    if direction is None:
        direction = _direction(cfg.dataset, EvalConfig())
    if cfg.dataset == "sysu":
        return load_sysu_test(_root(cfg))
    if cfg.dataset == "regdb":
        return load_regdb_test(_root(cfg), cfg.trial, direction)
    if cfg.dataset == "llcm":
        from mvd_core.data.llcm import load_llcm_test

        return load_llcm_test(_root(cfg), direction)
    if cfg.dataset == "manifest":
        from mvd_core.data.manifest import load_manifest_test

        return load_manifest_test(_root(cfg), direction)
    raise DataError(f"data.dataset: expected sysu, regdb, llcm or manifest, got {cfg.dataset!r}")
