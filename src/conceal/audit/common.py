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
