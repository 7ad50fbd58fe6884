"""The anonymizers' privacy/utility frontier under the public-model threat model (issue 20), from audit reports.

Usage: python benchmarks/anonymizer_frontier.py models/anonymizer-lfw*/audit/report.json runs/POINT/audit/report.json ...
       [-o benchmarks/anonymizer_frontier] [--notes NOTES.md]   (NOTES.md: text placed after the figure)

Each report.json is one `conceal audit --threat-model all` of an anonymizer on LFW's test split. Per model:
gender leakage of g and of the released reconstructions (the public-model headline: the strongest attacker,
chosen on validation, trained on the train split's releases, with its 95% bootstrap interval; and the
highest test score of any reconstruction attacker, the off-the-shelf gender judge among them) against
verification (the method's own Siamese network and the independent face-embedding judge on the
reconstructions, on LFW's pairs.txt in 10 folds and on the audit's pairs of test people). Writes OUT.md
(the table, the issue's targets met or not) and OUT.png (leakage against the judge's pairs.txt accuracy).
"""
from __future__ import annotations

import json
from pathlib import Path

from conceal.audit.report import num, table
from sweep import compare_arguments, invocation  # benchmarks/sweep.py: this script's folder is on sys.path

GENDER_TARGET, VERIFY_TARGET = 0.60, 0.85  # issue 20: gender bal. acc <= 0.60 from g and images; pairs.txt verification >= 0.85
CHANCE = 0.5  # balanced accuracy of gender and of verification on balanced pairs


def _name(report: dict, path: str) -> str:
    """The audited directory's name (a run's name for its checkpoint/ directory)."""
    model = Path(report.get("provenance", {}).get("model", path))
    return model.parent.name if model.name in ("checkpoint", "audit") else model.name


def frontier_point(path: str | Path) -> dict:
    """One report.json -> the numbers of the frontier (None where the audit did not run that part)."""
    report = json.loads(Path(path).read_text())
    headline = report.get("headline", {})
    images = report.get("public_model", {}).get("releases", {}).get("images", {}).get("labels", {}).get("gender", {})
    attackers = images.get("attackers", {})
    best_on_test = max(attackers.items(), key=lambda kv: kv[1]["test"]["balanced_accuracy"], default=(None, None))
    verification = report.get("verification", {})
    protocol = verification.get("protocol", {}).get("model", {})
    cfg = report.get("provenance", {}).get("model_config", {})
    return {
        "name": _name(report, str(path)), "report": str(path), "cfg": cfg,
        "g": headline.get("codes", {}).get("gender"),
        "images": headline.get("images", {}).get("gender"),
        "images_max": None if best_on_test[0] is None else {"attacker": best_on_test[0], "score": best_on_test[1]["test"]["balanced_accuracy"]},
        "judge_gender": attackers.get("judge:age-gender", {}).get("test", {}).get("balanced_accuracy"),
        "reid": headline.get("images", {}).get("identity", {}).get("score"),
        "siamese_pairs_txt": protocol.get("siamese"), "judge_pairs_txt": protocol.get("judge"),
        "siamese_test_pairs": verification.get("model", {}).get("siamese", {}).get("accuracy"),
        "judge_test_pairs": verification.get("model", {}).get("judge", {}).get("accuracy"),
        "psnr": report.get("reconstruction_fidelity", {}).get("psnr", {}).get("mean"),
        "wall_seconds": report.get("provenance", {}).get("wall_seconds"),
    }


def _levers(cfg: dict) -> str:
    parts = [cfg.get("variant", "aia")]
    if cfg.get("critics"):
        parts.append(f"{cfg['critics']} code critics × {cfg.get('critics_weight', 0):g}")
    if cfg.get("image_critics"):
        parts.append(f"{cfg['image_critics']} image critics × {cfg.get('image_critics_weight', 0):g}")
    if cfg.get("hsic_weight"):
        parts.append(f"HSIC × {cfg['hsic_weight']:g}")
    if cfg.get("eraser_rank"):
        parts.append(f"eraser rank {cfg['eraser_rank']}")
    return ", ".join(parts)


def _score(h: dict | None) -> str:
    if not h:
        return "—"
    lo, hi = h.get("ci95") or (None, None)
    return f"{num(h['score'])} [{num(lo)}, {num(hi)}]" + (" (lower bound)" if h.get("lower_bound") else "")


def _folds(d: dict | None) -> str:
    return "—" if not d else f"{num(d['accuracy'])} ± {num(d['accuracy_std'])}"


