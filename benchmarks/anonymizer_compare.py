"""Anonymizer audits side by side: the paper's Table 1 layout, then everything each model releases read every
way the audit reads it (gender from g and from the reconstructions; verification by the Siamese network and by
the independent face-embedding judge; PSNR).

Usage: python benchmarks/anonymizer_compare.py REPORT_JSON [REPORT_JSON ...] [-o benchmarks/anonymizer_compare]

Each REPORT_JSON is the report.json of a `conceal audit` of an anonymizer (e.g. models/anonymizer-lfw/audit/
report.json). Writes OUT.md.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from conceal.audit.anonymizer import compare_anonymizers, compare_released


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", metavar="REPORT_JSON", help="report.json of an anonymizer audit")
    p.add_argument("-o", "--out", default="benchmarks/anonymizer_compare", help="output stem: OUT.md")
    args = p.parse_args(argv)
    missing = [r for r in args.reports if not Path(r).is_file()]
    if missing:
        p.error(f"no such report.json: {', '.join(missing)}")
    out = Path(args.out).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *(sys.argv if argv is None else [__file__, *argv])])
    text = ["# Anonymizers compared", "", "## The paper's Table 1", "", compare_anonymizers(args.reports).rstrip(), "",
            "## What each model releases, read every way", "", compare_released(args.reports).rstrip(), "",
            f"Produced by `{command}`.", ""]
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
