"""Audit of an anonymizer (AIA, ``conceal.methods.anonymizer``): does the released code g hide the private
label (gender) from attackers trained after the fact, and does it still tell people apart?

Sections (plain numbers, written by ``report.write_report``):

- ``code_leakage`` (the concealer's section shape, so report.md renders it as tables): fresh vector attackers
  on g for the private label, on identity-disjoint halves, beside the "Original" reference (raw pixels
  reduced by PCA to the code size) and, in the JSON, the same attackers on the Random baseline of g.
  Balanced accuracy and AUC come first: LFW is ~79% male, so plain accuracy would flatter an attacker.
- ``privacy_utility``: the paper's Table 1 for this model: one row for its variant (Original, AIA\\T or
  AIA), one for the Random baseline of its codes, and the raw-pixel reference (privacy only).
- ``image_leakage`` (the concealer's section shape): the model also releases images, the decoder's grayscale
  reconstruction of every face (``conceal apply``, the paper's Fig. 3). A small CNN trained from scratch
  after the fact (``attackers.audit_images``, the concealer's image attacker) reads the private label from
  them, beside the same CNN on the original test images, on the same identity-disjoint halves.
- ``judge_leakage``: an attacker that needs no training data, the off-the-shelf gender judge, reads gender
  from the released reconstructions (beside the grayscale and colour originals).
- ``verification``: the utility task, 1-to-1 face verification on pairs of test people: cosine distance of
  the Siamese embeddings, of the codes g themselves and, with the face-embedding judge, of the judge's
  embeddings of the released reconstructions (an independent verifier, never trained by conceal, beside the
  same judge on the original images: what there was to keep); the threshold is chosen on pairs of one half
  of the people ("validation") and scored on pairs of the other half.
- ``reconstruction_fidelity``: PSNR/SSIM of the reconstruction against the grayscale original (the
  autoencoder's target) and, with the face-embedding judge, identity similarity of original vs reconstruction.
- ``figures``: originals over reconstructions (like the paper's Fig. 3) and a privacy/utility bar chart.

``compare_anonymizers(report_jsons)`` merges several models' report.json into one paper-style table;
``compare_released(report_jsons)`` into one table of everything each model releases, read every way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics.pairwise import paired_cosine_distances
from sklearn.model_selection import StratifiedKFold

from ..data import FaceArrays
from ..methods.anonymizer import LUMA, Anonymizer, random_baseline
from ..modelfile import read_model_info
from .attackers import (
    BASELINE,
    CNN_MAX_EPOCHS,
    CNN_MIN_STEPS,
    DEFAULT_CNN_EPOCHS,
    DEFAULT_CNN_SIZE,
    audit_images,
    audit_vectors,
    pixel_baseline,
    single_threaded,
    split_halves,
)
from .common import face_similarity, judge_name as _judge_name, open_audited, resolve_judges, sample_rows
from .metrics import mean_interval, psnr, ssim, unrelated_partners
from .report import attack_tables, markdown_section, num, table, timed_steps, with_interval, pyplot, save_figure

# The paper's names for the variants (Table 1); "AIA\T" is AIA trained without the utility term.
VARIANT_TITLES = {"original": "Original", "aia_no_utility": "AIA\\T", "aia": "AIA"}
PAPER_ROW_ORDER = ("Original", "Random", "AIA\\T", "AIA")
RANDOM_TITLE = "Random"
RELEASED_IMAGES_TITLE = "released reconstructions"
ORIGINAL_IMAGES_TITLE = "original images"
PIXELS_TITLE = "raw pixels (reference)"
UTILITY_MEASURES = {"siamese": "Siamese embeddings", "codes": "released codes", "judge": "judge's embeddings"}
GRID_FACES = 8
# Dimensions of the raw-pixel reference (PCA): the code size, at most this. AIA's g is large (3,072 values at
# 64 px) and PCA cannot keep more components than an attacker half has rows, so "the code size" meant keeping
# them all, and the attackers overfit: on 400 LFW test faces (~210-row halves) pixels reduced to all components
# read gender at AUC 0.53, reduced to 64 at AUC 0.84 (16: 0.63, 128: 0.81). Codes are attacked whole: PCA on
# g only weakened the attackers there (AUC 0.77 whole, 0.74-0.76 at 64).
PIXEL_PCA_CAP = 64


# --------------------------------------------------------------------------------------------------
# Verification pairs and scores
# --------------------------------------------------------------------------------------------------


def verification_pairs(identity: np.ndarray, max_matched: int | None, seed: int | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Face-verification pairs among rows of known identity: every same-identity pair (a seeded sample of
    ``max_matched`` when there are more) and as many seeded, distinct pairs of two different people.

    identity (N,) int64, -1 = unknown (never paired: two unknowns may be the same person).
    Returns (pairs (P, 2) int64 row positions, same (P,) bool), matched pairs first.
    """
    identity = np.asarray(identity, np.int64)
    known = np.flatnonzero(identity >= 0)
    rng = np.random.default_rng(seed)
    order = known[np.argsort(identity[known], kind="stable")]
    _, starts, counts = np.unique(identity[order], return_index=True, return_counts=True)
    matched = [np.zeros((0, 2), np.int64)]
    for start, count in zip(starts, counts):
        members = order[start : start + count]
        i, j = np.triu_indices(count, 1)
        matched.append(np.stack([members[i], members[j]], axis=1))
    matched_pairs = np.concatenate(matched)
    n_different_available = (len(known) ** 2 - int((counts**2).sum())) // 2
    n = min(len(matched_pairs), n_different_available, len(matched_pairs) if max_matched is None else max_matched)
    if n < len(matched_pairs):
        matched_pairs = matched_pairs[np.sort(rng.choice(len(matched_pairs), size=n, replace=False))]

    drawn: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(drawn) < n:  # rejection sampling: with many people, a same-person draw is rare
        a, b = known[rng.integers(len(known), size=(2, 2 * (n - len(drawn)) + 16))]
        for i, j in zip(a, b):
            key = (int(min(i, j)), int(max(i, j)))
            if identity[i] != identity[j] and key not in seen:
                seen.add(key)
                drawn.append(key)
                if len(drawn) == n:
                    break
    pairs = np.concatenate([matched_pairs, np.array(drawn, np.int64).reshape(-1, 2)])
    return pairs, np.r_[np.ones(n, bool), np.zeros(n, bool)]


