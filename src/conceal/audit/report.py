"""Audit reports: ``report.json`` (every number, with provenance) and ``report.md`` (readable tables).

Rules the markdown keeps: every accuracy stands next to the majority-class accuracy and the chance
balanced accuracy of the same data; balanced accuracy and AUC come first (accuracy alone flatters
attackers on unbalanced labels); age errors stand next to the error of always guessing the training mean;
a judged number stands next to the judge's own error on real faces.

Both files are deterministic for a given audit seed, except the ``timings`` and the date; numbers in the
JSON are rounded to 4 decimals so the last bits of floating point do not show, and NaN becomes null.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

DECIMALS = 4


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------



def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (audits run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir: Path, name: str) -> str:
    """Lay out, write ``out_dir/name`` at 100 dpi and close ``fig``; returns the name report.md links to."""
    fig.tight_layout()
    fig.savefig(Path(out_dir) / name, dpi=100)
    pyplot().close(fig)
    return name


def timed_steps(timings: dict[str, float], log: Callable[[str], None]):
    """``with step(name, message):`` logs the message, runs the block and records its seconds in ``timings``
    (the report's Timings section). One per audit: ``step = timed_steps(sections["timings"], log)``."""

    @contextlib.contextmanager
    def step(name: str, message: str):
        log(f"[audit] {message}")
        start = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - start, 1)
        log(f"[audit]   {name} done in {timings[name]:.0f} s")

    return step


def to_plain(obj: Any) -> Any:
    """Numbers rounded, numpy scalars/arrays to Python, NaN/inf to None, tuples/paths to JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return round(x, DECIMALS) if math.isfinite(x) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------------------------------
# Markdown helpers
# --------------------------------------------------------------------------------------------------


def num(x: Any, digits: int = 3) -> str:
    """A number for a table: fixed digits, "n/a" for missing or NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def with_spread(s: dict | None, digits: int = 3) -> str:
    """{mean, std, min, max, n} -> "0.812 ± 0.010 (0.800–0.830)"; the spread only when there are repeats."""
    if not s:
        return "n/a"
    text = num(s.get("mean"), digits)
    if s.get("n", 1) > 1 and text != "n/a":
        text += f" ± {num(s.get('std'), digits)} ({num(s.get('min'), digits)}–{num(s.get('max'), digits)})"
    return text


def with_interval(s: dict | None, digits: int = 3) -> str:
    """{mean, lo, hi, n} -> "0.91 [0.89, 0.93]" (95% bootstrap interval)."""
    if not s:
        return "n/a"
    text = num(s.get("mean"), digits)
    if s.get("lo") is not None and math.isfinite(s.get("lo", float("nan"))) and s.get("lo") != s.get("hi"):
        text += f" [{num(s['lo'], digits)}, {num(s['hi'], digits)}]"
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown_section(heading: str) -> Callable:
    """Decorator of a report section's markdown function (section dict -> lines): the lines open with
    ``## heading``; a skipped section (``{"skipped": why}``) is the heading and its reason alone."""

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def markdown(s: dict, *args) -> list[str]:
            lines = [f"## {heading}", ""]
            return lines + ([f"Skipped: {s['skipped']}.", ""] if "skipped" in s else body(s, *args))

        return markdown

    return decorate


def figure_lines(figures: dict, captions: dict) -> list[str]:
    """A figures section (name -> image path) as markdown images, each with its caption (default: its name)."""
    return [line for name, path in figures.items() for line in (f"![{captions.get(name, name.replace('_', ' '))}]({path})", "")]


def _metric(result: dict, attacker: str, metric: str) -> dict | None:
    return result.get("attackers", {}).get(attacker, {}).get(metric)


def _best_text(result: dict) -> str:
    """The strongest attacker's primary score on one input, with its baseline: "0.93 (mlp; chance 0.50)"."""
    if "skipped" in result:
        return "skipped"
    best = result.get("best", {})
    if result["kind"] == "continuous":
        base = _metric(result, "baseline", "mae")
        return f"MAE {num(best.get('mae'), 1)} ({best.get('attacker')}; mean-guess {num(base and base['mean'], 1)})"
    return f"{num(best.get('balanced_accuracy'))} ({best.get('attacker')}; chance {num(result.get('chance_balanced_accuracy'))})"


