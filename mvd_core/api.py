"""A small Python API for a trained model: load it, extract features, evaluate, rank.

::

    from mvd_core import load_model

    model = load_model("runs/demo-torch")                 # a run folder or a checkpoint file
    q = model.extract("data/query/*.jpg", "thermal")      # (N, D) float32, L2-normalised
    g = model.extract(["a.jpg", "b.jpg"], "visible", flip=True)
    report = model.evaluate()                             # the run's own test protocol
    ranking = model.rank("data/query", "data/gallery", top=10)
    ranking.indices[0], ranking.distances[0]              # top-10 gallery rows of query 0

``backend`` picks the framework (a checkpoint is framework-free: a torch-trained run loads on
MindSpore and vice versa); ``device`` as in the CLI. Images are given as a folder (scanned
recursively), a glob pattern, a text file listing one image path per line (relative paths are
relative to the list's folder; anything after the first whitespace on a line is ignored, so
RegDB's ``idx`` files work), a single image file, a sequence of paths, a uint8 ``(N, H, W, 3)``
array or an :class:`~mvd_core.data.base.ImageSet`.

Identities and cameras are known for SYSU-MM01 paths (``cam{c}/{pid:04d}/...``), RegDB paths
(``Visible|Thermal/{pid}/...``), ImageSets and images listed in a manifest CSV given as
``manifest=``; otherwise they are ``-1``.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from mvd_core.config import Config, apply_overrides, load_config
from mvd_core.errors import MvdError
from mvd_core.eval.testtime import TestTimeFeatures, raw_feature_config

log = logging.getLogger(__name__)

__all__ = ["Model", "Ranking", "load_model", "load_backend", "resolve_images", "ids_from_paths",
           "ids_from_manifest", "as_imageset"]

#: one image source: see the module docstring
Images = Union[str, os.PathLike, Sequence[str], np.ndarray, Any]

MODALITIES = ("visible", "thermal")
_LIST_SUFFIXES = (".txt", ".lst", ".list")
_SYSU_RE = re.compile(r"cam(\d)[/\\](\d+)[/\\][^/\\]+$")
_REGDB_RE = re.compile(r"(Visible|Thermal)[/\\](\d+)[/\\][^/\\]+$", re.IGNORECASE)


# --------------------------------------------------------------------------------- images


def _read_list(path: Path) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0]
        p = Path(name) if os.path.isabs(name) else path.parent / name
        if not p.is_file():
            raise MvdError(f"{path}:{n}: {name}: no such image file")
        out.append(str(p))
    return out


def resolve_images(spec: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """Image paths of a folder (recursive, sorted), a glob pattern, a list file, a single image
    or a sequence of paths; MvdError if there are none or a listed one is missing."""
    from mvd_core.data.imageio import IMAGE_SUFFIXES

    if not isinstance(spec, (str, os.PathLike)):
        paths = [str(p) for p in spec]
        for p in paths:
            if not os.path.isfile(p):
                raise MvdError(f"{p}: no such image file")
        if not paths:
            raise MvdError("images: expected at least one image path, got an empty list")
        return paths
    text = os.fspath(spec)
    p = Path(text)
    if p.is_dir():
        paths = sorted(
            str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise MvdError(f"{p}: no images in this folder (expected {', '.join(IMAGE_SUFFIXES)} files)")
        return paths
    if p.is_file():
        if p.suffix.lower() in _LIST_SUFFIXES:
            paths = _read_list(p)
            if not paths:
                raise MvdError(f"{p}: the list names no image")
            return paths
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return [str(p)]
        raise MvdError(f"{p}: expected an image, a folder, a glob or a list file ({', '.join(_LIST_SUFFIXES)})")
    if any(c in text for c in "*?["):
        paths = sorted(
            f for f in _glob.glob(text, recursive=True)
            if os.path.isfile(f) and Path(f).suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise MvdError(f"{text}: the pattern matches no image")
        return paths
    raise MvdError(f"{text}: no such file or folder (expected images: a folder, a glob or a list file)")


def ids_from_paths(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pids, cams) int64 read from SYSU-MM01 or RegDB paths; -1 where a path tells nothing.
    RegDB cameras: 1 = Visible, 2 = Thermal (as the RegDB reader)."""
    pids = np.full(len(paths), -1, np.int64)
    cams = np.full(len(paths), -1, np.int64)
    for i, path in enumerate(paths):
        m = _SYSU_RE.search(path)
        if m:
            cams[i], pids[i] = int(m.group(1)), int(m.group(2))
            continue
        m = _REGDB_RE.search(path)
        if m:
            cams[i] = 1 if m.group(1).lower() == "visible" else 2
            pids[i] = int(m.group(2))
    return pids, cams


