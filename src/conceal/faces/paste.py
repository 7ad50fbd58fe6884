"""Put a model's output faces back into the photo: inverse warp + a feathered face mask, with the rendered
face's colour and lighting first matched to the photo's (``match_colour``).

Every pixel where the warped mask is 0 keeps the photo's exact value, so with PNG output the photo
outside the blended faces is bit-identical to the input.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .align import FaceGeometry, warp


@lru_cache(maxsize=16)
def face_mask(geometry: FaceGeometry, feather: float = 0.15) -> np.ndarray:
    """(S, S) float32 in [0, 1] over the model's crop: 1 on the face, falling to 0 over ``feather`` of its
    radius, and 0 on the crop's border (so nothing outside the crop is ever touched).

    The face is an ellipse from the landmarks: as wide as twice the eye distance, from about 1.3x the
    eye-to-mouth distance above the eyes (forehead) to 0.9x below the mouth (chin).
    """
    s = geometry.size
    t = np.asarray(geometry.template)
    eyes, mouth = t[:2].mean(0), t[3:].mean(0)
    down = mouth - eyes
    height = np.linalg.norm(down)
    if height == 0:
        raise ValueError("degenerate face template")
    up = down / height
    centre = eyes + up * 0.3 * height
    radius_along, radius_across = 1.6 * height, 1.05 * np.linalg.norm(t[1] - t[0])
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    dx, dy = xs - centre[0], ys - centre[1]
    along = dx * up[0] + dy * up[1]
    across = -dx * up[1] + dy * up[0]
    r = np.sqrt((along / radius_along) ** 2 + (across / radius_across) ** 2)
    mask = np.clip((1 + feather - r) / (2 * feather), 0, 1)
    edge = np.minimum(np.minimum(xs, s - xs), np.minimum(ys, s - ys))  # distance to the crop's border
    mask *= np.clip(edge / max(1.0, feather * s / 2) - 0.5, 0, 1)
    return mask.astype(np.float32)


def paste_faces(image: np.ndarray, faces: list[np.ndarray], matrices: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Blend each face (S, S, 3) uint8 into a copy of ``image`` (H, W, 3) uint8 through the inverse of its
    photo -> crop ``matrix``, weighted by its ``mask`` (S, S) float in [0, 1]. Faces are pasted in order."""
    out = image.copy()
    h, w = image.shape[:2]
    for face, matrix, mask in zip(faces, matrices, masks):
        s = face.shape[0]
        corners = np.linalg.inv(matrix) @ np.array([[0, s, 0, s], [0, 0, s, s], [1, 1, 1, 1]], np.float64)
        x0, y0 = np.floor(corners[:2].min(1)).astype(int)
        x1, y1 = np.ceil(corners[:2].max(1)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        # region pixel p -> photo p + (x0, y0) -> crop matrix @ that
        to_crop = matrix @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
        from_crop = np.linalg.inv(to_crop)  # crop -> region: what warp() takes
        size = (x1 - x0, y1 - y0)
        pixels = warp(face, from_crop, size).astype(np.float32)  # (rh, rw, 3), upscaled, so no pre-shrink
        weight = warp(mask, from_crop, size, Image.Resampling.BILINEAR)[..., None]  # (rh, rw, 1), 0 outside the crop
        region = out[y0:y1, x0:x1]
        blended = np.rint(region * (1 - weight) + pixels * weight).astype(np.uint8)
        out[y0:y1, x0:x1] = np.where(weight > 0, blended, region)
    return out


COLOUR_MIN = 0.05  # share of the crop the face must cover inside the photo for its colours to be matched


def inside_photo(matrix: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """(S, S) float32: 1 where crop pixel (centre) maps into the photo (``matrix``: photo -> crop), else 0."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    inverse = np.linalg.inv(matrix)
    px = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    py = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return ((px >= 0) & (px < width) & (py >= 0) & (py < height)).astype(np.float32)


def match_colour(rendered: np.ndarray, original: np.ndarray, mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The rendered crop (S, S, 3) uint8 shifted, per channel, so its mean over the face equals the original
    crop's (S, S, 3) uint8: both weighted by the feathered face ``mask`` (times ``valid``, the crop pixels that lie
    in the photo), so the pasted face takes the photo's lighting and colour cast and its rim meets the skin
    around it. Only the means move: also matching the spread (a per-channel gain) amplified the 64 px renders'
    blur and ringing into coloured blotches on scikit-image's astronaut. The face's mean colour is the
    original's, so this also carries the original's average skin tone into the output (see
    ``photos.colour_matched``). With under ``COLOUR_MIN`` of the crop's weight in the photo, unchanged."""
    weight = mask * (1.0 if valid is None else valid)
    total = float(weight.sum())
    if total < COLOUR_MIN * weight.size:
        return rendered
    w = (weight / total)[..., None]
    r, o = rendered.astype(np.float32), original.astype(np.float32)
    shift = (o * w).sum((0, 1)) - (r * w).sum((0, 1))
    return np.clip(np.rint(r + shift), 0, 255).astype(np.uint8)