def attack_rows(label: str, source: str, result: dict) -> list[list[str]]:
    """Table rows for one label attacked on one input (codes, pixels, released images ...), one per attacker.

    Classification columns: balanced acc, AUC, accuracy, majority acc, chance balanced acc.
    Continuous columns: MAE, RMSE, mean-guess MAE, mean-guess RMSE.
    """
    if "skipped" in result:
        return [[label, source, "—", f"skipped: {result['skipped']}"] + [""] * 4]
    continuous = result["kind"] == "continuous"
    rows = []
    for attacker in result["attackers"]:
        if attacker == "baseline":
            continue
        if continuous:
            cells = [with_spread(_metric(result, attacker, "mae"), 2), with_spread(_metric(result, attacker, "rmse"), 2),
                     with_spread(_metric(result, "baseline", "mae"), 2), with_spread(_metric(result, "baseline", "rmse"), 2)]
        else:
            cells = [with_spread(_metric(result, attacker, "balanced_accuracy")), with_spread(_metric(result, attacker, "auc")),
                     with_spread(_metric(result, attacker, "accuracy")), with_spread(_metric(result, "baseline", "accuracy")),
                     num(result.get("chance_balanced_accuracy"))]
        rows.append([label, source, attacker, *cells])
    return rows


CLASS_HEADER = ["attribute", "input", "attacker", "balanced acc", "AUC", "accuracy", "majority acc", "chance bal. acc"]
AGE_HEADER = ["attribute", "input", "attacker", "MAE", "RMSE", "mean-guess MAE", "mean-guess RMSE"]


def attack_tables(labels: dict[str, dict], sources: list[tuple[str, str]]) -> list[str]:
    """One table for the class labels and one for the continuous labels; ``sources``: (key, readable name)."""
    class_rows, age_rows = [], []
    for name, by_source in labels.items():
        for key, title in sources:
            result = by_source[key]
            (age_rows if result["kind"] == "continuous" else class_rows).extend(attack_rows(name, title, result))
    lines = []
    if class_rows:
        lines += table(CLASS_HEADER, class_rows) + [""]
    if age_rows:
        lines += table(AGE_HEADER, age_rows) + [""]
    return lines


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _provenance(p: dict, title: bool = True) -> list[str]:
    lines = ["# conceal audit", ""] if title else ["## Provenance", ""]
    keys = [("model", "model"), ("method", "method"), ("dataset", "dataset"), ("split", "split audited"),
            ("n_test_faces", "test faces audited"), ("threat_model", "threat models"), ("wall_seconds", "wall time (s)"), ("seed", "seed"), ("conceal_version", "conceal"),
            ("date", "date (UTC)"), ("command", "command")]
    for key, title in keys:
        if p.get(key) is not None:
            value = p[key]
            lines.append(f"- **{title}**: `{value}`" if key in ("model", "command") else f"- **{title}**: {value}")
        if key == "wall_seconds" and p.get("load"):
            load = p["load"]
            lines.append(f"- **machine load** (1/5/15-min averages): {load.get('start')} at the start, {load.get('end')} at the end, on {load.get('cpus')} cores")
    lines += ["", "Every number below comes from attackers trained after the fact on what the method releases, or from "
              "independent offline judges never trained by conceal. Only the public-model numbers (attackers trained on "
              "the train split's releases) count as privacy claims; the test-halves sections (attackers fitted on one half "
              "of the test faces) are data-poor and kept for comparison. Read each score against its baseline: balanced "
              "accuracy at chance (1/K) and AUC 0.5 mean nothing leaks.", ""]
    return lines


def _summary(sections: dict) -> list[str]:
    codes, images = sections.get("code_leakage"), sections.get("image_leakage")
    if not codes:
        return []
    rows = []
    for name, by_source in codes["labels"].items():
        released = images["labels"].get(name) if images else None
        rows.append([
            name,
            "concealed" if by_source["concealed"] else "kept",
            _best_text(by_source["codes"]),
            _best_text(released["released"]) if released else "—",
            _best_text(by_source["original"]),
            _best_text(released["original"]) if released else "—",
        ])
    header = ["attribute", "", "codes", "released images", "original pixels (PCA)", "original images (CNN, PCA)"]
    return ["## Summary: what a fresh attacker reads", "",
            "Best attacker per input: balanced accuracy (classes) or MAE in years (age), with its baseline. "
            "For a concealed attribute, codes and released images should sit at the baseline; the original "
            "columns show what there was to hide.", ""] + table(header, rows) + [""]


