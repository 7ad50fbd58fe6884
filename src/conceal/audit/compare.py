"""Comparisons across audit reports, whatever the method: the public-model headlines side by side.

(The method-specific tables, the paper layouts of ``compare_concealers``, ``compare_anonymizers`` and
``compare_maskers``, live beside their sections and are re-exported here, so a caller needs one module.)
"""

from __future__ import annotations

import json
from pathlib import Path

from .report import METRIC_TITLES, best_on_test, best_on_test_words, headline_attacker, num, table

HEADER = ["model", "release", "attribute", "role", "metric", "score [95% CI]", "chance", "strongest attacker", "train / test faces",
          "best on test (chosen on test)", "test-halves (data-poor)", "audit wall time"]


def _best_on_test(report: dict, kind: str, name: str, h: dict) -> dict | None:
    """The headline's best-on-test entry; reports written before the headline carried it keep it in their section."""
    if h.get("best_on_test"):
        return h["best_on_test"]
    return best_on_test(report.get("public_model", {}).get("releases", {}).get(kind, {}).get("labels", {}).get(name, {}), h["metric"])


def _test_halves_score(report: dict, kind: str, name: str) -> str:
    """The same attribute's number from the report's data-poor test-halves sections, where it has one."""
    source = {"codes": ("code_leakage", "codes"), "images": ("image_leakage", "released")}.get(kind)
    if source is None or name == "identity":
        return "—"
    result = report.get(source[0], {}).get("labels", {}).get(name, {}).get(source[1], {})
    best = result.get("best") or {}
    value = best.get("mae", best.get("balanced_accuracy"))
    if result.get("kind") == "categorical":  # the headline reads race by macro-AUC: the test-halves best's AUC
        value = ((result.get("attackers") or {}).get(best.get("attacker"), {}).get("auc") or {}).get("mean")
    return num(value)


def headline_table(report_jsons: list[str | Path]) -> str:
    """Several report.json -> one markdown table of their public-model headlines (beside the test-halves number)."""
    rows = []
    for path in report_jsons:
        report = json.loads(Path(path).read_text())
        provenance = report.get("provenance", {})
        name = Path(provenance.get("model", str(path))).name
        seconds = provenance.get("wall_seconds")
        load = (provenance.get("load") or {}).get("end")
        wall = "—" if seconds is None else (f"{seconds / 60:.0f} min" + (f" at load {load[1]:.1f}" if load else "")
                                            + (" (test-halves carried over)" if report.get("test_halves", {}).get("reused_from") else ""))
        for kind, by_attribute in report.get("headline", {}).items():
            for attribute, h in by_attribute.items():
                lo, hi = h.get("ci95") or (None, None)
                bound = " (lower bound)" if h.get("lower_bound") else ""
                rows.append([name, kind, attribute, h.get("role") or "", METRIC_TITLES.get(h["metric"], h["metric"]),
                             f"{num(h['score'])} [{num(lo)}, {num(hi)}]{bound}",
                             num(h["chance"]) + (f"; originals {num(h['original'])}" if h.get("original") is not None else ""), headline_attacker(h),
                             f"{h['n_train']} / {h['n_test']}", best_on_test_words(_best_on_test(report, kind, attribute, h)),
                             _test_halves_score(report, kind, attribute), wall])
        if not report.get("headline"):
            rows.append([name, "—", "—", "", "", "no public-model headline (audited before it existed)", "", "", "", "", "", wall])
    return "\n".join(table(HEADER, rows)) + "\n"


ATTACKER_WORDS = {"mlp-512-256": "MLP 512-256", "mlp-256": "MLP 256", "svm-rbf": "RBF-SVM", "hgb": "gradient boosting", "knn": "kNN",
                  "logistic": "logistic regression", "linear": "linear", "from-scratch": "from-scratch CNN", "age-gender": "age/gender judge"}
INPUT_WORDS = {"codes": "codes", "cnn": "pixels", "hog": "HOG", "hog+pixels": "HOG + thumbnail", "re-encoded": "re-encoded codes", "judge": "off-the-shelf judge",
               "face-embedding": "face embeddings"}


def attacker_words(full: str, members: list[str] | None = None) -> str:
    """"codes:mlp-512-256" -> "codes + MLP 512-256" (the attacker column of a card); an ensemble with its
    ``members`` -> "average of (HOG + linear, pixels + from-scratch CNN)"."""
    if members:
        return "average of (" + ", ".join(attacker_words(m) for m in members) + ")"
    if ":" not in full:
        return full
    source, attacker = full.split(":", 1)
    return f"{INPUT_WORDS.get(source, source)} + {ATTACKER_WORDS.get(attacker, attacker)}"


