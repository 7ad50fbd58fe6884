"""Audit of a masker (``conceal.methods.masker``): does the top-K% release keep the task and lose the face?

Every number is measured for the model's release and for four image baselines on the same test faces:
Original, a blacked-out centre block, a Gaussian-blurred centre and a pixelated image (the paper's rows).

Sections (plain numbers, written by ``report.write_report``):

- ``table``: the paper's Tables I/II for this model: per release, pixels revealed, fresh task accuracy,
  face similarity and re-identification rank-1 (and, for the model, its own predictor Φ on x_p).
- ``task_accuracy``: (a) Φ, the model's own classifier, on the released x_p (and on the unreleased rest of
  the mask, x_o, where the adversarial variant should leave it at chance); (b) a fresh CNN trained from
  scratch on one half of each release of the test split (identity-disjoint when the data knows who is
  who) and scored on the other half, beside the majority-class baseline of the same halves.
- ``leakage``: the same fresh CNN on every other label of the test data (what the masker hides because the
  task does not need it, e.g. gender or race for an age-group task), on the model's release and the original.
- ``identity``: with dlib's face-embedding judge, on a seeded sample: cosine similarity of original vs
  released face, and on data with identities, rank-1 re-identification of released faces against a
  gallery of original faces (one other image per test person).
- ``gender_agreement``: on the same sample, how often the off-the-shelf gender judge reads the same gender
  from each release as from its original (the measure for data without gender labels, like FER2013).
- ``pixels_revealed``: the share of each image a release shows, with its definition per release.
- ``figures``: faces with their masks and every release (like the paper's Figs. 2-3), the mean released
  mask, and a bar chart of the table.

``compare_maskers(report_jsons)`` merges several masker reports (variants, K) into one table and, when
their K differ, plots task accuracy and face similarity against K.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors

from ..data import DataError, FaceArrays
from ..data.schema import LabelSchema
from ..methods.base import to_tensor_images, to_uint8_images
from ..methods.masker import (
    DERIVED_LABELS,
    Masker,
    block_center,
    blur_center,
    center_box,
    original,
    pixelate,
    resolve_task,
)
from ..modelfile import read_model_info
from .attackers import (
    CNN_MAX_EPOCHS,
    CNN_MIN_STEPS,
    DEFAULT_CNN_EPOCHS,
    DEFAULT_CNN_SIZE,
    audit_images,
    single_threaded,
)
from .common import face_similarity, judge_name as _judge_name, open_audited, resolve_judges, sample_rows
from .metrics import classification_metrics, mean_interval, unrelated_partners
from .report import attack_tables, figure_lines, markdown_section, num, table, timed_steps, with_interval, pyplot, save_figure

RELEASE_KEYS = ("original", "block_center", "blur_center", "pixelate", "masker")  # the paper's row order
VARIANT_TITLES = {"adversarial": "Masker", "non_adversarial": "Masker (non-adv.)"}
GRID_FACES = 6
LEAKAGE_RELEASES = ("original", "masker")  # releases attacked for the labels other than the task
PIXELATE_CELLS = 8  # an 8x8 grid of flat cells: at 64 px, 8-px cells, coarse enough to lose a face's detail
BLUR_SIGMA_SHARE = 1 / 16  # blur sigma as a share of the image side: 4 px at 64 px
SIMILARITY_CONTEXT = "dlib cosine is not centred: unrelated people typically score ~0.83, the same person ~0.95"


# --------------------------------------------------------------------------------------------------
# Releases
# --------------------------------------------------------------------------------------------------


def task_values(test: FaceArrays, task: str) -> np.ndarray:
    """(N,) stored task label of the test faces (class index as float, NaN = unknown), derived if need be."""
    try:
        resolve_task(test.schema, task)
    except (KeyError, ValueError) as error:
        raise DataError(f"the test data cannot be audited for the masker's task: {error.args[0]}") from None
    derived = DERIVED_LABELS.get(task)
    if derived is None:
        return np.asarray(test.labels[task], np.float64)
    return derived(torch.from_numpy(np.asarray(test.labels[derived.source], np.float64))).numpy()


def _class_probabilities(output: torch.Tensor, kind: str) -> np.ndarray:
    """A task head's output -> (B, n_classes) probabilities (a binary head's one logit is p(class 1))."""
    if kind == "binary":
        p = torch.sigmoid(output[:, 0])
        return torch.stack([1 - p, p], dim=1).numpy().astype(np.float64)
    return F.softmax(output, dim=1).numpy().astype(np.float64)


@torch.inference_mode()
def run_masker(model: Masker, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """One pass over the images: the release (as ``Masker.apply``), per-image mask statistics, the mean
    released mask, and Φ's task probabilities on x_p (released) and x_o (the unreleased rest of the mask)."""
    generator = model.method
    task = generator.cfg.task
    kind = generator.task_label.kind
    released, revealed, kept_value, predictor, rest = [], [], [], [], []
    mask_sum = np.zeros((model.image_size, model.image_size), np.float64)
    for i in range(0, len(images), batch_size):
        x = to_tensor_images(images[i : i + batch_size], generator.device)
        mask, kept = generator.masks(x)  # each (B, 1, H, W)
        x_p, x_o = kept * x, (mask - kept) * x
        released.append(to_uint8_images(x_p))
        shown = (kept > 0).flatten(1).float()
        revealed.append(shown.mean(1).numpy())
        kept_value.append((kept.flatten(1).sum(1) / shown.sum(1).clamp(min=1)).numpy())
        mask_sum += kept[:, 0].sum(0).double().numpy()
        predictor.append(_class_probabilities(generator.classifier(x_p)[task], kind))
        rest.append(_class_probabilities(generator.classifier(x_o)[task], kind))
    return {
        "released": np.concatenate(released),
        "revealed": np.concatenate(revealed),  # (N,) share of pixels with m_topK > 0
        "kept_value": np.concatenate(kept_value),  # (N,) mean m_topK over the released pixels
        "mean_mask": mask_sum / max(len(images), 1),  # (H, W) mean m_topK
        "predictor": np.concatenate(predictor),  # (N, K)
        "rest": np.concatenate(rest),
    }