def _code_leakage(s: dict) -> list[str]:
    lines = ["## a. Leakage of concealed codes", "",
             f"{s['n']} faces, codes of dimension {s['code_dim']}; attackers: logistic/ridge regression and a "
             f"small MLP on standardised inputs, {len(s['seeds'])} runs (seeds {s['seeds']}: fresh half-split "
             f"and fresh models each; mean ± std (min–max)). Original = {s['original']}.", ""]
    first = next(iter(s["labels"].values()))["codes"]
    lines += [f"Attacker halves: {first.get('split', '?')}, ~{first.get('n_train', '?')} train / ~{first.get('n_test', '?')} test rows.", ""]
    unknown = {n: r["codes"]["n_unknown"] for n, r in s["labels"].items() if r["codes"].get("n_unknown")}
    if unknown:
        lines += ["Rows with an unknown label are left out of that label: " + ", ".join(f"{n}: {k}" for n, k in unknown.items()) + ".", ""]
    return lines + attack_tables(s["labels"], [("codes", "codes"), ("original", "original pixels (PCA)")])


def _image_leakage(s: dict) -> list[str]:
    target = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["target"].items())
    lines = ["## b. Leakage of released images", "",
             f"Every one of {s['n']} faces released as **{target}**. Fresh attackers try to read each face's true "
             f"attributes back: a small CNN trained from scratch ({s['min_steps']} updates, at least {s['epochs']} "
             f"and at most {s['max_epochs']} epochs) and the vector attackers on pixels reduced by PCA to {s['pca_dim']} dimensions (pca-*), "
             f"on one half-split (seed {s['seeds'][0]}). The same attackers on the raw faces are the reference.", ""]
    return lines + attack_tables(s["labels"], [("released", "released images"), ("original", "original images")])


@markdown_section("c. Does the release show what was asked for? (age/gender judge)")
def _rendering(s: dict, calibration: dict | None) -> list[str]:
    lines = [f"{s['n_faces']} test faces (a seeded sample), each decoded as female and male at every target age; "
             f"{s['note']}. Judge: {s['judge']}. Agreement = the judge reads the requested gender (chance 0.5); "
             "flips = requests for the gender opposite to the face's own. Brackets: 95% bootstrap intervals.", ""]
    ignored = s.get("flip_agreement_if_ignored")
    judge_acc = (calibration or {}).get("gender_accuracy")
    context = f"Judge's own accuracy on the original faces: {num(judge_acc)}."
    if ignored is not None:
        context += f" A decoder that ignored the request would score ≈ {num(ignored)} on flips."
    lines += [f"**Gender agreement**: all renders {with_interval(s['gender_agreement'])}; flips "
              f"{with_interval(s['gender_agreement_flips'])}. {context}", ""]
    rows = [[t["gender"], t["age"], with_interval(t["gender_agreement"]), f"{with_interval(t['gender_agreement_flips'])} (n={t['n_flips']})",
             num(t["age_mae"], 1), num(t["age_rmse"], 1), num(t["mean_judged_age"], 1), num(t["face_found_rate"], 2)]
            for t in s["targets"]]
    lines += table(["gender", "age", "gender agreement", "agreement on flips", "age MAE", "age RMSE", "mean judged age", "face found"], rows) + [""]
    age_rows = [[age, num(a["mae"], 1), num(a["rmse"], 1), num(a["mean_judged_age"], 1)] for age, a in s["per_age"].items()]
    paper = s["paper_reference"]
    lines += ["Age, both genders pooled:", ""] + table(["target age", "MAE", "RMSE", "mean judged age"], age_rows) + [""]
    lines += [f"Average over target ages: MAE {num(s['avg_age_mae'], 2)}, RMSE {num(s['avg_age_rmse'], 2)} "
              f"(judge's own age MAE on the original faces: {num((calibration or {}).get('age_mae'), 2)}). "
              f"Paper reference ({paper['source']}): RMSE {paper['avg_age_rmse']}, MAE {paper['avg_age_mae']}; {paper['note']}.", ""]
    u = s["unspecified_gender_age40"]
    q = lambda d: f"{num(d['mean'], 2)} ({num(d['q25'], 2)} / {num(d['median'], 2)} / {num(d['q75'], 2)})"  # noqa: E731
    lines += ["Gender **unspecified** (age 40): the judge's p(female), mean (quartiles 25 / 50 / 75):", ""]
    lines += table(["render", "p(female)"], [["gender unspecified", q(u["p_female"])], ["female", q(u["female_render_p_female"])],
                                             ["male", q(u["male_render_p_female"])]])
    lines += ["", f"Judged female among gender-unspecified renders: {num(u['judged_female_rate'])}.", ""]
    return lines


