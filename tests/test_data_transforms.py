"""Transforms: shapes, dtype, exact normalisation, determinism per rng, the crop/flip/grayscale/
erasing properties (MS erasing against MindSpore's own RandomErasing), resize filters, augment=pt."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mvd_core.config import DataConfig
from mvd_core.data import transforms as T

H, W = 32, 16
BASE = DataConfig(height=H, width=W, pad=0, flip_p=0.0, grayscale_p=0.0, erasing_p=0.0)


def _img(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _undo(x: np.ndarray) -> np.ndarray:
    """Normalised CHW → uint8-valued HWC (exact up to float rounding)."""
    return np.rint(T.denormalize(x)).transpose(1, 2, 0)


def test_normalisation_values() -> None:
    img = np.zeros((H, W, 3), np.uint8)
    img[0, 0] = (255, 0, 128)
    out = T.TrainTransform(BASE, "visible")(img, np.random.default_rng(0))
    assert out.shape == (3, H, W) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225], rtol=1e-6)
    np.testing.assert_allclose(out[:, 1, 1], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)


def test_test_images_resizes_and_normalises() -> None:
    imgs = np.stack([_img(1, 40, 20), _img(2, 40, 20)])
    out = T.test_images(imgs, H, W)
    assert out.shape == (2, 3, H, W) and out.dtype == np.float32
    ref = np.asarray(Image.fromarray(imgs[1]).resize((W, H), Image.LANCZOS)).astype(np.float64)
    expect = ((ref / 255 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD)).transpose(2, 0, 1)
    np.testing.assert_allclose(out[1], expect, atol=1e-5)
    with pytest.raises(ValueError):
        T.test_images(np.zeros((2, 4, 4)), H, W)


def test_train_transform_resizes_other_sizes() -> None:
    out = T.TrainTransform(BASE, "thermal")(_img(3, 64, 32), np.random.default_rng(0))
    assert out.shape == (3, H, W)
    ref = np.asarray(Image.fromarray(_img(3, 64, 32)).resize((W, H), Image.LANCZOS))
    np.testing.assert_array_equal(_undo(out), ref)


@pytest.mark.parametrize("modality", ["visible", "thermal", 0, 1])
def test_determinism_per_rng(modality) -> None:
    cfg = DataConfig(height=H, width=W, pad=4)
    tf = T.TrainTransform(cfg, modality)
    outs = []
    for _ in range(2):
        rng = np.random.default_rng(123)
        outs.append(np.stack([tf(_img(i), rng) for i in range(20)]))
    np.testing.assert_array_equal(outs[0], outs[1])
    rng = np.random.default_rng(124)
    other = np.stack([tf(_img(i), rng) for i in range(20)])
    assert not np.array_equal(outs[0], other)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[y, x] = img[y + dy, x + dx]
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), pad=st.integers(1, 5))
def test_pad_crop_flip_is_a_zero_filled_shift(seed: int, pad: int) -> None:
    """Output = the image shifted by some (dy, dx) in [-pad, pad]² (black fill), maybe mirrored;
    and the draws are the documented ones (crop offsets first, then the flip)."""
    cfg = dataclasses.replace(BASE, pad=pad, flip_p=0.5)
    img = _img(seed % 1000)
    out = _undo(T.TrainTransform(cfg, "thermal")(img, np.random.default_rng(seed)))
    r = np.random.default_rng(seed)
    dy, dx = r.integers(-pad, pad + 1, size=2)
    flip = r.random() < 0.5
    expect = _shift(img, int(dy), int(dx))
    if flip:
        expect = expect[:, ::-1]
    np.testing.assert_array_equal(out, expect)


def test_flip_probability_extremes() -> None:
    img = _img(5)
    always = T.TrainTransform(dataclasses.replace(BASE, flip_p=1.0), "visible")(img, np.random.default_rng(0))
    never = T.TrainTransform(BASE, "visible")(img, np.random.default_rng(0))
    np.testing.assert_array_equal(_undo(always), img[:, ::-1])
    np.testing.assert_array_equal(_undo(never), img)


def test_grayscale_only_on_visible() -> None:
    cfg = dataclasses.replace(BASE, grayscale_p=1.0)
    img = _img(7)
    vis = _undo(T.TrainTransform(cfg, "visible")(img, np.random.default_rng(0)))
    luma = np.asarray(Image.fromarray(img).convert("L"))
    for c in range(3):
        np.testing.assert_array_equal(vis[..., c], luma)
    th = _undo(T.TrainTransform(cfg, "thermal")(img, np.random.default_rng(0)))
    np.testing.assert_array_equal(th, img)  # untouched colour
    # augment=pt never converts to grey
    pt = _undo(T.TrainTransform(dataclasses.replace(cfg, augment="pt"), "visible")(img, np.random.default_rng(0)))
    np.testing.assert_array_equal(pt, img)


def test_grayscale_rate_is_p() -> None:
    cfg = dataclasses.replace(BASE, grayscale_p=0.5)
    tf = T.TrainTransform(cfg, "visible")
    rng = np.random.default_rng(0)
    img = _img(8)
    grey = 0
    n = 400
    for _ in range(n):
        o = tf(img, rng)
        d = T.denormalize(o)
        grey += bool(np.allclose(d[0], d[1], atol=1e-3) and np.allclose(d[1], d[2], atol=1e-3))
    assert abs(grey / n - 0.5) < 0.1  # binomial sd 0.025


@pytest.mark.parametrize("style", ["ms", "zhong"])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_erasing_region(style: str, seed: int) -> None:
    cfg = dataclasses.replace(BASE, height=48, width=24, erasing_p=1.0, erasing=style)
    img = np.random.default_rng(seed).integers(1, 255, (48, 24, 3), dtype=np.uint8)
    out = T.TrainTransform(cfg, "thermal")(img, np.random.default_rng(seed))
    ref = T.normalize(img)
    diff = np.any(out != ref, axis=0)
    ys, xs = np.nonzero(diff)
    r = np.random.default_rng(seed)
    r.random()  # the flip draw
    r.random()  # the erasing-probability draw
    box = T.erase_box(r, 48, 24, style)
    if box is None or box[2] * box[3] == 0:  # MS: 10 misses (or a 0-high box) erase nothing
        assert style == "ms" and ys.size == 0
        return
    t, b, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    assert (t, left, b - t, right - left) == box
    # exactly one filled rectangle, value ERASE_VALUE in every channel
    assert diff[t:b, left:right].all() and diff.sum() == (b - t) * (right - left)
    assert np.all(out[:, t:b, left:right] == T.ERASE_VALUE)


class PyRandomAsGenerator:
    """Python's ``random`` behind the two Generator methods erase_box uses, so that erase_box and
    MindSpore's own ``get_erase_params`` consume the same stream: ``uniform(a, b)`` and
    ``integers(lo, hi)`` = ``randint(lo, hi - 1)``."""

    def __init__(self, seed: int) -> None:
        import random

        self.r = random.Random(seed)

    def uniform(self, a: float, b: float) -> float:
        return self.r.uniform(a, b)

    def integers(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi - 1)


@pytest.mark.mindspore
@pytest.mark.parametrize(("h", "w"), [(288, 144), (64, 32), (20, 8)])
def test_ms_erasing_equals_mindspores_random_erasing(h: int, w: int) -> None:
    """The MS port's ``py_transforms.RandomErasing(prob=0.5)`` (defaults scale (0.02, 0.33),
    ratio (0.3, 3.3), 10 attempts, bounded): MindSpore's ``get_erase_params`` draws the same
    rectangle as ``erase_box(style="ms")`` from the same random stream, and its ``erase`` fills
    the same pixels."""
    import random

    from mindspore.dataset.vision import py_transforms_util as msu

    img = np.random.default_rng(0).standard_normal((3, h, w)).astype(np.float32)
    misses = 0
    for seed in range(300):
        ours = T.erase_box(PyRandomAsGenerator(seed), h, w, "ms")
        random.seed(seed)
        i, j, eh, ew, value = msu.get_erase_params(img, (0.02, 0.33), (0.3, 3.3), 0, True, 10)
        if ours is None:
            misses += 1
            assert (i, j, eh, ew) == (0, 0, h, w) and value is img  # MindSpore's "return as is"
            continue
        assert ours == (i, j, eh, ew), seed
        erased = msu.erase(img, i, j, eh, ew, value)
        mine = img.copy()
        mine[:, ours[0]:ours[0] + ours[2], ours[1]:ours[1] + ours[3]] = T.ERASE_VALUE
        np.testing.assert_array_equal(erased, mine)
    assert misses < 300 // 3


def test_ms_erasing_geometry_hand_derived() -> None:
    """w = round(√(A·r)), h = round(w / r), for a stream giving area 0.1 and ratio 2."""

    class Fixed:
        def __init__(self) -> None:
            self.u = iter([0.1, 2.0])

        def uniform(self, a: float, b: float) -> float:
            return next(self.u)

        def integers(self, lo: int, hi: int) -> int:
            return hi - 1  # the last fitting position: bounds are inclusive

    t, left, h, w = T.erase_box(Fixed(), 288, 144, "ms")
    assert w == round((0.1 * 288 * 144 * 2.0) ** 0.5) == 91 and h == round(91 / 2.0) == 46
    assert (t, left) == (288 - 46, 144 - 91)


@pytest.mark.parametrize("style", ["ms", "zhong"])
def test_erasing_box_bounds(style: str) -> None:
    (a0, a1), (r0, r1), _ = T.ERASE_PARAMS[style]
    rng = np.random.default_rng(0)
    n = 0
    for _ in range(300):
        box = T.erase_box(rng, 288, 144, style)
        if box is None:
            continue
        n += 1
        t, left, h, w = box
        assert 0 <= t and t + h <= 288 and 0 <= left and left + w <= 144
        assert a0 * 0.9 <= h * w / (288 * 144) <= a1 * 1.1  # rounding of h and w
        ratio = w / h if style == "ms" else h / w
        assert r0 * 0.9 <= ratio <= r1 * 1.1
    assert n > 150
    assert T.ERASE_PARAMS["ms"] == ((0.02, 0.33), (0.3, 3.3), 10)


def test_bilinear_resize_is_pillows() -> None:
    cfg = dataclasses.replace(BASE, resize="bilinear")
    img = _img(4, 64, 32)
    out = _undo(T.TrainTransform(cfg, "visible")(img, np.random.default_rng(0)))
    ref = np.asarray(Image.fromarray(img).resize((W, H), Image.BILINEAR))
    np.testing.assert_array_equal(out, ref)
    lanczos = np.asarray(Image.fromarray(img).resize((W, H), Image.LANCZOS))
    assert not np.array_equal(ref, lanczos)  # the setting matters
    test = T.test_images(img[None], H, W, "bilinear")
    np.testing.assert_array_equal(_undo(test[0]), ref)
    with pytest.raises(ValueError, match="data.resize"):
        T.TrainTransform(dataclasses.replace(BASE, resize="cubic"), 0)


def test_recipes_augment_like_their_public_code() -> None:
    from mvd_core.config import load_config

    ms, pt = load_config("mvd-ms").data, load_config("mvd-pt").data
    assert ms.pad == 0 and pt.pad == 0 and load_config("tiny").data.pad == 0  # neither code shifts images
    assert (ms.augment, ms.erasing, ms.erasing_p, ms.resize) == ("ms", "ms", 0.5, "lanczos")
    assert (pt.augment, pt.resize) == ("pt", "bilinear")


def test_pt_augment_is_flip_normalise_and_optional_crop() -> None:
    cfg = DataConfig(height=H, width=W, augment="pt", pad=0, flip_p=0.5, grayscale_p=1.0, erasing_p=1.0)
    tf = T.TrainTransform(cfg, "visible")
    img = _img(9)
    seen = set()
    for s in range(30):
        o = _undo(tf(img, np.random.default_rng(s)))
        if np.array_equal(o, img):
            seen.add("same")
        elif np.array_equal(o, img[:, ::-1]):
            seen.add("flip")
        else:
            raise AssertionError("augment=pt did more than flip")
    assert seen == {"same", "flip"}


def test_bad_modality_and_augment() -> None:
    with pytest.raises(ValueError):
        T.TrainTransform(BASE, "rgb")
    with pytest.raises(ValueError):
        T.TrainTransform(dataclasses.replace(BASE, augment="xx"), 0)
    with pytest.raises(ValueError, match="data.erasing"):
        T.TrainTransform(dataclasses.replace(BASE, erasing="xx"), 0)


def test_loader_and_test_features_honour_data_resize() -> None:
    """data.resize reaches the training loader (images of another size) and the test-time
    extraction (mvd_core.eval.features.extract)."""
    from mvd_core.config import Config
    from mvd_core.data.base import ImageSet, TrainSet
    from mvd_core.data.loader import TrainLoader
    from mvd_core.eval.features import extract

    raw = np.stack([_img(s, 64, 32) for s in range(4)])
    labels = np.array([0, 0, 1, 1])

    def part(mod: str) -> ImageSet:
        return ImageSet(pids=labels, labels=labels, cams=np.ones(4, np.int64), modality=mod, images=raw)

    train = TrainSet(part("visible"), part("thermal"), 2, "t")
    for method, flt in (("bilinear", Image.BILINEAR), ("lanczos", Image.LANCZOS)):
        cfg = dataclasses.replace(BASE, num_ids=2, num_pos=1, augment="pt", resize=method, workers=0)
        ref = {i: np.asarray(Image.fromarray(raw[i]).resize((W, H), flt)) for i in range(4)}
        with TrainLoader(train, cfg, seed=0) as loader:
            v, t = loader.plan(0)[0]
            batch = loader.make_batch(0, 0, v, t)
        for k, i in enumerate(np.concatenate([v, t]).tolist()):
            np.testing.assert_array_equal(_undo(batch.images[k]), ref[i])

        class Identity:
            def extract_features(self, images: np.ndarray, modality: str) -> np.ndarray:
                return images.reshape(len(images), -1)

        full = dataclasses.replace(Config(), data=cfg)
        feats = extract(Identity(), part("visible"), "visible", full)
        np.testing.assert_array_equal(_undo(feats[2].reshape(3, H, W)), ref[2])