def baseline_releases(images: np.ndarray, fraction: float, sigma: float, cells: int) -> dict[str, np.ndarray]:
    return {
        "original": original(images),
        "block_center": block_center(images, fraction),
        "blur_center": blur_center(images, fraction, sigma),
        "pixelate": pixelate(images, cells),
    }


def release_titles(variant: str, keep: float, fraction: float, sigma: float, cells: int) -> dict[str, str]:
    return {
        "original": "Original",
        "block_center": f"Block centre ({fraction:.0%})",
        "blur_center": f"Gaussian blur centre (σ {sigma:g} px, {fraction:.0%})",
        "pixelate": f"Pixelate ({cells}×{cells})",
        "masker": f"{VARIANT_TITLES.get(variant, variant)} (K {keep:.0%})",
    }


def _pixels_revealed(size: int, fraction: float, masker: dict[str, np.ndarray], seed: int) -> dict:
    """Share of each image's pixels a release shows: measured for the masker, by construction for the rest."""
    rows, cols = center_box(size, size, fraction)
    box = (rows.stop - rows.start) * (cols.stop - cols.start) / size**2
    return {
        "definition": "the share of an image's pixel positions whose released value carries image content (not blacked "
                      "out); blurred or pixelated pixels count as revealed; 'unaltered' counts those released exactly as they are",
        "original": {"mean": 1.0, "unaltered": 1.0, "note": "every pixel, unaltered"},
        "block_center": {"mean": 1.0 - box, "unaltered": 1.0 - box, "note": f"every pixel outside the black centre box ({box:.1%} of the image)"},
        "blur_center": {"mean": 1.0, "unaltered": 1.0 - box, "note": f"every pixel; the centre box ({box:.1%}) blurred"},
        "pixelate": {"mean": 1.0, "unaltered": 0.0, "note": "every pixel, each as the mean colour of its cell"},
        "masker": {
            "mean": float(masker["revealed"].mean()),
            "min": float(masker["revealed"].min()),
            "max": float(masker["revealed"].max()),
            "mean_kept_value": mean_interval(masker["kept_value"], seed),
            "note": "pixels with a nonzero released mask m_topK (measured per image); each is shown scaled by its soft "
                    "mask value (mean_kept_value), so dimmed",
        },
    }


# --------------------------------------------------------------------------------------------------
# Task accuracy and leakage: Φ, and fresh CNNs on every release
# --------------------------------------------------------------------------------------------------


def _predictor_scores(probabilities: np.ndarray, y: np.ndarray, label) -> dict:
    """Φ's scores on the test faces with a known task label, beside always answering their majority class."""
    known = ~np.isnan(y)
    y_known = y[known].astype(int)
    if not known.any():
        return {"skipped": "no test face has a known task label", "n": 0}
    scores = classification_metrics(y_known, probabilities[known], label)
    majority = float(np.bincount(y_known).max() / len(y_known))
    return {**scores, "majority_accuracy": majority, "n": int(known.sum())}


def _attack(releases: dict[str, np.ndarray], labels: dict[str, np.ndarray], schema: LabelSchema, seeds, groups, epochs, min_steps,
            log: Callable) -> dict[str, dict[str, dict]]:
    """Fresh CNNs per release and label, every release on the same halves. -> {label: {release: result}}."""
    by_release = {}
    for key, images in releases.items():
        start = time.perf_counter()
        by_release[key] = audit_images(images, labels, schema, seeds=seeds, groups=groups, epochs=epochs, min_steps=min_steps)
        log(f"[audit]   {key}: {time.perf_counter() - start:.0f} s")
    return {name: {key: by_release[key][name] for key in releases} for name in labels}