def _chance_words(h: dict) -> str:
    return ("mean-guess " if h["metric"] == "mae" else "") + num(h["chance"], 2 if h["metric"] == "mae" else 3)


def card_section(report_json: str | Path, title: str | None = None) -> str:
    """One report.json -> the model card's public-model section (markdown): the headline table with chance beside
    every score, the learning curves, the samples, the wall time with the machine's load, and the command."""
    report = json.loads(Path(report_json).read_text())
    p = report.get("provenance", {})
    section = report.get("public_model", {})
    headline = report.get("headline", {})
    splits = section.get("splits", {})
    lines = [f"## {title or 'Public-model audit: the headline'} ({p.get('dataset')} test split, {p.get('n_test_faces'):,} faces; `audit/report.md`)", ""]
    capped = " (a seeded sample of the train split: `--max-train`)" if p.get("max_train") else " (the whole train split)"
    lines += [f"Attackers are trained on the releases of **{splits.get('train', 0):,} train faces**{capped} with their labels, chosen on "
              f"{splits.get('val', 0):,} validation faces, scored once on the test faces; the score is the strongest attacker's "
              "(chosen on validation; binary labels by AUC) with a 95% bootstrap interval over test faces.", ""]
    rows = []
    for kind, by_attribute in headline.items():
        for attribute, h in by_attribute.items():
            lo, hi = h.get("ci95") or (None, None)
            digits = 2 if h["metric"] == "mae" else 3
            bound = " (lower bound)" if h.get("lower_bound") else ""
            extra = f"; originals {num(h['original'])}" if "original" in h else ""
            rows.append([kind, attribute, h.get("role") or "", METRIC_TITLES.get(h["metric"], h["metric"]),
                         f"**{num(h['score'], digits)}** [{num(lo, digits)}, {num(hi, digits)}]{bound}", _chance_words(h) + extra,
                         attacker_words(h["attacker"], h.get("members")), f"{h['n_train']:,} / {h['n_test']:,}",
                         best_on_test_words(_best_on_test(report, kind, attribute, h))])
    lines += table(["release", "attribute", "role", "metric", "score [95% CI]", "chance", "strongest attacker", "train / test faces",
                    "best on test (chosen on test)"], rows) + [""]
    for kind, release in section.get("releases", {}).items():
        for name, curve in release.get("learning_curve", {}).items():
            points = " / ".join(num(pt[curve["metric"]], 2 if curve["metric"] == "mae" else 3) for pt in curve["points"])
            sizes = " / ".join(f"{pt['n_train']:,}" for pt in curve["points"])
            lines.append(f"- learning curve, {kind} {name} ({attacker_words('codes:' + curve['attacker'])}): {points} at {sizes} train faces: "
                         + ("**still rising, so the headline is a lower bound**" if curve["still_rising"] else curve["note"]))
        for attacker, sizes in release.get("samples", {}).items():
            of = sizes.get("of", {})
            lines.append(f"- the {attacker} attackers read a seeded sample: "
                         + ", ".join(f"{sizes[s]:,} of {of.get(s, 0):,} {s}" for s in ("train", "val", "test") if s in sizes) + " faces")
        for name, result in release.get("labels", {}).items():
            inputs = result.get("inputs", {}).get("face-embedding")
            if inputs and not release.get("samples"):
                lines.append(f"- the face-embedding attackers read a seeded sample of {inputs.get('n_train')} train / {inputs.get('n_test')} test faces")
                break
    load = p.get("load") or {}
    timings = section.get("timings", {})
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    wall = p.get("wall_seconds")
    lines.append(f"- wall time {wall:,.0f} s ({wall / 60:.1f} min)" + (f" on {load['cpus']} cores" if load.get("cpus") else "")
                 + (f", machine load (1/5/15-min) {load.get('start')} at the start and {load.get('end')} at the end" if load else "")
                 + f" (the attackers run on one thread); {p.get('date')} UTC; steps: {steps}")
    if report.get("test_halves", {}).get("reused_from"):
        r = report["test_halves"]["reused_from"]
        lines.append(f"- the data-poor test-halves sections were carried over from the audit of {r.get('date')} (`--reuse-test-halves`)")
    lines += ["", "```bash", p.get("command", "").replace(str(Path(p.get("command", "x").split(" ")[0])), "conceal", 1)
              if "/conceal/" in p.get("command", "") else p.get("command", ""), "```", ""]
    return "\n".join(lines)


def __getattr__(name: str):
    lazy = {"compare_concealers": "concealer", "compare_anonymizers": "anonymizer", "compare_released": "anonymizer",
            "compare_maskers": "masker"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
