"""Synthetic visible–infrared re-identification data in the real SYSU-MM01 / RegDB / LLCM layouts.

Every reader, ``mvd prepare``, training and evaluation run their real code paths on it.

What it renders
---------------
Each **identity** (seeded by ``(seed, pid)``, so adding ids never changes existing ones) is a
walking figure with a fixed appearance:

* body proportions: height, build (width), head size, leg length;
* clothing: shirt colour, a shirt pattern (solid, horizontal stripes, vertical stripes, checks,
  a chest band or two-tone) with a second colour and stripe period, short or long sleeves,
  trousers or shorts (trouser colours drawn from typical palettes), shoe colour;
* skin tone, hair colour, short or long hair; a bag (none, backpack, hand bag on the left or right)
  with its colour; sometimes a cap;
* an **infrared signature**: skin is bright, hair mid-grey; each fabric's infrared brightness
  follows its reflectance -- mostly its visible lightness, partly a per-identity material
  draw, never its hue -- so a pattern's geometry (stripes, checks, a band) shows in infrared with
  its own contrast; shoes, the bag and a cap are dark.

Each **image** varies: view (front, back or side, with camera-dependent odds; left/right swap
with the view), pose (leg stride, arm swing, lean), scale, position, background (per-camera wall
and floor, 0–3 clutter objects, sometimes an occluder in front), illumination (per-camera gain
and colour cast, per-image brightness and a lighting gradient), blur (some cameras) and sensor
noise; clothing colours jitter slightly.

**Thermal images** (the infrared cameras) are a different rendering of the same person, not the
grey version of the RGB image: intensities come from the infrared signature over a dark
background with its own clutter intensities, optical blur, stronger noise and per-image
gain/offset; they are one channel replicated to three, like the real infrared images. What links
the two modalities of an identity is what survives the modality gap in real (SYSU-MM01:
near-infrared) data: shape and proportions, exposed skin (sleeves, shorts), hair length, the bag
and cap, the pattern's geometry, and partly the clothes' lightness -- colour does not survive (a
colour-histogram matcher and raw-pixel matching stay near chance, see the tests).

Layouts
-------
* ``synth_sysu``: ``cam{1..6}/{pid:04d}/{k:04d}.jpg`` (visible cameras 1, 2, 4, 5; infrared 3, 6),
  ``exp/{train,val,test}_id.txt`` (one comma-separated line of ids; 60 % / 10 % / 30 % of the ids,
  at least one each). Like the real data some (camera, id) folders are missing, but every id has
  at least one visible and one thermal camera. Per-camera image sizes differ (like real crops).
* ``synth_regdb``: ``Visible/{pid}/{sex}_{view}_v_{frame:05d}_{pid}.bmp`` and the co-registered
  ``Thermal/{pid}/..._t_...bmp`` pair (same pose per frame, as RegDB's two cameras fire together),
  ``idx/{train,test}_{visible,thermal}_{1..10}.txt`` with lines ``relpath label``: each trial a
  random half of the ids trains, the rest tests, labels renumbered from 0 in each split.
* ``synth_llcm``: the layout LLCM's public code reads (:mod:`mvd_core.data.llcm`):
  ``test_vis/cam{1..9}/{pid:04d}/*.jpg``, ``test_nir/cam{1,2,4..9}/{pid:04d}/*.jpg`` (no infrared
  camera 3), ``idx/test_id.txt`` (one comma-separated line) and ``idx/train_{vis,nir}.txt`` with
  lines ``relpath label`` (labels 0..C-1 over the training ids). The training images lie in
  ``train_vis/`` and ``train_nir/`` with the test folders' structure -- the public code reads only
  the lists, so that part is this generator's choice, not the real data set's. Each id has a
  random subset of the cameras (at least one of each modality). The visible images are *not*
  rendered in low light: what is LLCM's here is the layout and the protocol, not its conditions.

All write into a temporary folder and rename it into place (no partial output), and add
``mvd_synth.json`` (parameters, counts) so a re-run may replace its own earlier output; they refuse
to overwrite a folder that was not written by them. Output is a pure function of the arguments.
Defaults: SYSU 60 ids × 6 cameras × 5 images (~1,600 images of about 64×128) in a few seconds;
``size_scale=0.5`` renders ~32×64 crops about 4x faster (the demo: its model sees 32×64).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mvd_core import __version__
from mvd_core.errors import DataError
from mvd_core.io import make_temp_dir

log = logging.getLogger(__name__)

MARKER = "mvd_synth.json"
GENERATOR_VERSION = 3  # 2: infrared fabric patterns, caps, size_scale; 3: fabric brightness 0.55 lightness

#: (height, width) of the images of each SYSU camera (real crops differ per camera too)
SYSU_CAM_SIZES: dict[int, tuple[int, int]] = {
    1: (128, 64), 2: (128, 64), 3: (112, 56), 4: (136, 64), 5: (128, 60), 6: (112, 56),
}
SYSU_VISIBLE = (1, 2, 4, 5)
SYSU_THERMAL = (3, 6)
REGDB_SIZE = (128, 64)
LLCM_VISIBLE = (1, 2, 3, 4, 5, 6, 7, 8, 9)
LLCM_INFRARED = (1, 2, 4, 5, 6, 7, 8, 9)
LLCM_SIZE = (128, 64)

# seed-sequence tags (distinct first words after the seed; ids/cams >= 1 so no trailing zeros)
_T_IDENT, _T_CAM, _T_IMG, _T_SPLIT, _T_TRIAL, _T_REGDB, _T_LLCM = 11, 12, 13, 14, 15, 16, 17


# ----------------------------------------------------------------------------- colour helpers


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (all 0..1) → RGB float (3,)."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _lum(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


_SKIN = np.array([[0.96, 0.80, 0.69], [0.90, 0.72, 0.58], [0.80, 0.60, 0.45], [0.66, 0.47, 0.33],
                  [0.50, 0.34, 0.23], [0.36, 0.24, 0.16]], np.float32)
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.10], [0.45, 0.30, 0.18], [0.80, 0.68, 0.42],
                  [0.62, 0.62, 0.62]], np.float32)
_TROUSERS = np.array([[0.10, 0.13, 0.30], [0.07, 0.07, 0.08], [0.30, 0.30, 0.32], [0.72, 0.64, 0.46],
                      [0.28, 0.40, 0.62], [0.66, 0.66, 0.68], [0.38, 0.25, 0.16]], np.float32)
_SHOES = np.array([[0.06, 0.06, 0.06], [0.92, 0.92, 0.90], [0.40, 0.26, 0.15], [0.50, 0.50, 0.52]],
                  np.float32)


def _ir_fabric(lightness: float, material: float) -> float:
    """Infrared brightness of a fabric from its visible lightness (0..1, weight 0.55) and a
    per-identity material draw (0..1, weight 0.2); the range stays below the bright skin."""
    return float(0.1 + 0.55 * lightness + 0.2 * material)


@dataclass(frozen=True)
class Identity:
    """One synthetic person's fixed appearance (see the module docstring)."""

    pid: int
    height: float
    build: float
    head: float
    legs: float
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    shirt: np.ndarray
    shirt2: np.ndarray
    pattern: int  # 0 solid, 1 h-stripes, 2 v-stripes, 3 checks, 4 chest band, 5 two-tone
    period: float
    long_sleeves: bool
    trousers: np.ndarray
    shorts: bool
    shoes: np.ndarray
    bag: int  # 0 none, 1 backpack, 2 hand bag left, 3 hand bag right
    bag_color: np.ndarray
    hat: bool  # a cap: covers the top of the head, cool in thermal
    hat_color: np.ndarray
    t_skin: float
    t_hair: float
    t_shirt: float
    t_trousers: float
    t_shoes: float
    t_bag: float
    t_shirt2: float  # the pattern's second fabric
    t_hat: float
    female: bool
    facing: int  # RegDB: 0 front, 1 back


