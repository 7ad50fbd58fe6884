"""AIA's privacy/utility trade-off on LFW, like the paper's Fig. 2: α and β in {0, .25, .5, .75, 1}, the other at .5.

Usage: python benchmarks/anonymizer_tradeoff.py [--epochs 2] [--runs runs/anonymizer-tradeoff]
       [--from models/anonymizer-lfw-original] [-o benchmarks/anonymizer_tradeoff]

Every point starts from the same pretrained components — the shipped Original (autoencoder, adversary and
Siamese network each trained on its own for 10 epochs, the paper's pretraining) — and fine-tunes the
autoencoder on L_AE + α·L_Siamese − β·L_Adv for ``--epochs`` epochs (pretrain_steps = 0), then is audited by
`conceal audit` (fresh gender attackers on g; verification on pairs of held-out people). α = 0 is AIA\\T.
Resumable: a point whose audit/report.json exists is not redone; an interrupted training continues.
Writes OUT.md (table + commands) and OUT.png (privacy and utility AUCs against α and against β).
"""
from __future__ import annotations

from pathlib import Path

from conceal.audit.anonymizer import tradeoff_figure, tradeoff_markdown
from sweep import sweep_arguments, train_then_audit, write_sweep_report  # benchmarks/sweep.py: this script's folder is on sys.path

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
LFW = "../shared/datasets/lfw"


def points() -> list[tuple[float, float]]:
    """(α, β): α swept at β = .5, then β swept at α = .5 (the shared (.5, .5) point once)."""
    sweep = [(a, 0.5) for a in GRID] + [(0.5, b) for b in GRID if b != 0.5]
    return sweep


def main(argv=None) -> None:
    p = sweep_arguments(__doc__.splitlines()[0], epochs=2, runs="runs/anonymizer-tradeoff",
                        init_from="models/anonymizer-lfw-original", out="benchmarks/anonymizer_tradeoff", root=LFW)
    args = p.parse_args(argv)
    reports = []
    for alpha, beta in points():
        train = ["conceal", "train", "anonymizer", "--config", f"{args.init_from}/config.toml",
                 "--set", 'model.variant="aia"', "--set", f"model.alpha={alpha}", "--set", f"model.beta={beta}",
                 "--set", "model.pretrain_steps=0", "--set", "train.threads=1", "--no-progress"]
        run_dir = Path(args.runs) / f"alpha{alpha:g}-beta{beta:g}"
        reports.append(train_then_audit(run_dir, train, args.init_from, args.epochs, "lfw", args.root, args.audit_options))
    out = Path(args.out)
    figure = tradeoff_figure(reports, out.with_suffix(".png"))
    write_sweep_report(
        out, "AIA privacy/utility trade-off on LFW (the paper's Fig. 2)",
        f"Every point fine-tunes the shipped Original's pretrained components for {args.epochs} epochs (102 steps of "
        "64 each) with L_AE + α·L_Siamese − β·L_Adv, then `conceal audit` on LFW's test split (911 faces of held-out people).",
        "\n".join([tradeoff_markdown(reports), f"![trade-off]({Path(figure).name})", ""]),
    )

if __name__ == "__main__":
    main()