def _reconstruction(s: dict) -> list[str]:
    lines = ["## d. Reconstruction with the true labels", "",
             f"PSNR {with_interval(s['psnr'], 2)} dB, SSIM {with_interval(s['ssim'])} (mean over {s['n']} faces).", ""]
    if "sharpness_ratio" in s:  # reports before concealer v2 have neither
        sharp = s["sharpness_ratio"]
        lines += [f"Sharpness (variance of the Laplacian, renders over inputs; 1 = as sharp): reconstruction "
                  f"{num(sharp['reconstruction'])}, fixed-target release {num(sharp['released'])}.", ""]
    found = s.get("faces_found", {})
    if "skipped" in found:
        lines += [f"Face detector: skipped ({found['skipped']}).", ""]
    elif found:
        lines += [f"The independent face detector ({found['detector']}) finds a face in {with_interval(found['reconstruction'])} "
                  f"of reconstructions and {with_interval(found['released'])} of fixed-target releases "
                  f"({found['n_faces']} faces; in the inputs themselves: {with_interval(found['inputs'])}).", ""]
    identity = s.get("identity", {})
    if "skipped" in identity:
        return lines + [f"Identity: skipped ({identity['skipped']}).", ""]
    if identity:
        lines += [f"Identity on {identity['n_faces']} faces (judge: {identity['judge']}). Same person = embedding "
                  f"distance below {identity['same_person_distance']} (dlib's threshold). Cosine is not centred: "
                  "unrelated people typically score ~0.83.", ""]
        rows = [[title, with_interval(identity[key]["cosine"]), with_interval(identity[key]["same_person_rate"])]
                for key, title in (("reconstruction", "original vs reconstruction"), ("released", "original vs released (fixed target)"),
                                   ("different_person", "original vs a different person (context)"))]
        lines += table(["pair", "cosine", "judged same person"], rows) + [""]
    return lines


@markdown_section("e. Judge calibration on the raw test faces")
def _calibration(s: dict) -> list[str]:
    rows = [["gender accuracy", num(s.get("gender_accuracy")), s.get("n_gender")],
            ["gender balanced accuracy", num(s.get("gender_balanced_accuracy")), s.get("n_gender")],
            ["gender accuracy, age ≥ 13", num(s.get("gender_accuracy_age13plus")), s.get("n_age13plus")],
            ["age MAE (years)", num(s.get("age_mae"), 2), s.get("n_age")],
            ["face found by detector", num(s.get("face_found_rate")), s.get("n")]]
    lines = [f"Judge: {s.get('judge')}. The judged numbers of section c read against these.", ""]
    return lines + table(["metric", "value", "n"], rows) + [""]


FIGURE_CAPTIONS = {"grid": "test faces: original, reconstruction, released", "leakage": "leakage per attribute"}


@markdown_section("f. Figures")
def _figures(s: dict) -> list[str]:
    return figure_lines(s, FIGURE_CAPTIONS)


def _judges(status: dict) -> list[str]:
    rows = [[name, "available" if reason is None else f"unavailable: {reason}"] for name, reason in status.items()]
    return ["## Judges", ""] + table(["judge", "status"], rows) + [""]


def _timings(timings: dict) -> list[str]:
    return ["## Timings", "", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f" (total {sum(timings.values()):.0f} s).", ""]


def _method_renderers(method: str | None) -> dict:
    """A method's own sections render through the RENDERERS dict of its audit module, if it has one."""
    import importlib

    from ..methods import method_class

    try:
        module = importlib.import_module(method_class(method).audit.split(":")[0])
    except ValueError:  # a report of a method not registered here
        return {}
    return dict(getattr(module, "RENDERERS", {}))


