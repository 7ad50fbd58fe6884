"""The README's main job: conceal bundled sample faces with the shipped model and write one PNG grid.

Needs nothing outside the repo: the faces are scikit-image's bundled astronaut photo (Eileen Collins,
public domain) and a few synthetic faces; the model is ``models/concealer-utkface-64``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.images import center_crop_resize
from .methods import Concealer

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = "concealer-utkface-64"
AGES = (1, 20, 40, 60, 80)  # the paper's Figs. 3-5 columns
ASTRONAUT_FACE = (slice(30, 220), slice(140, 330))  # rows, cols of the face in skimage.data.astronaut()


def default_model_path() -> Path:
    for base in (Path("models"), REPO_MODELS):
        if (base / DEFAULT_MODEL / "model.json").is_file():
            return base / DEFAULT_MODEL
    raise FileNotFoundError(f"shipped model {DEFAULT_MODEL} not found under ./models or {REPO_MODELS}")


def sample_faces(size: int) -> tuple[np.ndarray, list[str]]:
    """(N, size, size, 3) uint8 bundled faces and their row titles."""
    from skimage import data

    from .data.synthetic import SyntheticFaces

    astronaut = center_crop_resize(data.astronaut()[ASTRONAUT_FACE], size)
    synthetic = SyntheticFaces(n=3, seed=7, size=size).arrays().images
    return np.concatenate([astronaut[None], synthetic]), ["astronaut (skimage)", "synthetic 1", "synthetic 2", "synthetic 3"]


def render_grid(model: Concealer, faces: np.ndarray, titles: list[str]) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of images: input, then female/male x AGES, then everything unspecified."""
    codes = model.encode(faces)
    columns: list[tuple[str, dict]] = [(f"{g} {a}", {"gender": g, "age": a}) for g in ("female", "male") for a in AGES]
    columns.append(("unspecified", {}))
    renders = [model.decode(codes, attrs) for _, attrs in columns]  # each (N, H, W, 3)
    rows = [[faces[i]] + [r[i] for r in renders] for i in range(len(faces))]
    return rows, ["input"] + [name for name, _ in columns]


def run_demo(model_path: str | Path | None = None, out: str | Path = "out") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = Concealer.load(model_path or default_model_path())
    missing = {"gender", "age"} - set(model.schema.names)
    if missing:
        raise ValueError(f"the demo needs a model that renders gender and age; this one lacks {', '.join(sorted(missing))}")
    faces, titles = sample_faces(model.image_size)
    rows, headers = render_grid(model, faces, titles)

    fig, axes = plt.subplots(len(rows), len(headers), figsize=(1.3 * len(headers), 1.45 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img, interpolation="bicubic")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(headers[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(titles[r], fontsize=7)
    fig.suptitle("conceal: each face re-rendered as the chosen gender and age (BAFO concealer)", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo_grid.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
