"""The masker's K sweep (default: LFW gender): task accuracy and face similarity against the share of pixels released.

Usage: python benchmarks/masker_keep_sweep.py [--keep 0.1 0.5] [--epochs 3] [--runs runs/masker-keep-sweep]
       [--from models/masker-lfw-gender] [--dataset NAME] [--root DIR] [-o benchmarks/masker_keep_sweep]
       [--audit-options '--max-images 1000'] [--reaudit-from]

Each K starts from the shipped K = 25% masker given by --from (masker and Φ already trained on its task; the
dataset and root default to the ones it was trained on, e.g. ``--from models/masker-fer-emotion-nonadv`` sweeps
FER+ emotion: give it its own --runs and -o; its default `conceal audit` takes over an hour a K on 2 shared cores, so
``--audit-options '--max-images 1000'`` audits a seeded 1,000 of its test faces, and ``--reaudit-from`` audits the
K = 25% model the same way for a like-for-like table) and trains
``--epochs`` more epochs at its own K (the same adversarial schedule), then is audited by `conceal audit`
(fresh CNN on the release of one identity-disjoint half of the test faces, dlib face similarity,
re-identification). The shipped model is the K = 25% point. Resumable: a K whose audit/report.json exists
is not redone; an interrupted training continues. Writes OUT.md (table) and OUT.png (the K plot).
"""
from __future__ import annotations

import json
from pathlib import Path

from conceal.audit.masker import compare_maskers
from sweep import audit, sweep_arguments, train_then_audit, write_sweep_report  # benchmarks/sweep.py: this script's folder is on sys.path

TITLES = {"lfw": "LFW", "fer2013": "FER2013", "utkface": "UTKFace"}


def main(argv=None) -> None:
    p = sweep_arguments(__doc__.splitlines()[0], epochs=3, runs="runs/masker-keep-sweep",
                        init_from="models/masker-lfw-gender", out="benchmarks/masker_keep_sweep", root=None)
    p.add_argument("--keep", type=float, nargs="+", default=[0.1, 0.5], help="K values besides the shipped 0.25")
    p.add_argument("--dataset", default=None, help="dataset audited (default: the one --from was trained on)")
    p.add_argument("--reaudit-from", action="store_true",
                   help="audit --from's model too, with the same --audit-options, as the K = 25%% point (default: its own audit/report.json)")
    args = p.parse_args(argv)
    info = json.loads((Path(args.init_from) / "model.json").read_text())
    dataset = args.dataset or info["data"]["dataset"]
    root = args.root or info["data"]["root"]
    task, name = info["model_config"]["task"], TITLES.get(dataset, dataset)
    reports = [audit(Path(args.init_from), Path(args.runs) / "from" / "audit", dataset, root, args.audit_options) if args.reaudit_from
               else Path(args.init_from) / "audit" / "report.json"]
    for keep in args.keep:
        train = ["conceal", "train", "masker", "--config", f"{args.init_from}/config.toml", "--set", f"model.keep={keep}",
                 "--set", "train.threads=1", "--no-progress"]
        reports.append(train_then_audit(Path(args.runs) / f"keep{keep:g}", train, args.init_from, args.epochs, dataset, root,
                                        args.audit_options))
    out = Path(args.out)
    table = compare_maskers(reports, plot=out.with_suffix(".png"))
    write_sweep_report(
        out, f"Masker K sweep on {name} {task} (task accuracy and face similarity against K)",
        f"K = 25% is the shipped `{Path(args.init_from).name}`; every other K starts from it and trains {args.epochs} more epochs "
        + ("(102 steps of 64 each) at its own K, then `conceal audit` on LFW's test split (911 faces of held-out people)."
           if dataset == "lfw" else f"at its own K, then `conceal audit` on {name}'s test split."),
        table,
    )

if __name__ == "__main__":
    main()