def ids_from_manifest(paths: Sequence[str], manifest: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pids, cams) of ``paths`` looked up in a manifest CSV (:mod:`mvd_core.data.manifest`);
    -1 for a path the manifest does not list."""
    from mvd_core.data.manifest import read_manifest_csv

    rows = read_manifest_csv(manifest)
    table = {os.path.realpath(p): (int(i), int(c)) for p, i, c in zip(rows.paths, rows.pids, rows.cams)}
    found = [table.get(os.path.realpath(p), (-1, -1)) for p in paths]
    return (np.array([f[0] for f in found], np.int64).reshape(-1),
            np.array([f[1] for f in found], np.int64).reshape(-1))


def as_imageset(images: Images, modality: str, manifest: str | os.PathLike[str] | None = None) -> Any:
    """Any accepted image source → an ImageSet of ``modality`` (identities and cameras from the
    paths, or from ``manifest``)."""
    from mvd_core.data.base import ImageSet

    if modality not in MODALITIES:
        raise MvdError(f"modality: expected visible or thermal, got {modality!r}")
    if isinstance(images, ImageSet):
        return images if images.modality == modality else dataclasses.replace(images, modality=modality)
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise MvdError(f"images: expected a uint8 (N, H, W, 3) array, got {images.dtype} {images.shape}")
        n = images.shape[0]
        none = np.full(n, -1, np.int64)
        return ImageSet(pids=none, labels=none, cams=none, modality=modality, images=images)
    paths = resolve_images(images)
    pids, cams = ids_from_paths(paths) if manifest is None else ids_from_manifest(paths, manifest)
    return ImageSet(pids=pids, labels=pids, cams=cams, modality=modality, paths=tuple(paths))


# --------------------------------------------------------------------------------- ranking


@dataclass(frozen=True, eq=False)
class Ranking:
    """The top ``K`` gallery items of every query (stable order: ties by gallery index).

    ``indices``/``distances``: (Q, K) gallery rows and their distances; ``matches``: (Q, K) bool
    (gallery pid == query pid), None unless every query and gallery pid is known.
    """

    indices: np.ndarray
    distances: np.ndarray
    query: Any  # ImageSet
    gallery: Any  # ImageSet
    metric: str

    @property
    def top(self) -> int:
        return int(self.indices.shape[1])

    @property
    def ids_known(self) -> bool:
        return bool((self.query.pids >= 0).all() and (self.gallery.pids >= 0).all())

    @property
    def matches(self) -> np.ndarray | None:
        if not self.ids_known:
            return None
        return self.gallery.pids[self.indices] == self.query.pids[:, None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: one entry per query with its top-K gallery items."""

        def name(s: Any, i: int) -> str | int:
            return s.paths[i] if s.paths is not None else i

        matches = self.matches
        out = []
        for q in range(self.indices.shape[0]):
            item: dict[str, Any] = {"query": name(self.query, q)}
            if self.query.pids[q] >= 0:
                item["pid"] = int(self.query.pids[q])
            if self.query.cams[q] >= 0:
                item["cam"] = int(self.query.cams[q])
            ranked = []
            for k, g in enumerate(self.indices[q].tolist()):
                r: dict[str, Any] = {"rank": k + 1, "gallery": name(self.gallery, g),
                                     "distance": round(float(self.distances[q, k]), 6)}
                if self.gallery.pids[g] >= 0:
                    r["pid"] = int(self.gallery.pids[g])
                if matches is not None:
                    r["match"] = bool(matches[q, k])
                ranked.append(r)
            item["ranked"] = ranked
            out.append(item)
        return {"metric": self.metric, "top": self.top, "queries": out}