def _fresh_summary(result: dict) -> dict:
    """A fresh-CNN result -> the table's numbers (means over the half-splits)."""
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    cnn, baseline = result["attackers"]["cnn"], result["attackers"]["baseline"]
    if result["kind"] == "continuous":
        return {"mae": cnn["mae"]["mean"], "mean_guess_mae": baseline["mae"]["mean"]}
    return {
        "accuracy": cnn["accuracy"]["mean"],
        "balanced_accuracy": cnn["balanced_accuracy"]["mean"],
        "balanced_accuracy_std": cnn["balanced_accuracy"]["std"] if cnn["balanced_accuracy"]["n"] > 1 else None,
        "majority_accuracy": baseline["accuracy"]["mean"],
        "chance_balanced_accuracy": result.get("chance_balanced_accuracy"),
    }


# --------------------------------------------------------------------------------------------------
# Identity: face similarity and re-identification (dlib's embedding)
# --------------------------------------------------------------------------------------------------


def reid_gallery(identity: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For re-identification: (gallery rows: one seeded original image per person with at least two test
    images, probe candidates: every other image of those people). Both sorted; empty without identities."""
    identity = np.asarray(identity, np.int64)
    known = np.flatnonzero(identity >= 0)
    people, counts = np.unique(identity[known], return_counts=True)
    rng = np.random.default_rng([seed, 7])
    gallery = []
    for person in people[counts >= 2]:
        gallery.append(rng.choice(known[identity[known] == person]))
    gallery = np.sort(np.array(gallery, np.int64))
    repeated = np.isin(identity, people[counts >= 2]) & (identity >= 0)
    repeated[gallery] = False
    return gallery, np.flatnonzero(repeated)


def rank1(probes: np.ndarray, probe_identity: np.ndarray, gallery: np.ndarray, gallery_identity: np.ndarray) -> np.ndarray:
    """(P,) bool: is each probe embedding's nearest gallery embedding (Euclidean, dlib's metric) its own person?"""
    nearest = NearestNeighbors(n_neighbors=1).fit(gallery).kneighbors(probes, return_distance=False)[:, 0]
    return np.asarray(gallery_identity)[nearest] == np.asarray(probe_identity)


def _identity(test: FaceArrays, releases: dict[str, np.ndarray], judge, rows: np.ndarray, gallery: np.ndarray, seed: int,
              log: Callable) -> dict:
    from .judges import SAME_PERSON_DISTANCE

    originals = judge.embed(test.images[rows])  # (n, 128)
    partner, other = unrelated_partners(test.identity[rows], seed)  # context: an unrelated face
    result: dict[str, Any] = {
        "judge": _judge_name(judge),
        "n_faces": len(rows),
        "same_person_distance": SAME_PERSON_DISTANCE,
        "similarity_note": SIMILARITY_CONTEXT,
        "different_person": {"cosine": mean_interval(judge.cosine(originals[other], originals[partner][other]), seed)},
        "releases": {},
    }
    reid = len(gallery) > 0
    if reid:
        gallery_embeddings = judge.embed(test.images[gallery])
        result["reid"] = {
            "gallery_people": len(gallery),
            "probes": len(rows),
            "chance": 1.0 / len(gallery),
            "note": "rank-1 identification: each released test face's nearest original in a gallery of one other original image per "
                    "test person with at least two images (Euclidean distance of dlib embeddings)",
        }
    else:
        result["reid"] = {"skipped": "the test faces have no identities (or no person has two images): no gallery to re-identify against"}
    for key, images in releases.items():
        start = time.perf_counter()
        embedded = originals if key == "original" else judge.embed(images[rows])
        scores = face_similarity(judge, originals, embedded, seed)
        if reid:
            hits = rank1(embedded, test.identity[rows], gallery_embeddings, test.identity[gallery])
            scores["rank1"] = mean_interval(hits, seed)
        result["releases"][key] = scores
        log(f"[audit]   {key}: cosine {num(scores['cosine']['mean'])}" + (f", rank-1 {num(scores['rank1']['mean'])}" if reid else "")
            + f" ({time.perf_counter() - start:.0f} s)")
    return result


def gender_agreement(test: FaceArrays, releases: dict[str, np.ndarray], judge, rows: np.ndarray, seed: int) -> dict:
    """How often the off-the-shelf gender judge reads the same gender from a release as from its original.

    For data without gender labels (FER2013): the judge's reading of the original stands in for the truth.
    Agreement of the two readings at p(female) > 0.5, beside the agreement two independent readings with the
    same rates would reach by chance; Cohen's kappa rescales it (0 = chance, 1 = always the same reading).
    A release that hides gender sits near chance; one that keeps it near 1.
    """
    from sklearn.metrics import cohen_kappa_score

    original = judge.predict(test.images[rows])["p_female"] > 0.5  # (n,) the judge's reading of each original
    result: dict[str, Any] = {"judge": _judge_name(judge), "n_faces": len(rows), "original_female_rate": float(original.mean()),
                              "releases": {}}
    for key, images in releases.items():
        read = original if key == "original" else judge.predict(images[rows])["p_female"] > 0.5
        chance = float(original.mean() * read.mean() + (1 - original.mean()) * (1 - read.mean()))
        kappa = float(cohen_kappa_score(original, read)) if len(set(original) | set(read)) > 1 else float("nan")
        result["releases"][key] = {"agreement": mean_interval(original == read, seed), "chance_agreement": chance,
                                   "kappa": kappa, "female_rate": float(read.mean())}
    return result


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def _table(titles: dict[str, str], task: str, task_accuracy: dict, identity: dict, pixels: dict, leakage: dict) -> dict:
    """The paper's Tables I/II: a row per release, gathered from the detailed sections."""
    predictor = task_accuracy["predictor"]["released"]
    predictor = None if "skipped" in predictor else {k: predictor[k] for k in ("accuracy", "balanced_accuracy", "majority_accuracy")}
    rows = []
    for key in RELEASE_KEYS:
        faces = identity.get("releases", {}).get(key)
        rows.append({
            "release": key,
            "row": titles[key],
            "pixels_revealed": pixels[key]["mean"],
            "task": _fresh_summary(task_accuracy["fresh"][key]),
            "predictor": predictor if key == "masker" else None,
            "face": None if faces is None else {k: faces[k] for k in ("cosine", "same_person_rate") if k in faces},
            "reid": None if faces is None or "rank1" not in faces else {"rank1": faces["rank1"], "chance": identity["reid"]["chance"]},
            "leakage": {name: _fresh_summary(by_release[key]) for name, by_release in leakage.get("labels", {}).items() if key in by_release},
        })
    return {"task": task, "rows": rows}


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------