def verification_scores(distance_validation, same_validation, distance_test, same_test) -> dict[str, float]:
    """"Same person iff distance <= t": t maximises accuracy on the validation pairs; accuracy, balanced
    accuracy and ROC AUC (of −distance) on the test pairs."""
    same_validation, same_test = np.asarray(same_validation, bool), np.asarray(same_test, bool)
    # Accuracy at every ROC point is linear in (fpr, tpr): the best threshold is one of roc_curve's.
    fpr, tpr, thresholds = roc_curve(same_validation, -np.asarray(distance_validation), drop_intermediate=False)
    n_same = same_validation.sum()
    validation_accuracy = (tpr * n_same + (1 - fpr) * (len(same_validation) - n_same)) / len(same_validation)
    best = int(np.argmax(validation_accuracy))
    threshold = -float(thresholds[best])
    predicted = np.asarray(distance_test) <= threshold
    return {
        "threshold": threshold,
        "validation_accuracy": float(validation_accuracy[best]),
        "accuracy": float(accuracy_score(same_test, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(same_test, predicted)),
        "auc": float(roc_auc_score(same_test, -np.asarray(distance_test))),
        "majority_accuracy": float(max(same_test.mean(), 1 - same_test.mean())),
    }


PROTOCOL_FOLDS = 10  # LFW's own protocol scores pairs.txt in 10 folds


def protocol_verification(representations: dict[str, dict[str, np.ndarray]], pairs: dict, seed: int, folds: int = PROTOCOL_FOLDS) -> dict:
    """Verification on the dataset's own pairs (``FaceArrays.pairs``: LFW's pairs.txt plus seeded mismatched
    pairs), scored as LFW's protocol does: the threshold is chosen on k-1 stratified, seeded folds of the
    pairs and applied to the k-th; accuracy is the mean over the k folds. AUC (threshold-free) over all pairs.
    """
    rows, same = pairs["rows"], np.asarray(pairs["same"], bool)
    result: dict[str, Any] = {"source": pairs["source"], "counts": pairs["counts"],
                              "matched": int(same.sum()), "mismatched": int((~same).sum())}
    k = min(folds, result["matched"], result["mismatched"])
    if k < 2:
        return result | {"skipped": f"{result['matched']} matched / {result['mismatched']} mismatched pairs: too few for folds"}
    result["folds"] = k
    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, same))
    for row, measures in representations.items():
        result[row] = {}
        for measure, vectors in measures.items():
            distance = paired_cosine_distances(vectors[rows[:, 0]], vectors[rows[:, 1]])  # (P,)
            accuracy = [verification_scores(distance[fit], same[fit], distance[held], same[held])["accuracy"] for fit, held in splits]
            result[row][measure] = {"accuracy": float(np.mean(accuracy)), "accuracy_std": float(np.std(accuracy)),
                                    "auc": float(roc_auc_score(same, -distance)), "majority_accuracy": float(max(same.mean(), 1 - same.mean()))}
    return result


def _pair_counts(pairs: np.ndarray, same: np.ndarray, identity: np.ndarray) -> dict[str, int]:
    return {"matched": int(same.sum()), "mismatched": int((~same).sum()), "people": int(len(np.unique(identity[pairs])))}


def _verification(representations: dict[str, dict[str, np.ndarray]], identity: np.ndarray, max_matched: int, seed: int) -> dict:
    """Utility: verification of every representation (row -> measure -> (N, E) vectors) on the same pairs."""
    if not np.any(identity >= 0):
        return {"skipped": "the test faces have no identities: no verification pairs"}
    validation_rows, test_rows = split_halves(len(identity), seed, groups=identity)  # no person in both halves
    halves = {}
    for name, rows, purpose in (("validation", validation_rows, 5), ("test", test_rows, 6)):
        pairs, same = verification_pairs(identity[rows], max_matched, seed=[seed, purpose])
        halves[name] = (rows[pairs], same)
    counts = {name: _pair_counts(pairs, same, identity) for name, (pairs, same) in halves.items()}
    result: dict[str, Any] = {
        "pairs": {
            "matched": sum(c["matched"] for c in counts.values()),
            "mismatched": sum(c["mismatched"] for c in counts.values()),
            **counts,
            "max_matched_per_half": max_matched,
            "note": "the test people are split in two halves that share no one; each half gives every same-person pair of its "
                    "faces (a seeded sample above the cap) and as many seeded pairs of two different people",
        },
        "distance": "cosine distance",
    }
    if any(c["matched"] == 0 for c in counts.values()):
        result["skipped"] = "a half of the test people has no same-person pair (too few faces per person)"
        return result
    for row, measures in representations.items():
        result[row] = {}
        for measure, vectors in measures.items():
            distances = {name: paired_cosine_distances(vectors[pairs[:, 0]], vectors[pairs[:, 1]]) for name, (pairs, _) in halves.items()}
            result[row][measure] = verification_scores(distances["validation"], halves["validation"][1], distances["test"], halves["test"][1])
    return result


# --------------------------------------------------------------------------------------------------
# Representations
# --------------------------------------------------------------------------------------------------