def top_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of the ``k`` smallest entries of each row, in stable order."""
    k = min(int(k), dist.shape[1])
    if k < 1:
        raise MvdError(f"top: expected a positive number of gallery items, got {k}")
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


# --------------------------------------------------------------------------------- model


class Model:
    """A trained MVD network on one backend, ready for inference (see the module docstring)."""

    def __init__(self, backend: Any, cfg: Config, source: Path) -> None:
        self.backend = backend  # built with model.feat_norm="none": normalised here
        self.cfg = cfg  # the run's config (its own model.feat_norm)
        self.source = source

    def __repr__(self) -> str:
        return f"Model({self.source}, backend={self.backend.name}, device={self.cfg.run.device})"

    def features(self, flip: bool = False) -> TestTimeFeatures:
        """The backend as the evaluation sees it (normalised test features, optional flip)."""
        return TestTimeFeatures(self.backend, self.cfg.model.feat_norm, flip)

    def _cfg(self, batch_size: int | None) -> Config:
        if batch_size is None:
            return self.cfg
        if batch_size < 1:
            raise MvdError(f"batch_size: expected a positive integer, got {batch_size}")
        return dataclasses.replace(self.cfg, eval=dataclasses.replace(self.cfg.eval, batch_size=batch_size))

    def extract(self, images: Images, modality: str, flip: bool = False,
                batch_size: int | None = None, progress: bool | Any = False) -> np.ndarray:
        """Test features (N, D) float32 of ``images`` seen as ``modality``; ``flip``: the mean
        feature of each image and its mirror, then the normalisation. ``progress``: True for a
        bar on a terminal, or a ``(done, total)`` callback."""
        from mvd_core.data.imageio import progress_callback
        from mvd_core.eval.features import extract

        imageset = as_imageset(images, modality)
        return extract(self.features(flip), imageset, modality, self._cfg(batch_size),
                       progress_callback(progress, f"extract {modality}"))

    def evaluate(self, testset: Any = None, *, flip: bool = False, rerank: bool = False,
                 trials: int | None = None, overrides: Sequence[str] = ()) -> Any:
        """The run's test protocol (or ``testset``'s) → a :class:`~mvd_core.eval.protocols.Report`;
        ``rerank``: k-reciprocal re-ranking. ``overrides`` (``section.key=value``, e.g.
        ``data.root=...``) apply to this call only."""
        from mvd_core.data.sets import direction_of, load_test
        from mvd_core.eval.features import evaluate_backend

        cfg = apply_overrides(self.cfg, list(overrides)) if overrides else self.cfg
        if testset is None:
            testset = load_test(cfg.data, direction_of(cfg))
        return evaluate_backend(self.features(flip), testset, cfg, trials=trials, rerank=rerank)

    def rank(self, query: Images, gallery: Images, *, top: int = 10,
             query_modality: str = "thermal", gallery_modality: str = "visible",
             flip: bool = False, rerank: bool | Any = False,
             batch_size: int | None = None, progress: bool | Any = False,
             manifest: str | os.PathLike[str] | None = None) -> Ranking:
        """The ``top`` nearest gallery images of every query (the run's ``eval.metric``;
        ``rerank``: True or a :class:`~mvd_core.eval.rerank.RerankConfig` for k-reciprocal
        re-ranking)."""
        from mvd_core.eval.metrics import distance
        from mvd_core.eval.rerank import RerankConfig, k_reciprocal_rerank

        q = as_imageset(query, query_modality, manifest)
        g = as_imageset(gallery, gallery_modality, manifest)
        qf = self.extract(q, query_modality, flip, batch_size, progress)
        gf = self.extract(g, gallery_modality, flip, batch_size, progress)
        if rerank:
            rc = rerank if isinstance(rerank, RerankConfig) else RerankConfig()
            dist = k_reciprocal_rerank(qf, gf, rc.k1, rc.k2, rc.lam)
            metric = f"k-reciprocal(k1={rc.k1}, k2={rc.k2}, lambda={rc.lam})"
        else:
            dist, metric = distance(qf, gf, self.cfg.eval.metric), self.cfg.eval.metric
        idx, d = top_k(dist, top)
        return Ranking(indices=idx, distances=d, query=q, gallery=g, metric=metric)


def _config_arg(config: Config | str | os.PathLike[str] | None) -> Config | None:
    if config is None or isinstance(config, Config):
        return config
    return load_config(os.fspath(config))


def load_model(
    run_or_file: str | os.PathLike[str],
    backend: str | None = None,
    device: str | None = None,
    config: Config | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> Model:
    """Load a run folder (its ``checkpoints/last.safetensors``) or a checkpoint file.

    The checkpoint's own config is used (``config`` — a Config, recipe name or YAML file — is
    the fallback for a bare parameter file), then ``overrides``, then ``backend``/``device``.
    Every parameter must load (strict).
    """
    net, cfg, path = load_backend(run_or_file, backend, device, config, overrides, raw=True)
    return Model(net, cfg, path)


def load_backend(
    run_or_file: str | os.PathLike[str],
    backend: str | None = None,
    device: str | None = None,
    config: Config | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    raw: bool = False,
) -> tuple[Any, Config, Path]:
    """(backend with the checkpoint's parameters, the run's config, checkpoint path), as
    :func:`load_model`; ``raw``: the backend returns unnormalised features
    (:func:`~mvd_core.eval.testtime.raw_feature_config`), else the run's own test features."""
    from mvd_core.devices import normalize_device
    from mvd_core.registry import create_backend
    from mvd_core.train.resume import checkpoint_config, resolve_checkpoint
    from mvd_core.weights.checkpoint import load_checkpoint

    path = resolve_checkpoint(run_or_file)
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    if cfg is None:
        cfg = _config_arg(config)
    if cfg is None:
        raise MvdError(f"{path}: checkpoint carries no config; pass config= (a recipe or YAML file)")
    cfg = apply_overrides(cfg, list(overrides))
    run = cfg.run if backend is None else dataclasses.replace(cfg.run, backend=backend)
    run = dataclasses.replace(run, device=normalize_device(run.backend, device if device is not None else run.device))
    cfg = dataclasses.replace(cfg, run=run)
    weight = ckpt.params.get("v.classifier.weight")
    if weight is None:
        raise MvdError(f"{path}: no v.classifier.weight: not an MVD checkpoint")
    net = create_backend(raw_feature_config(cfg) if raw else cfg, int(weight.shape[0]))
    net.load_state(ckpt.params, strict=True)
    log.info("loaded %s on %s (%s)", path, run.backend, run.device)
    return net, cfg, path


