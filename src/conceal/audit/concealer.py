"""Audit of a concealer (``conceal.methods.concealer``): what its codes and its released images still reveal.

Sections (each a dict of plain numbers, written by ``report.write_report``):

a. ``code_leakage``: fresh vector attackers on the concealed codes μ, for every label of the test data
   (concealed ones must fall to chance; kept ones, such as smile, may stay readable), beside the
   "Original" reference: the same attackers on raw pixels reduced by PCA to the code size.
b. ``image_leakage``: every test face released with one fixed target (e.g. female, 40, white); a fresh CNN
   and the pixel-PCA vector attackers try to read the true attributes back, beside the same attackers on
   the raw test images.
c. ``rendering``: faces decoded as female and male at ages 1..80 (other concealed labels: the face's own),
   read by the independent age/gender judge: does the release show what was asked for?
d. ``reconstruction``: decode with the true labels; PSNR, SSIM, and identity similarity by the
   independent face-embedding judge.
e. ``judge_calibration``: the age/gender judge's own error on the raw test faces, so every judged number
   can be read against it.
f. ``figures``: an image grid and a leakage bar chart.

Several audits side by side: ``compare_concealers`` (the paper's Table 1 layout and a leakage table) and
``leakage_sweep_figure`` (code leakage against latent size, KL weight, latent-critic weight or eraser rank).

The judges are optional: when one is unavailable its sections say why, and the attackers still run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import FaceArrays
from ..data.schema import LabelError, LabelSchema
from ..methods import Concealer
from ..methods.base import to_uint8_images
from .attackers import (
    CNN_MAX_EPOCHS,
    CNN_MIN_STEPS,
    DEFAULT_CNN_EPOCHS,
    audit_images,
    audit_vectors,
    combine,
    pixel_baseline,
    single_threaded,
)
from .common import face_similarity, judge_name as _judge_name, open_audited, resolve_judges, sample_rows
from .metrics import faces_found, mean_interval, psnr, quartiles, regression_metrics, sharpness_ratio, ssim, unrelated_partners
from .report import num, pyplot, save_figure, table, timed_steps

TARGET_AGES = (1, 20, 40, 60, 80)
PREFERRED_TARGET = {"gender": "female", "age": 40, "race": "white"}  # the fixed release of section b
GRID_FACES = 6
GRID_AGES = (20, 40, 60)
# Hanukoglu et al. 2020 ("Learning to Conceal"), latent size 48: age error of their re-rendered faces, as
# judged by their own age estimator (not ours), so a reference point rather than a like-for-like comparison.
PAPER_REFERENCE = {
    "source": "Hanukoglu et al., AAAI 2020, Table 1, latent 48",
    "avg_age_rmse": 15.06,
    "avg_age_mae": 13.52,
    "note": "judged by the paper's own age estimator on its own target ages; not directly comparable",
}


# --------------------------------------------------------------------------------------------------
# Rendering helpers
# --------------------------------------------------------------------------------------------------


def label_rows(schema: LabelSchema, n: int, request: dict[str, Any], own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-row decoder labels: requested values for the labels in ``request`` ("unspecified" -> NaN), the
    face's own stored label (``own``, NaN = unknown, rendered as unspecified) for the rest. name -> (n,)."""
    rows = {}
    for label in schema:
        if label.name not in request:
            rows[label.name] = np.asarray(own[label.name], np.float32)
            continue
        value = request[label.name]
        unspecified = isinstance(value, str) and value.strip().lower() == "unspecified"
        rows[label.name] = np.full(n, np.nan if unspecified else label.parse(value), np.float32)
    return rows