def make_identity(seed: int, pid: int) -> Identity:
    """The appearance of person ``pid`` for ``seed`` (independent of how many ids are drawn)."""
    r = np.random.default_rng([seed, _T_IDENT, pid])
    kind = r.random()
    if kind < 0.15:
        shirt = _hsv(r.random(), r.uniform(0, 0.1), r.uniform(0.85, 0.97))  # white-ish
    elif kind < 0.3:
        shirt = _hsv(r.random(), r.uniform(0, 0.2), r.uniform(0.06, 0.2))  # black-ish
    else:
        shirt = _hsv(r.random(), r.uniform(0.3, 0.95), r.uniform(0.3, 0.95))
    h2, s2 = r.random(), r.uniform(0.2, 0.9)
    shirt2 = _hsv(h2, s2, r.uniform(0.08, 0.4) if _lum(shirt) > 0.5 else r.uniform(0.6, 0.95))
    trousers = _TROUSERS[r.integers(len(_TROUSERS))] * r.uniform(0.85, 1.15, 3).astype(np.float32)
    if r.random() < 0.1:
        trousers = _hsv(r.random(), r.uniform(0.3, 0.9), r.uniform(0.2, 0.9))
    long_hair = bool(r.random() < 0.35)
    fabric = r.random(3)  # infrared reflectance of shirt, trousers, the pattern's second fabric
    hat = bool(r.random() < 0.2)
    hat_color = _hsv(r.random(), r.uniform(0.1, 0.9), r.uniform(0.15, 0.9))
    t_hat = float(r.uniform(0.3, 0.45))
    return Identity(
        pid=pid,
        height=float(r.uniform(0.80, 0.94)),
        build=float(r.uniform(0.82, 1.22)),
        head=float(r.uniform(0.12, 0.155)),
        legs=float(r.uniform(0.44, 0.52)),
        skin=np.clip(_SKIN[r.integers(len(_SKIN))] * r.uniform(0.95, 1.05, 3), 0, 1).astype(np.float32),
        hair=_HAIR[r.choice(len(_HAIR), p=[0.45, 0.25, 0.15, 0.1, 0.05])],
        long_hair=long_hair,
        shirt=shirt,
        shirt2=shirt2,
        pattern=int(r.choice(6, p=[0.3, 0.15, 0.12, 0.12, 0.16, 0.15])),
        period=float(r.uniform(0.07, 0.13)),  # >= ~4 px per period at 64 px height
        long_sleeves=bool(r.random() < 0.55),
        trousers=np.clip(trousers, 0, 1).astype(np.float32),
        shorts=bool(r.random() < 0.2),
        shoes=_SHOES[r.integers(len(_SHOES))],
        bag=int(r.choice(4, p=[0.45, 0.3, 0.125, 0.125])),
        bag_color=_hsv(r.random(), r.uniform(0.1, 0.8), r.uniform(0.1, 0.6)),
        hat=hat,
        hat_color=hat_color,
        t_skin=float(r.uniform(0.82, 0.95)),
        t_hair=float(r.uniform(0.5, 0.65)),
        # fabric: infrared brightness follows the cloth's reflectance -- partly its visible
        # lightness, partly the material (dye, weave), drawn per identity; never its hue
        t_shirt=_ir_fabric(_lum(shirt), fabric[0]),
        t_trousers=_ir_fabric(_lum(trousers), fabric[1]),
        t_shoes=float(r.uniform(0.3, 0.45)),
        t_bag=float(r.uniform(0.12, 0.3)),
        # a printed/woven pattern's second fabric: its geometry shows in infrared
        t_shirt2=_ir_fabric(_lum(shirt2), fabric[2]),
        t_hat=t_hat,
        female=bool(r.random() < (0.75 if long_hair else 0.3)),
        facing=int(r.integers(2)),
    )