# --------------------------------------------------------------------------------- feature files

FEATURE_SUFFIXES = (".safetensors", ".npz", ".npy")


def save_features(path: str | os.PathLike[str], feats: np.ndarray, paths: Sequence[str] | None,
                  meta: dict[str, Any] | None = None) -> Path:
    """Write features (and the image paths) atomically, by suffix:

    * ``.safetensors``: tensor ``features``; header ``paths`` (JSON list) and ``mvd`` (JSON meta);
    * ``.npz``: arrays ``features`` and ``paths`` (unicode, no pickle) and ``meta`` (JSON text);
    * ``.npy``: the features only; the paths go to ``<file>.paths.txt``, one per line.
    """
    import io
    import json

    from mvd_core.config import atomic_write_bytes, atomic_write_text

    out = Path(path)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    names = [str(p) for p in paths] if paths is not None else []
    header = json.dumps(meta or {}, sort_keys=True)
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        from safetensors.numpy import save

        atomic_write_bytes(out, save({"features": feats}, metadata={"paths": json.dumps(names), "mvd": header}))
    elif suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, features=feats, paths=np.array(names, dtype=str), meta=np.array(header))
        atomic_write_bytes(out, buf.getvalue())
    elif suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        atomic_write_bytes(out, buf.getvalue())
        if names:
            atomic_write_text(out.with_name(out.name + ".paths.txt"), "".join(n + "\n" for n in names))
    else:
        raise MvdError(f"{out}: expected a {', '.join(FEATURE_SUFFIXES)} file name")
    return out


def load_features(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """(features, image paths) of a file written by :func:`save_features`."""
    import json

    p = Path(path)
    if not p.is_file():
        raise MvdError(f"{p}: no such feature file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="np") as f:
                header = f.metadata() or {}
                return f.get_tensor("features"), list(json.loads(header.get("paths", "[]")))
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return z["features"], [str(x) for x in z["paths"].tolist()]
        if suffix == ".npy":
            side = p.with_name(p.name + ".paths.txt")
            names = side.read_text().splitlines() if side.exists() else []
            return np.load(p, allow_pickle=False), names
    except MvdError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        raise MvdError(f"{p}: not a readable feature file ({e})") from None
    raise MvdError(f"{p}: expected a {', '.join(FEATURE_SUFFIXES)} file")
