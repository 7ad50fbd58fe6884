"""Quick look at a concealer checkpoint on validation faces (issue 14's render targets; not an audit).

    OMP_NUM_THREADS=1 python benchmarks/concealer_v2_eval.py runs/concealer-utkface-128 \
        --root ../shared/datasets/utkface/UTKFace --faces 300 -o runs/concealer-utkface-128-eval

Decodes ``--faces`` validation faces (a seeded sample) with their true labels and as the audit's fixed target,
and prints: PSNR and SSIM with the true labels, the sharpness ratio (variance of the Laplacian, renders over
inputs) beside the same ratio after a 2x2 average pool of both (which a checkerboard cannot inflate), and how
often the independent face detector (CenterFace) finds a face, beside its rate on the inputs.
Writes eval.json and grid.png (originals, reconstructions, female/male at 20 and 60, gender unspecified at 40)
into ``-o``; grid.png shows dataset faces, so it stays out of the repo. The privacy numbers need `conceal audit`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from conceal.audit.concealer import fixed_target, label_rows, render
from conceal.audit.metrics import faces_found, psnr, sharpness_ratio, ssim
from conceal.audit.context import open_splits, sample
from conceal.methods import Concealer
from conceal.modelfile import read_model_info

GRID_REQUESTS = [("female 20", {"gender": "female", "age": 20}), ("female 60", {"gender": "female", "age": 60}),
                 ("male 20", {"gender": "male", "age": 20}), ("male 60", {"gender": "male", "age": 60}),
                 ("gender unspec. 40", {"gender": "unspecified", "age": 40})]


def evaluate(model: Concealer, faces, detect: bool = True) -> dict:
    codes = model.encode(faces.images)
    own = {name: faces.labels[name] for name in model.schema.names}
    reconstructed = render(model, codes, label_rows(model.schema, len(faces), {}, own))
    released = render(model, codes, label_rows(model.schema, len(faces), fixed_target(model.schema), own))
    out = {"faces": len(faces),
           "psnr_true_labels": float(np.mean(psnr(faces.images, reconstructed))),
           "ssim_true_labels": float(np.mean(ssim(faces.images, reconstructed))),
           "sharpness_ratio_reconstruction": sharpness_ratio(faces.images, reconstructed),
           "sharpness_ratio_released": sharpness_ratio(faces.images, released),
           # after a 2x2 average pool of renders and inputs alike: a period-2 checkerboard adds nothing here
           "sharpness_ratio_pooled_reconstruction": sharpness_ratio(faces.images, reconstructed, pool=2),
           "sharpness_ratio_pooled_released": sharpness_ratio(faces.images, released, pool=2)}
    if detect:
        for key, images in (("inputs", faces.images), ("reconstruction", reconstructed), ("released", released)):
            out[f"face_found_{key}"] = float(faces_found(images).mean())
    return out, codes, reconstructed


def grid(model: Concealer, faces, codes, reconstructed, path: Path, n: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = {name: faces.labels[name][:n] for name in model.schema.names}
    columns = [("original", faces.images[:n]), ("reconstruction", reconstructed[:n])]
    columns += [(title, render(model, codes[:n], label_rows(model.schema, n, request, own))) for title, request in GRID_REQUESTS]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.6 * n + 0.3), squeeze=False)
    for j, (title, images) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=8)
        for i in range(n):
            axes[i, j].imshow(images[i])
            axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="a model folder or a run directory (its checkpoint)")
    ap.add_argument("--root", required=True)
    ap.add_argument("--faces", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-detect", action="store_true")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Concealer.load(args.model)
    info = read_model_info(args.model)
    _, everything = open_splits(info, "utkface", args.root)
    faces = sample(everything.subset("val"), args.faces, args.seed, purpose=0)
    result, codes, reconstructed = evaluate(model, faces, detect=not args.no_detect)
    result.update(model=str(args.model), epoch=info.get("epoch"), step=info.get("step"))
    grid(model, faces, codes, reconstructed, out / "grid.png")
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
