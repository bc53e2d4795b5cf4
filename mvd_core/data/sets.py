"""Load a data set by ``data.dataset`` name (sysu, regdb, llcm, manifest): the training and test sets
the driver, the demo and the API read."""

from __future__ import annotations

from pathlib import Path

from mvd_core.config import DataConfig
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


def load_test(cfg: DataConfig, regdb_mode: str = "v2t") -> TestSet:
    """The test set of ``cfg.dataset`` (SYSU-MM01: always the raw folder ``cfg.root``; RegDB:
    split ``cfg.trial`` in direction ``regdb_mode``; LLCM: direction ``regdb_mode``)."""
    if cfg.dataset == "sysu":
        return load_sysu_test(_root(cfg))
    if cfg.dataset == "regdb":
        return load_regdb_test(_root(cfg), cfg.trial, regdb_mode)
    if cfg.dataset == "llcm":  # regdb_mode = the direction here too (both are evaluated by mvd eval)
        from mvd_core.data.llcm import load_llcm_test

        return load_llcm_test(_root(cfg), regdb_mode)
    if cfg.dataset == "manifest":
        from mvd_core.data.manifest import load_manifest_test

        return load_manifest_test(_root(cfg), regdb_mode)
    raise DataError(f"data.dataset: expected sysu, regdb, llcm or manifest, got {cfg.dataset!r}")
