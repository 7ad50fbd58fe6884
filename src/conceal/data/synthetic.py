"""Procedurally rendered faces with exact ground truth: the built-in dataset and the data of most tests.

Why a renderer rather than a folder of images: every label is known exactly (no annotation noise), each
sensitive attribute is drawn with a clear visual cue, and any number of images at any size come from a
seed in seconds, with no download. Labels follow UTKFace's schema (age, gender, race) plus two
non-sensitive attributes (smile, hair colour), so one pipeline runs on both.

What carries each attribute (so a concealment method has something real to remove):

- gender: female = long hair falling to the shoulders and framing the face, narrower (tapered) jaw,
  coloured lips, eyeliner, thin brows; male = short hair with sideburns, wide jaw, thick brows, stubble
  shading on adult faces.
- age: children have rounder faces, larger and lower-set eyes, smaller noses and mouths; with age come
  forehead lines, crow's feet, nasolabial folds, under-eye bags, narrower eyes, greying hair (from ~45,
  fully grey by ~75; the ``hair`` label becomes ``gray`` past half-way) and a receding hairline in men.
- race: skin tone from five palettes distinct in lightness and hue (light pink, dark brown, light
  yellow, medium brown, reddish tan), jittered per identity.
- smile: corners of the mouth lifted and an open mouth showing teeth.
- hair: colour of the hair and brows.

Identity = everything fixed per person: geometry (face width and aspect, jaw taper, eye spacing/size/
height, brow gap, nose length/width, mouth height/width), eye colour, skin tone, gender, race, natural
hair colour and style, stubble density, base age. Each identity is rendered ~10 times with different
nuisance: age jitter (+-3 years), smile, background gradient, clothing, light direction, gaze,
brightness, colour cast, a shift of +-3 px and tilt of +-8 degrees (at 64 px; scaled with size), a small
zoom, and mild pixel noise. Attributes are sampled independently of each other (only grey hair follows
age), so each can be concealed without a confound doing the work.

Rendering is vectorised with numpy over a chunk of images: per-image parameters have shape (B, 1, 1) and
broadcast against a per-image face-frame coordinate grid (B, H, W). Shapes are soft-edged signed-distance
primitives (ellipses, rounded boxes, curves, segments) alpha-composited back to front; each small
feature is evaluated only inside the pixel window that can contain it for this chunk, which is what
makes 10,000 faces at 64x64 take seconds. Geometry lives in normalised coordinates (the image spans
[-1, 1]) so any ``size`` renders directly. Every random number is drawn up front, per image, from
``np.random.default_rng(seed)``; rendering is a pure function of those numbers, so the bytes do not
depend on how the work is chunked or threaded.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..config import setting
from .base import DataError, FaceArrays, FaceDataset, assign_split
from .schema import AGE, GENDER, RACE, Label, LabelSchema

SMILE = Label("smile", "binary", ("no", "yes"))
HAIR = Label("hair", "categorical", ("black", "brown", "blond", "red", "gray"))
SYNTHETIC_SCHEMA = LabelSchema((AGE, GENDER, RACE, SMILE, HAIR))

F32 = np.float32

# Skin tone per RACE class (RGB in 0..1). Chosen to differ in lightness *and* hue, so race stays
# recoverable from the skin's colour ratios after the per-image brightness change.
SKIN = np.array(
    [
        [0.96, 0.78, 0.70],  # white: light, pink
        [0.40, 0.26, 0.18],  # black: dark brown
        [0.95, 0.81, 0.58],  # asian: light, yellow
        [0.68, 0.46, 0.31],  # indian: medium brown
        [0.82, 0.60, 0.50],  # other: tan, redder than asian or indian
    ],
    dtype=F32,
)
RACE_P = np.array([0.30, 0.20, 0.20, 0.20, 0.10])  # mildly unbalanced, like real data

# Natural hair colour per HAIR class 0..3; class 4 (gray) is what age blends towards.
HAIR_RGB = np.array(
    [
        [0.09, 0.08, 0.08],  # black
        [0.36, 0.22, 0.12],  # brown
        [0.88, 0.74, 0.44],  # blond
        [0.72, 0.30, 0.12],  # red
        [0.80, 0.80, 0.80],  # gray
    ],
    dtype=F32,
)
HAIR_P = np.array([0.35, 0.35, 0.18, 0.12])
GRAY = 4

EYE_RGB = np.array(
    [[0.30, 0.18, 0.10], [0.15, 0.09, 0.06], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.45, 0.33, 0.15]],
    dtype=F32,
)  # brown, dark brown, blue, green, hazel
LIPSTICK = np.array([0.78, 0.16, 0.26], dtype=F32)
# Fixed colours for the planar canvas: (3, 1, 1, 1).
TEETH = np.array([0.96, 0.94, 0.88], dtype=F32).reshape(3, 1, 1, 1)
EYE_WHITE = np.array([0.96, 0.96, 0.94], dtype=F32).reshape(3, 1, 1, 1)
PUPIL = np.full((3, 1, 1, 1), 0.03, dtype=F32)

FACE_CY = -0.02  # face centre height in the face frame (image spans [-1, 1], y down)
CHUNK = 128  # images per render chunk: big enough to amortise numpy overhead, small enough for cache
NOISE_BANK = 64  # distinct noise textures; each image picks one (cheap, and chunking-independent)


def _u(rng, lo, hi, n):
    return rng.uniform(lo, hi, n).astype(F32)


def sample_identities(n_identities: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-identity constants, each an (n_identities,) array (colours (n_identities, 3)).

    Geometry is in units of the face's half-width ``rx``/half-height ``ry`` where that makes it
    proportional; gender, race, natural hair colour and base age are fixed per person too.
    """
    k = n_identities
    female = rng.random(k) < 0.5
    race = rng.choice(len(SKIN), size=k, p=RACE_P)
    # UTKFace-like ages: some children, mostly adults, a tail of older people.
    group = rng.choice(3, size=k, p=[0.15, 0.60, 0.25])
    base_age = np.select([group == 0, group == 1], [rng.uniform(1, 15, k), rng.uniform(15, 55, k)], rng.uniform(55, 90, k))
    f = female.astype(F32)
    ids = {
        "female": female,
        "race": race.astype(np.int64),
        "base_age": base_age.astype(F32),
        "hair": rng.choice(4, size=k, p=HAIR_P).astype(np.int64),
        "skin": (SKIN[race] * rng.uniform(0.95, 1.05, (k, 1)) + rng.uniform(-0.025, 0.025, (k, 3))).astype(F32),
        "eye_rgb": EYE_RGB[rng.choice(len(EYE_RGB), size=k)],
        "face_rx": _u(rng, 0.40, 0.47, k) * (1 - 0.04 * f),
        "aspect": _u(rng, 1.22, 1.40, k),
        # Jaw taper: how much the face narrows towards the chin. Men's jaws stay wide.
        "taper": np.where(female, _u(rng, 0.34, 0.46, k), _u(rng, 0.04, 0.16, k)).astype(F32),
        "eye_dx": _u(rng, 0.38, 0.47, k),  # x rx
        "eye_y": _u(rng, -0.16, -0.05, k),  # x ry, from the face centre
        "eye_r": _u(rng, 0.068, 0.088, k),
        "eye_asp": _u(rng, 0.50, 0.68, k),
        "brow_gap": _u(rng, 0.025, 0.05, k),
        "brow_t": np.where(female, _u(rng, 0.012, 0.018, k), _u(rng, 0.024, 0.034, k)).astype(F32),
        "brow_arch": _u(rng, -0.005, 0.03, k),
        "nose_len": _u(rng, 0.30, 0.42, k),  # x ry, from the eye line
        "nose_w": _u(rng, 0.05, 0.085, k),
        "mouth_gap": _u(rng, 0.21, 0.28, k),  # x ry, from the nose
        "mouth_w": _u(rng, 0.36, 0.48, k),  # x rx
        "lip_t": _u(rng, 0.014, 0.024, k),
        "lipstick": np.where(female, _u(rng, 0.55, 0.95, k), 0).astype(F32),
        "stubble": np.where(female, 0, _u(rng, 0.45, 1.0, k)).astype(F32),
        # Hair style: women's hair ends between the chin and below the shoulders; some have a fringe.
        "hair_end": _u(rng, 0.72, 1.15, k),
        "hairline": np.where(female, np.where(rng.random(k) < 0.35, _u(rng, 0.25, 0.4, k), _u(rng, 0.5, 0.62, k)), _u(rng, 0.5, 0.62, k)).astype(F32),
        "hair_vol": np.where(female, _u(rng, 0.07, 0.13, k), _u(rng, 0.025, 0.07, k)).astype(F32),
        "recede": np.where(female, 0, _u(rng, 0.0, 1.0, k)).astype(F32),
        "strand_phase": _u(rng, 0, 2 * np.pi, k),
    }
    return ids


