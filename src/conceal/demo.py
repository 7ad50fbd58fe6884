"""The README's main job: conceal bundled sample faces with the shipped model and write one PNG grid.

Needs nothing outside the repo: the faces are scikit-image's bundled photos with a face (the astronaut, Eileen
Collins, and the cameraman; both public domain), found and aligned the way ``conceal apply`` crops a photo's
faces (CenterFace's landmarks -> the model's training crop, ``conceal.photos``), and a few synthetic faces. The
model is the first of ``DEFAULT_MODELS`` that is present: ``models/concealer-utkface-128`` once shipped, else
``models/concealer-utkface-64``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.images import center_crop_resize
from .methods import Concealer

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODELS = ("concealer-utkface-128", "concealer-utkface-64")  # the first present is the demo's
AGES = (1, 20, 40, 60, 80)  # the paper's Figs. 3-5 columns
PHOTOS = (("astronaut", "astronaut (skimage)"), ("camera", "cameraman (skimage)"))  # skimage.data photos with a face
ASTRONAUT_FACE = (slice(30, 220), slice(140, 330))  # rows, cols of the astronaut's face: only without a detector


def default_model_path() -> Path:
    for name in DEFAULT_MODELS:
        for base in (Path("models"), REPO_MODELS):
            if (base / name / "model.json").is_file():
                return base / name
    raise FileNotFoundError(f"shipped model ({' or '.join(DEFAULT_MODELS)}) not found under ./models or {REPO_MODELS}")


def photo_faces(model: Concealer) -> tuple[list[np.ndarray], list[str]]:
    """The bundled photos' faces as ``conceal apply`` crops them for ``model``: the largest face CenterFace finds
    in each, aligned by its 5 landmarks to the model's training crop at its size. Without the detector (the
    photos extra missing), the astronaut's face by a fixed box, titled so."""
    from skimage import data

    from .faces.align import align_face, geometry_of
    from .faces.detect import DetectorUnavailable
    from .photos import find_faces

    crops, titles = [], []
    try:
        for name, title in PHOTOS:
            photo = getattr(data, name)()
            photo = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo  # the cameraman is grey
            faces = find_faces(photo, max_faces=1)
            if faces:
                crops.append(align_face(photo, faces[0]["landmarks"], geometry_of(model))[0])
                titles.append(title)
    except DetectorUnavailable:
        crops = [center_crop_resize(data.astronaut()[ASTRONAUT_FACE], model.image_size)]
        titles = ["astronaut (fixed box: no detector)"]
    return crops, titles


def sample_faces(model: Concealer) -> tuple[np.ndarray, list[str]]:
    """(N, size, size, 3) uint8 bundled faces at the model's size and their row titles."""
    from .data.synthetic import SyntheticFaces

    crops, titles = photo_faces(model)
    synthetic = SyntheticFaces(n=3, seed=7, size=model.image_size).arrays().images
    return np.concatenate([np.stack(crops), synthetic]), titles + ["synthetic 1", "synthetic 2", "synthetic 3"]


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

    model_path = Path(model_path or default_model_path())
    model = Concealer.load(model_path)
    missing = {"gender", "age"} - set(model.schema.names)
    if missing:
        raise ValueError(f"the demo needs a model that renders gender and age; this one lacks {', '.join(sorted(missing))}")
    faces, titles = sample_faces(model)
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
    fig.suptitle(f"conceal: each face re-rendered as the chosen gender and age (BAFO concealer, {model_path.name}, "
                 f"{model.image_size} px)", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo_grid.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
