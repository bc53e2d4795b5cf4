"""Training and test transforms (NumPy/Pillow): uint8 H×W×3 → normalised float32 3×H×W.

Training (``TrainTransform``), in this order, every random draw from the caller's
``np.random.Generator`` (same generator state → same output):

1. resize to ``(cfg.height, cfg.width)`` with Lanczos if the image has another size;
2. pad by ``cfg.pad`` pixels of black (0) on every side and crop a random ``height×width`` window
   (torchvision ``Pad(pad)`` + ``RandomCrop``): a shift of ``-pad..pad`` pixels in each direction;
3. horizontal flip with probability ``cfg.flip_p``;
4. (``augment=ms``, visible images only) grayscale with probability ``cfg.grayscale_p``:
   ``L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`` (Pillow's ``convert("L")``, ITU-R 601),
   replicated to three channels;
5. ImageNet normalisation ``(x/255 − mean)/std`` → float32 CHW;
6. (``augment=ms``) random erasing with probability ``cfg.erasing_p`` (Zhong et al., as in the
   re-id codes): up to 100 attempts at a rectangle of area ``U(0.02, 0.4)·H·W`` and aspect ratio
   ``U(0.3, 1/0.3)`` that fits; it is filled with :data:`ERASE_VALUE` (0 in normalised space, i.e.
   the ImageNet mean colour, as torchvision's ``RandomErasing(value=0)``).

``augment=pt``: steps 1, 2 (if ``pad > 0``), 3 and 5 only.

The draws happen in a fixed order (crop offsets, flip, grayscale, erasing: probability, then
rectangle); operations that commute (grayscale, crop, flip) are then applied in the cheapest
order.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from mvd_core.config import DataConfig
from mvd_core.data.imageio import resize

#: ImageNet statistics (SPEC §4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: random erasing: area fraction range, aspect ratio lower bound (upper = 1/r1), attempts, fill
ERASE_AREA = (0.02, 0.4)
ERASE_RATIO = 0.3
ERASE_ATTEMPTS = 100
ERASE_VALUE = 0.0

_SCALE = (1.0 / (255.0 * np.asarray(IMAGENET_STD))).astype(np.float32)
_OFFSET = (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)


def normalize(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W, C) with C = 3 (or 1, replicated) → float32 (3, H, W) ImageNet-normalised."""
    h, w = img.shape[:2]
    if out is None:
        out = np.empty((3, h, w), np.float32)
    for c in range(3):
        src = img[:, :, c if img.shape[2] == 3 else 0]
        np.multiply(src, _SCALE[c], out=out[c], casting="unsafe")
        out[c] += _OFFSET[c]
    return out


def denormalize(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize` (float, 0..255 scale) for (…, 3, H, W) arrays."""
    return (x - _OFFSET[:, None, None]) / _SCALE[:, None, None]


def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → (H, W) Pillow ``convert("L")`` luma."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("L"))


def erase_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Draw a random-erasing rectangle ``(top, left, h, w)``; None if no attempt fits."""
    area = height * width
    for _ in range(ERASE_ATTEMPTS):
        target = rng.uniform(*ERASE_AREA) * area
        aspect = rng.uniform(ERASE_RATIO, 1.0 / ERASE_RATIO)
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if 0 < h < height and 0 < w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return None


class TrainTransform:
    """The training augmentation of ``cfg`` for one modality (see the module docstring).

    ``TrainTransform(cfg, "visible")(img_uint8_hwc, rng) -> float32 (3, H, W)``; ``modality`` may
    also be the Batch code 0 (visible) / 1 (thermal).
    """

    def __init__(self, cfg: DataConfig, modality: str | int) -> None:
        if modality in (0, "visible"):
            self.visible = True
        elif modality in (1, "thermal"):
            self.visible = False
        else:
            raise ValueError(f"modality: expected visible|thermal, got {modality!r}")
        if cfg.augment not in ("ms", "pt"):
            raise ValueError(f"data.augment: expected ms|pt, got {cfg.augment!r}")
        self.height, self.width = cfg.height, cfg.width
        self.pad = max(0, int(cfg.pad))
        self.flip_p = float(cfg.flip_p)
        ms = cfg.augment == "ms"
        self.grayscale_p = float(cfg.grayscale_p) if (ms and self.visible) else 0.0
        self.erasing_p = float(cfg.erasing_p) if ms else 0.0
        self.draw_gray = ms and self.visible
        self.draw_erase = ms

    def __call__(self, img: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
        """Augment one uint8 (h, w, 3) image; writes into ``out`` (3, H, W) float32 if given."""
        H, W = self.height, self.width
        img = resize(img, H, W)
        # --- draws, in a fixed order
        dy = dx = 0
        if self.pad:
            dy, dx = (int(v) for v in rng.integers(-self.pad, self.pad + 1, size=2))
        flip = bool(rng.random() < self.flip_p)
        gray = bool(self.draw_gray and rng.random() < self.grayscale_p)
        box = None
        if self.draw_erase and rng.random() < self.erasing_p:
            box = erase_box(rng, H, W)
        # --- apply
        src = to_gray(img)[:, :, None] if gray else img
        if dy or dx:
            canvas = np.zeros((H, W, src.shape[2]), np.uint8)
            y0, y1 = max(0, -dy), min(H, H - dy)
            x0, x1 = max(0, -dx), min(W, W - dx)
            canvas[y0:y1, x0:x1] = src[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
            src = canvas
        if flip:
            src = src[:, ::-1]
        out = normalize(src, out)
        if box is not None:
            t, left, h, w = box
            out[:, t:t + h, left:left + w] = ERASE_VALUE
        return out


def test_images(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (N, h, w, 3) → float32 (N, 3, height, width): Lanczos resize if needed, then
    ImageNet normalisation (no augmentation)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"test_images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    out = np.empty((images.shape[0], 3, height, width), np.float32)
    for i in range(images.shape[0]):
        normalize(resize(images[i], height, width), out[i])
    return out


test_images.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
