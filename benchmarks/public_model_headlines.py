"""Every audited model's public-model headline side by side (attackers trained on the train split's releases).

Usage: python benchmarks/public_model_headlines.py models/*/audit/report.json [-o benchmarks/public_model_headlines]
       python benchmarks/public_model_headlines.py --card models/NAME/audit/report.json   (prints a model card's section)

Writes OUT.md: per model, release kind and attribute, the strongest attacker's test score with its bootstrap
95% interval, chance, the attacker, its train/test faces, and the same attribute's data-poor test-halves number.
"""
from __future__ import annotations

from conceal.audit.compare import headline_table
from sweep import compare_arguments, invocation  # benchmarks/sweep.py: this script's folder is on sys.path


NOTE = ("The face-embedding attackers read a seeded sample of each split (the dlib judge is the slow part); where one is the "
        "strongest, its train / test faces column gives the sample: audits before 2026-12-02 13:00 used 600 / 200 / 500 "
        "train / val / test faces, later ones say theirs (`conceal audit --embed-sample`, default 2000,300,1500). "
        "Wall times are the whole audit's, with the 5-min load average at its end, on this shared 2-core machine.")


def main(argv=None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--card"]:
        from conceal.audit.compare import card_section

        for path in argv[1:]:
            print(card_section(path))
        return
    args = compare_arguments(__doc__.splitlines()[0], "benchmarks/public_model_headlines", argv)
    text = ["# Public-model headlines", "", __doc__.split("\n\n")[2].replace("\n", " "), "", NOTE, "", headline_table(args.reports).rstrip(), "",
            f"Produced by `{invocation(__file__, argv)}`.", ""]
    args.out.with_suffix(".md").write_text("\n".join(text))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