def _sample_images(ids: dict[str, np.ndarray], identity: np.ndarray, rng: np.random.Generator) -> tuple[dict, dict]:
    """Per-image labels (n,) and render parameters ((n,) or (n, 3)) from identities and nuisance."""
    n = len(identity)
    g = {k: v[identity] for k, v in ids.items()}
    age = np.clip(np.round(g["base_age"]) + rng.integers(-3, 4, n), 0, 116).astype(F32)
    smile = rng.random(n) < 0.5
    female = g["female"].astype(F32)

    child = np.clip((15 - age) / 13, 0, 1).astype(F32)  # 1 at age 2, 0 from 15
    old = np.clip((age - 30) / 45, 0, 1).astype(F32)  # wrinkles: from 30, full at 75
    gray = np.clip((age - 45) / 30, 0, 1).astype(F32)  # grey hair: from 45, full at 75
    hair_label = np.where(gray > 0.5, GRAY, g["hair"])

    rx = g["face_rx"] * (1 - 0.06 * child)
    ry = rx * g["aspect"] * (1 - 0.15 * child)  # children: rounder faces
    eye_y = FACE_CY + ry * (g["eye_y"] + 0.12 * child)  # children: eyes lower in the face
    er = g["eye_r"] * (1 + 0.4 * child)  # children: bigger eyes
    eye_h = er * g["eye_asp"] * (1 - 0.25 * old)  # old: narrower eyes
    nose_y = eye_y + ry * g["nose_len"] * (1 - 0.3 * child)
    mouth_y = nose_y + ry * g["mouth_gap"] * (1 - 0.1 * child)
    hair_rgb = HAIR_RGB[g["hair"]] * (1 - gray[:, None]) + HAIR_RGB[GRAY] * gray[:, None]
    brow_rgb = hair_rgb * 0.75
    skin = g["skin"] * (1 - 0.06 * old[:, None]) + 0.06 * old[:, None] * g["skin"].mean(1, keepdims=True)

    s = smile * _u(rng, 0.7, 1.0, n)  # smile strength, 0 = neutral
    male_lip = g["skin"] * np.array([0.82, 0.60, 0.58], F32)
    lip_rgb = male_lip + g["lipstick"][:, None] * (LIPSTICK - male_lip)

    # Background: a gradient between two random muted colours along a random direction.
    grey = rng.uniform(0.25, 0.8, (n, 1))
    bg0 = (grey + 0.6 * (rng.uniform(0.1, 0.9, (n, 3)) - grey)).astype(F32)
    bg1 = np.clip(bg0 + rng.uniform(-0.25, 0.25, (n, 3)), 0, 1).astype(F32)
    cast = 1 + rng.uniform(-0.03, 0.03, (n, 3))
    light = rng.uniform(0, 2 * np.pi, n)
    p = {
        # nuisance
        "du": _u(rng, -3 / 32, 3 / 32, n),  # +-3 px at 64
        "dv": _u(rng, -3 / 32, 3 / 32, n),
        "tilt": np.deg2rad(_u(rng, -8, 8, n)).astype(F32),
        "scale": _u(rng, 0.95, 1.05, n),
        "bg0": bg0,
        "bg1": bg1,
        "bg_dir": _u(rng, 0, 2 * np.pi, n),
        "cloth": _u(rng, 0.05, 0.85, 3 * n).reshape(n, 3),
        "light_x": np.cos(light).astype(F32) * 0.1,
        "light_y": np.sin(light).astype(F32) * 0.1,
        "gaze": _u(rng, -0.25, 0.25, n),
        "gain": (rng.uniform(0.85, 1.15, (n, 1)) * cast).astype(F32),
        "noise_idx": rng.integers(0, NOISE_BANK, n),
        "noise": _u(rng, 0.008, 0.03, n),
        # identity + age geometry (face frame)
        "female": female,
        "rx": rx,
        "ry": ry,
        "taper": g["taper"] * (1 - 0.5 * child),
        "eye_dx": rx * g["eye_dx"],
        "eye_y": eye_y,
        "er": er,
        "eye_h": eye_h,
        "brow_y": eye_y - eye_h - g["brow_gap"] - 0.03 * child,
        "brow_t": g["brow_t"],
        "brow_arch": g["brow_arch"],
        "nose_y": nose_y,
        "nose_w": g["nose_w"] * (1 - 0.3 * child),
        "mouth_y": mouth_y,
        "mouth_w": rx * g["mouth_w"] * (1 - 0.2 * child) * (1 + 0.15 * s),  # a smile widens the mouth
        "lip_t": g["lip_t"],
        "smile": s,
        "mouth_lift": (0.06 * s + (1 - smile) * _u(rng, -0.012, 0.008, n)).astype(F32),
        "mouth_open": 0.06 * s,
        "old": old,
        "stubble": g["stubble"] * np.clip((age - 16) / 6, 0, 1),
        "hair_end": g["hair_end"],
        "hairline": g["hairline"] - 0.05 * child,
        "hair_vol": g["hair_vol"],
        "recede": g["recede"] * gray,
        "strand_phase": g["strand_phase"],
        # colours (n, 3)
        "skin": skin.astype(F32),
        "hair_rgb": hair_rgb.astype(F32),
        "brow_rgb": brow_rgb.astype(F32),
        "eye_rgb": g["eye_rgb"],
        "lip_rgb": lip_rgb.astype(F32),
    }
    labels = {
        "age": age,
        "gender": female.astype(F32),
        "race": g["race"].astype(F32),
        "smile": smile.astype(F32),
        "hair": hair_label.astype(F32),
    }
    return labels, {k: np.ascontiguousarray(v, dtype=np.int64 if k == "noise_idx" else F32) for k, v in p.items()}


