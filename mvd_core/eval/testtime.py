"""Test-time features: flip averaging and the test-feature L2 normalisation, in NumPy.

A backend built with ``model.feat_norm="none"`` returns the raw concatenation of the four
observation BN features (SPEC §2). :class:`TestTimeFeatures` wraps such a backend and returns,
per image, ``normalize(raw(x))`` or, with ``flip``, ``normalize((raw(x) + raw(mirror(x))) / 2)``
— the mean feature of the image and its horizontal mirror, *then* the normalisation (as the
re-id codes' flip test). It has the backend's ``extract_features`` signature, so the one
chunked extraction loop (:func:`mvd_core.eval.features.extract`) and the evaluation use it unchanged.

Normalisation = the backends' ``normalize_test_feature``: ``x / max(|x|, 1e-12)`` (torch's
``F.normalize``) on each of the four blocks (``part``), on the whole vector (``joint``) or not at
all (``none``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mvd_core.config import Config
from mvd_core.errors import MvdError

#: the four observation blocks of the test feature (SPEC §2)
NUM_PARTS = 4
#: norm floor, as torch.nn.functional.normalize
NORM_EPS = 1e-12
FEAT_NORMS = ("part", "joint", "none")


def l2_normalize(x: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Rows of ``x`` divided by ``max(|row|, eps)`` (float32 in, float32 out)."""
    x = np.asarray(x)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    return (x / np.maximum(norm, eps)[:, None]).astype(x.dtype, copy=False)


def normalize_test_feature(raw: np.ndarray, mode: str, parts: int = NUM_PARTS) -> np.ndarray:
    """Normalise raw (N, parts·d) test features per ``mode`` (``part`` | ``joint`` | ``none``)."""
    raw = np.asarray(raw, dtype=np.float32)
    if mode == "none":
        return raw
    if mode == "joint":
        return l2_normalize(raw)
    if mode != "part":
        raise MvdError(f"model.feat_norm: expected one of {FEAT_NORMS}, got {mode!r}")
    n, dim = raw.shape
    if dim % parts:
        raise MvdError(f"features: expected a width divisible by {parts}, got {dim}")
    return l2_normalize(raw.reshape(n * parts, dim // parts)).reshape(n, dim)


def raw_feature_config(cfg: Config) -> Config:
    """``cfg`` with ``model.feat_norm="none"`` (the parameters do not depend on it)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, feat_norm="none"))


class TestTimeFeatures:
    """A backend built from :func:`raw_feature_config`, seen through the test-time transform.

    ``extract_features(images, modality)``: normalised float32 (N, 3, H, W) images → normalised
    test features (N, D). Every other attribute is the wrapped backend's.
    """

    __test__ = False  # not a pytest class

    def __init__(self, backend: Any, feat_norm: str, flip: bool = False) -> None:
        if feat_norm not in FEAT_NORMS:
            raise MvdError(f"model.feat_norm: expected one of {FEAT_NORMS}, got {feat_norm!r}")
        self.backend = backend
        self.feat_norm = feat_norm
        self.flip = bool(flip)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def extract_features(self, images: np.ndarray, modality: str) -> np.ndarray:
        raw = np.asarray(self.backend.extract_features(images, modality), dtype=np.float32)
        if self.flip:
            mirror = np.ascontiguousarray(np.asarray(images)[..., ::-1])
            raw = (raw + np.asarray(self.backend.extract_features(mirror, modality), np.float32)) / 2
        return normalize_test_feature(raw, self.feat_norm)