def render(model: Concealer, codes: np.ndarray, rows: dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
    """codes (N, d) + per-row labels (name -> (N,), NaN = unspecified) -> (N, H, W, 3) uint8.

    ``Concealer.decode`` takes one value per label for the whole batch; the audit needs per-row values
    (each face's own race, its own labels for a reconstruction), so it calls the VAE's decode directly.
    """
    vae = model.method
    out = []
    with torch.inference_mode():
        for i in range(0, len(codes), batch_size):
            z = torch.from_numpy(np.ascontiguousarray(codes[i : i + batch_size], np.float32)).to(vae.device)
            labels = {name: torch.from_numpy(rows[name][i : i + batch_size]).to(vae.device) for name in model.schema.names}
            out.append(to_uint8_images(vae.decode(z, labels)))
    s = model.image_size
    return np.concatenate(out) if out else np.zeros((0, s, s, 3), np.uint8)


def fixed_target(schema: LabelSchema) -> dict[str, Any]:
    """One target for every face (section b): female / 40 / white where the schema has them, otherwise
    the first class of a label or the middle of its range."""
    target: dict[str, Any] = {}
    for label in schema:
        try:
            label.parse(PREFERRED_TARGET[label.name])
            target[label.name] = PREFERRED_TARGET[label.name]
        except (KeyError, LabelError):
            target[label.name] = label.classes[0] if label.classes else float(np.mean(label.range))
    return target


def release_options(model: Concealer) -> dict:
    """The audited release of images: every face rendered as one fixed target (``apply(images, as_=...)``)."""
    return {"as_": fixed_target(model.schema)}


def _gender_axis(schema: LabelSchema) -> tuple[int, int] | None:
    """(female index, male index) when the schema has a binary male/female gender and an age to render."""
    if "gender" not in schema or "age" not in schema or schema["age"].kind != "continuous":
        return None
    classes = [c.lower() for c in schema["gender"].classes]
    if schema["gender"].kind != "binary" or set(classes) != {"female", "male"}:
        return None
    return classes.index("female"), classes.index("male")


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _code_leakage(codes, test: FaceArrays, concealed: LabelSchema, seeds, groups) -> dict:
    labels = {name: test.labels[name] for name in test.schema.names}
    by_codes = audit_vectors(codes, labels, test.schema, seeds=seeds, groups=groups)
    by_pixels = pixel_baseline(test.images, labels, test.schema, n_components=codes.shape[1], seeds=seeds, groups=groups)
    return {
        "code_dim": int(codes.shape[1]),
        "n": len(test),
        "seeds": list(seeds),
        "original": f"raw pixels reduced by PCA to {codes.shape[1]} dimensions (fitted on each attacker's train half)",
        "labels": {
            name: {"concealed": name in concealed, "codes": by_codes[name], "original": by_pixels[name]}
            for name in test.schema.names
        },
    }


def _image_leakage(released, target, test: FaceArrays, concealed: LabelSchema, code_dim, seed, groups, epochs, min_steps) -> dict:
    """Two attacker families on each image set, on the same halves: the CNN, and the vector attackers on
    pixels reduced by PCA (cheap, and a check on a CNN that trains poorly on a small set)."""
    labels = {name: test.labels[name] for name in concealed.names}

    def attack(images: np.ndarray) -> dict[str, dict]:
        cnn = audit_images(images, labels, test.schema, seeds=(seed,), groups=groups, epochs=epochs, min_steps=min_steps)
        pca = pixel_baseline(images, labels, test.schema, n_components=code_dim, seeds=(seed,), groups=groups)
        return {name: combine({"cnn": cnn[name], "pca": pca[name]}) for name in labels}

    by_released, by_original = attack(released), attack(test.images)
    return {
        "target": {k: (v if isinstance(v, str) else float(v)) for k, v in target.items()},
        "n": len(test),
        "seeds": [seed],
        "epochs": epochs,
        "min_steps": min_steps,
        "max_epochs": CNN_MAX_EPOCHS,
        "pca_dim": int(code_dim),
        "labels": {name: {"released": by_released[name], "original": by_original[name]} for name in concealed.names},
    }


def _judge_renders(model, codes, test: FaceArrays, judge, rows: np.ndarray, female_male: tuple[int, int],
                   calibration: dict | None, seed: int) -> dict:
    """Section c on the sampled ``rows``: decode as female/male at every target age, and gender-unspecified at 40."""
    female, male = female_male
    schema = model.schema
    own = {name: test.labels[name][rows] for name in schema.names}
    true_gender = own["gender"]
    z = codes[rows]
    n = len(rows)

    def judged(request: dict) -> dict[str, np.ndarray]:
        return judge.predict(render(model, z, label_rows(schema, n, request, own)))

    targets, pooled_agree, pooled_flip_agree, per_age = [], [], [], {}
    p_female_at_40 = {}
    for gender_name, gender_index in (("female", female), ("male", male)):
        for age in TARGET_AGES:
            out = judged({"gender": gender_name, "age": age})
            agree = (out["p_female"] > 0.5) == (gender_index == female)
            flips = ~np.isnan(true_gender) & (true_gender != gender_index)
            pooled_agree.append(agree)
            pooled_flip_agree.append(agree[flips])
            per_age.setdefault(age, []).append(out["age"])
            if age == 40:
                p_female_at_40[gender_name] = quartiles(out["p_female"])
            targets.append({
                "gender": gender_name,
                "age": age,
                "n": n,
                "gender_agreement": mean_interval(agree, seed),
                "n_flips": int(flips.sum()),
                "gender_agreement_flips": mean_interval(agree[flips], seed),
                **{f"age_{k}": v for k, v in regression_metrics(np.full(n, age, np.float64), out["age"]).items()},
                "mean_judged_age": float(np.mean(out["age"])),
                "face_found_rate": float(np.mean(out["face_found"])),
            })
    ages = {}
    for age, judged_ages in per_age.items():
        pooled = np.concatenate(judged_ages)
        ages[str(age)] = {**regression_metrics(np.full(len(pooled), age, np.float64), pooled), "mean_judged_age": float(pooled.mean())}
    unspecified = judged({"gender": "unspecified", "age": 40})
    result = {
        "judge": _judge_name(judge),
        "n_faces": n,
        "note": "other concealed labels (e.g. race) are each face's own; unknown ones are rendered unspecified",
        "targets": targets,
        "gender_agreement": mean_interval(np.concatenate(pooled_agree), seed),
        "gender_agreement_flips": mean_interval(np.concatenate(pooled_flip_agree), seed),
        "per_age": ages,
        "avg_age_mae": float(np.mean([a["mae"] for a in ages.values()])),
        "avg_age_rmse": float(np.mean([a["rmse"] for a in ages.values()])),
        "unspecified_gender_age40": {
            "p_female": quartiles(unspecified["p_female"]),
            "judged_female_rate": float(np.mean(unspecified["p_female"] > 0.5)),
            "female_render_p_female": p_female_at_40["female"],
            "male_render_p_female": p_female_at_40["male"],
        },
        "paper_reference": PAPER_REFERENCE,
    }
    if calibration is not None and np.isfinite(calibration.get("gender_accuracy", np.nan)):
        # A decoder that ignored the requested gender would keep each face's own: the judge would then
        # agree with a flipped request only when it misreads the original.
        result["flip_agreement_if_ignored"] = 1.0 - calibration["gender_accuracy"]
    return result


def _calibration(test: FaceArrays, rows: np.ndarray, judge, female_index: int) -> dict:
    from .judges import calibrate_age_gender

    gender = test.labels["gender"][rows].astype(np.float64)
    female_is_one = np.where(np.isnan(gender), np.nan, (gender == female_index).astype(np.float64))
    return calibrate_age_gender(test.images[rows], test.labels["age"][rows], female_is_one, judge=judge)


def _reconstruction(test: FaceArrays, reconstructed, released, judge, rows: np.ndarray, seed: int, detect: bool = True) -> dict:
    result = {
        "n": len(test),
        "psnr": mean_interval(psnr(test.images, reconstructed), seed),
        "ssim": mean_interval(ssim(test.images, reconstructed), seed),
        # variance of the Laplacian, renders over inputs (issue 14's target: >= 0.5 at 128 px)
        "sharpness_ratio": {"reconstruction": sharpness_ratio(test.images, reconstructed),
                            "released": sharpness_ratio(test.images, released)},
        "faces_found": (_faces_found(test.images[rows], reconstructed[rows], released[rows], seed) if detect
                        else {"skipped": "judges off"}),
    }
    if judge is None:
        return result
    from .judges import SAME_PERSON_DISTANCE

    originals = judge.embed(test.images[rows])  # (n, 128)
    partner, other = unrelated_partners(test.identity[rows], seed)  # context: an unrelated face
    result["identity"] = {
        "judge": _judge_name(judge),
        "n_faces": len(rows),
        "same_person_distance": SAME_PERSON_DISTANCE,
        "reconstruction": face_similarity(judge, originals, judge.embed(reconstructed[rows]), seed),
        "released": face_similarity(judge, originals, judge.embed(released[rows]), seed),
        "different_person": face_similarity(judge, originals[other], originals[partner][other], seed),
    }
    return result


def _faces_found(originals: np.ndarray, reconstructed: np.ndarray, released: np.ndarray, seed: int) -> dict:
    """Share of faces the independent detector (CenterFace) finds in the inputs (its own rate: the context),
    the reconstructions and the fixed-target releases."""
    from ..faces.detect import DetectorUnavailable, FaceDetector

    try:
        detector = FaceDetector(threads=1)
        return {"detector": FaceDetector.name, "n_faces": len(originals),
                **{key: mean_interval(faces_found(images, detector), seed)
                   for key, images in (("inputs", originals), ("reconstruction", reconstructed), ("released", released))}}
    except DetectorUnavailable as error:
        return {"skipped": str(error)}


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _grid_figure(model, codes, test: FaceArrays, reconstructed, released, female_male, out_dir: Path, seed: int) -> str:
    plt = pyplot()

    rows = sample_rows(len(test), GRID_FACES, seed, purpose=4)
    own = {name: test.labels[name][rows] for name in model.schema.names}
    columns = [("original", test.images[rows]), ("reconstruction", reconstructed[rows])]
    requests = [(f"{g} {a}", {"gender": g, "age": a}) for g in ("female", "male") for a in GRID_AGES]
    requests += [("gender unspec., 40", {"gender": "unspecified", "age": 40})]
    if female_male is None:
        columns.append(("released", released[rows]))
    else:
        for title, request in requests:
            columns.append((title, render(model, codes[rows], label_rows(model.schema, len(rows), request, own))))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.3 * len(columns), 1.3 * len(rows) + 0.3), squeeze=False)
    for j, (title, images) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=7)
        for i in range(len(rows)):
            axes[i, j].imshow(images[i])
            axes[i, j].axis("off")
    return save_figure(fig, out_dir, "grid.png")