METRIC_TITLES = {"balanced_accuracy": "balanced acc", "auc": "macro-AUC", "mae": "MAE (years)", "rank1": "re-id rank-1"}


def _headline(headline: dict) -> list[str]:
    """The table report.md opens with: one number per release kind and attribute, public-model threat model."""
    lines = ["# conceal audit", "", "## Headline: what the strongest public-model attacker reads", "",
             "Attackers trained on the releases of the train split (the model is public, labelled face sets are; a seeded sample of it where the train faces column says so), "
             "hyper-parameters and the strongest attacker chosen on the validation split (binary labels by AUC, which "
             "tells attackers apart with less noise than balanced accuracy; the others by their own metric), scored on "
             "the test split's releases; 95% bootstrap interval over test faces. Released images are also attacked by "
             "averages of the inputs' strongest attackers (ensemble:top-k, members in brackets). Balanced accuracy and "
             "AUC: higher = more leakage; MAE: lower = more leakage, chance = always guessing the train mean; re-id: "
             "chance = 1 / people. The last column is the best attacker's test score, chosen on the test split itself: "
             "optimistic for the attacker, it says how much choosing on a small validation split may leave unread.", ""]
    rows = []
    for kind, by_attribute in headline.items():
        for name, h in by_attribute.items():
            ci = h.get("ci95") or [None, None]
            note = " (lower bound: still rising with more training faces)" if h.get("lower_bound") else ""
            extra = f"; originals {num(h['original'])}" if h.get("original") is not None else ""
            rows.append([kind, name, h.get("role") or "", METRIC_TITLES.get(h["metric"], h["metric"]),
                         f"**{num(h['score'])}** [{num(ci[0])}, {num(ci[1])}]{note}", num(h["chance"]) + extra, headline_attacker(h),
                         f"{h['n_train']} / {h['n_test']}", best_on_test_words(h.get("best_on_test"))])
    if not rows:
        return lines + ["No headline: nothing was measured under the public-model threat model.", ""]
    return lines + table(["release", "attribute", "role", "metric", "score [95% CI]", "chance", "strongest attacker", "train / test faces",
                          "best on test (chosen on test)"], rows) + [""]


def headline_attacker(h: dict) -> str:
    """A headline's attacker as a table cell: its name, and an ensemble's members after it."""
    return h["attacker"] + (f" ({', '.join(h['members'])})" if h.get("members") else "")


def best_on_test(result: dict, metric: str) -> dict | None:
    """One label's best attacker on the test split, {"attacker", "score"}, from its section's ``max_on_test``."""
    best = result.get("max_on_test")
    return None if not best or metric not in best else {"attacker": best["attacker"], "score": best[metric]}


def best_on_test_words(best: dict | None) -> str:
    """A headline's best attacker on the test split, "0.924 (hog+pixels:linear)", or "—" where not recorded."""
    return "—" if not best else f"{num(best['score'])} ({best['attacker']})"