def targets(p: dict) -> str:
    """The issue's targets for one point: met / not met, with the numbers that decide."""
    g = (p["g"] or {}).get("score")
    images = max(v for v in ((p["images"] or {}).get("score"), (p["images_max"] or {}).get("score")) if v is not None) if (p["images"] or p["images_max"]) else None
    verify = (p["judge_pairs_txt"] or {}).get("accuracy")
    def verdict(value, ok):
        return "—" if value is None else ("met" if ok(value) else "not met")
    return (f"g {verdict(g, lambda v: v <= GENDER_TARGET)}; images {verdict(images, lambda v: v <= GENDER_TARGET)} "
            f"({num(images)}); verification {verdict(verify, lambda v: v >= VERIFY_TARGET)}")


def frontier_markdown(points: list[dict]) -> str:
    header = ["model", "levers", "gender from g ↓ [95% CI]", "gender from reconstructions ↓ [95% CI] (strongest)",
              "highest reconstruction attacker on test", "off-the-shelf judge", "verification, judge, pairs.txt ↑",
              "verification, Siamese, pairs.txt ↑", "judge / Siamese on test-people pairs ↑", "re-id rank-1", "PSNR dB",
              f"targets (≤ {GENDER_TARGET:g} / ≥ {VERIFY_TARGET:g})"]
    rows = [[f"`{p['name']}`", _levers(p["cfg"]), _score(p["g"]),
             _score(p["images"]) + (f" ({p['images']['attacker']})" if p["images"] else ""),
             "—" if not p["images_max"] else f"{num(p['images_max']['score'])} ({p['images_max']['attacker']})",
             num(p["judge_gender"]), _folds(p["judge_pairs_txt"]), _folds(p["siamese_pairs_txt"]),
             f"{num(p['judge_test_pairs'])} / {num(p['siamese_test_pairs'])}", num(p["reid"]), num(p["psnr"], 2), targets(p)]
            for p in points]
    return "\n".join(table(header, rows)) + "\n"


def frontier_figure(points: list[dict], path: Path) -> Path:
    """Two panels, gender leakage of g and of the reconstructions (x, with the 95% interval) against pairs.txt
    verification (y: the judge filled, the Siamese network open); the target region shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, title in ((axes[0], "g", "gender from g (public-model headline)"),
                           (axes[1], "images", "gender from the reconstructions (public-model headline)")):
        ax.fill_between([0.45, GENDER_TARGET], VERIFY_TARGET, 1.0, color="tab:green", alpha=0.12, label="issue 20 target")
        for i, p in enumerate(points):
            h = p[key]
            if not h:
                continue
            lo, hi = h["ci95"]
            colour = colours[i % len(colours)]
            for verification, marker, fill in ((p["judge_pairs_txt"], "o", colour), (p["siamese_pairs_txt"], "s", "none")):
                if verification:
                    ax.errorbar(h["score"], verification["accuracy"], xerr=[[h["score"] - lo], [hi - h["score"]]],
                                yerr=verification["accuracy_std"], fmt=marker, color=colour, mfc=fill, capsize=2, lw=0.8)
            ax.plot([], [], "o", color=colour, label=p["name"])
        ax.axvline(CHANCE, color="k", ls="--", lw=0.8)
        ax.set_xlim(0.45, 1.0)
        ax.set_ylim(0.5, 1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("gender balanced accuracy, 95% CI ↓ (dashed: chance)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("verification on LFW pairs.txt, 10 folds ↑\n(filled: face-embedding judge; open: own Siamese)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    import sys

    quoted = argv  # None: the command line, as run
    argv = list(sys.argv[1:] if argv is None else argv)
    notes = ""
    if "--notes" in argv:
        i = argv.index("--notes")
        notes = Path(argv[i + 1]).read_text().strip() + "\n\n"
        argv = argv[:i] + argv[i + 2:]
    args = compare_arguments(__doc__.splitlines()[0], "benchmarks/anonymizer_frontier", argv)
    points = [frontier_point(p) for p in args.reports]
    figure = frontier_figure(points, args.out.with_suffix(".png"))
    text = ["# Anonymizer frontier on LFW: gender leakage against verification (public-model threat model)", "",
            __doc__.split("\n\n")[2].replace("\n", " "), "",
            f"Chance: 0.500 balanced accuracy for gender (LFW's test split is ~81% male; majority accuracy 0.811), 0.500 for "
            "verification (balanced pairs). ± is the std over the 10 pairs.txt folds.", "",
            frontier_markdown(points).rstrip(), "", f"![frontier]({figure.name})", "", notes +
            f"Produced by `{invocation(__file__, quoted)}`.", ""]
    args.out.with_suffix(".md").write_text("\n".join(text))
    print(f"wrote {args.out.with_suffix('.md')} and {figure}")


if __name__ == "__main__":
    main()
