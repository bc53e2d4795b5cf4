"""Training and test transforms (NumPy/Pillow): uint8 H×W×3 → normalised float32 3×H×W.

Training (``TrainTransform``), in this order, every random draw from the caller's
``np.random.Generator`` (same generator state → same output):

1. resize to ``(cfg.height, cfg.width)`` with ``cfg.resize`` (Lanczos | bilinear) if the image
   has another size;
2. (``cfg.pad > 0``; 0 by default, as in both public codes: PT ``--padding 0``, and MS crops
   images that are already 288×144) pad by ``cfg.pad`` pixels of black (0) on every side and crop
   a random ``height×width`` window (torchvision ``Pad(pad)`` + ``RandomCrop``): a shift of
   ``-pad..pad`` pixels in each direction;
3. horizontal flip with probability ``cfg.flip_p``;
4. (``augment=ms``, visible images only) grayscale with probability ``cfg.grayscale_p``:
   ``L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`` (Pillow's ``convert("L")``, ITU-R 601),
   replicated to three channels;
5. ImageNet normalisation ``(x/255 − mean)/std`` → float32 CHW;
6. (``augment=ms``) random erasing with probability ``cfg.erasing_p``, filled with
   :data:`ERASE_VALUE` (0 in normalised space, i.e. the ImageNet mean colour), geometry
   ``cfg.erasing`` (:func:`erase_box`):

   * ``ms`` (default; the MindSpore port's ``py_transforms.RandomErasing(prob=0.5)`` with its
     defaults ``scale=(0.02, 0.33)``, ``ratio=(0.3, 3.3)``, ``max_attempts=10``): area
     ``A = U(0.02, 0.33)·H·W``, ratio ``r = U(0.3, 3.3)`` (width/height), ``w = round(√(A·r))``,
     ``h = round(w / r)``; accepted if ``h < H`` and ``w < W``, top-left uniform over every fitting
     position; after 10 misses nothing is erased;
   * ``zhong`` (Zhong et al.'s ``RandomErasing`` of the re-id codes, the PT code's class):
     ``A = U(0.02, 0.4)·H·W``, ``r = U(0.3, 1/0.3)``, ``h = round(√(A·r))``, ``w = round(√(A/r))``,
     up to 100 attempts.

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
#: random erasing per ``data.erasing``: area fraction range, aspect ratio range, attempts
ERASE_PARAMS: dict[str, tuple[tuple[float, float], tuple[float, float], int]] = {
    "ms": ((0.02, 0.33), (0.3, 3.3), 10),  # MindSpore RandomErasing defaults (the MS port)
    "zhong": ((0.02, 0.4), (0.3, 1.0 / 0.3), 100),  # Zhong et al. / the re-id codes
}
#: fill value of an erased rectangle (normalised space: the ImageNet mean colour)
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


def erase_box(
    rng: np.random.Generator, height: int, width: int, style: str = "ms"
) -> tuple[int, int, int, int] | None:
    """Draw a random-erasing rectangle ``(top, left, h, w)`` of ``style`` (``ms`` | ``zhong``,
    see the module docstring); None if no attempt fits. Per attempt: area, then ratio; on
    success: top, then left (each uniform over the fitting positions, bounds included)."""
    try:
        (a0, a1), (r0, r1), attempts = ERASE_PARAMS[style]
    except KeyError:
        raise ValueError(f"data.erasing: expected one of {', '.join(ERASE_PARAMS)}, got {style!r}") from None
    area = height * width
    for _ in range(attempts):
        target = rng.uniform(a0, a1) * area
        ratio = rng.uniform(r0, r1)
        if style == "ms":
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(w / ratio))
            fits = h < height and w < width
        else:
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            fits = 0 < h < height and 0 < w < width
        if fits:
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
        self.resize = cfg.resize
        resize(np.zeros((1, 1, 3), np.uint8), 1, 1, self.resize)  # validates data.resize
        self.erasing = cfg.erasing
        if self.erasing not in ERASE_PARAMS:
            raise ValueError(f"data.erasing: expected one of {', '.join(ERASE_PARAMS)}, got {self.erasing!r}")
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
        img = resize(img, H, W, self.resize)
        # --- draws, in a fixed order
        dy = dx = 0
        if self.pad:
            dy, dx = (int(v) for v in rng.integers(-self.pad, self.pad + 1, size=2))
        flip = bool(rng.random() < self.flip_p)
        gray = bool(self.draw_gray and rng.random() < self.grayscale_p)
        box = None
        if self.draw_erase and rng.random() < self.erasing_p:
            box = erase_box(rng, H, W, self.erasing)
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


def test_images(images: np.ndarray, height: int, width: int, method: str = "lanczos") -> np.ndarray:
    """uint8 (N, h, w, 3) → float32 (N, 3, height, width): resize (``method``: lanczos |
    bilinear) if needed, then ImageNet normalisation (no augmentation)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"test_images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    out = np.empty((images.shape[0], 3, height, width), np.float32)
    for i in range(images.shape[0]):
        normalize(resize(images[i], height, width, method), out[i])
    return out


test_images.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