def _public_model(s: dict) -> list[str]:
    lines = ["## Public-model threat model: every attacker", "",
             f"{s['description']}. Splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()) + f" faces, grouped by {s['grouped_by']}.", ""]
    for kind, release in s.get("releases", {}).items():
        lines += [f"### Released {kind}", ""]
        rows = []
        for name, result in release.get("labels", {}).items():
            if "skipped" in result:
                rows.append([name, "—", f"skipped: {result['skipped']}", "", "", "", ""])
                continue
            metric = result["metric"]
            select = result.get("selected_by", metric)  # binary labels are chosen by validation AUC: shown beside
            for attacker, entry in result["attackers"].items():
                strongest = " (strongest)" if attacker == result["strongest"] else ""
                params = ", ".join(f"{k}={v}" for k, v in entry.get("params", {}).items())
                val = num((entry.get("val") or {}).get(metric))
                if select != metric and (entry.get("val") or {}).get(select) is not None:
                    val += f" (AUC {num(entry['val'][select])})" if select == "auc" else f" ({select} {num(entry['val'][select])})"
                rows.append([name, METRIC_TITLES.get(metric, metric), f"{attacker}{strongest}", val,
                             num(entry["test"].get(metric)), num(result["chance"]), f"{entry['n_train']} / {entry.get('n_test', '')}" + (f"; {params}" if params else "")])
            if result.get("original"):  # a kept task's reference: the same CNN on the original images
                ref = result["original"]
                rows.append([name, METRIC_TITLES.get(metric, metric), f"{ref['attacker']} on the ORIGINAL images (reference)",
                             num((ref.get("val") or {}).get(metric)), num(ref["test"].get(metric)), num(result["chance"]),
                             f"{ref['n_train']} / {result['n_test']}"])
        lines += table(["attribute", "metric", "attacker", "val (choosing score)", "test", "chance", "train / test faces; settings"], rows) + [""]
        for name, curve in release.get("learning_curve", {}).items():
            points = ", ".join(f"{p['n_train']}: {num(p[curve['metric']])}" for p in curve["points"])
            lines += [f"Learning curve, {name} ({curve['attacker']}, test {METRIC_TITLES.get(curve['metric'], curve['metric'])} by train faces): "
                      f"{points}; {curve['note']}.", ""]
        for attacker, sizes in release.get("samples", {}).items():
            of = sizes.get("of", {})
            lines += [f"The {attacker} attackers read a seeded sample: " + ", ".join(
                f"{sizes[split]} of {of.get(split, '?')} {split}" for split in ("train", "val", "test") if split in sizes) + " faces.", ""]
    identity = s.get("identity", {})
    lines += ["### Identity (re-identification)", ""]
    if "skipped" in identity:
        lines += [f"Skipped: {identity['skipped']}.", ""]
    else:
        lines += [f"{identity['note']}. Judge: {identity['judge']}. Gallery {identity['gallery_people']} people, {identity['probes']} probes.", ""]
        lines += table(["probes", "rank-1", "rank-5"], [[src, num(identity[src]["rank1"]), num(identity[src]["rank5"])] for src in ("released", "original")]
                       + [["chance", num(identity["chance_rank1"], 4), num(identity["chance_rank5"], 4)]]) + [""]
    if s.get("timings"):
        lines += [", ".join(f"{k} {v:.0f} s" for k, v in s["timings"].items()), ""]
    return lines


def _test_halves(s: dict) -> list[str]:
    lines = ["## Test-halves threat model (data-poor, for comparison)", "", s["description"] + ".", ""]
    if s.get("reused_from"):
        r = s["reused_from"]
        lines += [f"These sections were carried over from the audit of {r.get('date')} (`{r.get('command')}`): same model, test faces and seed.", ""]
    return lines


def render_markdown(sections: dict) -> str:
    lines = _headline(sections["headline"]) if "headline" in sections else []
    lines += _provenance(sections.get("provenance", {}), title="headline" not in sections)
    if "public_model" in sections:
        lines += _public_model(sections["public_model"])
    if "test_halves" in sections:
        lines += _test_halves(sections["test_halves"])
    lines += _summary(sections)
    if "judges" in sections and any(reason is not None for reason in sections["judges"].values()):
        missing = [f"{n} ({r})" for n, r in sections["judges"].items() if r is not None]
        lines += [f"> **Judges unavailable**: {'; '.join(missing)}. The attacker sections are complete; the judged "
                  "numbers for those judges are missing.", ""]
    renderers = {
        "code_leakage": _code_leakage,
        "image_leakage": _image_leakage,
        "rendering": lambda s: _rendering(s, sections.get("judge_calibration")),
        "reconstruction": _reconstruction,
        "judge_calibration": _calibration,
        "figures": _figures,
        "judges": _judges,
        "timings": _timings,
    }
    # A method's own sections come first (its summary table leads), then the shared ones it does not override.
    method_renderers = _method_renderers(sections.get("provenance", {}).get("method"))
    renderers = {**method_renderers, **{key: render for key, render in renderers.items() if key not in method_renderers}}
    known = {"provenance", "samples", "headline", "public_model", "test_halves", *renderers}
    for key, render in renderers.items():
        if key in sections:
            lines += render(sections[key])
    for key in sections:  # sections of future methods still appear, as data
        if key not in known:
            lines += [f"## {key}", "", "```json", json.dumps(to_plain(sections[key]), indent=1), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(sections: dict, out_dir: str | Path) -> Path:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns the path of report.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = to_plain(sections)
    (out_dir / "report.json").write_text(json.dumps(plain, indent=1, allow_nan=False) + "\n")
    path = out_dir / "report.md"
    path.write_text(render_markdown(plain))
    return path
