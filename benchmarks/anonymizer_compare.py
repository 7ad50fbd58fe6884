"""Anonymizer audits side by side: the paper's Table 1 layout, then everything each model releases read every
way the audit reads it (gender from g and from the reconstructions; verification by the Siamese network and by
the independent face-embedding judge; PSNR).

Usage: python benchmarks/anonymizer_compare.py REPORT_JSON [REPORT_JSON ...] [-o benchmarks/anonymizer_compare]

Each REPORT_JSON is the report.json of a `conceal audit` of an anonymizer (e.g. models/anonymizer-lfw/audit/
report.json). Writes OUT.md.
"""
from __future__ import annotations

from conceal.audit.anonymizer import compare_anonymizers, compare_released
from sweep import compare_arguments, invocation  # benchmarks/sweep.py: this script's folder is on sys.path


def main(argv=None) -> None:
    args = compare_arguments(__doc__.splitlines()[0], "benchmarks/anonymizer_compare", argv)
    out = args.out.with_suffix(".md")
    command = invocation(__file__, argv)
    text = ["# Anonymizers compared", "", "## The paper's Table 1", "", compare_anonymizers(args.reports).rstrip(), "",
            "## What each model releases, read every way", "", compare_released(args.reports).rstrip(), "",
            f"Produced by `{command}`.", ""]
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