def _grid_figure(model: Masker, test: FaceArrays, releases: dict[str, np.ndarray], titles: dict[str, str], out_dir: Path, seed: int) -> str:
    """A row per face: original, soft mask m, released mask m_topK, then every release (the paper's Figs. 2-3)."""
    plt = pyplot()
    rows = sample_rows(len(test), GRID_FACES, seed, purpose=4)
    with torch.inference_mode():
        soft, kept = (m[:, 0].numpy() for m in model.method.masks(to_tensor_images(test.images[rows], model.method.device)))
    columns = [("original", test.images[rows], None), ("mask m", soft, "gray"), ("released mask m_topK", kept, "gray")]
    columns += [(titles[key], releases[key][rows], None) for key in ("masker", "block_center", "blur_center", "pixelate")]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.4 * len(columns), 1.4 * len(rows) + 0.5), squeeze=False)
    for j, (title, images, cmap) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=6)
        for i in range(len(rows)):
            axes[i, j].imshow(images[i], cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            axes[i, j].axis("off")
    return save_figure(fig, out_dir, "grid.png")


def _mean_mask_figure(mean_mask: np.ndarray, keep: float, out_dir: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.4, 3.0))
    shown = ax.imshow(mean_mask, cmap="magma", vmin=0)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(f"mean released mask m_topK (K {keep:.0%})", fontsize=8)
    ax.axis("off")
    return save_figure(fig, out_dir, "mean_mask.png")


