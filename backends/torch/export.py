"""Export the test-feature network (images → L2-normalised test features) of a torch backend.

ONNX through ``torch.onnx.export`` (the TorchScript exporter): input ``images`` float32
(N, 3, H, W) normalised as :func:`mvd_core.data.transforms.test_images`, output ``features``
(N, D); the batch dimension is dynamic unless ``batch`` is given. MINDIR is MindSpore's format:
not available here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvd_core.errors import MvdError
from mvd_core.io import atomic_path

#: ONNX opset of the exported graphs
_OPSET = 17


class _Extract(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract(images).float()


def export_onnx(backend: Any, path: str | os.PathLike[str], height: int, width: int,
                batch: int | None = None) -> Path:
    """Write the ONNX file atomically (a temp file in the target folder, then a rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = _Extract(backend.net).eval()
    device = next(backend.net.parameters()).device
    example = torch.zeros((batch or 2, 3, height, width), dtype=torch.float32, device=device)
    dynamic = None if batch else {"images": {0: "batch"}, "features": {0: "batch"}}
    with atomic_path(out) as tmp, torch.no_grad():  # mvd_core.io: fsync, 0o666 & ~umask, rename
        torch.onnx.export(module, (example,), str(tmp), input_names=["images"],
                          output_names=["features"], dynamic_axes=dynamic,
                          opset_version=_OPSET, dynamo=False)
    return out


def export_mindir(backend: Any, path: str | os.PathLike[str], height: int, width: int,
                  batch: int | None = None) -> Path:
    raise MvdError("--format mindir: MINDIR is MindSpore's format; export with --backend mindspore")