# ---------------------------------------------------------------------------------------------------
# Drawing primitives. Inputs: face-frame coordinates x, y (B, h, w); per-image parameters (B, 1, 1);
# ``px`` = pixels per face-frame unit (B, 1, 1). Outputs: coverage alpha (B, h, w) in [0, 1], with a
# one-pixel linear ramp at the edge (anti-aliasing from the signed distance in pixels).


def _cov(d_px):
    """Signed distance in pixels (negative inside) -> coverage."""
    return np.clip(0.5 - d_px, 0, 1)


def _ellipse(x, y, cx, cy, rx, ry, px):
    q = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _cov((q - 1) * (np.minimum(rx, ry) * px).astype(F32))


def _rbox(x, y, cx, cy, hw, hh, r, px):
    """Rounded box centred (cx, cy), half sizes (hw, hh), corner radius r (exact SDF)."""
    qx = np.abs(x - cx) - (hw - r)
    qy = np.abs(y - cy) - (hh - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return _cov((outside + np.minimum(np.maximum(qx, qy), 0) - r) * px)


def _band(y, centre, half, px):
    """|y - centre| < half: a stroke of half-width ``half`` along a curve given as y = centre(x)."""
    return _cov((np.abs(y - centre) - half) * px)


def _span(x, lo, hi, px):
    """lo < x < hi: the interval's coverage of a one-pixel box around x, so an empty interval
    (lo == hi, e.g. a closed mouth) draws nothing and a thin one draws faintly."""
    return np.clip(np.minimum((hi - x) * px, 0.5) + np.minimum((x - lo) * px, 0.5), 0, 1)


def _segment(x, y, ax, ay, bx, by, half, px):
    """Stroke from (ax, ay) to (bx, by) with half-width ``half`` and round caps."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0, 1)
    return _cov((np.sqrt((x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2) - half) * px)


class _Chunk:
    """One chunk of B images: the canvas (B, H, W, 3), face-frame grids and window bookkeeping.

    Each feature is drawn only inside a pixel *window* that contains it in every image of the chunk
    (the union of the per-image boxes, plus a margin). Outside its box a feature's coverage is exactly
    0, so windows change the cost, never the pixels.
    """

    def __init__(self, p: dict[str, np.ndarray], size: int, crop: float):
        self.p = p
        self.size, self.crop = size, crop
        B = len(p["rx"])
        grid = ((np.arange(size, dtype=F32) + 0.5) / size * 2 - 1) * F32(crop)  # (S,) image coords
        self.u, self.v = grid[None, None, :], grid[None, :, None]  # (1, 1, W), (1, H, 1)
        c, s = np.cos(p["tilt"]), np.sin(p["tilt"])
        self.cos, self.sin = c, s  # (B,)
        c3, s3, sc = c[:, None, None], s[:, None, None], p["scale"][:, None, None]
        uu, vv = self.u - p["du"][:, None, None], self.v - p["dv"][:, None, None]
        # Face frame = image frame, shifted, rotated by the tilt and scaled: (B, H, W) each.
        self.X = (c3 * uu + s3 * vv) / sc
        self.Y = (-s3 * uu + c3 * vv) / sc
        self.px = (F32(size / 2 / crop) * p["scale"])[:, None, None]  # pixels per face unit (B, 1, 1)
        # Planar canvas (3, B, H, W): colour ops then broadcast per-image colours (3, B, 1, 1) over long
        # contiguous pixel runs; an interleaved (..., 3) layout makes numpy loop 3 values at a time.
        self.canvas = np.empty((3, B, size, size), F32)

    def q(self, name):
        """A per-image parameter shaped to broadcast against (B, h, w); colours as (3, B, 1, 1)."""
        a = self.p[name]
        return a[:, None, None] if a.ndim == 1 else np.ascontiguousarray(a.T)[:, :, None, None]

    def window(self, x0, x1, y0, y1):
        """Pixel window (row slice, col slice) covering the face-frame box [x0, x1] x [y0, y1] (each (B,)
        or scalar) of every image in the chunk, with a 2-pixel margin."""
        p, c, s = self.p, self.cos, self.sin
        xs = np.stack(np.broadcast_arrays(x0, x1, x0, x1, p["rx"])[:4])  # box corners (4, B)
        ys = np.stack(np.broadcast_arrays(y0, y0, y1, y1, p["rx"])[:4])
        u = (c * xs - s * ys) * p["scale"] + p["du"]  # face -> image frame
        v = (s * xs + c * ys) * p["scale"] + p["dv"]
        half = self.size / 2

        def pixels(a):
            lo = int(np.clip(np.floor((a.min() / self.crop + 1) * half - 0.5) - 2, 0, self.size))
            hi = int(np.clip(np.ceil((a.max() / self.crop + 1) * half - 0.5) + 3, 0, self.size))
            return slice(lo, max(lo, hi))

        return pixels(v), pixels(u)

    def xy(self, win):
        rows, cols = win
        return self.X[:, rows, cols], self.Y[:, rows, cols]

    def over(self, win, alpha, colour):
        """Composite ``colour`` ((3, B, 1, 1) or (3, B, h, w)) over the canvas window with ``alpha`` (B, h, w)."""
        view = self.canvas[:, :, win[0], win[1]]
        diff = colour - view
        diff *= alpha
        view += diff


def _strands(x, y, phase):
    """Hair texture: a gentle wavy stripe pattern so hair reads as hair, not a flat blob. (B, h, w)"""
    return 1 + 0.07 * np.sin(x * 40 + phase + 2.5 * np.sin(y * 5))


def _render_chunk(p: dict[str, np.ndarray], size: int, crop: float, bank: np.ndarray) -> np.ndarray:
    """Render one chunk: parameters (B,)/(B, 3) -> images (B, size, size, 3) uint8.

    Layers, back to front: background, long hair (back), shoulders and neck, long hair (front of the
    shoulders), ears, face, stubble, eyes and brows, wrinkles, nose, folds, mouth, front hair, camera.
    Layers that no image of the chunk needs (e.g. long hair in an all-male chunk) are skipped.
    """
    ch = _Chunk(p, size, crop)
    q, px = ch.q, ch.px
    rx, ry, cy = q("rx"), q("ry"), F32(FACE_CY)
    skin, hair = q("skin"), q("hair_rgb")
    female, phase = q("female"), q("strand_phase")
    hair_end, vol = q("hair_end"), q("hair_vol")
    # Per-image (B,) values for the windows.
    prx, pry, pvol = p["rx"], p["ry"], p["hair_vol"]
    any_female, any_male = p["female"].max() > 0, p["female"].min() < 1
    any_old = p["old"].max() > 0

    # Background gradient in the image frame (not tilted with the head).
    d = p["bg_dir"][:, None, None]
    t = np.clip(0.5 + 0.5 * (np.cos(d) * ch.u + np.sin(d) * ch.v), 0, 1)  # (B, H, W)
    bg0, bg1 = q("bg0"), q("bg1")
    for c in range(3):  # straight into the canvas, no (3, B, H, W) temporaries
        np.multiply(t, bg1[c] - bg0[c], out=ch.canvas[c])
        ch.canvas[c] += bg0[c]

    # Shoulders (clothing).
    win = ch.window(-1.0, 1.0, 0.73, 1.83)
    x, y = ch.xy(win)
    ch.over(win, _ellipse(x, y, 0, 1.28, 1.0, 0.55, px), q("cloth"))

    # Long hair (women only: alpha x female): around the head and falling in front of the shoulders on
    # either side of the neck (the neck, drawn next, hides the part behind it).
    neck_hw = rx * (0.46 - 0.06 * female)
    if any_female:
        win = ch.window(-1.3 * prx, 1.3 * prx, FACE_CY - pry - pvol - 0.08, np.maximum(p["hair_end"], FACE_CY + pry + pvol))
        x, y = ch.xy(win)
        curtain = _rbox(x, y, 0, (cy + hair_end) / 2, rx * 1.28, (hair_end - cy) / 2, 0.12, px)
        curtain *= _cov((neck_hw + 0.04 - np.abs(x)) * px)
        back = np.maximum(_ellipse(x, y, 0, cy - 0.04, rx * 1.22, ry + vol + 0.02, px), curtain)
        ch.over(win, back * female, hair * (0.85 * _strands(x, y, phase)))

    # Neck.
    win = ch.window(-0.5 * prx, 0.5 * prx, FACE_CY + 0.9 * pry - 0.35, FACE_CY + 0.9 * pry + 0.35)
    x, y = ch.xy(win)
    ch.over(win, _rbox(x, y, 0, cy + ry * 0.9, neck_hw, 0.35, 0.05, px), skin * 0.82)

    # Ears (behind the face outline).
    win = ch.window(-0.98 * prx - 0.08, 0.98 * prx + 0.08, p["eye_y"] - 0.05, p["eye_y"] + 0.19)
    x, y = ch.xy(win)
    ch.over(win, _ellipse(np.abs(x), y, rx * 0.98, q("eye_y") + 0.07, 0.07, 0.11, px), skin * 0.88)

    # Face: an egg-shaped ellipse, narrowing towards the chin by the jaw taper, shaded as a rounded
    # surface lit from a random direction.
    face_win = ch.window(-prx, prx, FACE_CY - pry, FACE_CY + pry)
    x, y = ch.xy(face_win)
    fy = (y - cy) / ry
    w = rx * (1 - q("taper") * np.clip(fy, 0, 1) ** 2)
    r = np.sqrt((x / w) ** 2 + fy**2)  # (B, h, w), 1 on the outline
    face = _cov((r - 1) * rx * px)
    shade = 1 - 0.22 * np.clip(r, 0, 1) ** 4 + q("light_x") * x / rx + q("light_y") * fy
    ch.over(face_win, face, skin * shade)

    # Stubble: darker, hair-tinted jaw, chin and upper lip (adult men), fading in below the nose.
    ny = q("nose_y")
    if p["stubble"].max() > 0:
        r0 = face_win[0].start
        win = ch.window(-prx, prx, p["nose_y"] - 0.05, FACE_CY + pry)
        win = (slice(max(win[0].start, r0), min(win[0].stop, face_win[0].stop)), face_win[1])
        x, y = ch.xy(win)
        beard = np.clip((y - ny) / (q("mouth_y") - ny + 0.02), 0, 1) * face[:, win[0].start - r0 : win[0].stop - r0]
        beard *= 1 - 0.7 * _ellipse(x, y, 0, ny + 0.01, q("nose_w") * 1.4, 0.04, px)
        ch.over(win, beard * (q("stubble") * 0.45), skin * 0.45 + hair * 0.2)

    # Eyes (mirrored: |x| draws both at once), lids, brows, and crow's feet / bags with age.
    ex, ey, er, eh = q("eye_dx"), q("eye_y"), q("er"), q("eye_h")
    old = q("old")
    reach = p["eye_dx"] + 1.4 * p["er"] + 0.07
    win = ch.window(-reach, reach, p["brow_y"] - 0.08, p["eye_y"] + 1.5 * p["eye_h"] + 0.2 * p["er"] + 0.04)
    x, y = ch.xy(win)
    ax = np.abs(x)
    if any_old:
        bags = _band(y, ey + eh * 1.5 + 0.4 * (ax - ex) ** 2 / er, 0.007, px)
        bags *= _span(ax, ex - er * 0.7, ex + er * 0.7, px)
        ch.over(win, bags * (old * 0.6), skin * 0.7)
    lid = _ellipse(ax, y, ex, ey, er * 1.12, eh * 1.3, px)  # eyelid/lash outline; eyeliner for women
    ch.over(win, lid, skin * (0.55 - 0.4 * female) + 0.05)
    white = _ellipse(ax, y, ex, ey, er, eh, px)
    ch.over(win, white, EYE_WHITE)
    ix = ex + q("gaze") * er * np.sign(x)  # gaze moves both irises the same way
    iris = _ellipse(ax, y, ix, ey, er * 0.55, er * 0.55, px) * white
    ch.over(win, iris, q("eye_rgb"))
    ch.over(win, _ellipse(ax, y, ix, ey, er * 0.24, er * 0.24, px) * white, PUPIL)
    by = q("brow_y") - q("brow_arch") * (1 - ((ax - ex) / (er * 1.4)) ** 2)
    brow = _band(y, by, q("brow_t"), px) * _span(ax, ex - er * 1.3, ex + er * 1.4, px)
    ch.over(win, brow, q("brow_rgb"))
    if any_old:
        cx0 = ex + er * 1.25
        feet = np.maximum.reduce(
            [_segment(ax, y, cx0, ey + dy * 0.4, cx0 + 0.05, ey + dy, 0.005, px) for dy in (-0.03, 0.0, 0.03)]
        )
        ch.over(win, feet * (np.clip(old * 1.6, 0, 1) * 0.55), skin * 0.55)

        # Forehead lines: up to three, appearing one after another with age.
        win = ch.window(-0.5 * prx, 0.5 * prx, FACE_CY - 0.55 * pry - 0.01, FACE_CY - 0.36 * pry + 0.04)
        x, y = ch.xy(win)
        lines = np.zeros_like(x)
        for k, h in enumerate((0.36, 0.45, 0.54)):
            yk = cy - ry * h + 0.12 * (x / rx) ** 2
            lk = _band(y, yk, 0.0055, px) * _span(np.abs(x), -1, rx * 0.5, px)
            lines = np.maximum(lines, lk * np.clip(old * 3 - k * 0.8, 0, 1))
        ch.over(win, lines * 0.6, skin * 0.55)

    # Nose: a shadow along one side, the tip and the nostrils.
    nw = q("nose_w")
    reach = p["nose_w"] + 0.03
    win = ch.window(-reach, reach, p["eye_y"] + 0.05, p["nose_y"] + 0.9 * p["nose_w"] + 0.02)
    x, y = ch.xy(win)
    side = _segment(x, y, nw * 0.25, ey + 0.06, nw * 0.55, ny - 0.03, 0.008, px)
    ch.over(win, side * 0.35, skin * 0.6)
    tip = _band(y, ny - 0.005 + 0.9 * x**2 / nw, 0.007, px) * _span(np.abs(x), -1, nw, px)
    ch.over(win, tip * 0.35, skin * 0.6)
    ch.over(win, _ellipse(np.abs(x), y, nw * 0.5, ny, 0.022, 0.012, px) * 0.8, skin * 0.45)

    # Nasolabial folds: age, and smiling deepens them.
    my, mw = q("mouth_y"), q("mouth_w")
    reach = 1.2 * p["mouth_w"] + 0.02
    win = ch.window(-reach, reach, p["nose_y"] - 0.04, p["mouth_y"] + 0.07)
    x, y = ch.xy(win)
    fold = _segment(np.abs(x), y, nw * 1.1, ny - 0.02, mw * 1.2, my + 0.05, 0.006, px)
    ch.over(win, fold * (np.clip(old * 1.2 + 0.35 * q("smile"), 0, 1) * 0.5), skin * 0.6)

    # Mouth. t in [-1, 1] across; the mouth line rises at the corners by ``mouth_lift`` (a smile) and
    # opens by ``mouth_open`` in the middle to show teeth.
    reach = 1.05 * p["mouth_w"] + 0.01
    win = ch.window(-reach, reach, p["mouth_y"] - 0.1, p["mouth_y"] + 0.13)
    x, y = ch.xy(win)
    t = x / mw
    t2 = np.minimum(t * t, 1)
    yu = my - q("mouth_lift") * t2  # mouth line / top of the opening (B, h, w)
    yl = yu + q("mouth_open") * (1 - t2)
    inside = _span(x, -mw, mw, px)
    lt = q("lip_t") * (1 - 0.6 * t2)
    lips = _span(y, yu - lt * 0.9, yl + lt * 1.2, px) * _span(x, -mw * 1.04, mw * 1.04, px)
    ch.over(win, lips, q("lip_rgb"))
    if p["smile"].max() > 0:
        opening = _span(y, yu, yl, px) * inside
        ch.over(win, opening, TEETH * 0.9)
        lower = _band(y, yl, 0.005, px) * inside * (q("smile") > 0)
        ch.over(win, lower * 0.7, q("lip_rgb") * 0.4)
    edge = _band(y, yu, 0.005, px) * inside  # dark line between the lips / above the teeth
    ch.over(win, edge * 0.8, q("lip_rgb") * 0.35)

    # Front hair: a cap over the top of the head above the hairline, with sideburns (men) or hair
    # framing both sides of the face down to the hair's end (women); older men's hairline recedes and
    # their crown thins.
    bottom = np.where(p["female"] > 0, p["hair_end"], np.maximum(FACE_CY, p["eye_y"] + 0.05))
    win = ch.window(-1.3 * prx, 1.3 * prx, FACE_CY - pry - pvol - 0.04, bottom)
    x, y = ch.xy(win)
    cap = _ellipse(x, y, 0, cy - 0.02, rx * 1.06 + vol * 0.5, ry + vol, px)
    line = cy - ry * (q("hairline") + 0.35 * q("recede")) + 0.25 * (x / rx) ** 2 * ry
    cap *= _cov((y - line) * px)
    if p["recede"].max() > 0:
        cap *= 1 - np.clip(q("recede") * 1.6, 0, 1) * _ellipse(x, y, 0, cy - ry * 0.8, rx * 0.62, ry * 0.4, px)
    if any_male:
        sideburn = _span(np.abs(x), rx * 0.86, rx * 1.0, px) * _span(y, cy - ry, q("eye_y") + 0.02, px)
        cap = np.maximum(cap, sideburn * (1 - female))
    cap *= _ellipse(x, y, 0, cy, rx * 1.3, ry + vol + 0.05, px)
    if any_female:
        frame = _span(np.abs(x), rx * 0.78, rx * 1.28, px) * _span(y, cy - ry, hair_end, px) * female
        cap = np.maximum(cap, frame * np.maximum(_ellipse(x, y, 0, cy, rx * 1.3, ry + vol + 0.05, px), y > cy))
    ch.over(win, cap, hair * _strands(x, y, phase))

    # Camera: brightness and colour cast, then sensor noise, then quantise.
    out = ch.canvas
    out *= q("gain")
    noise = bank[:, p["noise_idx"]]  # (3, B, H, W)
    noise *= q("noise")
    out += noise
    out *= 255
    out += 0.5
    return np.clip(out, 0, 255, out=out).astype(np.uint8).transpose(1, 2, 3, 0)  # (B, H, W, 3)


def _noise_bank(seed: int, size: int) -> np.ndarray:
    """NOISE_BANK noise textures (3, K, size, size) float32 (planar, like the canvas), fixed by the seed and size."""
    rng = np.random.default_rng([seed, size, 7])
    return rng.standard_normal((3, NOISE_BANK, size, size), dtype=F32)


def render(
    params: dict[str, np.ndarray], size: int, crop: float = 1.0, seed: int = 0, chunk: int = CHUNK, threads: int | None = None
) -> np.ndarray:
    """Render per-image parameters (n,)/(n, 3) -> images (n, size, size, 3) uint8.

    Images are rendered in chunks on threads (numpy releases the GIL in its array loops). Each image is
    a pure function of its own parameters, so the result does not depend on ``chunk`` or ``threads``;
    the render *order* groups similar images (gender, age, eye height) into chunks so their feature
    windows are tight and unneeded layers are skipped.
    """
    n = len(params["rx"])
    out = np.empty((n, size, size, 3), np.uint8)
    bank = _noise_bank(seed, size)
    eye_row = params["dv"] + params["eye_y"] * params["scale"]
    order = np.lexsort((eye_row, params["old"] > 0, params["female"]))
    starts = range(0, n, chunk)

    def work(a):
        idx = order[a : a + chunk]
        out[idx] = _render_chunk({k: v[idx] for k, v in params.items()}, size, crop, bank)

    threads = threads or min(4, os.cpu_count() or 1)
    if threads <= 1 or n <= chunk:
        for a in starts:
            work(a)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, starts))
    return out


@dataclass
class SyntheticOptions:
    n: int = setting(10000, at_least=1)  # number of faces
    seed: int = setting(0, at_least=0)  # generator seed


class SyntheticFaces(FaceDataset):
    """``n`` rendered faces of ``n_identities`` people (default n // 10), deterministic from ``seed``.

    Labels: age, gender, race (UTKFace's schema), smile, hair. Splits are per image (key
    ``f"{seed}-{i}"``), so every identity appears in train and test, which concealment needs; the
    ``identity`` array lets a caller make identity-disjoint splits instead.
    """

    name = "synthetic"
    needs_root = False  # rendered, nothing on disk
    Options = SyntheticOptions
    cli_options = {"n": "number of faces"}

    def __init__(self, n: int = 10000, seed: int = 0, size: int = 64, n_identities: int | None = None):
        if n < 1:
            raise DataError(f"synthetic: n must be at least 1, not {n}")
        self.root = None
        self.n, self.seed, self.size = int(n), int(seed), int(size)
        self.n_identities = max(1, self.n // 10) if n_identities is None else int(n_identities)
        if not 1 <= self.n_identities <= self.n:
            raise DataError(f"synthetic: n_identities must be in 1..{self.n}, not {n_identities}")
        self.schema = SYNTHETIC_SCHEMA
        self.records = []  # nothing on disk
        self.skipped = {}
        self.undecodable = []
        id_seed, img_seed = np.random.SeedSequence(self.seed).spawn(2)
        self.identities = sample_identities(self.n_identities, np.random.default_rng(id_seed))
        rng = np.random.default_rng(img_seed)
        # Every identity gets n // n_identities images (+1 for some), in shuffled order.
        self.identity = rng.permutation(np.arange(self.n) % self.n_identities).astype(np.int64)
        self.labels, self.params = _sample_images(self.identities, self.identity, rng)
        self.split = np.array([assign_split(f"{self.seed}-{i}") for i in range(self.n)])
        self._cache: tuple[tuple[int, float], FaceArrays] | None = None

    def __len__(self) -> int:
        return self.n

    def arrays(self, size: int | None = None, crop: float | None = None, progress: bool = False) -> FaceArrays:
        """Render every face at ``size`` (default: the constructor's). ``crop`` < 1 zooms in on the
        centre, like a tighter crop of a photo. The last result is kept (read-only) for repeat calls."""
        size = self.size if size is None else int(size)
        crop = 1.0 if crop is None else float(crop)
        if not 0 < crop <= 1:
            raise DataError(f"synthetic: crop must be in (0, 1], not {crop}")
        key = (size, crop)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if progress:
            print(f"synthetic: rendering {self.n} faces at {size}x{size}", file=sys.stderr, flush=True)  # stdout may be JSON
        images = render(self.params, size, crop, seed=self.seed)
        images.setflags(write=False)
        result = FaceArrays(
            images=images,
            labels={k: v.copy() for k, v in self.labels.items()},
            schema=self.schema,
            identity=self.identity.copy(),
            split=self.split.copy(),
            paths=[],
        )
        self._cache = (key, result)
        return result

    def summary_line(self) -> str:
        return f"synthetic: {self.n} rendered faces of {self.n_identities} identities (seed {self.seed}, {self.size}px)"


__all__ = ["SYNTHETIC_SCHEMA", "SyntheticFaces", "sample_identities"]
