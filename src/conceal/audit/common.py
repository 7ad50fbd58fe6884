"""What every section may use, whichever method it audits: the judges, resolved once, and seeded samples.

Sections of one method never import another method's sections; what they share lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