def _table_figure(summary: dict, identity: dict, out_dir: Path) -> str:
    plt = pyplot()
    rows = summary["rows"]
    names = [r["row"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(rows))
    left.bar(x, [r["task"].get("balanced_accuracy", np.nan) for r in rows], color="tab:green")
    chance = rows[0]["task"].get("chance_balanced_accuracy")
    if chance is not None:
        left.axhline(chance, color="k", linestyle="--", label="chance")
        left.legend(fontsize=8)
    left.set_ylim(0, 1)
    left.set_xticks(x, names, rotation=25, ha="right", fontsize=7)
    left.set_title(f"utility: fresh CNN on {summary['task']} (higher = more useful)", fontsize=9)
    left.set_ylabel("balanced accuracy on held-out half")
    right.bar(x, [(r["face"] or {}).get("cosine", {}).get("mean", np.nan) for r in rows], color="tab:red")
    if "skipped" in identity:
        right.text(0.5, 0.5, f"not measured:\n{identity['skipped']}", ha="center", va="center", fontsize=8, wrap=True,
                   transform=right.transAxes)
    else:  # dlib's cosine is not centred: an unrelated face is the floor to read the bars against
        right.axhline(identity["different_person"]["cosine"]["mean"], color="k", linestyle="--", label="an unrelated face")
        right.legend(fontsize=8)
    right.set_ylim(0, 1)
    right.set_xticks(x, names, rotation=25, ha="right", fontsize=7)
    right.set_title("privacy: face similarity to the original (lower = more private)", fontsize=9)
    right.set_ylabel("dlib embedding cosine")
    return save_figure(fig, out_dir, "table.png")


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

TABLE_HEADER = ["release", "pixels revealed", "task acc (fresh) ↑", "bal. acc ↑", "majority acc", "chance bal. acc", "Φ acc on x_p",
                "face similarity ↓", "judged same person ↓", "re-id rank-1 ↓"]


def table_row(row: dict, title: str | None = None) -> list[str]:
    """One release as table cells (``TABLE_HEADER``)."""
    task = row["task"]
    if "skipped" in task:
        cells = ["skipped", "", "", ""]
    else:
        balanced = num(task["balanced_accuracy"]) + (f" ± {num(task['balanced_accuracy_std'])}" if task.get("balanced_accuracy_std") else "")
        cells = [num(task["accuracy"]), balanced, num(task["majority_accuracy"]), num(task["chance_balanced_accuracy"])]
    predictor = row.get("predictor")
    face, reid = row.get("face") or {}, row.get("reid") or {}
    return [title or row["row"], num(row["pixels_revealed"]), *cells, num(predictor.get("accuracy")) if predictor else "—",
            with_interval(face.get("cosine")) if face else "—", with_interval(face.get("same_person_rate")) if face else "—",
            with_interval(reid.get("rank1")) if reid else "—"]


def table_markdown(s: dict) -> list[str]:
    """The ``table`` section as markdown lines (for report.md)."""
    lines = [f"## Task ({s['task']}) and privacy per release, as the paper's Tables I/II", "", s["note"], ""]
    return lines + table(TABLE_HEADER, [table_row(r) for r in s["rows"]]) + [""]


def task_markdown(s: dict) -> list[str]:
    lines = ["## Task accuracy", ""]
    predictor = s["predictor"]
    if "skipped" in predictor["released"]:
        lines += [f"Φ (the model's own predictor): skipped ({predictor['released']['skipped']}).", ""]
    else:
        rows = [[title, num(v["accuracy"]), num(v["balanced_accuracy"]), num(v["auc"]), num(v["majority_accuracy"]), v["n"]]
                for key, title in (("released", "x_p: the released pixels"), ("rest", "x_o: the unreleased rest of the mask (context)"))
                for v in (predictor[key],)]
        lines += [f"**(a) Φ, the model's own predictor**, on every test face ({predictor['note']}):", ""]
        lines += table(["input", "accuracy", "balanced acc", "AUC", "majority acc", "n"], rows) + [""]
    fresh = s["fresh"]
    first = next(iter(fresh.values()))
    lines += [f"**(b) A fresh CNN** trained from scratch on each release ({s['note']}; {first.get('split', '?')}, "
              f"~{first.get('n_train', '?')} train / ~{first.get('n_test', '?')} test faces, seeds {s['seeds']}):", ""]
    return lines + attack_tables({s["task"]: fresh}, [(key, s["titles"][key]) for key in fresh])


@markdown_section("What else the releases show: fresh CNNs on the other labels")
def leakage_markdown(s: dict) -> list[str]:
    lines = [f"{s['note']}.", ""]
    return lines + attack_tables(s["labels"], [(key, s["titles"][key]) for key in s["titles"]])


@markdown_section("Identity: face similarity and re-identification")
def identity_markdown(s: dict) -> list[str]:
    lines = [f"{s['n_faces']} test faces (a seeded sample{s.get('sample_note', '')}), embedded by {s['judge']}. Face similarity = cosine of the "
             f"original's and the release's embeddings ({s['similarity_note']}; an unrelated pair here: "
             f"{with_interval(s['different_person']['cosine'])}). Judged same person = embedding distance below "
             f"{s['same_person_distance']}. Brackets: 95% bootstrap intervals.", ""]
    reid = s["reid"]
    if "skipped" in reid:
        lines += [f"Re-identification: skipped ({reid['skipped']}).", ""]
    else:
        lines += [f"Re-identification: {reid['note']}; {reid['probes']} probes, {reid['gallery_people']} gallery people, chance "
                  f"1/{reid['gallery_people']} = {num(reid['chance'], 4)}.", ""]
    rows = [[s["titles"][key], with_interval(v["cosine"]), with_interval(v["same_person_rate"]), with_interval(v["rank1"]) if "rank1" in v else "—"]
            for key, v in s["releases"].items()]
    return lines + table(["release", "face similarity", "judged same person", "re-id rank-1"], rows) + [""]


def pixels_markdown(s: dict) -> list[str]:
    lines = ["## Pixels revealed", "", f"Definition: {s['definition']}.", ""]
    rows = [[s["titles"][key], num(s[key]["mean"]), num(s[key].get("unaltered")) if "unaltered" in s[key] else "—", s[key]["note"]]
            for key in RELEASE_KEYS]
    masker = s["masker"]
    lines += table(["release", "pixels revealed", "of them unaltered", "what it counts"], rows) + [""]
    return lines + [f"Masker: per image {num(masker['min'])}–{num(masker['max'])}; mean released mask value on the released pixels "
                    f"{with_interval(masker['mean_kept_value'])}.", ""]


FIGURE_CAPTIONS = {"grid": "test faces: original, soft mask, released mask, masker release and the baselines",
                   "mean_mask": "mean released mask over the test faces", "table": "task accuracy and face similarity per release"}


@markdown_section("Figures")
def figures_markdown(s: dict) -> list[str]:
    return figure_lines(s, FIGURE_CAPTIONS)


# For report.md: section key -> markdown lines, rendered in this order before the shared sections.
@markdown_section("Gender judge: the release's reading against the original's")
def gender_agreement_markdown(s: dict) -> list[str]:
    lines = [f"{s['judge']} reads gender (p(female) > 0.5) from {s['n_faces']} test faces and from each release of them "
             f"(it calls {num(s['original_female_rate'])} of the originals female). Agreement: the share of faces read the "
             "same way; chance: what two independent readings with these rates agree; Cohen's kappa: 0 at chance, 1 always "
             "the same. For data without gender labels (FER2013) this is how much of the judge's gender reading survives.", ""]
    titles = s.get("titles", {})
    rows = [[titles.get(key, key), with_interval(r["agreement"]), num(r["chance_agreement"]), num(r["kappa"]), num(r["female_rate"])]
            for key, r in s["releases"].items()]
    return lines + table(["release", "agreement ↓", "chance", "kappa ↓", "read female"], rows) + [""]


RENDERERS = {
    "table": table_markdown,
    "task_accuracy": task_markdown,
    "identity": identity_markdown,
    "gender_agreement": gender_agreement_markdown,
    "leakage": leakage_markdown,
    "pixels_revealed": pixels_markdown,
    "figures": figures_markdown,
}


# --------------------------------------------------------------------------------------------------
# Comparing models
# --------------------------------------------------------------------------------------------------


def _model_row(report: dict) -> dict:
    return next(r for r in report["table"]["rows"] if r["release"] == "masker")


def compare_maskers(report_jsons: list[str | Path], plot: str | Path | None = None) -> str:
    """Several maskers' report.json -> one markdown table: the baselines of the first report, then every
    model's row (ordered by variant, then K). With ``plot`` and models of different K, also writes a plot of
    fresh task balanced accuracy and face similarity against the pixels revealed (= K for a masker)."""
    reports = [json.loads(Path(p).read_text()) for p in report_jsons]
    if not reports:
        raise ValueError("compare_maskers needs at least one report.json")
    first = reports[0]
    baselines = [r for r in first["table"]["rows"] if r["release"] != "masker"]
    models = sorted(((report, _model_row(report)) for report in reports),
                    key=lambda item: (item[0]["table"]["variant"] != "adversarial", item[0]["table"]["keep"]))
    titles = [row["row"] for _, row in models]
    duplicates = {t for t in titles if titles.count(t) > 1}
    rows = [table_row(r) for r in baselines]
    rows += [table_row(row, f"{row['row']} [{Path(report['provenance']['model']).name}]" if row["row"] in duplicates else None)
             for report, row in models]
    lines = [f"Task: {first['table']['task']}. {first['table']['note']} Baselines from {Path(first['provenance']['model']).name}'s report.", ""]
    audited = sorted({(r["provenance"].get("dataset"), r["provenance"].get("n_test_faces"), r["provenance"].get("seed")) for r in reports}, key=str)
    if len(audited) > 1:
        lines += [f"> **Not like for like**: the reports audited different data (dataset, test faces, seed): {audited}.", ""]
    if len({r["table"]["task"] for r in reports}) > 1:
        lines += [f"> **Not like for like**: the models have different tasks: {sorted({r['table']['task'] for r in reports})}.", ""]
    lines += table(TABLE_HEADER, rows)
    keeps = sorted({r["table"]["keep"] for r in reports})
    if plot is not None and len(keeps) > 1:
        _sweep_figure(baselines, models, Path(plot))
        lines += ["", f"![task accuracy and face similarity against K]({Path(plot).name})"]
    return "\n".join(lines) + "\n"


def _sweep_figure(baselines: list[dict], models: list[tuple[dict, dict]], path: Path) -> None:
    """Task balanced accuracy, face similarity (dlib cosine, not centred: an unrelated pair scores ~0.84, so its
    axis is not from 0) and the identity rates (judged same person, re-identification rank-1) against K."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))

    def face(row: dict, key: str) -> float:
        return ((row.get("face") or {}).get(key) or {}).get("mean", np.nan)

    def reid(row: dict) -> float:
        return ((row.get("reid") or {}).get("rank1") or {}).get("mean", np.nan)

    panels = (
        ((("fresh CNN", lambda r: r["task"].get("balanced_accuracy", np.nan)),), "task balanced accuracy ↑", (0, 1.05)),
        ((("dlib cosine", lambda r: face(r, "cosine")),), "face similarity, release vs original ↓", None),
        ((("judged same person", lambda r: face(r, "same_person_rate")), ("re-id rank-1", reid)), "identity rate ↓", (0, 1.05)),
    )
    for ax, (measures, ylabel, ylim) in zip(axes, panels):
        for name, value in measures:
            for variant in sorted({report["table"]["variant"] for report, _ in models}):
                points = sorted((report["table"]["keep"], value(row)) for report, row in models if report["table"]["variant"] == variant)
                label = VARIANT_TITLES.get(variant, variant) + (f": {name}" if len(measures) > 1 else "")
                ax.plot(*zip(*points), marker="o", label=label)
            for row in baselines:
                ax.scatter(row["pixels_revealed"], value(row), marker="x", color="k")
                ax.annotate(row["row"], (row["pixels_revealed"], value(row)), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("pixels revealed (K for a masker)")
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path.parent, path.name)


# --------------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------------


@single_threaded
def audit_masker(
    model_path: str | Path,
    test: FaceArrays,
    out_dir: str | Path,
    judges: str | dict = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
    identity_faces: int = 300,
    cnn_seeds: int = 1,
    cnn_epochs: int = DEFAULT_CNN_EPOCHS,
    cnn_min_steps: int = CNN_MIN_STEPS,
    leakage: bool = True,
    box_fraction: float | None = None,
    blur_sigma: float | None = None,
    pixelate_cells: int = PIXELATE_CELLS,
    model=None,
) -> dict:
    """The masker's audit sections on ``test`` (images at the model's size); figures go into ``out_dir``.

    ``identity_faces``: faces embedded by dlib (~90 ms each, per release: 0 = none); ``cnn_seeds``: fresh
    half-splits for the CNNs; ``cnn_epochs``/``cnn_min_steps``: their training length; ``leakage``: also
    attack the labels other than the task (on the masker's release and the original); ``box_fraction`` (default: the model's K, so the block hides as
    many pixels as the masker releases), ``blur_sigma`` (default: 1/16 of the image side) and
    ``pixelate_cells``: the baselines. Runs on one thread (see ``single_threaded``).
    """
    model, out_dir = open_audited(Masker, model_path, test, out_dir, model)  # model: the audit context's, loaded once
    cfg = model.method.cfg
    variant = read_model_info(model_path)["model_config"].get("variant", cfg.variant)
    s = model.image_size
    y = task_values(test, cfg.task)  # checks first that the test data has the task (one-line DataError)
    task_label = resolve_task(test.schema, cfg.task)
    fraction = cfg.keep if box_fraction is None else box_fraction
    sigma = s * BLUR_SIGMA_SHARE if blur_sigma is None else blur_sigma
    titles = release_titles(variant, cfg.keep, fraction, sigma, pixelate_cells)
    groups = test.identity if np.any(test.identity >= 0) else None
    seeds = tuple(seed + i for i in range(cnn_seeds))
    sections: dict[str, Any] = {"timings": {}}
    step = timed_steps(sections["timings"], log)

    with step("release", f"releasing {len(test)} test faces: masker (K {cfg.keep:.0%}) and the baselines"):
        masked = run_masker(model, test.images)
        releases = {**baseline_releases(np.asarray(test.images), fraction, sigma, pixelate_cells), "masker": masked["released"]}

    fresh_note = f"{cnn_min_steps} updates, at least {cnn_epochs} and at most {CNN_MAX_EPOCHS} epochs, on images downscaled to {DEFAULT_CNN_SIZE} px"
    task_schema = LabelSchema((task_label,))
    with step("task_accuracy", f"task ({cfg.task}): Φ on x_p, and fresh CNNs on {len(releases)} releases x {len(seeds)} half-splits"):
        sections["task_accuracy"] = {
            "task": cfg.task,
            "titles": titles,
            "seeds": list(seeds),
            "note": fresh_note,
            "predictor": {
                "note": "trained on the train split, so every test face is held out",
                "released": _predictor_scores(masked["predictor"], y, task_label),
                "rest": _predictor_scores(masked["rest"], y, task_label),
            },
            "fresh": _attack(releases, {cfg.task: y}, task_schema, seeds, groups, cnn_epochs, cnn_min_steps, log)[cfg.task],
        }

    others = [name for name in test.schema.names if name not in (cfg.task, getattr(DERIVED_LABELS.get(cfg.task), "source", None))]
    if not leakage or not others:
        sections["leakage"] = {"skipped": "turned off for this audit" if not leakage else "the test data has no label but the task"}
    else:
        # The model's release against the original only: on the full UTKFace test split each label costs ~30 s per
        # release, and the baselines' leakage (not in the paper) would take the audit past 10 minutes.
        attacked = {key: releases[key] for key in LEAKAGE_RELEASES}
        with step("leakage", f"leakage: fresh CNNs on {', '.join(others)} x {len(attacked)} releases"):
            labels = {name: test.labels[name] for name in others}
            sections["leakage"] = {
                "note": f"Labels the task does not need ({', '.join(others)}), attacked on the masker's release and on the original "
                        f"images by the same fresh CNN ({fresh_note}), on the same halves as the task. A masker hides whatever its "
                        f"task does not need: the release should sit nearer the baseline than the original does",
                "titles": {key: titles[key] for key in attacked},
                "seeds": list(seeds),
                "labels": _attack(attacked, labels, test.schema.subset(others), seeds, groups, cnn_epochs, cnn_min_steps, log),
            }

    # With identities, the sample is drawn from faces whose person has another image in the gallery, so every
    # sampled face is both a similarity pair and a re-identification probe (one set of embeddings for both).
    gallery, candidates = reid_gallery(test.identity, seed)
    if len(gallery):
        rows, sample_note = candidates[sample_rows(len(candidates), identity_faces, seed, purpose=2)], \
            " of the faces whose person has another image, in the gallery"
    else:
        rows, sample_note = sample_rows(len(test), identity_faces, seed, purpose=2), ""
    judge = None
    if identity_faces > 0:
        objects, status = resolve_judges(judges)
        judge = objects["face_embedding"]
        sections["judges"] = {"face_embedding": status["face_embedding"], "age_gender": status["age_gender"]}
    if judge is None:
        reason = "identity_faces=0" if identity_faces <= 0 else f"face embedding judge unavailable: {sections['judges']['face_embedding']}"
        sections["identity"] = {"skipped": reason}
        log(f"[audit] identity skipped: {reason}")
    else:
        with step("identity", f"identity: dlib embeddings of {len(rows)} faces x {len(releases)} releases"
                              + (f", gallery of {len(gallery)} people" if len(gallery) else "")):
            sections["identity"] = {**_identity(test, releases, judge, rows, gallery, seed, log), "titles": titles, "sample_note": sample_note}
    gender_judge = objects.get("age_gender") if identity_faces > 0 else None
    if gender_judge is None:
        sections["gender_agreement"] = {"skipped": "identity_faces=0" if identity_faces <= 0 else f"gender judge unavailable: {status['age_gender']}"}
    else:
        with step("gender_agreement", f"gender judge on {len(rows)} faces x {len(releases)} releases"):
            sections["gender_agreement"] = {**gender_agreement(test, releases, gender_judge, rows, seed), "titles": titles}

    sections["pixels_revealed"] = {**_pixels_revealed(s, fraction, masked, seed), "titles": titles}
    sections["table"] = {
        **_table(titles, cfg.task, sections["task_accuracy"], sections["identity"], sections["pixels_revealed"], sections["leakage"]),
        "variant": variant,
        "keep": cfg.keep,
        "note": ("Task accuracy (fresh): a CNN trained from scratch on one half of each release and scored on the other; Φ: the "
                 "model's own predictor on its release. Face similarity and re-identification: dlib's embedding of the release "
                 "against the original (lower = more private; " + (
                     f"re-id chance {num(sections['identity']['reid']['chance'], 4)})." if "chance" in sections["identity"].get("reid", {})
                     else "re-id needs identities).") + " Pixels revealed: see its section for the definition per release."),
    }
    for row in sections["table"]["rows"]:
        task, face = row["task"], row["face"] or {}
        log(f"[audit]   {row['row']}: revealed {num(row['pixels_revealed'])}, {cfg.task} bal. acc {num(task.get('balanced_accuracy'))} "
            f"(majority acc {num(task.get('majority_accuracy'))}), face similarity {num(face.get('cosine', {}).get('mean'))}")

    with step("figures", "figures"):
        sections["figures"] = {
            "grid": _grid_figure(model, test, releases, titles, out_dir, seed),
            "mean_mask": _mean_mask_figure(masked["mean_mask"], cfg.keep, out_dir),
            "table": _table_figure(sections["table"], sections["identity"], out_dir),
        }
    sections["samples"] = {
        "test_faces": len(test),
        "cnn_seeds": list(seeds),
        "identity_faces": int(len(rows)) if judge is not None else 0,
        "gallery_people": int(len(gallery)) if judge is not None else 0,
        "baselines": {"box_fraction": fraction, "blur_sigma": sigma, "pixelate_cells": pixelate_cells},
    }
    # The table first: report.md renders this module's sections in RENDERERS' order, the rest after.
    order = ("table", "task_accuracy", "identity", "gender_agreement", "leakage", "pixels_revealed", "figures", "judges", "samples", "timings")
    return {key: sections[key] for key in order if key in sections}