def _leakage_figure(code_leakage: dict, image_leakage: dict, out_dir: Path) -> str:
    plt = pyplot()

    def best(result: dict, metric: str) -> float:
        return result.get("best", {}).get(metric, np.nan)

    classes = [n for n, r in image_leakage["labels"].items() if r["released"]["kind"] != "continuous"]
    continuous = [n for n, r in image_leakage["labels"].items() if r["released"]["kind"] == "continuous"]
    bars = [
        ("codes (best vector attacker)", lambda n, m: best(code_leakage["labels"][n]["codes"], m)),
        ("released images (best image attacker)", lambda n, m: best(image_leakage["labels"][n]["released"], m)),
        ("original pixels (best vector attacker)", lambda n, m: best(code_leakage["labels"][n]["original"], m)),
        ("original images (best image attacker)", lambda n, m: best(image_leakage["labels"][n]["original"], m)),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [max(len(classes), 1), max(len(continuous), 1)]})
    width = 0.8 / len(bars)
    for ax, names, metric, ylabel in ((axes[0], classes, "balanced_accuracy", "balanced accuracy"), (axes[1], continuous, "mae", "MAE")):
        x = np.arange(len(names))
        for k, (title, value) in enumerate(bars):
            ax.bar(x + (k - 1.5) * width, [value(n, metric) for n in names], width, label=title)
        for i, n in enumerate(names):
            result = image_leakage["labels"][n]["released"]
            if metric == "mae":
                chance = result.get("attackers", {}).get("baseline", {}).get("mae", {}).get("mean")
            else:
                chance = result.get("chance_balanced_accuracy")
            if chance is not None:
                ax.hlines(chance, i - 0.45, i + 0.45, colors="k", linestyles="--", label="chance / baseline" if i == 0 else None)
        ax.set_xticks(x, names)
        ax.set_ylabel(ylabel + (" (lower = less leak)" if metric != "mae" else " (higher = less leak)"))
    axes[0].set_ylim(0, 1)
    handles, titles = axes[0].get_legend_handles_labels()
    fig.legend(handles, titles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("What an attacker trained after the fact can read (dashed: chance / mean-guess baseline)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path = out_dir / "leakage.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


# --------------------------------------------------------------------------------------------------
# Several audits side by side
# --------------------------------------------------------------------------------------------------

# model_config key -> axis title of leakage_sweep_figure
SWEEPS = {
    "latent": "latent size (code dimension)",
    "kl_weight": "KL weight",
    "critic_weight": "latent-critic weight",
    "eraser_rank": "post-hoc eraser rank (0 = none)",
}


def _config(report: dict) -> dict:
    return report.get("provenance", {}).get("model_config") or {}


def sweep_value(cfg: dict, by: str):
    """The swept hyperparameter of a model_config (an eraser rank of None counts as 0: no eraser)."""
    if by == "eraser_rank":
        return int(cfg.get(by) or 0)
    return cfg.get(by)


def concealer_title(cfg: dict) -> str:
    """A concealer by its latent size, plus the post-hoc eraser when it has one."""
    title = f"latent {cfg.get('latent', '?')}"
    return f"{title} + eraser (rank {cfg['eraser_rank']})" if cfg.get("eraser_rank") else title


def _titles(reports: list[dict]) -> list[str]:
    """Row titles: latent size (and eraser rank), plus whatever else of model_config differs between the reports."""
    configs = [_config(r) for r in reports]
    keys = [k for k in dict.fromkeys(k for c in configs for k in c)
            if k not in ("latent", "eraser_rank") and len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    titles = []
    for cfg in configs:
        extra = ", ".join(f"{k} {'+'.join(map(str, v)) if isinstance(v, list) else v}" for k in keys for v in [cfg.get(k)])
        titles.append(concealer_title(cfg) + (f", {extra}" if extra else ""))
    return [f"{t} #{i + 1}" if titles.count(t) > 1 else t for i, t in enumerate(titles)]


def _mean(result: dict | None, attacker: str | None, metric: str):
    return ((result or {}).get("attackers", {}).get(attacker) or {}).get(metric, {}).get("mean")


def _best(result: dict | None) -> str | None:
    return (result or {}).get("best", {}).get("attacker")


def _cell(result: dict | None, kept: bool, text) -> str:
    """One leakage cell: "—" without a result, "skipped", else ``text(result)`` (+ " (kept)" for a kept label)."""
    if result is None:
        return "—"
    if "skipped" in result:
        return "skipped"
    return text(result) + (" (kept)" if kept else "")


def _class_cell(result: dict | None, kept: bool = False) -> str:
    """Best attacker's balanced accuracy / macro-AUC: "0.252 / 0.558 (mlp)"."""
    return _cell(result, kept, lambda r: f"{num(_mean(r, _best(r), 'balanced_accuracy'))} / {num(_mean(r, _best(r), 'auc'))} ({_best(r)})")


def _age_cell(result: dict | None, kept: bool = False) -> str:
    """Best attacker's MAE / the mean-guess MAE: "15.8 / 15.7 (linear)"."""
    return _cell(result, kept, lambda r: f"{num(_mean(r, _best(r), 'mae'), 1)} / {num(_mean(r, 'baseline', 'mae'), 1)} ({_best(r)})")


def _linear_mlp_cell(result: dict | None, kept: bool = False) -> str:
    """Balanced accuracy of the linear and the MLP attacker: "0.512 / 0.593"."""
    return _cell(result, kept, lambda r: f"{num(_mean(r, 'linear', 'balanced_accuracy'))} / {num(_mean(r, 'mlp', 'balanced_accuracy'))}")


def _leakage_cells(report: dict, on_codes: str, on_images: str) -> list[str]:
    """One report's leakage cells: gender, race, age on the codes (or the pixel reference), then on the
    released (or the original) images."""
    codes = report.get("code_leakage", {}).get("labels", {})
    images = report.get("image_leakage", {}).get("labels", {})
    kept = {n: not r.get("concealed", True) for n, r in codes.items()}
    code = {n: codes.get(n, {}).get(on_codes) for n in ("gender", "race", "age")}
    image = {n: images.get(n, {}).get(on_images) for n in ("gender", "race", "age")}
    return [_linear_mlp_cell(code["gender"], kept.get("gender")), _class_cell(code["race"], kept.get("race")),
            _age_cell(code["age"], kept.get("age")), _class_cell(image["gender"]), _class_cell(image["race"]), _age_cell(image["age"])]


def _rendering_rows(title: str, rendering: dict, calibration: dict, ages: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """One report's rows of the age table (RMSE, MAE) and of the gender table (female, male, both)."""
    if "skipped" in rendering or not rendering:
        reason = f"skipped: {rendering.get('skipped', 'no rendering section')}"
        return ([[title, reason] + [""] * (len(ages) + 2)], [[title, reason] + [""] * (len(ages) + 3)])
    per_age = rendering.get("per_age", {})
    judge_mae = num(calibration.get("age_mae"), 2)
    age_rows = [[title, metric.upper(), *(num(per_age.get(a, {}).get(metric), 2) for a in ages),
                 num(rendering.get(f"avg_age_{metric}"), 2), judge_mae] for metric in ("rmse", "mae")]
    targets = rendering.get("targets", [])

    def agreement(rows: list[dict], key: str = "gender_agreement", n: str = "n") -> str:
        weights = [(t[key]["mean"], t[n]) for t in rows if t.get(key) and t[key].get("mean") is not None and t[n]]
        total = sum(w for _, w in weights)
        return num(sum(m * w for m, w in weights) / total) if total else "n/a"

    gender_rows = []
    for gender in ("female", "male", "both"):
        mine = [t for t in targets if gender == "both" or t["gender"] == gender]
        cells = [agreement([t for t in mine if str(t["age"]) == a]) for a in ages]
        if gender == "both":
            overall = [num(rendering.get("gender_agreement", {}).get("mean")), num(rendering.get("gender_agreement_flips", {}).get("mean"))]
        else:
            overall = [agreement(mine), agreement(mine, "gender_agreement_flips", "n_flips")]
        gender_rows.append([title, gender, *cells, *overall, num(calibration.get("gender_accuracy"))])
    return age_rows, gender_rows


def _paper_rows(paper: dict, ages: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """The paper's rows, with only the numbers ``paper`` records ("—" elsewhere)."""
    title = f"paper: {paper['source']}"
    per_age = paper.get("per_age", {})
    age_rows = [[title, metric.upper(), *(num(per_age.get(a, {}).get(metric), 2) if per_age.get(a) else "—" for a in ages),
                 num(paper.get(f"avg_age_{metric}"), 2), "—"] for metric in ("rmse", "mae")]
    gender = paper.get("gender_agreement")  # {"female": {age: value}, ...} when the constant records it
    gender_rows = []
    if gender:
        for who in ("female", "male", "both"):
            if who in gender:
                gender_rows.append([title, who, *(num(gender[who].get(a)) if gender[who].get(a) is not None else "—" for a in ages),
                                    num(gender[who].get("all")), "—", "—"])
    return age_rows, gender_rows


def compare_concealers(report_jsons: list[str | Path]) -> str:
    """Several concealer audits' report.json -> markdown: (a) the judged renders in the layout of the paper's
    Table 1 (age RMSE and MAE per target age and on average, gender agreement per target), one row per
    report by latent size (and eraser rank), beside the paper's own numbers as far as ``PAPER_REFERENCE``
    records them; (b) what fresh attackers read from the codes and the released images, and reconstruction.
    Rows are sorted by latent size, then eraser rank."""
    paths = [Path(p) for p in report_jsons]
    if not paths:
        raise ValueError("compare_concealers needs at least one report.json")
    reports = [json.loads(p.read_text()) for p in paths]
    not_concealer = [str(p) for p, r in zip(paths, reports) if r.get("provenance", {}).get("method") != "concealer"]
    if not_concealer:
        raise ValueError(f"not concealer audits: {', '.join(not_concealer)}")
    order = sorted(range(len(reports)),
                   key=lambda i: (_config(reports[i]).get("latent") or 0, sweep_value(_config(reports[i]), "eraser_rank"), i))
    paths, reports = [paths[i] for i in order], [reports[i] for i in order]
    titles = _titles(reports)

    lines = ["# Concealer audits side by side", ""]
    lines += [f"- **{t}**: `{p}` (model `{r['provenance'].get('model')}`, epoch {r['provenance'].get('model_epoch')})"
              for t, p, r in zip(titles, paths, reports)] + [""]
    audited = sorted({(r["provenance"].get("dataset"), r["provenance"].get("split"), r["provenance"].get("n_test_faces"),
                       r["provenance"].get("seed")) for r in reports}, key=str)
    if len(audited) > 1:
        lines += [f"> **Not like for like**: the reports audited different data (dataset, split, test faces, seed): {audited}.", ""]
    judges = sorted({r.get("rendering", {}).get("judge") for r in reports if r.get("rendering", {}).get("judge")})
    if len(judges) > 1:
        lines += [f"> **Not like for like**: the renders were read by different judges: {judges}.", ""]

    # (a) the paper's Table 1
    ages = sorted({a for r in reports for a in r.get("rendering", {}).get("per_age", {})} or {str(a) for a in TARGET_AGES}, key=float)
    age_rows, gender_rows = [], []
    for title, report in zip(titles, reports):
        a, g = _rendering_rows(title, report.get("rendering", {}), report.get("judge_calibration", {}), ages)
        age_rows += a
        gender_rows += g
    paper_age, paper_gender = _paper_rows(PAPER_REFERENCE, ages)
    lines += ["## Judged renders, as the paper's Table 1", "",
              ("Each sampled test face decoded as female and as male at every target age, read by the independent "
               "age/gender judge. Age: RMSE and MAE in years between the requested and the judged age, both genders "
               "pooled, beside the judge's own age MAE on the real faces. "
               f"Paper: {PAPER_REFERENCE['note']}; only the numbers the paper's row records are shown."), ""]
    lines += table(["model", "age error", *ages, "average", "judge's age MAE on real faces"], age_rows + paper_age) + [""]
    lines += [("Gender agreement: the judge reads the requested gender (chance 0.5), per target age and over all ages; "
               "flips = requests for the gender opposite to the face's own."), ""]
    lines += table(["model", "render", *ages, "all ages", "flips, all ages", "judge's gender acc on real faces"], gender_rows + paper_gender) + [""]

    # (b) leakage
    rows = []
    references: dict[int, list[str]] = {}
    for title, report in zip(titles, reports):
        reconstruction = report.get("reconstruction", {})
        rows.append([title, *_leakage_cells(report, "codes", "released"), num(reconstruction.get("psnr", {}).get("mean"), 2),
                     num(reconstruction.get("ssim", {}).get("mean"))])
        dim = report.get("code_leakage", {}).get("code_dim")
        references.setdefault(dim, [f"original faces (pixels by PCA to {dim}; raw images)",
                                    *_leakage_cells(report, "original", "original"), "—", "—"])
    first = reports[0].get("code_leakage", {}).get("labels", {})
    chance = {n: first.get(n, {}).get("codes", {}).get("chance_balanced_accuracy") for n in ("gender", "race")}
    lines += ["## What fresh attackers read", "",
              ("Attackers trained after the fact on one half of the audited faces, scored on the other (codes: mean over "
               "the audit's seeds). Classes: balanced accuracy (gender: linear / MLP attacker; race: best attacker's "
               "balanced accuracy / macro-AUC), lower = less leak; "
               f"chance: gender {num(chance['gender'])}, race {num(chance['race'])}, AUC 0.5. Age: best attacker's MAE / "
               "the mean-guess MAE in years, higher = less leak. Released images: every face rendered as the audit's "
               "fixed target, attacked by a fresh CNN and pixel-PCA vector attackers (best of each attacked set shown). "
               "Reconstruction: decoded with the true labels. The original rows show what there was to hide."), ""]
    header = ["model", "codes: gender bal. acc (linear / MLP) ↓", "codes: race bal. acc / AUC ↓", "codes: age MAE / mean-guess ↑",
              "released: gender bal. acc / AUC ↓", "released: race bal. acc / AUC ↓", "released: age MAE / mean-guess ↑",
              "PSNR (dB) ↑", "SSIM ↑"]
    lines += table(header, rows + list(references.values())) + [""]
    return "\n".join(lines).rstrip() + "\n"


def leakage_sweep_figure(report_jsons: list[str | Path], path: str | Path, by: str = "latent") -> str | None:
    """Code leakage against one hyperparameter of model_config (``by``: latent, kl_weight, critic_weight or
    eraser_rank): the best fresh attacker's gender balanced accuracy and race macro-AUC on the codes (bars:
    std over the audit's seeds), one point per report, beside chance and the raw-pixel reference. Writes
    ``path`` and returns it; returns None and writes nothing when the reports hold fewer than 2 distinct values."""
    if by not in SWEEPS:
        raise ValueError(f"by must be one of {', '.join(SWEEPS)}, not {by!r}")
    points = []  # (x, the other sweep keys' values: the line it belongs to, code_leakage labels)
    for p in report_jsons:
        report = json.loads(Path(p).read_text())
        cfg = _config(report)
        value = sweep_value(cfg, by)
        if value is not None and "code_leakage" in report:
            others = tuple((key, sweep_value(cfg, key)) for key in SWEEPS if key != by)
            points.append((float(value), others, report["code_leakage"]["labels"]))
    if len({x for x, _, _ in points}) < 2:
        return None
    points.sort(key=lambda point: point[0])
    # One line per setting of the other hyperparameters (e.g. with and without the eraser), named by
    # what differs between the lines; the raw-pixel reference once per x.
    lines = sorted({others for _, others, _ in points}, key=str)
    varying = [i for i in range(len(lines[0])) if len({line[i][1] for line in lines}) > 1]
    xs = sorted({x for x, _, _ in points})
    panels = (("gender", "balanced_accuracy", "gender: balanced accuracy ↓"), ("race", "auc", "race: macro-AUC ↓"))
    colors = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))

    def score(labels: dict, label: str, source: str, metric: str) -> tuple[float, float]:
        r = labels.get(label, {}).get(source) or {}
        s = (r.get("attackers", {}).get(_best(r)) or {}).get(metric) or {}
        return (np.nan if s.get("mean") is None else s["mean"]), (s.get("std") or 0.0)

    for ax, (label, metric, ylabel) in zip(axes, panels):
        for k, line in enumerate(lines):
            mine = [(x, labels) for x, others, labels in points if others == line]
            name = "codes (best fresh attacker)"
            if varying:
                name += ", " + ", ".join(f"{SWEEPS[line[i][0]].split(' (')[0]} {line[i][1]:g}" for i in varying)
            values = [score(labels, label, "codes", metric) for _, labels in mine]
            ax.errorbar([x for x, _ in mine], [m for m, _ in values], yerr=[sd for _, sd in values], fmt="o-",
                        color=colors[k % len(colors)], capsize=3, label=name)
        # The raw-pixel reference is reduced to each model's code size: one per line unless all lines share it.
        references = {tuple((x, score(labels, label, "original", metric)) for x, o, labels in points if o == line) for line in lines}
        for k, reference in enumerate(sorted(references)):
            ax.errorbar([x for x, _ in reference], [m for _, (m, _) in reference], yerr=[sd for _, (_, sd) in reference],
                        fmt="s:", color="tab:gray", capsize=3, label=None if k else "raw pixels by PCA to the code size")
        if metric == "auc":
            chance = 0.5
        else:
            chances = [(labels.get(label, {}).get("codes") or {}).get("chance_balanced_accuracy") for _, _, labels in points]
            chance = next((c for c in chances if c is not None), None)
        if chance is not None:
            ax.axhline(chance, color="k", linestyle="--", linewidth=0.8, label="chance")
        if by in ("kl_weight", "critic_weight") and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
        ax.set_xlabel(SWEEPS[by])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"What a fresh attacker reads from the concealed codes, against the {SWEEPS[by].split(' (')[0]}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path.parent, path.name)
    return str(path)


# --------------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------------


@single_threaded
def audit_concealer(
    model_path: str | Path,
    test: FaceArrays,
    out_dir: str | Path,
    judges: str | dict = "auto",
    seed: int = 0,
    judge_faces: int = 1000,
    identity_faces: int = 200,
    vector_seeds: int = 3,
    cnn_epochs: int = DEFAULT_CNN_EPOCHS,
    cnn_min_steps: int = CNN_MIN_STEPS,
    log: Callable[[str], None] = print,
    model=None,
) -> dict:
    """Run sections a-f on ``test`` (images at the model's size). Returns the sections dict for
    ``write_report``; figures are written into ``out_dir``. Runs on one thread (see ``single_threaded``)."""
    model, out_dir = open_audited(Concealer, model_path, test, out_dir, model)  # model: the audit context's, loaded once
    s = model.image_size
    concealed = model.schema
    groups = test.identity if np.any(test.identity >= 0) else None
    seeds = tuple(seed + i for i in range(vector_seeds))
    judge_objects, judge_status = resolve_judges(judges)
    female_male = _gender_axis(concealed)
    sections: dict[str, Any] = {"judges": judge_status, "timings": {}}
    step = timed_steps(sections["timings"], log)

    with step("encode", f"encoding and decoding {len(test)} test faces"):
        codes = model.encode(test.images)  # (N, d)
        target = fixed_target(concealed)
        released = render(model, codes, label_rows(concealed, len(test), target, {}))  # every face as the target
        reconstructed = render(model, codes, label_rows(concealed, len(test), {}, test.labels))  # own labels

    with step("code_leakage", f"a. leakage of concealed codes: vector attackers, {len(seeds)} seeds, {len(test.schema)} labels"):
        sections["code_leakage"] = _code_leakage(codes, test, concealed, seeds, groups)

    with step("image_leakage", f"b. leakage of released images (all as {target}): CNN attackers, {len(concealed)} labels x 2 image sets"):
        sections["image_leakage"] = _image_leakage(released, target, test, concealed, codes.shape[1], seed, groups, cnn_epochs, cnn_min_steps)

    age_gender = judge_objects["age_gender"]
    judge_rows = sample_rows(len(test), judge_faces, seed, purpose=1)
    if age_gender is None or female_male is None:
        reason = (f"age/gender judge unavailable: {judge_status['age_gender']}" if age_gender is None
                  else "the model does not render a male/female gender and an age")
        log(f"[audit] c./e. skipped: {reason}")
        sections["judge_calibration"] = {"skipped": reason}
        sections["rendering"] = {"skipped": reason}
    else:
        with step("judge_calibration", f"e. judge calibration on {len(judge_rows)} raw test faces"):
            sections["judge_calibration"] = _calibration(test, judge_rows, age_gender, female_male[0])
        with step("rendering", f"c. judged renders: {len(judge_rows)} faces x {2 * len(TARGET_AGES) + 1} targets"):
            sections["rendering"] = _judge_renders(model, codes, test, age_gender, judge_rows, female_male,
                                                   sections["judge_calibration"], seed)

    embedding = judge_objects["face_embedding"]
    identity_rows = sample_rows(len(test), identity_faces, seed, purpose=2)
    with step("reconstruction", "d. reconstruction" + (f" and identity on {len(identity_rows)} faces" if embedding else "")):
        sections["reconstruction"] = _reconstruction(test, reconstructed, released, embedding, identity_rows, seed, detect=judges != "off")
        if embedding is None:
            sections["reconstruction"]["identity"] = {"skipped": f"face embedding judge unavailable: {judge_status['face_embedding']}"}

    with step("figures", "f. figures"):
        sections["figures"] = {
            "grid": _grid_figure(model, codes, test, reconstructed, released, female_male, out_dir, seed),
            "leakage": _leakage_figure(sections["code_leakage"], sections["image_leakage"], out_dir),
        }
    sections["samples"] = {
        "test_faces": len(test),
        "attacker_seeds": list(seeds),
        "cnn_seeds": [seed],
        "judge_faces": int(len(judge_rows)) if age_gender is not None else 0,
        "identity_faces": int(len(identity_rows)) if embedding is not None else 0,
    }
    return sections