@dataclass(frozen=True)
class Camera:
    """Scene and sensor of one camera."""

    cam: int
    thermal: bool
    size: tuple[int, int]
    wall: np.ndarray  # RGB, or (temperature,) for thermal
    floor: np.ndarray
    horizon: float
    gain: float
    cast: np.ndarray
    noise: float
    blur: int
    scale: float
    views: np.ndarray  # probabilities of front, back, side
    clutter: float  # mean number of clutter objects


def make_camera(seed: int, cam: int, thermal: bool, size: tuple[int, int], tag: int = _T_CAM) -> Camera:
    r = np.random.default_rng([seed, tag, cam])
    if thermal:
        wall = np.array([r.uniform(0.12, 0.35)], np.float32)
        floor = wall + np.float32(r.uniform(-0.05, 0.12))
        cast = np.ones(1, np.float32)
        noise = r.uniform(4, 9) / 255
        blur = 1
        gain = r.uniform(0.85, 1.15)
    else:
        wall = _hsv(r.random(), r.uniform(0.05, 0.35), r.uniform(0.35, 0.85))
        floor = _hsv(r.random(), r.uniform(0.05, 0.3), r.uniform(0.2, 0.6))
        cast = (1 + r.normal(0, 0.06, 3)).astype(np.float32)
        noise = r.uniform(2, 6) / 255
        blur = int(r.random() < 0.3)
        gain = r.uniform(0.75, 1.15)
    return Camera(
        cam=cam, thermal=thermal, size=size, wall=wall, floor=floor,
        horizon=float(r.uniform(0.55, 0.8)), gain=float(gain), cast=cast, noise=float(noise),
        blur=blur, scale=float(r.uniform(0.9, 1.0)), views=r.dirichlet([2.0, 2.0, 1.5]),
        clutter=float(r.uniform(0.5, 2.5)),
    )


# ----------------------------------------------------------------------------- per-image draws


