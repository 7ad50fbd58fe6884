"""Comparisons across audit reports, whatever the method: the public-model headlines side by side.

(The method-specific tables, the paper layouts of ``compare_concealers``, ``compare_anonymizers`` and
``compare_maskers``, live beside their sections and are re-exported here, so a caller needs one module.)
"""

from __future__ import annotations

import json
from pathlib import Path

from .report import METRIC_TITLES, num, table

HEADER = ["model", "release", "attribute", "role", "metric", "score [95% CI]", "chance", "strongest attacker", "train / test faces",
          "test-halves (data-poor)", "audit wall time"]


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
        wall = "—" if seconds is None else f"{seconds / 60:.0f} min" + (" (test-halves carried over)" if report.get("test_halves", {}).get("reused_from") else "")
        for kind, by_attribute in report.get("headline", {}).items():
            for attribute, h in by_attribute.items():
                lo, hi = h.get("ci95") or (None, None)
                bound = " (lower bound)" if h.get("lower_bound") else ""
                rows.append([name, kind, attribute, h.get("role") or "", METRIC_TITLES.get(h["metric"], h["metric"]),
                             f"{num(h['score'])} [{num(lo)}, {num(hi)}]{bound}", num(h["chance"]), h["attacker"],
                             f"{h['n_train']} / {h['n_test']}", _test_halves_score(report, kind, attribute), wall])
        if not report.get("headline"):
            rows.append([name, "—", "—", "", "", "no public-model headline (audited before it existed)", "", "", "", "", wall])
    return "\n".join(table(HEADER, rows)) + "\n"


def __getattr__(name: str):
    lazy = {"compare_concealers": "concealer", "compare_anonymizers": "anonymizer", "compare_released": "anonymizer",
            "compare_maskers": "masker"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
