"""Reading, resizing and writing images and arrays (Pillow/NumPy), with errors that name the file.

Every image is decoded to RGB uint8 ``H×W×3`` (single-channel infrared images are replicated to
three channels, as ``PIL.Image.convert("RGB")`` does). Resizing (``data.resize``) uses Pillow's
filters: ``lanczos`` (default) as the public SYSU-MM01/RegDB preprocessing and the MindSpore port do
(``Image.resize((w, h), Image.LANCZOS)``/``ANTIALIAS``), so a raw image read here and a
preprocessed cache agree bit for bit; ``bilinear`` as the paper's PyTorch code does
(torchvision ``T.Resize`` on PIL images = ``Image.resize((w, h), Image.BILINEAR)``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mvd_core.errors import DataError

log = logging.getLogger(__name__)

#: file name endings treated as images when a folder is scanned
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: ``data.resize`` values → Pillow resampling filters
RESIZE_FILTERS: dict[str, int] = {"lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR}


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` fully to RGB uint8 (H, W, 3); DataError naming the file if it cannot be
    read (missing, not an image, truncated)."""
    try:
        with Image.open(path) as im:
            im.load()  # force the full decode: a truncated file fails here
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image (expected a readable JPEG/PNG/BMP)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({e})") from None
    return np.asarray(rgb, dtype=np.uint8)


def resize(img: np.ndarray, height: int, width: int, method: str = "lanczos") -> np.ndarray:
    """Resize uint8 (H, W, 3) to (height, width, 3) with ``method`` (a :data:`RESIZE_FILTERS`
    key); returned as is if already that size."""
    try:
        resample = RESIZE_FILTERS[method]
    except KeyError:
        raise ValueError(f"data.resize: expected one of {', '.join(RESIZE_FILTERS)}, got {method!r}") from None
    if img.shape[0] == height and img.shape[1] == width:
        return img
    out = Image.fromarray(np.ascontiguousarray(img)).resize((width, height), resample)
    return np.asarray(out, dtype=np.uint8)


def read_resized(path: str | os.PathLike[str], height: int, width: int, method: str = "lanczos") -> np.ndarray:
    """:func:`read_image` then :func:`resize`."""
    return resize(read_image(path), height, width, method)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a .npy file atomically (:func:`mvd_core.io.atomic_writer`)."""
    from mvd_core.io import atomic_writer

    with atomic_writer(path) as f:
        np.save(f, array, allow_pickle=False)


ProgressFn = Callable[[int, int], None]


def progress_callback(progress: bool | ProgressFn | None, label: str) -> ProgressFn | None:
    """``True`` → a progress bar (:class:`mvd_core.progress.Bar`, tqdm); a callable is used as
    is; ``False``/None → none."""
    if progress is True:
        from mvd_core.progress import Bar

        return Bar(label)
    if callable(progress):
        return progress
    return None