def _draw_poses(r: np.random.Generator, k: int, cam: Camera, view: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-image pose, placement, lighting and clutter for ``k`` images."""
    if view is None:
        view = r.choice(3, size=k, p=cam.views)
    return {
        "view": view.astype(np.int64),
        "scale": cam.scale * r.uniform(0.88, 1.0, k),
        "top": r.uniform(0.15, 0.85, k),
        "shift": r.uniform(-0.12, 0.12, k),
        "lean": r.uniform(-0.04, 0.04, k),
        "stride": r.uniform(0.0, 1.0, k),
        "swing": r.uniform(0.0, 1.0, k),
        "swing_sign": r.choice([-1.0, 1.0], k),
        "gain": r.uniform(0.85, 1.15, k),
        "grad": r.uniform(-0.25, 0.25, (k, 2)),
        "jitter": r.normal(0, 0.04, (k, 3)),
        "n_clutter": r.poisson(cam.clutter, k).clip(0, 3),
        "clutter": r.uniform(0, 1, (k, 3, 5)),  # x, y, w, h, colour/temperature
        "occluder": (r.random(k) < 0.08).astype(np.float64),
        "occ": r.uniform(0, 1, (k, 3)),
        "offset": r.uniform(-0.05, 0.05, k),
    }


# ----------------------------------------------------------------------------- rendering


def _e(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32)[:, None, None]


def _geometry(idt: Identity, pose: dict[str, np.ndarray], h: int, w: int) -> dict[str, np.ndarray]:
    """Soft (anti-aliased) masks (k, h, w) of every body part, in painting order."""
    k = pose["view"].shape[0]
    side = _e(pose["view"] == 2)
    front = _e(pose["view"] == 0)
    back = _e(pose["view"] == 1)
    P = _e(idt.height * pose["scale"] * h)
    top = _e(pose["top"]) * np.maximum(h - P - 1.0, 0.0) + 0.5
    cx = w / 2.0 + _e(pose["shift"]) * w
    Y = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]
    X = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]
    v = (Y - top) / P
    u = (X - cx) / P
    u = u - _e(pose["lean"]) * (v - 1.0)

    def soft(d: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - d * P, 0.0, 1.0)

    def rect(cu: Any, cv: Any, hw: Any, hh: Any) -> np.ndarray:
        return soft(np.maximum(np.abs(u - cu) - hw, np.abs(v - cv) - hh))

    bw = idt.build * (1.0 - 0.38 * side)
    hh = idt.head
    ry, rx = hh / 2.0, hh * (0.38 + 0.04 * side)
    head = soft((np.sqrt((u / rx) ** 2 + ((v - ry) / ry) ** 2) - 1.0) * np.minimum(rx, ry))
    t0, t1 = hh + 0.025, 1.0 - idt.legs
    sw, ww = 0.125 * bw, 0.1 * bw
    frac = np.clip((v - t0) / (t1 - t0), 0.0, 1.0)
    torso = soft(np.maximum(np.abs(u) - (sw + (ww - sw) * frac), np.abs(v - (t0 + t1) / 2) - (t1 - t0) / 2))
    neck = rect(0.0, hh, 0.03 * bw, 0.03)

    # arms: front/back hang beside the torso; side view: two arms swinging opposite ways
    a0, al, aw = t0 + 0.01, 0.37, 0.034 * idt.build
    swing_fb = 0.12 * _e(pose["swing"])
    swing_sd = 0.5 * _e(pose["swing"]) * _e(pose["swing_sign"])
    base = (1 - side) * (sw + 0.8 * aw)
    slope = (1 - side) * swing_fb + side * swing_sd
    dv = v - a0
    arm_v = np.abs(v - (a0 + al / 2)) - al / 2
    arms = np.maximum(
        soft(np.maximum(np.abs(u - (base + slope * dv)) - aw, arm_v)),
        soft(np.maximum(np.abs(u + (base + slope * dv)) - aw, arm_v)),
    )
    sleeve_end = a0 + (al - 0.05 if idt.long_sleeves else 0.35 * al)
    arm_shirt = arms * (v < sleeve_end)
    arm_skin = arms * (v >= sleeve_end)

    # legs: front/back slightly apart, side view: stride
    l0, l1, lw = t1 - 0.015, 0.965, 0.046 * idt.build
    spread = 0.05 * _e(pose["stride"])
    stride = 0.3 * _e(pose["stride"])
    lbase = (1 - side) * (lw + 0.004)
    lslope = (1 - side) * spread + side * stride
    leg_v = np.abs(v - (l0 + l1) / 2) - (l1 - l0) / 2
    lc = lbase + lslope * (v - l0)
    legs = np.maximum(soft(np.maximum(np.abs(u - lc) - lw, leg_v)), soft(np.maximum(np.abs(u + lc) - lw, leg_v)))
    leg_skin = legs * (v > l0 + 0.38 * (l1 - l0)) * float(idt.shorts)
    foot_c = lbase + lslope * (l1 - l0)
    fwd = side * 0.02
    shoes = np.maximum(rect(foot_c + fwd, 0.9825, lw * 1.3, 0.0175), rect(-foot_c + fwd, 0.9825, lw * 1.3, 0.0175))

    # hair: top of the head (front), whole head (back), back half (side); long hair behind/over
    hair_front = head * soft(v - (ry - 0.2 * ry))
    hair_side = head * np.maximum(soft(v - (ry - 0.1 * ry)), soft(u + 0.3 * rx))
    hair = front * hair_front + back * head + side * hair_side
    long_rect = rect(-side * rx * 0.5, (ry + hh + 0.13) / 2, rx * (1.1 - 0.5 * side), (hh + 0.13 - ry) / 2)
    long_back = long_rect * front * float(idt.long_hair)
    long_front = long_rect * (1 - front) * float(idt.long_hair)
    # cap: the crown of the head and a brim (to the front; sideways in the side view)
    if idt.hat:
        crown = head * soft(v - 0.85 * ry)
        brim = rect(side * rx * 0.6, 0.85 * ry, rx * (1.15 + 0.2 * side), 0.012)
        hat = np.maximum(crown, brim)
    else:
        hat = np.zeros((k, h, w), np.float32)

    # bag
    zeros = np.zeros((k, h, w), np.float32)
    if idt.bag == 1:
        pack = rect(0.0, t0 + 0.13, 0.085 * bw, 0.1)
        pack_side = rect(-(sw + 0.035), t0 + 0.13, 0.045, 0.1)
        straps = np.maximum(rect(0.065 * bw, t0 + 0.1, 0.012, 0.1), rect(-0.065 * bw, t0 + 0.1, 0.012, 0.1))
        bag = back * pack + side * pack_side + front * straps
    elif idt.bag in (2, 3):
        s = (-1.0 if idt.bag == 2 else 1.0) * (1.0 - 2.0 * back)  # mirrored when seen from behind
        bag = (1 - side) * rect(s * (sw + 2 * aw + 0.035), 0.57, 0.04, 0.05) + side * rect(0.02, 0.57, 0.04, 0.05)
    else:
        bag = zeros

    # pattern field in 0..1 (shirt colour → second colour)
    def stripes(x: np.ndarray) -> np.ndarray:
        return np.clip(0.5 + 2.0 * np.sin(2.0 * np.pi * x / idt.period), 0.0, 1.0)

    p = idt.pattern
    if p == 1:
        pat = stripes(v - t0)
    elif p == 2:
        pat = stripes(u + 0.25 * idt.period)
    elif p == 3:
        pat = np.abs(stripes(v - t0) - stripes(u + 0.25 * idt.period))
    elif p == 4:
        pat = soft(np.abs(v - (t0 + 0.4 * (t1 - t0))) - 0.6 * idt.period)
    elif p == 5:
        pat = soft(t0 + 0.5 * (t1 - t0) - v)
    else:
        pat = zeros
    return {
        "long_back": long_back, "legs": legs, "leg_skin": leg_skin, "shoes": shoes, "torso": torso,
        "arm_shirt": arm_shirt, "arm_skin": arm_skin, "neck": neck, "head": head, "hair": hair,
        "long_front": long_front, "hat": hat, "bag": bag, "pattern": np.broadcast_to(pat, (k, h, w)),
    }


def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    """Separable 3-tap box blur over axes 1, 2 (edge-replicated), ``passes`` times."""
    for _ in range(passes):
        p = np.pad(img, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (img.ndim - 3), mode="edge")
        img = (p[:, :-2] + p[:, 1:-1] + p[:, 2:]) / 3.0
        img = (img[:, :, :-2] + img[:, :, 1:-1] + img[:, :, 2:]) / 3.0
    return img


def _background(pose: dict[str, np.ndarray], cam: Camera, h: int, w: int) -> np.ndarray:
    """(k, h, w, C) scene: wall, floor, clutter objects."""
    k = pose["view"].shape[0]
    c = cam.wall.shape[0]
    Y = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None, None] / h
    X = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :, None] / w
    floor = np.clip((Y - cam.horizon) * h, 0, 1)
    img = cam.wall * (1 - floor) + cam.floor * floor + 0.05 * (Y - 0.5)
    img = np.broadcast_to(img, (k, h, w, c)).astype(np.float32).copy()
    for j in range(3):
        q = pose["clutter"][:, j]
        present = (pose["n_clutter"] > j).astype(np.float32)
        cx, cy, hw, hh = q[:, 0], 0.2 + 0.7 * q[:, 1], 0.05 + 0.2 * q[:, 2], 0.05 + 0.25 * q[:, 3]
        d = np.maximum(np.abs(X[..., 0] - _e(cx)) * w - _e(hw) * w, np.abs(Y[..., 0] - _e(cy)) * h - _e(hh) * h)
        a = np.clip(0.5 - d, 0, 1) * _e(present)
        if cam.thermal:
            col = (0.08 + 0.5 * q[:, 4] ** 3)[:, None]  # mostly cool, sometimes warm
        else:
            col = np.stack([_hsv(float(x), 0.4, 0.3 + 0.6 * float(y)) for x, y in zip(q[:, 4], q[:, 2])])
        img += a[..., None] * (col[:, None, None, :] - img)
    return img


def _paint(img: np.ndarray, a: np.ndarray, value: Any) -> None:
    """Composite ``value`` over ``img`` with coverage ``a`` (k, h, w), in place."""
    if a.any():
        img += a[..., None] * (value - img)


def render(idt: Identity, pose: dict[str, np.ndarray], cam: Camera, noise_rng: np.random.Generator) -> np.ndarray:
    """``k`` images (k, h, w, 3) uint8 of ``idt`` seen by ``cam`` in the given poses."""
    h, w = cam.size
    k = pose["view"].shape[0]
    g = _geometry(idt, pose, h, w)
    img = _background(pose, cam, h, w)
    if cam.thermal:
        shirt = (idt.t_shirt * (1 - g["pattern"]) + idt.t_shirt2 * g["pattern"])[..., None]
        colours: dict[str, Any] = {
            "long_back": idt.t_hair, "legs": idt.t_trousers, "leg_skin": idt.t_skin, "shoes": idt.t_shoes,
            "torso": shirt, "arm_shirt": shirt, "arm_skin": idt.t_skin, "neck": idt.t_skin,
            "head": idt.t_skin, "hair": idt.t_hair, "long_front": idt.t_hair, "hat": idt.t_hat,
            "bag": idt.t_bag,
        }
    else:
        jit = (1.0 + pose["jitter"]).astype(np.float32)[:, None, None, :]
        pat = g["pattern"][..., None]
        shirt = (idt.shirt * (1 - pat) + idt.shirt2 * pat) * jit
        colours = {
            "long_back": idt.hair, "legs": idt.trousers * jit, "leg_skin": idt.skin, "shoes": idt.shoes,
            "torso": shirt, "arm_shirt": shirt, "arm_skin": idt.skin, "neck": idt.skin,
            "head": idt.skin, "hair": idt.hair, "long_front": idt.hair, "hat": idt.hat_color,
            "bag": idt.bag_color,
        }
    for part, value in colours.items():
        _paint(img, g[part], np.asarray(value, np.float32))
    # an occluder in front (railing, bench, another object) for a few images
    occ = pose["occ"]
    Y = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None] / h
    X = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :] / w
    a_occ = np.clip((Y - (1 - _e(0.1 + 0.15 * occ[:, 0]))) * h, 0, 1) * (X < _e(0.4 + 0.6 * occ[:, 1]))
    a_occ = a_occ * _e(pose["occluder"])
    occ_val = (0.1 + 0.3 * occ[:, 2])[:, None] if cam.thermal else np.stack([_hsv(float(x), 0.3, 0.4) for x in occ[:, 2]])
    _paint(img, a_occ.astype(np.float32), occ_val[:, None, None, :].astype(np.float32))

    # sensor: lighting, blur, noise
    light = 1.0 + _e(pose["grad"][:, 0]) * (X - 0.5) + _e(pose["grad"][:, 1]) * (Y - 0.5)
    if cam.thermal:
        img = img * (cam.gain * _e(pose["gain"]))[..., None] + _e(pose["offset"])[..., None]
    else:
        img = img * (cam.gain * _e(pose["gain"]) * light)[..., None] * cam.cast
    if cam.blur:
        img = _blur(img, cam.blur)
    img = img + np.float32(cam.noise) * noise_rng.standard_normal(img.shape, dtype=np.float32)
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    if cam.thermal:
        out = np.repeat(out, 3, axis=3)
    assert out.shape == (k, h, w, 3)
    return out


# ----------------------------------------------------------------------------- output folders


@dataclass(frozen=True)
class SynthInfo:
    """What a synth call wrote."""

    layout: str
    out: str
    ids: int
    images: int
    seed: int
    params: dict[str, Any]
    splits: dict[str, list[int]]


def _check_args(ids: int, per: int, seed: int, min_ids: int) -> None:
    if ids < min_ids:
        raise DataError(f"--ids: expected at least {min_ids} identities, got {ids}")
    if per < 1:
        raise DataError(f"--images-per-cam: expected at least 1, got {per}")
    if seed < 0:
        raise DataError(f"--seed: expected a non-negative integer, got {seed}")


def _prepare_out(out: Path) -> None:
    """Refuse to replace a non-empty folder that ``mvd synth`` did not write."""
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise DataError(
                f"{out}: exists and was not written by `mvd synth` (no {MARKER}); "
                "choose another --out or remove it"
            )


def _commit(tmp: Path, out: Path) -> None:
    """Move the finished temp folder into place, replacing an earlier synth output."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_marker(tmp: Path, info: SynthInfo) -> None:
    (tmp / MARKER).write_text(json.dumps({**asdict(info), "generator": GENERATOR_VERSION,
                                           "mvd_version": __version__}, indent=1) + "\n")


def _scaled(cam: Camera, scale: float) -> Camera:
    """``cam`` with its image size and blur radius multiplied by ``scale``."""
    if scale == 1.0:
        return cam
    h, w = cam.size
    return dataclasses.replace(cam, size=(max(16, round(h * scale)), max(8, round(w * scale))),
                               blur=int(round(cam.blur * scale)))


def _split_ids(n: int, seed: int, fractions: tuple[float, float, float]) -> dict[str, list[int]]:
    ids = np.arange(1, n + 1)
    perm = np.random.default_rng([seed, _T_SPLIT, n]).permutation(ids)
    n_test = max(1, int(round(fractions[2] * n)))
    n_val = max(1, int(round(fractions[1] * n)))
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(f"split {fractions}: leaves no training ids out of {n}")
    return {
        "train": sorted(perm[:n_train].tolist()),
        "val": sorted(perm[n_train:n_train + n_val].tolist()),
        "test": sorted(perm[n_train + n_val:].tolist()),
    }


def synth_sysu(
    out: str | os.PathLike[str],
    ids: int = 60,
    images_per_cam: int = 5,
    seed: int = 0,
    *,
    split: tuple[float, float, float] = (0.6, 0.1, 0.3),
    missing_cam_p: float = 0.1,
    quality: int = 90,
    size_scale: float = 1.0,
) -> SynthInfo:
    """Write a synthetic SYSU-MM01 (raw layout) to ``out``; see the module docstring.

    ``split``: fractions of ids for train / val / test (at least one each). ``missing_cam_p``:
    chance that a (camera, id) folder is absent (every id keeps a visible and a thermal camera).
    ``size_scale``: image sizes (and blur radii) relative to :data:`SYSU_CAM_SIZES` -- 0.5
    renders about 64x32 crops, ~4x faster, for a model that sees 64x32 anyway (the demo).
    """
    out = Path(out)
    _check_args(ids, images_per_cam, seed, 3)
    if not 0.25 <= size_scale <= 4.0:
        raise DataError(f"size_scale: expected 0.25..4, got {size_scale}")
    _prepare_out(out)
    splits = _split_ids(ids, seed, split)
    cams = {c: _scaled(make_camera(seed, c, c in SYSU_THERMAL, SYSU_CAM_SIZES[c]), size_scale)
            for c in range(1, 7)}
    tmp = make_temp_dir(out)  # mode 0o777 & ~umask, not mkdtemp's 0700
    n_img = 0
    try:
        for pid in range(1, ids + 1):
            idt = make_identity(seed, pid)
            r = np.random.default_rng([seed, _T_IMG, pid])
            present = r.random(6) >= missing_cam_p
            if not present[[0, 1, 3, 4]].any():
                present[[0, 1, 3, 4][int(r.integers(4))]] = True
            if not present[[2, 5]].any():
                present[[2, 5][int(r.integers(2))]] = True
            for c in range(1, 7):
                if not present[c - 1]:
                    continue
                cr = np.random.default_rng([seed, _T_IMG, pid, c])
                imgs = render(idt, _draw_poses(cr, images_per_cam, cams[c]), cams[c], cr)
                folder = tmp / f"cam{c}" / f"{pid:04d}"
                folder.mkdir(parents=True)
                for j in range(images_per_cam):
                    Image.fromarray(imgs[j]).save(folder / f"{j + 1:04d}.jpg", quality=quality)
                n_img += images_per_cam
        for c in range(1, 7):
            (tmp / f"cam{c}").mkdir(exist_ok=True)
        (tmp / "exp").mkdir()
        for name, lst in splits.items():
            (tmp / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in lst) + "\n")
        info = SynthInfo("sysu", str(out), ids, n_img, seed,
                         {"images_per_cam": images_per_cam, "split": list(split),
                          "missing_cam_p": missing_cam_p, "quality": quality,
                          "size_scale": size_scale}, splits)
        _write_marker(tmp, info)
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("synthetic SYSU-MM01 in %s: %d ids (%d train, %d val, %d test), %d images",
             out, ids, len(splits["train"]), len(splits["val"]), len(splits["test"]), n_img)
    return info


