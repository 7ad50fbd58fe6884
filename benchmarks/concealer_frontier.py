"""The concealer's privacy-fidelity frontier (issue 14): a sweep of one independence lever, each point audited
under the public-model threat model, drawn beside blur / pixelate / black-box baselines at several strengths.

Not run yet (it needs hours of CPU per point). Plan of a run, from a trained base model (the 128-px run):

    # 1. print every command (nothing runs); then run them, one at a time, on one core
    python benchmarks/concealer_frontier.py plan --base runs/concealer-utkface-128 \
        --lever critics_weight --values 0 12.5 25 50 100 200 --epochs 2 -o runs/frontier
    # 2. the baselines through the same public-model attackers (trained on the train split's releases)
    python benchmarks/concealer_frontier.py baselines --base runs/concealer-utkface-128 \
        --root ../shared/datasets/utkface/UTKFace -o runs/frontier/baselines
    # 3. the table and the figure: benchmarks/concealer_frontier.{md,png}
    python benchmarks/concealer_frontier.py collect -o runs/frontier

Each sweep point fine-tunes the base model with one lever changed (`conceal train --init-from`), so the points
share everything else; `--resume` continues an interrupted point. Leakage: the public-model headline (gender
balanced accuracy, race macro-AUC, age MAE, chance / mean-guess beside each); fidelity, decoded with the true
labels: SSIM, the face-embedding judge's same-person rate, the sharpness ratio and the face detector's find rate
(the audit's reconstruction section). A baseline's "reconstruction" is its release itself.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

LEVERS = ("critics_weight", "independence_weight", "hsic_weight", "kl_weight", "critic_weight")
BASELINES = {  # kind -> strengths (as a share of the image side, so they mean the same at 64 and 128 px)
    "blur": (1 / 32, 1 / 16, 1 / 8),  # Gaussian sigma of the whole face box
    "pixelate": (1 / 8, 1 / 16, 1 / 32),  # cell side (cells = 1 / strength)
    "black-box": (0.25, 0.5, 0.75),  # share of the pixels blacked out in the centre
}


def point_dir(out: Path, lever: str, value: float) -> Path:
    return out / f"{lever}-{value:g}"


def plan(base: Path, lever: str, values: list[float], epochs: int, out: Path, minutes: float) -> list[list[str]]:
    """The commands of the sweep: per point, train (or resume) then audit under the public-model threat model."""
    if lever not in LEVERS:
        raise SystemExit(f"concealer_frontier: --lever must be one of {', '.join(LEVERS)}, not {lever!r}")
    if len(values) < 5:
        raise SystemExit("concealer_frontier: a frontier needs at least 5 points (issue 14)")
    commands = []
    for value in values:
        run = point_dir(out, lever, value)
        train = ["conceal", "train", "concealer", "-o", str(run), "--set", "train.threads=1", "--max-minutes", f"{minutes:g}"]
        if (run / "checkpoint").is_dir():
            train += ["--resume"]
        else:
            train += ["--config", str(base / "config.toml"), "--init-from", str(base), "--epochs", str(epochs),
                      "--set", f"model.{lever}={value:g}"]
        commands.append(train)
        commands.append(["conceal", "audit", str(run), "--threat-model", "public-model", "-o", str(run / "audit")])
    return commands


def baseline_release(kind: str, strength: float, images):
    """A baseline's release of (N, S, S, 3) uint8 faces (the masker audit's baselines, sized by the image side)."""
    from conceal.methods.masker import block_center, blur_center, pixelate

    side = images.shape[1]
    if kind == "blur":
        return blur_center(images, 1.0, strength * side)
    if kind == "pixelate":
        return pixelate(images, max(1, round(1 / strength)))
    if kind == "black-box":
        return block_center(images, strength)
    raise ValueError(f"unknown baseline {kind!r}")


def audit_baselines(base: Path, root: str, out: Path, max_train: int | None) -> None:
    """Every baseline at every strength through the public-model attackers, via an audit context whose released
    images are the baseline's (the base model only fixes the data split and image size)."""
    from conceal.audit.context import AuditContext
    from conceal.audit.metrics import faces_found, mean_interval, sharpness_ratio, ssim
    from conceal.audit.public import headline, public_model, strip_private
    from conceal.modelfile import read_model_info

    class BaselineContext(AuditContext):
        kind: str = "blur"
        strength: float = 0.0

        @property
        def releases_kinds(self):
            return ("images",)

        def released(self, split, kind):
            key = (split, kind)
            if key not in self._releases:
                self._releases[key] = baseline_release(self.kind, self.strength, self.split(split).images)
            return self._releases[key]

    info = read_model_info(base)
    out.mkdir(parents=True, exist_ok=True)
    for kind, strengths in BASELINES.items():
        for strength in strengths:
            ctx = BaselineContext(base, info, "utkface", out, root=root, max_train=max_train)
            ctx.kind, ctx.strength = kind, strength
            section = public_model(ctx, {"learning_curve": False})
            test = ctx.split("test")
            released = ctx.released("test", "images")
            fidelity = {"ssim": mean_interval(ssim(test.images, released)),
                        "sharpness_ratio": sharpness_ratio(test.images, released),
                        "face_found": float(faces_found(released[:300]).mean())}
            report = {"baseline": kind, "strength": strength, "headline": headline(section, test.schema, 0),
                      "public_model": strip_private(section), "fidelity": fidelity}
            (out / f"{kind}-{strength:g}.json").write_text(json.dumps(report, indent=1, default=float))


def collect(out: Path) -> list[dict]:
    """Rows of the frontier: one per sweep point (its audit's report.json) and one per baseline (its json)."""
    rows = []
    for report_path in sorted(out.glob("*/audit/report.json")):
        report = json.loads(report_path.read_text())
        recon = report.get("reconstruction", {})
        rows.append({"point": report_path.parent.parent.name, "headline": report.get("headline", {}),
                     "ssim": recon.get("ssim", {}).get("mean"), "sharpness": recon.get("sharpness_ratio", {}).get("reconstruction"),
                     "same_person": recon.get("identity", {}).get("reconstruction", {}).get("same_person_rate", {}).get("mean")})
    for baseline_path in sorted((out / "baselines").glob("*.json")):
        report = json.loads(baseline_path.read_text())
        rows.append({"point": baseline_path.stem, "headline": report["headline"], "ssim": report["fidelity"]["ssim"]["mean"],
                     "sharpness": report["fidelity"]["sharpness_ratio"], "same_person": None})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print the sweep's train and audit commands")
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--lever", default="critics_weight")
    p.add_argument("--values", type=float, nargs="+", default=[0, 12.5, 25, 50, 100, 200])
    p.add_argument("--epochs", type=int, default=2, help="epochs of fine-tuning per point (the run's total)")
    p.add_argument("--minutes", type=float, default=120, help="--max-minutes of each training command")
    p.add_argument("-o", "--out", type=Path, required=True)
    b = sub.add_parser("baselines", help="audit blur / pixelate / black-box under the public-model threat model")
    b.add_argument("--base", type=Path, required=True)
    b.add_argument("--root", required=True)
    b.add_argument("--max-train", type=int, default=None)
    b.add_argument("-o", "--out", type=Path, required=True)
    c = sub.add_parser("collect", help="print the frontier's rows as JSON")
    c.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "plan":
        for command in plan(args.base, args.lever, args.values, args.epochs, args.out, args.minutes):
            print(shlex.join(command))
    elif args.command == "baselines":
        audit_baselines(args.base, args.root, args.out, args.max_train)
    else:
        print(json.dumps(collect(args.out), indent=1))


if __name__ == "__main__":
    main()