def random_codes(codes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The Random baseline of ``codes`` (N, d): (released, the same mapped back into g's range).

    ``random_baseline`` releases min-max scaled codes in [0, 1]; undoing the scaling lets the model's own
    decoder and Siamese network read them, so the Random row gets the same utility measures as the model's.
    """
    released = random_baseline(codes, seed)
    low, high = codes.min(axis=0), codes.max(axis=0)
    return released, (low + released * (high - low)).astype(np.float32)


@torch.inference_mode()
def embed_codes(model: Anonymizer, codes: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Codes g (N, d) -> Siamese embeddings (N, E) of their reconstructions (``Anonymizer.embed`` starts from images)."""
    aia = model.method
    out = [aia.siamese(aia.decode(torch.from_numpy(np.ascontiguousarray(codes[i : i + batch_size])).to(aia.device))).float().cpu().numpy()
           for i in range(0, len(codes), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, aia.cfg.embedding), np.float32)


def gray_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> luminance replicated to (N, H, W, 3) uint8: what the anonymizer reconstructs."""
    luminance = np.asarray(images, np.float32) @ np.asarray(LUMA, np.float32)
    return np.repeat(np.clip(np.round(luminance), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _code_leakage(codes: np.ndarray, released_random: np.ndarray, test: FaceArrays, private: str, seeds, groups) -> dict:
    labels = {private: test.labels[private]}
    # The same seeds give the same halves: g, Random and pixels are attacked on identical splits.
    by_codes = audit_vectors(codes, labels, test.schema, seeds=seeds, groups=groups)[private]
    by_random = audit_vectors(released_random, labels, test.schema, seeds=seeds, groups=groups)[private]
    pixel_dim = min(codes.shape[1], PIXEL_PCA_CAP)
    by_pixels = pixel_baseline(test.images, labels, test.schema, n_components=pixel_dim, seeds=seeds, groups=groups)[private]
    return {
        "code_dim": int(codes.shape[1]),
        "n": len(test),
        "seeds": list(seeds),
        "original": f"raw colour pixels reduced by PCA to {pixel_dim} dimensions (fitted on each attacker's train half)",
        "random": "the Random baseline of g: min-max scaled, half of all entries replaced by U[0, 1] (attacked on the same halves; JSON only)",
        "labels": {private: {"concealed": True, "codes": by_codes, "original": by_pixels, "random": by_random}},
    }


def _image_leakage(reconstructed: np.ndarray, test: FaceArrays, private: str, seed: int, groups, epochs: int, min_steps: int) -> dict:
    """A fresh CNN per image set, the released reconstructions and the original images, reads the private
    label: the concealer's image attacker (``audit_images``) with its seed policy, one half-split (seed
    ``seed``, the first of the vector attackers' splits), identity-disjoint when identities are known."""
    labels = {private: test.labels[private]}

    def attack(images: np.ndarray) -> dict:
        return audit_images(images, labels, test.schema, seeds=(seed,), groups=groups, epochs=epochs, min_steps=min_steps)[private]

    return {
        "n": len(test),
        "seeds": [seed],
        "epochs": epochs,
        "min_steps": min_steps,
        "max_epochs": CNN_MAX_EPOCHS,
        "cnn_size": DEFAULT_CNN_SIZE,
        "released": "the decoder's grayscale reconstruction of every test face (what `conceal apply` writes)",
        "original": "the original colour test images (what there was to hide)",
        "labels": {private: {"concealed": True, "released": attack(reconstructed), "original": attack(test.images)}},
    }


def judge_leakage(judge, reconstructed: np.ndarray, test: FaceArrays, private: str) -> dict:
    """An attacker that needs no training data: the off-the-shelf gender judge (``judges.AgeGenderJudge``) reads
    gender from the released reconstructions, beside the grayscale and colour originals (what there was to hide).

    Balanced accuracy at p_female > 0.5 and AUC of p_female, over every test face with a known gender.
    """
    if private != "gender":
        return {"skipped": f"the judge reads gender; the private label is {private!r}"}
    y = test.labels[private]
    known = ~np.isnan(y)
    if len(np.unique(y[known])) < 2:
        return {"skipped": "the test faces with a known gender are all of one gender"}
    truth = y[known].astype(int)
    result: dict[str, Any] = {"judge": _judge_name(judge), "n_known": int(known.sum()),
                              "majority_accuracy": float(max(truth.mean(), 1 - truth.mean())), "chance_balanced_accuracy": 0.5}
    for name, images in ((RELEASED_IMAGES_TITLE, reconstructed), ("grayscale originals", gray_images(test.images)), (ORIGINAL_IMAGES_TITLE, test.images)):
        p_female = judge.predict(images[known])["p_female"]
        result[name] = {"balanced_accuracy": float(balanced_accuracy_score(truth, p_female > 0.5)),
                        "auc": float(roc_auc_score(truth, p_female))}
    return result


@markdown_section("Released reconstructions, read by an off-the-shelf gender judge")
def judge_leakage_markdown(s: dict) -> list[str]:
    """The ``judge_leakage`` section as markdown lines."""
    lines = [f"An attacker that needs no training data: {s['judge']}, on {s['n_known']} test faces with a known gender; "
             f"balanced accuracy at p(female) > 0.5 (chance {num(s['chance_balanced_accuracy'])}; majority accuracy "
             f"{num(s['majority_accuracy'])}) and AUC of p(female) (chance 0.5).", ""]
    rows = [[name, num(s[name]["balanced_accuracy"]), num(s[name]["auc"])]
            for name in (RELEASED_IMAGES_TITLE, "grayscale originals", ORIGINAL_IMAGES_TITLE)]
    return lines + table(["input", "balanced acc ↓", "AUC ↓"], rows) + [""]


def image_attack_summary(image_leakage: dict) -> list[dict]:
    """The image section -> one privacy row per image set (``privacy_summary``'s shape): released, original."""
    if "skipped" in image_leakage:
        return []
    return [{"row": title, "input": key, "privacy": privacy_summary(by_input[key])}
            for by_input in image_leakage["labels"].values()
            for key, title in (("released", RELEASED_IMAGES_TITLE), ("original", ORIGINAL_IMAGES_TITLE))]


def privacy_summary(result: dict) -> dict:
    """One attacked input -> the best attacker's balanced accuracy and AUC beside the input-blind baselines."""
    summary = {"label": result["label"], "n_known": result["n_known"], "n_unknown": result["n_unknown"],
               "chance_balanced_accuracy": result.get("chance_balanced_accuracy")}
    if "skipped" in result:
        return summary | {"skipped": result["skipped"]}
    best = result["best"]["attacker"]
    scores = result["attackers"][best]
    return summary | {
        "attacker": best,
        "balanced_accuracy": scores["balanced_accuracy"]["mean"],
        "balanced_accuracy_std": scores["balanced_accuracy"]["std"],
        "auc": scores["auc"]["mean"],
        "accuracy": scores["accuracy"]["mean"],
        "majority_accuracy": result["attackers"][BASELINE]["accuracy"]["mean"],
    }


def effective_weights(cfg) -> tuple[float, float]:
    """(α, β) a model was fine-tuned with, after its variant's switches; ``cfg``: its config or config dict."""
    get = cfg.get if isinstance(cfg, dict) else (lambda key, default=None: getattr(cfg, key, default))
    variant = get("variant", "aia")
    alpha = 0.0 if variant in ("original", "aia_no_utility") else float(get("alpha", 0.5))
    beta = 0.0 if variant == "original" else float(get("beta", 0.5))
    return alpha, beta


def model_title(cfg) -> str:
    """The paper's name of the model (``cfg``: its config or config dict), judged by the weights it was
    fine-tuned with: α = 0 is AIA\\T whatever the variant says; weights other than the paper's α = β = 0.5
    are named; plus the post-hoc eraser when it has one."""
    get = cfg.get if isinstance(cfg, dict) else (lambda key, default=None: getattr(cfg, key, default))
    variant = get("variant", "aia")
    alpha, beta = effective_weights(cfg)
    title = VARIANT_TITLES.get(variant, variant)
    if variant == "aia" and alpha == 0:
        title = VARIANT_TITLES["aia_no_utility"]
    if variant != "original" and ((alpha, beta) != (0.5, 0.5) and not (alpha == 0 and beta == 0.5)):
        title += f" (α {alpha:g}, β {beta:g})"
    rank = get("eraser_rank", 0)
    return f"{title} + eraser (rank {rank})" if rank else title


def _privacy_utility(variant: str, title: str, code_leakage: dict, verification: dict, private: str) -> dict:
    by_source = code_leakage["labels"][private]

    def utility(row: str) -> dict | None:
        measures = verification.get(row)
        return None if measures is None else {m: {k: s[k] for k in ("accuracy", "auc")} for m, s in measures.items()}

    return {
        "private": private,
        "note": "privacy: the best fresh attacker on the row's representation (lower = more private; chance = 1/K "
                "balanced accuracy, AUC 0.5); utility: verification accuracy and AUC on test pairs of held-out people "
                "(higher = more useful; chance 0.5)",
        "rows": [
            {"row": title, "variant": variant, "representation": "g",
             "privacy": privacy_summary(by_source["codes"]), "utility": utility("model")},
            {"row": RANDOM_TITLE, "variant": variant, "representation": "Random baseline of this model's g",
             "privacy": privacy_summary(by_source["random"]), "utility": utility("random")},
            # Utility of the original images: the judge's verification, when it ran (what there was to keep).
            {"row": PIXELS_TITLE, "variant": None, "representation": code_leakage["original"],
             "privacy": privacy_summary(by_source["original"]), "utility": utility("original")},
        ],
    }


def _reconstruction_fidelity(test: FaceArrays, reconstructed: np.ndarray, judge, judge_status: str | None,
                             rows: np.ndarray, seed: int, embedded: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """PSNR/SSIM against the grayscale originals; with ``judge``, identity similarity on ``rows``.

    ``embedded``: the judge's (originals, reconstructions) embeddings of every test face when the verification
    already computed them (N, 128) each -- reused instead of embedding the same faces again.
    """
    gray = gray_images(test.images)
    result: dict[str, Any] = {
        "n": len(test),
        "reference": "the grayscale original (the autoencoder reconstructs luminance only)",
        "psnr": mean_interval(psnr(gray, reconstructed), seed),
        "ssim": mean_interval(ssim(gray, reconstructed), seed),
    }
    if judge is None:
        result["identity"] = {"skipped": judge_status or "no identity faces asked for (identity_faces=0)"}
        return result
    from .judges import SAME_PERSON_DISTANCE

    if embedded is not None:
        originals, reconstructions = embedded[0][rows], embedded[1][rows]
    else:
        originals, reconstructions = judge.embed(test.images[rows]), judge.embed(reconstructed[rows])
    partner, other = unrelated_partners(test.identity[rows], seed)  # context: a different person for each face
    result["identity"] = {
        "judge": _judge_name(judge),
        "n_faces": len(rows),
        "same_person_distance": SAME_PERSON_DISTANCE,
        "reconstruction": face_similarity(judge, originals, reconstructions, seed),
        # Context: how much identity grayscale alone costs, and what unrelated people score.
        "gray_original": face_similarity(judge, originals, judge.embed(gray[rows]), seed),
        "different_person": face_similarity(judge, originals[other], originals[partner][other], seed),
    }
    return result


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------



def _grid_figure(test: FaceArrays, reconstructed: np.ndarray, out_dir: Path, seed: int) -> str:
    """Originals over their reconstructions, like the paper's Fig. 3."""
    plt = pyplot()
    rows = sample_rows(len(test), GRID_FACES, seed, purpose=4)
    fig, axes = plt.subplots(2, len(rows), figsize=(1.2 * len(rows), 2.8), squeeze=False)
    for i, (title, images) in enumerate((("original", test.images[rows]), ("reconstruction", reconstructed[rows]))):
        axes[i, 0].set_title(title, fontsize=8, loc="left")
        for j in range(len(rows)):
            axes[i, j].imshow(images[j])
            axes[i, j].axis("off")
    return save_figure(fig, out_dir, "grid.png")


def _privacy_utility_figure(summary: dict, out_dir: Path) -> str:
    plt = pyplot()
    rows = summary["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [r["row"] for r in rows]
    left.bar(names, [r["privacy"].get("balanced_accuracy", np.nan) for r in rows], color="tab:red")
    chance = rows[0]["privacy"].get("chance_balanced_accuracy")
    if chance is not None:
        left.axhline(chance, color="k", linestyle="--", label="chance")
        left.legend(fontsize=8)
    left.set_ylim(0, 1)
    left.set_title(f"privacy: {summary['private']} (lower = more private)", fontsize=10)
    left.set_ylabel("best attacker's balanced accuracy")
    utility_rows = [r for r in rows if r["utility"]]
    x = np.arange(len(utility_rows))
    width = 0.8 / len(UTILITY_MEASURES)
    for k, (measure, title) in enumerate(UTILITY_MEASURES.items()):
        offset = (k - (len(UTILITY_MEASURES) - 1) / 2) * width
        right.bar(x + offset, [r["utility"].get(measure, {}).get("accuracy", np.nan) for r in utility_rows], width, label=title)
    right.axhline(0.5, color="k", linestyle="--", label="chance")
    right.set_xticks(x, [r["row"] for r in utility_rows])
    right.set_ylim(0, 1)
    right.set_title("utility: verification (higher = more useful)", fontsize=10)
    right.set_ylabel("accuracy on held-out people's pairs")
    right.legend(fontsize=8)
    return save_figure(fig, out_dir, "privacy_utility.png")


# --------------------------------------------------------------------------------------------------
# Markdown: the paper-style table (for report.md's renderer and for comparing models)
# --------------------------------------------------------------------------------------------------

TABLE_HEADER = ["method", "attacker", "bal. acc ↓", "AUC ↓", "majority acc", "chance bal. acc",
                "verify acc (Siamese) ↑", "AUC ↑", "verify acc (codes) ↑", "AUC ↑", "verify acc (judge on images) ↑", "AUC ↑"]


def table_row(row: dict, title: str | None = None) -> list[str]:
    """One privacy/utility row as table cells (``TABLE_HEADER``)."""
    privacy = row["privacy"]
    if "skipped" in privacy:
        cells = ["skipped", "", "", num(privacy.get("majority_accuracy")), num(privacy.get("chance_balanced_accuracy"))]
    else:
        balanced = num(privacy["balanced_accuracy"]) + (f" ± {num(privacy['balanced_accuracy_std'])}" if privacy["balanced_accuracy_std"] else "")
        cells = [privacy["attacker"], balanced, num(privacy["auc"]), num(privacy["majority_accuracy"]), num(privacy["chance_balanced_accuracy"])]
    utility = row.get("utility") or {}
    for measure in UTILITY_MEASURES:
        scores = utility.get(measure, {})
        cells += [num(scores.get("accuracy")), num(scores.get("auc"))]
    return [title or row["row"], *cells]


def privacy_utility_markdown(summary: dict) -> list[str]:
    """The ``privacy_utility`` section as markdown lines (for report.md)."""
    rows = [table_row(r) for r in summary["rows"]]
    privacy = summary["rows"][0]["privacy"]
    counted = f"{privacy['n_known']} test faces with a known {summary['private']}"
    if privacy["n_unknown"]:
        counted += f" ({privacy['n_unknown']} unknown, left out)"
    return ([f"## Privacy and utility ({summary['private']}), as the paper's Table 1", "", f"{summary['note']}. {counted}.", ""]
            + table(TABLE_HEADER, rows) + [""])


def verification_markdown(s: dict) -> list[str]:
    """The ``verification`` section as markdown lines: pairs of identity-disjoint halves, then the dataset's own pairs."""
    lines = ["## Utility: face verification", ""]
    pairs = s.get("pairs")
    if pairs:
        lines += [f"{pairs['matched']} matched / {pairs['mismatched']} mismatched pairs: {pairs['note']}. Validation half: "
                  f"{pairs['validation']['matched']} / {pairs['validation']['mismatched']} pairs of {pairs['validation']['people']} people "
                  f"(the threshold is chosen here); test half: {pairs['test']['matched']} / {pairs['test']['mismatched']} pairs of "
                  f"{pairs['test']['people']} people (scored here). Distance: {s['distance']}.", ""]
    if "skipped" in s:
        return lines + [f"Skipped: {s['skipped']}.", ""]
    if s.get("judge"):
        lines += [f"Judge's embeddings: {s['judge']}, of the released reconstructions (row g) and of the original colour "
                  "images (reference row): an independent verifier, never trained by conceal.", ""]
    elif s.get("judge_skipped"):
        lines += [f"No judge verification: {s['judge_skipped']}.", ""]
    titles = (("model", "g"), ("random", "Random baseline of g"), ("original", "original images (reference)"))
    rows = [[title, UTILITY_MEASURES[measure], num(v["accuracy"]), num(v["balanced_accuracy"]), num(v["auc"]), num(v["majority_accuracy"]),
             num(v["threshold"], 4), num(v["validation_accuracy"])]
            for row, title in titles if row in s for measure, v in s[row].items()]
    header = ["representation", "distance of", "accuracy", "balanced acc", "AUC", "majority acc", "threshold", "validation acc"]
    lines += table(header, rows) + [""]
    protocol = s.get("protocol")
    if protocol:
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in protocol["counts"].items())
        lines += ["### The dataset's own pairs (LFW protocol)", "",
                  f"{protocol['matched']} matched / {protocol['mismatched']} mismatched pairs: {protocol['source']} ({counts}). "
                  + (f"Skipped: {protocol['skipped']}." if "skipped" in protocol else
                     f"The threshold is chosen on {protocol['folds'] - 1} of {protocol['folds']} stratified folds and scored on the "
                     "remaining one; accuracy is the mean (± std) over the folds, AUC is over all pairs."), ""]
        if "skipped" not in protocol:
            rows = [[title, UTILITY_MEASURES[m], f"{num(v['accuracy'])} ± {num(v['accuracy_std'])}", num(v["auc"]), num(v["majority_accuracy"])]
                    for row, title in titles if row in protocol for m, v in protocol[row].items()]
            lines += table(["representation", "distance of", "accuracy", "AUC", "majority acc"], rows) + [""]
    return lines


@markdown_section("Released reconstructions, attacked by a fresh CNN")
def image_leakage_markdown(s: dict) -> list[str]:
    """The ``image_leakage`` section as markdown lines: the CNN on the released reconstructions and the originals."""
    lines: list[str] = []
    first = next(iter(s["labels"].values()))["released"]
    halves = first.get("split", "?")
    if "n_train" in first:
        halves += f", ~{first['n_train']} train / ~{first['n_test']} test rows"
    lines += [f"Besides g, the anonymizer releases {s['released']}. A small CNN trained from scratch after the fact "
              f"(inputs downscaled to {s['cnn_size']} px; {s['min_steps']} updates, at least {s['epochs']} and at most {s['max_epochs']} "
              f"epochs) tries to read the private label from them, on one half-split (seed {s['seeds'][0]}; {halves}); "
              f"the same CNN on {s['original']}, on the same halves, is the reference. {s['n']} test faces.", ""]
    return lines + attack_tables(s["labels"], [("released", RELEASED_IMAGES_TITLE), ("original", ORIGINAL_IMAGES_TITLE)])


def reconstruction_markdown(s: dict) -> list[str]:
    """The ``reconstruction_fidelity`` section as markdown lines."""
    lines = ["## Reconstruction", "", f"Against {s['reference']}: PSNR {with_interval(s['psnr'], 2)} dB, SSIM {with_interval(s['ssim'])} "
             f"(mean over {s['n']} faces; 95% bootstrap intervals).", ""]
    identity = s["identity"]
    if "skipped" in identity:
        return lines + [f"Identity: skipped ({identity['skipped']}).", ""]
    lines += [f"Identity on {identity['n_faces']} faces (judge: {identity['judge']}); same person = embedding distance below "
              f"{identity['same_person_distance']}.", ""]
    rows = [[title, with_interval(identity[key]["cosine"]), with_interval(identity[key]["same_person_rate"])]
            for key, title in (("reconstruction", "original vs reconstruction"), ("gray_original", "original vs its grayscale (context)"),
                               ("different_person", "original vs a different person (context)"))]
    return lines + table(["pair", "cosine", "judged same person"], rows) + [""]


# For report.md: section key -> markdown lines (report.render_markdown shows unknown sections as JSON until it uses these).
RENDERERS = {
    "privacy_utility": privacy_utility_markdown,
    "image_leakage": image_leakage_markdown,
    "judge_leakage": judge_leakage_markdown,
    "verification": verification_markdown,
    "reconstruction_fidelity": reconstruction_markdown,
}


def _model_name(report: dict) -> str:
    """The audited model's directory name (a run's, for its checkpoint/ directory)."""
    path = Path(report["provenance"]["model"])
    return path.parent.name if path.name == "checkpoint" else path.name


def compare_anonymizers(report_jsons: list[str | Path]) -> str:
    """Several anonymizers' report.json -> one markdown table in the paper's order (Original, Random,
    AIA\\T, AIA). Random is the Random baseline of the Original's codes when an Original is among the
    reports (as in the paper), else of the first report's; the raw-pixel reference comes from the first."""
    reports = [json.loads(Path(p).read_text()) for p in report_jsons]
    if not reports:
        raise ValueError("compare_anonymizers needs at least one report.json")
    model_rows = [(report, report["privacy_utility"]["rows"][0]) for report in reports]
    originals = [report for report, row in model_rows if row["variant"] == "original"]
    random_source = originals[0] if originals else reports[0]
    random_row = random_source["privacy_utility"]["rows"][1]
    random_title = f"{RANDOM_TITLE} (codes of {VARIANT_TITLES.get(random_row['variant'], random_row['variant'])})"
    # Titles from each model's config (older reports titled an α = 0 "aia" model "AIA"); two models
    # with one title (e.g. the shipped AIA and a sweep's) are told apart by their directories.
    titles = [model_title(report["provenance"]["model_config"]) for report, _ in model_rows]
    titles = [f"{t} [{_model_name(report)}]" if titles.count(t) > 1 else t for t, (report, _) in zip(titles, model_rows)]
    rows = [(title, row) for title, (_, row) in zip(titles, model_rows)] + [(RANDOM_TITLE, random_row)]
    rank = {title: i for i, title in enumerate(PAPER_ROW_ORDER)}
    rows.sort(key=lambda item: rank.get(item[0].split(" [")[0], len(rank)))
    cells = [table_row(row, random_title if title == RANDOM_TITLE else title) for title, row in rows]
    cells.append(table_row(reports[0]["privacy_utility"]["rows"][2]))
    audited = sorted({(r["provenance"].get("dataset"), r["provenance"].get("n_test_faces"), r["provenance"].get("seed")) for r in reports},
                     key=str)
    lines = [f"Private label: {reports[0]['privacy_utility']['private']}. {reports[0]['privacy_utility']['note']}.", ""]
    if len(audited) > 1:
        lines += [f"> **Not like for like**: the reports audited different data (dataset, test faces, seed): {audited}.", ""]
    return "\n".join(lines + table(TABLE_HEADER, cells)) + "\n"


RELEASED_HEADER = ["model", "gender from g: bal. acc ↓", "reconstructions: fresh CNN bal. acc / AUC ↓",
                   "reconstructions: gender judge bal. acc / AUC ↓", "verification, Siamese: acc / AUC ↑",
                   "verification, judge on reconstructions: acc / AUC ↑", "LFW pairs, judge: acc ↑", "PSNR dB"]


def compare_released(report_jsons: list[str | Path]) -> str:
    """Several anonymizers' report.json -> one markdown table of what each releases, read every way the audit
    reads it: gender from g (best fresh attacker), from the reconstructions (fresh CNN; off-the-shelf judge),
    verification (the method's Siamese network; the independent face-embedding judge, on both pair sets)
    and reconstruction PSNR. "—" where an audit did not run that part."""
    def pair(d: dict | None, a: str = "balanced_accuracy", b: str = "auc") -> str:
        return "—" if not d or a not in d else f"{num(d[a])} / {num(d[b])}"

    rows = []
    for path in report_jsons:
        report = json.loads(Path(path).read_text())
        model_row = report["privacy_utility"]["rows"][0]
        cnn = next((row["privacy"] for row in image_attack_summary(report.get("image_leakage", {"skipped": ""}))
                    if row["input"] == "released"), None)
        verification = report.get("verification", {})
        protocol_judge = verification.get("protocol", {}).get("model", {}).get("judge")
        rows.append([
            f"{model_title(report['provenance']['model_config'])} [{_model_name(report)}]",
            num(model_row["privacy"].get("balanced_accuracy")),
            pair(cnn),
            pair(report.get("judge_leakage", {}).get(RELEASED_IMAGES_TITLE)),
            pair(verification.get("model", {}).get("siamese"), "accuracy"),
            pair(verification.get("model", {}).get("judge"), "accuracy"),
            "—" if not protocol_judge else f"{num(protocol_judge['accuracy'])} ± {num(protocol_judge['accuracy_std'])}",
            num(report.get("reconstruction_fidelity", {}).get("psnr", {}).get("mean"), 2),
        ])
    return "\n".join(table(RELEASED_HEADER, rows)) + "\n"


def tradeoff_points(report_jsons: list[str | Path]) -> list[dict]:
    """Each report.json -> α, β (as trained, after the variant's switches) and the model row's privacy and
    utility (best fresh attacker's balanced accuracy and AUC; Siamese verification accuracy and AUC)."""
    points = []
    for path in report_jsons:
        report = json.loads(Path(path).read_text())
        alpha, beta = effective_weights(report["provenance"]["model_config"])
        row = report["privacy_utility"]["rows"][0]
        utility = (row["utility"] or {}).get("siamese", {})
        points.append({
            "alpha": alpha, "beta": beta, "report": str(path),
            "privacy_balanced_accuracy": row["privacy"].get("balanced_accuracy"),
            "privacy_balanced_accuracy_std": row["privacy"].get("balanced_accuracy_std"),
            "privacy_auc": row["privacy"].get("auc"),
            "majority_accuracy": row["privacy"].get("majority_accuracy"),
            "utility_accuracy": utility.get("accuracy"), "utility_auc": utility.get("auc"),
            # A fresh CNN on the released reconstructions (reports from before that section: None).
            "released_images": next((r["privacy"] for r in image_attack_summary(report.get("image_leakage", {"skipped": ""}))
                                     if r["input"] == "released"), None),
        })
    return points


def tradeoff_markdown(report_jsons: list[str | Path]) -> str:
    """The α/β sweep as one markdown table (privacy ↓ and utility ↑ per point), like the paper's Fig. 2 data."""
    points = tradeoff_points(report_jsons)
    header = ["α", "β", "g: gender bal. acc ↓ (best fresh attacker)", "g: gender AUC ↓", "majority acc",
              "reconstructions: gender bal. acc / AUC ↓ (fresh CNN)", "verification acc ↑", "verification AUC ↑"]
    rows = [[f"{p['alpha']:g}", f"{p['beta']:g}",
             num(p["privacy_balanced_accuracy"]) + (f" ± {num(p['privacy_balanced_accuracy_std'])}" if p["privacy_balanced_accuracy_std"] else ""),
             num(p["privacy_auc"]), num(p["majority_accuracy"]),
             f"{num(p['released_images'].get('balanced_accuracy'))} / {num(p['released_images'].get('auc'))}" if p["released_images"] else "—",
             num(p["utility_accuracy"]), num(p["utility_auc"])]
            for p in points]
    return "\n".join(table(header, rows)) + "\n"


def tradeoff_figure(report_jsons: list[str | Path], path: str | Path, held: float = 0.5) -> str:
    """The paper's Fig. 2: privacy (gender AUC of the best fresh attacker) and utility (verification AUC)
    against α with β held at ``held``, and against β with α held at ``held``. Returns the PNG's path."""
    points = tradeoff_points(report_jsons)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, swept, other in ((axes[0], "alpha", "beta"), (axes[1], "beta", "alpha")):
        line = sorted((p for p in points if p[other] == held), key=lambda p: p[swept])
        xs = [p[swept] for p in line]
        ax.plot(xs, [p["privacy_auc"] for p in line], "o-", color="tab:red", label="privacy: gender AUC (fresh attacker) ↓")
        ax.plot(xs, [p["utility_auc"] for p in line], "s-", color="tab:blue", label="utility: verification AUC ↑")
        ax.axhline(0.5, color="k", linestyle="--", linewidth=0.8, label="chance")
        ax.set_xlabel(f"{'α' if swept == 'alpha' else 'β'} ({'β' if swept == 'alpha' else 'α'} = {held:g})")
        ax.set_ylim(0.4, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AUC")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    return save_figure(fig, path.parent, path.name)


# --------------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------------


@single_threaded
def audit_anonymizer(
    model_path: str | Path,
    test: FaceArrays,
    out_dir: str | Path,
    judges: str | dict = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
    identity_faces: int = 100,
    vector_seeds: int = 3,
    max_matched_pairs: int = 1000,
    image_attack: bool = True,
    judge_verification: bool = True,
    judge_attack: bool = True,
    cnn_epochs: int = DEFAULT_CNN_EPOCHS,
    cnn_min_steps: int = CNN_MIN_STEPS,
    model=None,
) -> dict:
    """The anonymizer's audit sections on ``test`` (images at the model's size); figures go into ``out_dir``.

    ``identity_faces``: faces embedded by the face-embedding judge (0: none); ``vector_seeds``: attacker runs
    (each a fresh identity-disjoint half-split); ``max_matched_pairs``: cap on same-person pairs per half;
    ``judge_attack``: also let the off-the-shelf gender judge read the released reconstructions;
    ``judge_verification``: also verify with the face-embedding judge's embeddings of every released
    reconstruction and original (~0.1 s per image on one core); ``image_attack``: also attack the released
    reconstructions (and the originals) with a fresh CNN, trained
    ``cnn_min_steps`` updates, at least ``cnn_epochs`` epochs (the concealer audit's defaults).
    Runs on one thread (see ``single_threaded``).
    """
    model, out_dir = open_audited(Anonymizer, model_path, test, out_dir, model)  # model: the audit context's, loaded once
    variant = read_model_info(model_path)["model_config"].get("variant", "aia")
    private = model.method.cfg.private
    s = model.image_size
    groups = test.identity if np.any(test.identity >= 0) else None
    seeds = tuple(seed + i for i in range(vector_seeds))
    sections: dict[str, Any] = {"timings": {}}
    step = timed_steps(sections["timings"], log)

    with step("encode", f"encoding {len(test)} test faces ({model_title(model.method.cfg)}) and the Random baseline"):
        codes = model.encode(test.images)  # (N, d): g, the released representation
        reconstructed = model.apply(test.images)  # (N, H, W, 3) gray
        embeddings = model.embed(test.images)  # (N, E)
        released_random, random_in_code_space = random_codes(codes, seed)

    known = int(np.sum(~np.isnan(test.labels[private])))
    with step("code_leakage", f"privacy: fresh attackers on g for {private} ({known} faces with a known label, {len(seeds)} seeds)"):
        sections["code_leakage"] = _code_leakage(codes, released_random, test, private, seeds, groups)

    judge, judge_status, gender_judge = None, "not asked for (identity_faces=0, judge_verification=False, judge_attack=False)", None
    if identity_faces > 0 or judge_verification or judge_attack:
        objects, status = resolve_judges(judges)
        judge, judge_status = objects["face_embedding"], status["face_embedding"]
        gender_judge = objects["age_gender"] if judge_attack else None
        sections["judges"] = {"face_embedding": judge_status} | ({"age_gender": status["age_gender"]} if judge_attack else {})

    representations = {
        "model": {"siamese": embeddings, "codes": codes},
        "random": {"siamese": embed_codes(model, random_in_code_space), "codes": released_random},
    }
    judge_verifies = judge is not None and judge_verification and np.any(test.identity >= 0)
    if judge_verifies:
        with step("judge_embeddings", f"utility: the face-embedding judge on {len(test)} released reconstructions and originals"):
            representations["model"]["judge"] = judge.embed(reconstructed)
            representations["original"] = {"judge": judge.embed(test.images)}
    with step("verification", f"utility: verification on pairs of test people (at most {max_matched_pairs} same-person pairs per half)"):
        sections["verification"] = _verification(representations, test.identity, max_matched_pairs, seed)
        if test.pairs is not None and "skipped" not in sections["verification"]:
            sections["verification"]["protocol"] = protocol_verification(representations, test.pairs, seed)
        if judge_verifies:
            sections["verification"]["judge"] = _judge_name(judge)
        elif not judge_verification:
            sections["verification"]["judge_skipped"] = "not asked for (judge_verification=False)"
        else:
            sections["verification"]["judge_skipped"] = judge_status if judge is None else "the test faces have no identities"
        pairs = sections["verification"].get("pairs", {})
        log(f"[audit]   {pairs.get('matched', 0)} matched / {pairs.get('mismatched', 0)} mismatched pairs")

    sections["privacy_utility"] = _privacy_utility(variant, model_title(model.method.cfg), sections["code_leakage"], sections["verification"], private)
    for row in sections["privacy_utility"]["rows"]:
        utility = (row["utility"] or {}).get("siamese", {})
        privacy = row["privacy"]
        log(f"[audit]   {row['row']}: {private} balanced acc {num(privacy.get('balanced_accuracy'))}, AUC {num(privacy.get('auc'))} "
            f"(majority acc {num(privacy.get('majority_accuracy'))}); verification acc {num(utility.get('accuracy'))}, AUC {num(utility.get('auc'))}")

    if image_attack:
        with step("image_leakage", f"privacy: a fresh CNN on the released reconstructions and on the original images for {private} "
                                   f"({known} faces with a known label, seed {seed})"):
            sections["image_leakage"] = _image_leakage(reconstructed, test, private, seed, groups, cnn_epochs, cnn_min_steps)
        log("[audit]   " + "; ".join(
            f"{row['row']}: {private} balanced acc {num(row['privacy'].get('balanced_accuracy'))}, AUC {num(row['privacy'].get('auc'))} "
            f"(majority acc {num(row['privacy'].get('majority_accuracy'))})" for row in image_attack_summary(sections["image_leakage"])))
    else:
        sections["image_leakage"] = {"skipped": "not asked for (image_attack=False)", "labels": {}}
    if gender_judge is not None:
        with step("judge_leakage", f"privacy: the off-the-shelf gender judge on {len(test)} released reconstructions and originals"):
            sections["judge_leakage"] = judge_leakage(gender_judge, reconstructed, test, private)
    elif judge_attack:
        sections["judge_leakage"] = {"skipped": f"no gender judge: {sections['judges'].get('age_gender')}"}

    identity_rows = sample_rows(len(test), identity_faces, seed, purpose=2)
    fidelity_judge = judge if identity_faces > 0 else None
    with step("reconstruction", "reconstruction" + (f" and identity on {len(identity_rows)} faces" if fidelity_judge is not None else "")):
        embedded = (representations["original"]["judge"], representations["model"]["judge"]) if judge_verifies else None
        sections["reconstruction_fidelity"] = _reconstruction_fidelity(
            test, reconstructed, fidelity_judge, judge_status if identity_faces > 0 else None, identity_rows, seed, embedded)

    with step("figures", "figures"):
        sections["figures"] = {
            "grid": _grid_figure(test, reconstructed, out_dir, seed),
            "leakage": _privacy_utility_figure(sections["privacy_utility"], out_dir),
        }
    sections["samples"] = {
        "test_faces": len(test),
        "attacker_seeds": list(seeds),
        "cnn_seeds": [seed] if image_attack else [],
        "verification_pairs": {k: pairs.get(k, 0) for k in ("matched", "mismatched")},
        "identity_faces": int(len(identity_rows)) if fidelity_judge is not None else 0,
        "judge_verification_faces": len(test) if judge_verifies else 0,
    }
    # The summary first: report.md shows sections it has no renderer for in this order.
    order = ("privacy_utility", "code_leakage", "image_leakage", "judge_leakage", "verification", "reconstruction_fidelity", "figures", "judges", "samples", "timings")
    return {key: sections[key] for key in order if key in sections}