def synth_regdb(
    out: str | os.PathLike[str],
    ids: int = 40,
    images_per_modality: int = 10,
    seed: int = 0,
    *,
    trials: int = 10,
) -> SynthInfo:
    """Write a synthetic RegDB to ``out`` (see the module docstring): per id
    ``images_per_modality`` co-registered visible/thermal BMP pairs, and ``trials`` train/test
    index file sets, each a random half/half split of the ids."""
    out = Path(out)
    _check_args(ids, images_per_modality, seed, 2)
    if trials < 1:
        raise DataError(f"trials: expected at least 1, got {trials}")
    _prepare_out(out)
    cam_v = make_camera(seed, 1, False, REGDB_SIZE, tag=_T_REGDB)
    cam_t = make_camera(seed, 2, True, REGDB_SIZE, tag=_T_REGDB)
    tmp = make_temp_dir(out)  # mode 0o777 & ~umask, not mkdtemp's 0700
    rel: dict[int, tuple[list[str], list[str]]] = {}
    frame = 0
    try:
        for pid in range(1, ids + 1):
            idt = make_identity(seed, pid)
            r = np.random.default_rng([seed, _T_REGDB, pid, 3])
            view = np.full(images_per_modality, idt.facing)  # one walk towards/away from the camera
            pose = _draw_poses(r, images_per_modality, cam_v, view=view)
            vis = render(idt, pose, cam_v, r)
            pose_t = dict(pose)
            pose_t["n_clutter"] = np.zeros_like(pose["n_clutter"])
            th = render(idt, pose_t, cam_t, r)
            sex = "female" if idt.female else "male"
            facing = ("front", "back")[idt.facing]
            vl, tl = [], []
            for j in range(images_per_modality):
                frame += 1
                for mod, letter, arr, lst in (("Visible", "v", vis, vl), ("Thermal", "t", th, tl)):
                    folder = tmp / mod / str(pid)
                    folder.mkdir(parents=True, exist_ok=True)
                    name = f"{sex}_{facing}_{letter}_{frame:05d}_{pid}.bmp"
                    Image.fromarray(arr[j]).save(folder / name)
                    lst.append(f"{mod}/{pid}/{name}")
            rel[pid] = (vl, tl)
        (tmp / "idx").mkdir()
        splits: dict[str, list[int]] = {}
        for t in range(1, trials + 1):
            perm = np.random.default_rng([seed, _T_TRIAL, t]).permutation(np.arange(1, ids + 1)).tolist()
            half = ids // 2
            for split_name, part in (("train", perm[:half]), ("test", perm[half:])):
                for m, mod in ((0, "visible"), (1, "thermal")):
                    lines = [f"{p} {lab}" for lab, pid in enumerate(part) for p in rel[pid][m]]
                    (tmp / "idx" / f"{split_name}_{mod}_{t}.txt").write_text("\n".join(lines) + "\n")
                splits[f"{split_name}_{t}"] = sorted(part)
        info = SynthInfo("regdb", str(out), ids, 2 * ids * images_per_modality, seed,
                         {"images_per_modality": images_per_modality, "trials": trials}, splits)
        _write_marker(tmp, info)
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("synthetic RegDB in %s: %d ids, %d images, %d trials", out, ids, info.images, trials)
    return info


