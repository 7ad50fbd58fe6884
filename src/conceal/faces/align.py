"""Bring a detected face into a model's training crop: a similarity transform from its 5 landmarks.

A model saw its training faces in one geometry (UTKFace's aligned 200 px chips, LFW's centred 250 px
frames, centre-cropped by the model's ``data.crop``, resized to ``image_size``). ``FACE_FRAMES`` holds
where the five landmarks sit in each dataset's *uncropped* frame, as fractions of its side: the median
of CenterFace's landmarks on that dataset's training images (``benchmarks/face_templates.py`` measured
them; see benchmarks/PHOTOS.md). ``geometry_of(model)`` applies the model's crop and size to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# dataset -> (5, 2) landmarks (left eye, right eye, nose, left mouth, right mouth) in [0, 1] of the full frame
FACE_FRAMES: dict[str, tuple[tuple[float, float], ...]] = {
    # 400 of 400 sampled training chips had a face; median absolute deviation 0.008..0.017 per coordinate
    "utkface": ((0.298, 0.308), (0.696, 0.310), (0.495, 0.509), (0.323, 0.685), (0.650, 0.687)),
    # 400 of 400 sampled training frames (the face nearest the centre); MAD 0.005..0.015
    "lfw": ((0.418, 0.456), (0.586, 0.448), (0.502, 0.552), (0.433, 0.633), (0.574, 0.626)),
}
FALLBACK_FRAME = "utkface"  # folder/synthetic data: assume aligned face chips like UTKFace's


@dataclass(frozen=True)
class FaceGeometry:
    """A model's input: ``size`` x ``size`` pixels with the landmarks at ``template`` (5, 2) pixels."""

    size: int
    template: tuple[tuple[float, float], ...]

    @classmethod
    def from_frame(cls, dataset: str | None, crop: float, size: int) -> "FaceGeometry":
        """The geometry of ``dataset``'s frames centre-cropped to ``crop`` of the side, resized to ``size``."""
        if not 0 < crop <= 1:
            raise ValueError(f"crop must be in (0, 1], not {crop}")
        frame = np.asarray(FACE_FRAMES.get(dataset or "", FACE_FRAMES[FALLBACK_FRAME]))
        template = (frame - (1 - crop) / 2) / crop * size
        return cls(size, tuple(map(tuple, template.round(3).tolist())))


def training_data(model) -> tuple[str | None, float]:
    """(dataset, centre crop) a loaded ``ModelAPI`` was trained on, from its model.json's data config."""
    from ..data import default_crop

    data = (getattr(model, "info", None) or {}).get("data", {})
    crop = data.get("crop") if data.get("crop") is not None else default_crop(data.get("dataset"))
    return data.get("dataset"), crop


def geometry_of(model) -> FaceGeometry:
    """The training-crop geometry of a loaded ``ModelAPI``."""
    dataset, crop = training_data(model)
    return FaceGeometry.from_frame(dataset, crop, model.image_size)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) taking points src (N, 2) to dst (N, 2),
    as a 3x3 matrix (scikit-image's Umeyama estimate)."""
    from skimage.transform import SimilarityTransform

    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(transform)
    else:
        transform = SimilarityTransform()
        ok = transform.estimate(src, dst)
    if not ok or not np.isfinite(transform.params).all():
        raise ValueError("degenerate landmarks: no similarity transform")
    return transform.params


def _affine_data(matrix: np.ndarray) -> tuple[float, ...]:
    """A 3x3 output->input pixel map as Pillow's AFFINE data (Pillow samples input at matrix @ (x, y, 1))."""
    return tuple(matrix[:2].ravel().tolist())


def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """Sample ``image`` (H, W[, C]) into an output of ``size`` (w, h) where output pixel p shows image point
    ``inverse(matrix) @ p``: ``matrix`` maps image -> output coordinates. Outside the image: 0.

    When the map shrinks by more than 2x, the image's region is first reduced with Pillow's antialiased
    resize, so a 600 px face becomes a 64 px crop without aliasing.
    """
    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    pil = Image.fromarray(image)
    if scale < 0.5:
        w, h = size
        corners = np.linalg.inv(matrix) @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], np.float64)
        x0, y0 = np.floor(corners[:2].min(1)).astype(int) - 2
        x1, y1 = np.ceil(corners[:2].max(1)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, image.shape[1]), min(y1, image.shape[0])
        if x1 > x0 and y1 > y0:
            rw, rh = max(1, round((x1 - x0) * scale * 2)), max(1, round((y1 - y0) * scale * 2))  # residual shrink 2x
            pil = pil.resize((rw, rh), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1), reducing_gap=2.0)
            to_region = np.array([[rw / (x1 - x0), 0, -x0 * rw / (x1 - x0)], [0, rh / (y1 - y0), -y0 * rh / (y1 - y0)], [0, 0, 1]])
            matrix = matrix @ np.linalg.inv(to_region)
    out = pil.transform(size, Image.Transform.AFFINE, _affine_data(np.linalg.inv(matrix)), resample=resample)
    return np.asarray(out)


def align_face(image: np.ndarray, landmarks, geometry: FaceGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 photo + one face's landmarks (5, 2) -> (the model's input (S, S, 3) uint8, the 3x3
    photo -> crop matrix that ``paste`` inverts)."""
    matrix = similarity(landmarks, geometry.template)
    return warp(image, matrix, (geometry.size, geometry.size)), matrix


def centre_crop_matrix(height: int, width: int, crop: float, size: int) -> np.ndarray:
    """The photo -> crop matrix of ``center_crop_resize`` (the --no-detect path): the central square of side
    ``crop`` x the shorter side, scaled to ``size``."""
    side = min(height, width) * crop
    s = size / side
    return np.array([[s, 0, -(width - side) / 2 * s], [0, s, -(height - side) / 2 * s], [0, 0, 1]])
