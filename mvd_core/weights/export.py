"""Export a trained model's test-feature network (normalised images → its L2-normalised test
features) for deployment, and run an exported ONNX file with onnxruntime.

* torch backend: ONNX with a dynamic batch (``batch`` fixes it);
* MindSpore backend: ONNX at a fixed batch (its ONNX export has no dynamic shapes) and MINDIR.

The framework calls live in the backends (``mvd_backends.<name>.export``: ``export_onnx``,
``export_mindir``, the same names in both); onnxruntime is imported only when used. The input
is what :func:`mvd_core.data.transforms.test_images` makes: float32 (N, 3, H, W) at the run's
``data.height`` x ``data.width``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvd_core.errors import MvdError
from mvd_core.parity.tolerances import TOLERANCES

log = logging.getLogger(__name__)

FORMATS = ("onnx", "mindir")
#: |onnxruntime - backend| bound on the L2-normalised features (the tolerance table's "export")
CHECK_ATOL = TOLERANCES["export"].atol
_SUFFIX = {"onnx": ".onnx", "mindir": ".mindir"}


def check_onnx(path: str | os.PathLike[str], net: Any, height: int, width: int, n: int = 8,
               seed: int = 0) -> float:
    """max |Δ| between the exported file run by onnxruntime and ``net`` (the backend that
    exported it) on ``n`` seeded random images; MvdError beyond :data:`CHECK_ATOL`."""
    x = np.random.default_rng(seed).normal(size=(n, 3, height, width)).astype(np.float32)
    got = onnx_features(path, x)
    want = np.asarray(net.extract_features(x, "visible"), dtype=np.float32)
    err = float(np.abs(got - want).max())
    if not err <= CHECK_ATOL:
        raise MvdError(f"{path}: onnxruntime features differ from the {net.name} backend's by "
                       f"{err:.3g} (expected <= {CHECK_ATOL:g})")
    return err


def export_model(
    run_or_file: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    backend: str | None = None,
    device: str | None = None,
    batch: int | None = None,
    config: Any = None,
    overrides: Sequence[str] = (),
    check: bool = False,
) -> Path:
    """Export the run's (or checkpoint's) test-feature network as ``fmt`` to ``out``;
    ``check`` (ONNX): run the file in onnxruntime against the backend (:func:`check_onnx`)."""
    from mvd_core.api import load_backend
    from mvd_core.train.tensorboard import prefer_python_protobuf

    prefer_python_protobuf()  # torch.onnx imports onnx (protobuf): keep MindSpore importable
    if fmt not in FORMATS:
        raise MvdError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if Path(out).suffix.lower() != _SUFFIX[fmt]:
        raise MvdError(f"--out {out}: expected a {_SUFFIX[fmt]} file name for --format {fmt}")
    if batch is not None and batch < 1:
        raise MvdError(f"--batch {batch}: expected a positive batch size")
    net, cfg, path = load_backend(run_or_file, backend, device, config, overrides)
    written = export_backend(net, fmt, out, cfg.data.height, cfg.data.width, batch)
    log.info("exported %s (%s backend) to %s", path, cfg.run.backend, written)
    if check:
        if fmt != "onnx":
            raise MvdError("--check: onnxruntime runs ONNX files only (--format onnx)")
        err = check_onnx(written, net, cfg.data.height, cfg.data.width, n=batch or 8)
        log.info("onnxruntime vs the %s backend: max |diff| %.3g (<= %g)", cfg.run.backend, err, CHECK_ATOL)
    return Path(written)


def export_backend(net: Any, fmt: str, out: str | os.PathLike[str], height: int, width: int,
                   batch: int | None = None) -> Path:
    """Write ``net``'s (a built backend's) test-feature network as ``fmt`` to ``out``."""
    module = importlib.import_module(f"mvd_backends.{net.name}.export")
    return Path(getattr(module, f"export_{fmt}")(net, out, height, width, batch))


def onnx_features(path: str | os.PathLike[str], images: np.ndarray) -> np.ndarray:
    """Run an exported ONNX file on normalised float32 (N, 3, H, W) images; a fixed-batch
    file is fed in chunks of its batch (the last one zero-padded)."""
    from mvd_core.train.tensorboard import prefer_python_protobuf

    prefer_python_protobuf()
    try:
        import onnxruntime as ort
    except ImportError:
        raise MvdError("onnxruntime is not installed (pip install 'mvd[export]')") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.ascontiguousarray(images, dtype=np.float32)
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    if fixed is None:
        return sess.run(None, {inp.name: x})[0]
    parts = []
    for s in range(0, x.shape[0], fixed):
        chunk = x[s:s + fixed]
        k = chunk.shape[0]
        if k < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - k, *chunk.shape[1:]), np.float32)])
        parts.append(sess.run(None, {inp.name: chunk})[0][:k])
    return np.concatenate(parts)
