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

from .data.images import check_images
from .faces.align import align_face, centre_crop_matrix, geometry_of, training_data
from .faces.paste import face_mask, inside_photo, match_colour, paste_faces

DEFAULT_MIN_FACE = 24  # px: smaller faces are rarely identifiable, and CenterFace's own floor is ~10 px


def release(model, crops: np.ndarray, as_: dict[str, Any] | None = None) -> np.ndarray:
    """What the model releases for face crops (N, S, S, 3) uint8: the concealer re-renders them ``as_``,
    the anonymizer reconstructs them, the masker blacks out all but the pixels its mask keeps."""
    options = {"as_": as_} if as_ is not None else {}
    return model.apply(crops, **options)


COLOUR_MATCH = ("auto", "on", "off")


def colour_matched(model, mode: str = "auto") -> bool:
    """Whether the faces this model releases get their mean colour matched to the photo's face before pasting
    (``faces.paste.match_colour``). ``"on"``: every drawn face (the concealer's render, the anonymizer's
    reconstruction); ``"off"``: none; ``"auto"``: the anonymizer's only. The concealer's are left as rendered
    under "auto": its shipped models conceal race and render --as race=..., and a face whose mean colour is the
    original's keeps the original's average skin tone. A masker's release is never matched (it is the photo's
    own pixels, and black where unrevealed)."""
    if mode not in COLOUR_MATCH:
        raise ValueError(f"colour matching is one of {', '.join(COLOUR_MATCH)}, not {mode!r}")
    name = getattr(getattr(model, "method", None), "name", None)
    if mode == "off" or name not in ("concealer", "anonymizer"):
        return False
    return mode == "on" or name == "anonymizer"


def replace_faces(model, image: np.ndarray, faces: list[dict], as_: dict[str, Any] | None = None,
                  with_mask: bool = False, colour_match: str = "auto") -> tuple[np.ndarray, np.ndarray | None]:
    """Align each face of ``faces`` (detected in ``image``) to the model's training crop, run the model on
    this photo's faces together, and paste the releases back. Returns (the photo, and with ``with_mask`` the
    masker's released masks pasted the same way on black, else None).

    ``colour_match`` ("auto", "on", "off"): whether drawn faces take the photo's lighting and colour cast before
    pasting (``colour_matched``).

    The model sees exactly this photo's faces in one call, so the result does not depend on which other
    photos are processed alongside (batch composition changes a few pixels by 1 level on CPU).
    """
    if not faces:
        return image.copy(), (np.zeros_like(image) if with_mask else None)
    geometry = geometry_of(model)
    crops, matrices = zip(*(align_face(image, f["landmarks"], geometry) for f in faces))
    crops, matrices = np.stack(crops), list(matrices)
    weights = [face_mask(geometry)] * len(faces)
    released = list(release(model, crops, as_))
    if colour_matched(model, colour_match):
        h, w = image.shape[:2]
        released = [match_colour(face, crop, weight, inside_photo(matrix, geometry.size, h, w))
                    for face, crop, weight, matrix in zip(released, crops, weights, matrices)]
    out = paste_faces(image, released, matrices, weights)
    if not with_mask:
        return out, None
    grey = [np.repeat(m[..., None], 3, axis=2) for m in model.masks(crops)]  # (S, S) uint8 -> (S, S, 3)
    return out, paste_faces(np.zeros_like(image), grey, matrices, weights)


def centre_face(height: int, width: int, crop: float) -> dict:
    """The --no-detect "face": the centre square of side ``crop`` x the shorter side (no landmarks)."""
    side = min(height, width) * crop
    box = [(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2]
    return {"box": [round(v, 1) for v in box], "score": 1.0, "landmarks": []}


def conceal_photo(model, image: np.ndarray, as_: dict[str, Any] | None = None, detect: bool = True,
                  min_face: float = DEFAULT_MIN_FACE, max_faces: int | None = None, detector=None,
                  crop: float | None = None, colour_match: str = "auto") -> tuple[np.ndarray, list[dict]]:
    """Conceal every face of one photo; returns (the photo at its own size, the faces replaced).

    ``model``: a loaded ``ModelAPI`` (``conceal.methods.load_api``). ``image``: (H, W, 3) uint8 RGB, upright.
    ``detect=False``: the photo is already a face crop; its centre square (``crop`` of the shorter side,
    default the model's training crop) is the one face, replaced in place. ``detector``: a callable like
    ``conceal.faces.FaceDetector`` (default: the shared CenterFace one). ``colour_match``: see ``replace_faces``
    (the --no-detect path replaces the whole crop, so it has no surroundings to match).
    """
    image = check_images(image, single=True)
    if not detect:
        from .data.images import center_crop_resize

        h, w = image.shape[:2]
        crop = crop if crop is not None else training_data(model)[1]
        size = model.image_size
        crops = center_crop_resize(image, size, crop)[None]
        masks = [np.ones((size, size), np.float32)]  # the whole crop is the face
        out = paste_faces(image, list(release(model, crops, as_)), [centre_crop_matrix(h, w, crop, size)], masks)
        return out, [centre_face(h, w, crop)]
    faces = find_faces(image, min_face, max_faces, detector)
    return replace_faces(model, image, faces, as_, colour_match=colour_match)[0], faces


def find_faces(image: np.ndarray, min_face: float = DEFAULT_MIN_FACE, max_faces: int | None = None, detector=None) -> list[dict]:
    """The faces of one photo, largest first (the shared CenterFace detector unless ``detector`` is given)."""
    if detector is None:
        from .faces.detect import default_detector

        detector = default_detector()
    return detector(image, min_face=min_face, max_faces=max_faces)