def synth_llcm(
    out: str | os.PathLike[str],
    ids: int = 40,
    images_per_cam: int = 2,
    seed: int = 0,
    *,
    test_fraction: float = 1 / 3,
    missing_cam_p: float = 0.5,
    quality: int = 90,
) -> SynthInfo:
    """Write a synthetic LLCM to ``out`` (see the module docstring): ``images_per_cam`` images per
    present (camera, id); ``test_fraction`` of the ids test (the real split: 351 of 1,064), the
    rest train; each camera is absent for an id with chance ``missing_cam_p``."""
    out = Path(out)
    _check_args(ids, images_per_cam, seed, 2)
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction: expected a fraction in (0, 1), got {test_fraction}")
    _prepare_out(out)
    perm = np.random.default_rng([seed, _T_SPLIT, ids, _T_LLCM]).permutation(np.arange(1, ids + 1))
    n_test = min(ids - 1, max(1, int(round(test_fraction * ids))))
    splits = {"train": sorted(perm[n_test:].tolist()), "test": sorted(perm[:n_test].tolist())}
    label = {pid: k for k, pid in enumerate(splits["train"])}
    cams = {("vis", c): make_camera(seed, c, False, LLCM_SIZE, tag=_T_LLCM) for c in LLCM_VISIBLE}
    cams.update({("nir", c): make_camera(seed, 10 + c, True, LLCM_SIZE, tag=_T_LLCM) for c in LLCM_INFRARED})
    tmp = make_temp_dir(out)  # mode 0o777 & ~umask, not mkdtemp's 0700
    lists: dict[str, list[str]] = {"vis": [], "nir": []}
    n_img = 0
    try:
        for pid in range(1, ids + 1):
            idt = make_identity(seed, pid)
            split = "train" if pid in label else "test"
            r = np.random.default_rng([seed, _T_LLCM, pid])
            for mod, mcams in (("vis", LLCM_VISIBLE), ("nir", LLCM_INFRARED)):
                present = r.random(len(mcams)) >= missing_cam_p
                if not present.any():
                    present[int(r.integers(len(mcams)))] = True
                for c, here in zip(mcams, present.tolist()):
                    if not here:
                        continue
                    cam = cams[(mod, c)]
                    cr = np.random.default_rng([seed, _T_LLCM, pid, 1 + (mod == "nir"), c])
                    imgs = render(idt, _draw_poses(cr, images_per_cam, cam), cam, cr)
                    rel = Path(f"{split}_{mod}") / f"cam{c}" / f"{pid:04d}"
                    (tmp / rel).mkdir(parents=True)
                    for j in range(images_per_cam):
                        name = f"{pid:04d}_c{c}_{j + 1:04d}.jpg"
                        Image.fromarray(imgs[j]).save(tmp / rel / name, quality=quality)
                        if split == "train":
                            lists[mod].append(f"{(rel / name).as_posix()} {label[pid]}")
                    n_img += images_per_cam
        for mod in ("vis", "nir"):
            (tmp / f"test_{mod}").mkdir(exist_ok=True)
        (tmp / "idx").mkdir()
        for mod in ("vis", "nir"):
            (tmp / "idx" / f"train_{mod}.txt").write_text("\n".join(lists[mod]) + "\n")
        (tmp / "idx" / "test_id.txt").write_text(",".join(str(i) for i in splits["test"]) + "\n")
        info = SynthInfo("llcm", str(out), ids, n_img, seed,
                         {"images_per_cam": images_per_cam, "test_fraction": test_fraction,
                          "missing_cam_p": missing_cam_p, "quality": quality}, splits)
        _write_marker(tmp, info)
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("synthetic LLCM in %s: %d ids (%d train, %d test), %d images",
             out, ids, len(splits["train"]), len(splits["test"]), n_img)
    return info
