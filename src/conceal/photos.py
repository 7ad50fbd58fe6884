"""Photos in, the same photos out with every face concealed: detect -> align -> the model -> paste back.

>>> from conceal.methods import load_api
>>> from conceal.photos import conceal_photo
>>> model = load_api("models/concealer-utkface-64")
>>> out, faces = conceal_photo(model, image, as_={"gender": "female"})   # image: (H, W, 3) uint8

``faces`` lists what was found and replaced, in the photo's pixels: ``[{"box": [x0, y0, x1, y1], "score":
float, "landmarks": [[x, y] * 5]}]``. Outside the blended faces, ``out`` is exactly ``image``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .faces.align import align_face, centre_crop_matrix, geometry_of, training_data
from .faces.paste import face_mask, paste_faces

DEFAULT_MIN_FACE = 24  # px: smaller faces are rarely identifiable, and CenterFace's own floor is ~10 px


def release(model, crops: np.ndarray, as_: dict[str, Any] | None = None) -> np.ndarray:
    """What the model releases for face crops (N, S, S, 3) uint8: the concealer re-renders them ``as_``,
    the anonymizer reconstructs them, the masker blacks out all but the pixels its mask keeps."""
    options = {"as_": as_} if as_ is not None else {}
    return model.apply(crops, **options)


def conceal_photo(model, image: np.ndarray, as_: dict[str, Any] | None = None, detect: bool = True,
                  min_face: float = DEFAULT_MIN_FACE, max_faces: int | None = None, detector=None,
                  crop: float | None = None) -> tuple[np.ndarray, list[dict]]:
    """Conceal every face of one photo; returns (the photo at its own size, the faces replaced).

    ``model``: a loaded ``ModelAPI`` (``conceal.methods.load_api``). ``image``: (H, W, 3) uint8 RGB, upright.
    ``detect=False``: the photo is already a face crop; its centre square (``crop`` of the shorter side,
    default the model's training crop) is the one face, replaced in place. ``detector``: a callable like
    ``conceal.faces.FaceDetector`` (default: the shared CenterFace one).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, not {image.dtype} {image.shape}")
    geometry = geometry_of(model)
    h, w = image.shape[:2]
    if not detect:
        from .data.images import center_crop_resize

        crop = crop if crop is not None else training_data(model)[1]
        side = min(h, w) * crop
        matrix = centre_crop_matrix(h, w, crop, geometry.size)
        faces = [{"box": [round((w - side) / 2, 1), round((h - side) / 2, 1), round((w + side) / 2, 1), round((h + side) / 2, 1)],
                  "score": 1.0, "landmarks": []}]
        crops = center_crop_resize(image, geometry.size, crop)[None]
        masks = [np.ones((geometry.size, geometry.size), np.float32)]  # the whole crop is the face
        return paste_faces(image, list(release(model, crops, as_)), [matrix], masks), faces
    if detector is None:
        from .faces.detect import default_detector

        detector = default_detector()
    faces = detector(image, min_face=min_face, max_faces=max_faces)
    if not faces:
        return image.copy(), []
    crops, matrices = zip(*(align_face(image, f["landmarks"], geometry) for f in faces))
    released = release(model, np.stack(crops), as_)
    mask = face_mask(geometry)
    return paste_faces(image, list(released), list(matrices), [mask] * len(faces)), faces
