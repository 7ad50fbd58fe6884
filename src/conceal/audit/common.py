"""What every section may use, whichever method it audits: the judges, resolved once, and seeded samples.

Sections of one method never import another method's sections; what they share lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .metrics import mean_interval

JUDGE_NAMES = ("age_gender", "face_embedding")


def sample_rows(n: int, k: int | None, seed: int, purpose: int) -> np.ndarray:
    """A seeded, sorted sample of at most ``k`` of ``n`` rows; ``purpose`` keeps the samples independent."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, purpose]).choice(n, size=k, replace=False))


def resolve_judges(judges: str | dict = "auto") -> tuple[dict[str, Any], dict[str, str | None]]:
    """-> (judge objects or None, reason each is missing or None). ``judges``: "auto" (use what is
    installed), "off", or a dict of ready judge objects (name -> object or None)."""
    if isinstance(judges, dict):
        objects = {name: judges.get(name) for name in JUDGE_NAMES}
        return objects, {name: None if obj is not None else "not provided" for name, obj in objects.items()}
    if judges == "off":
        return dict.fromkeys(JUDGE_NAMES), dict.fromkeys(JUDGE_NAMES, "judges turned off for this audit")
    if judges != "auto":
        raise ValueError(f"judges must be 'auto', 'off' or a dict of judge objects, not {judges!r}")
    try:
        from . import judges as judge_module
    except Exception as error:  # a broken optional extra must not stop the attackers
        return dict.fromkeys(JUDGE_NAMES), dict.fromkeys(JUDGE_NAMES, f"judges module failed to import: {error}")
    status = dict(judge_module.judges_available())
    builders = {"age_gender": judge_module.AgeGenderJudge, "face_embedding": judge_module.FaceEmbeddingJudge}
    objects: dict[str, Any] = {}
    for name in JUDGE_NAMES:
        objects[name] = None
        if status.get(name) is None:
            try:
                objects[name] = builders[name]()
            except judge_module.JudgeUnavailable as error:
                status[name] = str(error)
    return objects, {name: status.get(name) for name in JUDGE_NAMES}


def _image_key(image: np.ndarray) -> bytes:
    import hashlib

    image = np.ascontiguousarray(image)
    return hashlib.blake2b(image.tobytes() + repr((image.shape, image.dtype.str)).encode(), digest_size=16).digest()


def cache_judge_calls(objects: dict[str, Any]) -> dict[str, Any]:
    """Memoise the judges' per-image work on the judge objects themselves, keyed by each image's bytes, so
    that one audit reads every distinct image once whichever section asks (the public-model protocol and the
    method's test-halves sections embed many of the same originals and releases; dlib's embedding costs
    ~0.1-0.5 s an image on one core). ``cosine``/``distance`` go through ``embed`` and so share the cache."""
    embedder = objects.get("face_embedding")
    if embedder is not None and not getattr(embedder, "_cached", False):
        embed, vectors = embedder.embed, {}

        def cached_embed(images):
            images = np.asarray(images)
            batch = images[None] if images.ndim == 3 else images
            keys = [_image_key(image) for image in batch]
            missing = [i for i, key in enumerate(keys) if key not in vectors]
            if missing:
                for i, vector in zip(missing, embed(batch[missing])):
                    vectors[keys[i]] = vector
            return np.stack([vectors[key] for key in keys]) if keys else embed(batch)

        embedder.embed, embedder._cached = cached_embed, True
    reader = objects.get("age_gender")
    if reader is not None and not getattr(reader, "_cached", False):
        import inspect

        predict, readings = reader.predict, {}
        options = "find_faces" in inspect.signature(predict).parameters

        def cached_predict(images, **kwargs):
            images = np.asarray(images)
            batch = images[None] if images.ndim == 3 else images
            tag = repr(sorted(kwargs.items()))
            keys = [(_image_key(image), tag) for image in batch]
            missing = [i for i, key in enumerate(keys) if key not in readings]
            if missing:
                out = predict(batch[missing], **kwargs) if options or not kwargs else predict(batch[missing])
                for j, i in enumerate(missing):
                    readings[keys[i]] = {name: values[j] for name, values in out.items()}
            if not keys:
                return predict(batch, **kwargs) if options or not kwargs else predict(batch)
            return {name: np.asarray([readings[key][name] for key in keys]) for name in readings[keys[0]]}

        cached_predict.__signature__ = inspect.signature(predict)  # callers look for find_faces
        reader.predict, reader._cached = cached_predict, True
    return objects


def judge_name(judge) -> str:
    return f"{getattr(judge, 'name', type(judge).__name__)} {judge!r}"


def face_similarity(judge, a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    """How alike the face-embedding ``judge`` finds paired embeddings a, b (n, E): mean cosine, and the share
    judged the same person (distance below ``judges.SAME_PERSON_DISTANCE``), each with its 95% interval."""
    from .judges import SAME_PERSON_DISTANCE

    distance = np.linalg.norm(a - b, axis=1)
    return {"cosine": mean_interval(judge.cosine(a, b), seed), "same_person_rate": mean_interval(distance < SAME_PERSON_DISTANCE, seed)}


def open_audited(api_class, model_path, test, out_dir, model=None) -> tuple[Any, Path]:
    """-> (the audited model through its API class, the figures' folder, made); ``model``: the model already
    loaded (the audit context's), else it is loaded from ``model_path``. Refuses test images (``FaceArrays``)
    that are not at the model's size."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = api_class.load(model_path) if model is None else model
    s = model.image_size
    if test.images.shape[1:] != (s, s, 3):
        raise ValueError(f"test images are {test.images.shape[1:]}, the model needs ({s}, {s}, 3)")
    return model, out_dir
