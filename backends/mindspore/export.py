"""Export the test-feature network (images → L2-normalised test features) of a MindSpore
backend with ``mindspore.export``: ONNX and MINDIR, both at a fixed batch (MindSpore's ONNX
export has no dynamic shapes). Input float32 (batch, 3, H, W) normalised as
:func:`mvd_core.data.transforms.test_images`; output (batch, D).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from mvd_core.errors import MvdError
from mvd_core.io import commit_file, make_temp_dir

#: MindSpore appends these to the file name it is given
_SUFFIX = {"ONNX": ".onnx", "MINDIR": ".mindir"}


class _ZeroPadPool(nn.Cell):
    """The trunk's max-pool (3x3, stride 2, symmetric padding 1) as a zero pad + a valid pool:
    MindSpore's ONNX exporter has no ``MaxPool3DWithArgmax`` (what the padded pool lowers to).
    Equal to the padded pool here: it follows a ReLU (inputs >= 0) and every window holds at
    least one real input, so a zero in the border never wins over the implicit -inf."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.Pad(paddings=((0, 0), (0, 0), (1, 1), (1, 1)))
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid")

    def construct(self, x):  # noqa: ANN001, ANN201
        return self.pool(self.pad(x))


class _Extract(nn.Cell):
    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # parameter names unchanged
        self.net = net

    def construct(self, images):  # noqa: ANN001, ANN201
        return self.net.extract(images)


def _export(backend: Any, path: str | os.PathLike[str], height: int, width: int,
            batch: int | None, fmt: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = int(batch or 1)
    if n < 1:
        raise MvdError(f"--batch {batch}: expected a positive batch size")
    cell = _Extract(backend.net)
    cell.set_train(False)
    example = Tensor(np.zeros((n, 3, height, width), np.float32))
    tmp = make_temp_dir(out)
    pools = [c for _, c in backend.net.cells_and_names() if type(c).__name__ == "_MaxPoolSym"]
    saved = [c.pool for c in pools]
    try:
        if fmt == "ONNX":
            for c in pools:
                c.pool = _ZeroPadPool()
            ms.onnx.export(cell, example, file_name=str(tmp / "model"),
                           input_names=["images"], output_names=["features"])
        else:
            ms.export(cell, example, file_name=str(tmp / "model"), file_format=fmt)
        made = tmp / f"model{_SUFFIX[fmt]}"
        if not made.is_file():
            raise MvdError(f"{out}: MindSpore wrote no {fmt} file")
        commit_file(made, out)  # mvd_core.io: fsync, 0o666 & ~umask, rename
    finally:
        for c, pool in zip(pools, saved):
            c.pool = pool
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_onnx(backend: Any, path: str | os.PathLike[str], height: int, width: int,
                batch: int | None = None) -> Path:
    """ONNX at the fixed ``batch`` (default 1)."""
    return _export(backend, path, height, width, batch, "ONNX")


def export_mindir(backend: Any, path: str | os.PathLike[str], height: int, width: int,
                  batch: int | None = None) -> Path:
    """MINDIR at the fixed ``batch`` (default 1)."""
    return _export(backend, path, height, width, batch, "MINDIR")
