"""Concealer audits side by side: the paper's Table 1 layout (judged age error and gender agreement per target
age, beside the paper's latent-48 numbers) and what fresh attackers read from codes and released images.

Usage: python benchmarks/concealer_compare.py REPORT_JSON [REPORT_JSON ...] [-o benchmarks/concealer_compare]

Each REPORT_JSON is the report.json of a `conceal audit` of a concealer (e.g. models/concealer-utkface-64/audit/
report.json, runs/c100/audit/report.json). Writes OUT.md, and OUT_latent.png, OUT_kl_weight.png,
OUT_critic_weight.png, OUT_eraser_rank.png (code leakage against that hyperparameter) for each one the reports
hold at least two distinct values of.
"""
from __future__ import annotations

from pathlib import Path

from conceal.audit.concealer import SWEEPS, compare_concealers, leakage_sweep_figure
from sweep import compare_arguments, invocation  # benchmarks/sweep.py: this script's folder is on sys.path


def main(argv=None) -> None:
    args = compare_arguments(__doc__.splitlines()[0], "benchmarks/concealer_compare", argv)
    out = args.out
    figures = {by: leakage_sweep_figure(args.reports, out.parent / f"{out.name}_{by}.png", by=by) for by in SWEEPS}
    command = invocation(__file__, argv)
    text = [compare_concealers(args.reports).rstrip(), "", f"Produced by `{command}`.", ""]
    drawn = {by: path for by, path in figures.items() if path}
    if drawn:
        text += ["## Code leakage against the hyperparameters", ""]
        text += [f"![code leakage against the {SWEEPS[by]}]({Path(path).name})\n" for by, path in drawn.items()]
    else:
        text += ["No figure: the reports differ in none of latent, kl_weight, critic_weight, eraser_rank.", ""]
    out.with_suffix(".md").write_text("\n".join(text).rstrip() + "\n")
    print(f"wrote {out.with_suffix('.md')}" + "".join(f", {path}" for path in drawn.values()))


if __name__ == "__main__":
    main()
