"""Generated photos with real faces at known places: the astronaut's head (``skimage.data``, bundled with
scikit-image, a core dependency) planted into face-free backgrounds (skimage's coffee, cat, rocket, or a
gradient) at chosen sizes and tilts. No dataset image is involved, so anything made here may be written
anywhere. Used by ``conceal bench``'s photo section, tests/test_photos.py, tests/test_apply.py and
benchmarks/photos_bench.py.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HEAD_BOX = (150, 20, 300, 210)  # the astronaut's head with hair and margin, in skimage.data.astronaut()
FACE_BOX = (181, 58, 270, 178)  # her face (what a detector's box covers), same frame


def astronaut_head() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).crop(HEAD_BOX)


def background(kind: int, width: int, height: int) -> np.ndarray:
    """A face-free (H, W, 3) uint8 background: skimage's coffee, chelsea (a cat) or rocket, or a gradient."""
    from skimage import data

    sources = (data.coffee, data.chelsea, data.rocket)
    if kind < len(sources):
        return np.asarray(Image.fromarray(sources[kind]()).resize((width, height), Image.Resampling.BILINEAR))
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), np.full_like(x, 128)], 2).astype(np.uint8)


def plant(photo: np.ndarray, face_side: float, tilt: float, centre: tuple[float, float]) -> tuple[np.ndarray, dict]:
    """Paste the astronaut's head so her face is ``face_side`` px tall, tilted ``tilt`` degrees (counter-
    clockwise), centred at ``centre`` (x, y). Returns (the new photo, {"face": face box, "region": the box of
    every pixel changed, "tilt"})."""
    head = astronaut_head()
    scale = face_side / (FACE_BOX[3] - FACE_BOX[1])
    size = (max(1, round(head.width * scale)), max(1, round(head.height * scale)))
    head = head.resize(size, Image.Resampling.LANCZOS)
    rotated = head.rotate(tilt, expand=True, resample=Image.Resampling.BICUBIC)
    opaque = Image.new("L", size, 255).rotate(tilt, expand=True)
    x0, y0 = round(centre[0] - rotated.width / 2), round(centre[1] - rotated.height / 2)
    out = Image.fromarray(photo)
    out.paste(rotated, (x0, y0), opaque)
    # the face's centre, moved with the head: the head's centre plus the face's offset, rotated
    offset = (np.array([(FACE_BOX[0] + FACE_BOX[2]) / 2, (FACE_BOX[1] + FACE_BOX[3]) / 2])
              - np.array([(HEAD_BOX[2] - HEAD_BOX[0]) / 2 + HEAD_BOX[0], (HEAD_BOX[3] - HEAD_BOX[1]) / 2 + HEAD_BOX[1]])) * scale
    a = np.deg2rad(tilt)
    rx, ry = offset[0] * np.cos(a) + offset[1] * np.sin(a), -offset[0] * np.sin(a) + offset[1] * np.cos(a)
    cx, cy = x0 + rotated.width / 2 + rx, y0 + rotated.height / 2 + ry
    half = face_side / 2
    return np.asarray(out), {"face": (cx - half, cy - half, cx + half, cy + half),
                             "region": (x0, y0, x0 + rotated.width, y0 + rotated.height), "tilt": tilt}


def composite(n_faces: int, seed: int, width: int = 640, height: int = 480, sides=(40, 160), tilts=(-30, 30)) -> tuple[np.ndarray, list[dict]]:
    """A background with ``n_faces`` planted faces that do not overlap (sizes and tilts drawn from the ranges)."""
    rng = np.random.default_rng(seed)
    photo = background(seed % 4, width, height)
    planted: list[dict] = []
    for _ in range(200):
        if len(planted) == n_faces:
            break
        side = float(rng.uniform(*sides))
        reach = side * 1.3  # half the rotated head's extent, about
        centre = (float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach)))
        box = (centre[0] - reach, centre[1] - reach, centre[0] + reach, centre[1] + reach)
        if any(box[0] < p["region"][2] and p["region"][0] < box[2] and box[1] < p["region"][3] and p["region"][1] < box[3] for p in planted):
            continue
        photo, info = plant(photo, side, float(rng.uniform(*tilts)), centre)
        planted.append(info)
    if len(planted) != n_faces:
        raise ValueError(f"could not place {n_faces} faces in {width}x{height}")
    return photo, planted


def found(planted: dict, faces: list[dict]) -> bool:
    """A detection whose centre lies in the planted face's box."""
    x0, y0, x1, y1 = planted["face"]
    return any(x0 <= (f["box"][0] + f["box"][2]) / 2 <= x1 and y0 <= (f["box"][1] + f["box"][3]) / 2 <= y1 for f in faces)
