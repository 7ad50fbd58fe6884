"""The concealer's privacy-fidelity frontier (issue 14): a sweep of one lever, each point audited under the
public-model threat model, drawn beside blur / pixelate / black-box baselines at several strengths.

Two kinds of lever. A training lever (the critics' weight, the MMD or HSIC weight, the KL weight) fine-tunes the
base model once per point (`conceal train --init-from`; hours per point on 2 cores). The post-hoc eraser's strength
(`covariance_rank`: LEACE of the labels plus R covariance directions, `conceal erase`) needs no training, so a
whole sweep fits in a session; it is the one run so far (`benchmarks/concealer_frontier.md`).

    # 1. the sweep's commands (nothing runs); run them, one at a time, on one core
    python benchmarks/concealer_frontier.py plan --base models/concealer-utkface-128 \
        --lever covariance_rank --values 0 8 16 24 32 --root ../shared/datasets/utkface/UTKFace -o runs/frontier
    # 2. fidelity of every point (and of the base): the test split decoded with the true labels
    python benchmarks/concealer_frontier.py fidelity models/concealer-utkface-128 runs/frontier/erase-cov* \
        --root ../shared/datasets/utkface/UTKFace -o runs/frontier/fidelity
    # 3. the baselines through the same public-model attackers (trained on the train split's releases)
    python benchmarks/concealer_frontier.py baselines --base models/concealer-utkface-128 \
        --root ../shared/datasets/utkface/UTKFace -o runs/frontier/baselines
    # 4. the table and the figure
    python benchmarks/concealer_frontier.py collect models/concealer-utkface-128 runs/frontier/erase-cov* \
        --fidelity runs/frontier/fidelity --baselines runs/frontier/baselines -o benchmarks/concealer_frontier

Leakage: the public-model headline of each point (gender balanced accuracy, race macro-AUC, age MAE; chance /
mean guess beside them), of the codes and of the fixed-target released images. Fidelity, on the test split:
SSIM and PSNR of the decode with the true labels (every test face), the face-embedding judge's same-person rate of
original vs that decode (200 seeded faces, beside the judge's rate for two different people), the sharpness ratio
and the face detector's find rate (the audit's reconstruction section). A baseline's "decode" is its release.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

TRAINING_LEVERS = ("critics_weight", "independence_weight", "hsic_weight", "kl_weight", "critic_weight")
ERASER_LEVER = "covariance_rank"
BASELINES = {  # kind -> strengths (as a share of the image side, so they mean the same at 64 and 128 px)
    "blur": (1 / 32, 1 / 16, 1 / 8),  # Gaussian sigma of the whole face box
    "pixelate": (1 / 8, 1 / 16, 1 / 32),  # cell side (cells = 1 / strength)
    "black-box": (0.25, 0.5, 0.75),  # share of the pixels blacked out in the centre
}
IDENTITY_FACES = 200  # the face-embedding judge's sample (its embeddings cost ~85 ms a face on an idle core)
ISSUE_TARGETS = {"gender": 0.55, "race": 0.60, "ssim": 0.6}


def point_dir(out: Path, lever: str, value: float) -> Path:
    return out / (f"erase-cov{value:g}" if lever == ERASER_LEVER else f"{lever}-{value:g}")


def plan(base: Path, lever: str, values: list[float], epochs: int, out: Path, minutes: float, root: str) -> list[list[str]]:
    """The commands of the sweep: per point, make the model (train or resume; or erase) then audit it under the
    public-model threat model."""
    if lever not in TRAINING_LEVERS + (ERASER_LEVER,):
        raise SystemExit(f"concealer_frontier: --lever must be one of {', '.join(TRAINING_LEVERS + (ERASER_LEVER,))}, not {lever!r}")
    if len(values) < 5:
        raise SystemExit("concealer_frontier: a frontier needs at least 5 points (issue 14)")
    data = ["--dataset", "utkface", "--root", root]
    commands = []
    for value in values:
        run = point_dir(out, lever, value)
        if lever == ERASER_LEVER:
            commands.append(["conceal", "erase", str(base), *data, "--covariance-rank", f"{int(value)}", "-o", str(run)])
        else:
            train = ["conceal", "train", "concealer", "-o", str(run), "--set", "train.threads=1", "--max-minutes", f"{minutes:g}"]
            if (run / "checkpoint").is_dir():
                train += ["--resume"]
            else:
                train += ["--config", str(base / "config.toml"), "--init-from", str(base), "--epochs", str(epochs),
                          "--set", f"model.{lever}={value:g}", "--root", root]
            commands.append(train)
        commands.append(["conceal", "audit", str(run), *data, "--threat-model", "public-model", "-o", str(run / "audit")])
    return commands


def _test_split(model_path: Path, root: str, dataset: str = "utkface"):
    from conceal.audit.context import AuditContext
    from conceal.modelfile import read_model_info

    ctx = AuditContext(model_path, read_model_info(model_path), dataset, model_path, root=root)
    return ctx, ctx.split("test")


def _fidelity(test, decoded, released, seed: int = 0) -> dict:
    """The audit's reconstruction section (PSNR / SSIM, sharpness, detector, same-person rate) of ``decoded``."""
    from conceal.audit.common import resolve_judges, sample_rows
    from conceal.audit.concealer import _reconstruction

    judges, status = resolve_judges("auto")
    rows = sample_rows(len(test), IDENTITY_FACES, seed, purpose=2)  # the audit's identity sample
    result = _reconstruction(test, decoded, released, judges["face_embedding"], rows, seed)
    if judges["face_embedding"] is None:
        result["identity"] = {"skipped": f"face embedding judge unavailable: {status['face_embedding']}"}
    return result


def fidelity(model_path: Path, root: str, out: Path) -> dict:
    """A concealer point's fidelity on the test split: decoded with each face's true labels, and released as
    the audit's fixed target. Written to OUT/<model folder's name>.json (never into the model folder)."""
    from conceal.audit.concealer import fixed_target, label_rows, render
    from conceal.methods import Concealer

    _, test = _test_split(model_path, root)
    model = Concealer.load(model_path)
    codes = model.encode(test.images)  # (N, d), erased where the model has an eraser
    decoded = render(model, codes, label_rows(model.schema, len(test), {}, test.labels))
    released = render(model, codes, label_rows(model.schema, len(test), fixed_target(model.schema), {}))
    result = _fidelity(test, decoded, released)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{model_path.name}.json").write_text(json.dumps(result, indent=1, default=float))
    return result


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


def audit_baselines(base: Path, root: str, out: Path, max_train: int | None, max_images: int | None, only: list[str] | None) -> None:
    """Every baseline at every strength through the public-model attackers, via an audit context whose released
    images are the baseline's (the base model only fixes the data split and image size)."""
    from conceal.audit.context import AuditContext
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
            name = f"{kind}-{strength:g}"
            if (only and name not in only) or (out / f"{name}.json").exists():
                continue
            ctx = BaselineContext(base, info, "utkface", out, root=root, max_train=max_train, max_images=max_images)
            ctx.kind, ctx.strength = kind, strength
            section = public_model(ctx, {"learning_curve": False})
            test = ctx.split("test")
            released = ctx.released("test", "images")
            report = {"baseline": kind, "strength": strength, "headline": headline(section, test.schema, 0),
                      "public_model": strip_private(section), "fidelity": _fidelity(test, released, released)}
            (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=float))
            print(f"[frontier] {name}: written", flush=True)


def _row(name: str, headline: dict, fid: dict) -> dict:
    def score(kind, attribute):
        entry = headline.get(kind, {}).get(attribute)
        return None if entry is None else entry["score"]

    identity = fid.get("identity", {})
    return {"point": name,
            **{f"{kind}_{a}": score(kind, a) for kind in ("codes", "images") for a in ("gender", "race", "age")},
            "age_mean_guess": next((e["age"]["chance"] for e in headline.values() if "age" in e), None),
            "psnr": fid["psnr"]["mean"], "ssim": fid["ssim"]["mean"],
            "sharpness": fid["sharpness_ratio"]["reconstruction"],
            "same_person": identity.get("reconstruction", {}).get("same_person_rate", {}).get("mean"),
            "different_person": identity.get("different_person", {}).get("same_person_rate", {}).get("mean")}


def collect(points: list[Path], fidelities: Path, baselines: Path | None) -> list[dict]:
    """Rows of the frontier: one per concealer point (its audit's report.json + FIDELITIES/<name>.json) and one
    per baseline (its json)."""
    rows = []
    for point in points:
        missing = [p for p in (point / "audit" / "report.json", fidelities / f"{point.name}.json") if not p.is_file()]
        if missing:
            raise SystemExit(f"concealer_frontier: error: {missing[0]} is missing (run the plan's audit and the fidelity command first)")
        report = json.loads((point / "audit" / "report.json").read_text())
        rows.append(_row(point.name, report["headline"], json.loads((fidelities / f"{point.name}.json").read_text())))
    if baselines is not None:
        for kind, strengths in BASELINES.items():
            for strength in strengths:
                path = baselines / f"{kind}-{strength:g}.json"
                if path.exists():
                    report = json.loads(path.read_text())
                    rows.append(_row(path.stem, report["headline"], report["fidelity"]))
    return rows


def _fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    guesses = sorted({round(r["age_mean_guess"], 2) for r in rows if r["age_mean_guess"] is not None})
    different = sorted({round(r["different_person"], 3) for r in rows if r["different_person"] is not None})
    lines = [f"Chance: gender balanced accuracy 0.500, race macro-AUC 0.500; age MAE of the mean guess "
             f"{' / '.join(f'{g:.2f}' for g in guesses) or '—'}. The judge calls two different people the same person at "
             f"{' / '.join(f'{d:.3f}' for d in different) or '—'}.", "",
             "| point | codes: gender / race AUC / age MAE | released images: gender / race AUC / age MAE | SSIM | PSNR (dB) "
             "| judged same person | sharpness ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        codes = " / ".join(_fmt(r[f"codes_{a}"], 2 if a == "age" else 3) for a in ("gender", "race", "age"))
        images = " / ".join(_fmt(r[f"images_{a}"], 2 if a == "age" else 3) for a in ("gender", "race", "age"))
        lines.append(f"| {r['point']} | {codes} | {images} | {_fmt(r['ssim'])} | {_fmt(r['psnr'], 2)} | {_fmt(r['same_person'])} | {_fmt(r['sharpness'])} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, (fidelity_key, label) in zip(axes, (("ssim", "SSIM, decoded with the true labels (test)"),
                                                ("same_person", "judged the same person as the input (200 test faces)"))):
        for kind, marker in (("erase", "o"), ("blur", "s"), ("pixelate", "^"), ("black-box", "v"), ("base", "*")):
            points = [r for r in rows if (r["point"].startswith(kind) if kind != "base" else not any(
                r["point"].startswith(k) for k in ("erase", "blur", "pixelate", "black-box")))]
            points = [r for r in points if r[fidelity_key] is not None]
            if not points:
                continue
            # the stronger of the two releases: a concealer point releases codes or images; a baseline images only
            x = [max(v for v in (r["codes_gender"], r["images_gender"]) if v is not None) for r in points]
            ax.plot(x, [r[fidelity_key] for r in points], marker=marker, linestyle="-" if kind == "erase" else ":",
                    label={"erase": "concealer-utkface-128 + eraser (R = 0 … 32)", "base": "concealer-utkface-128"}.get(kind, kind))
            if kind == "erase":
                for r, xi in zip(points, x):
                    ax.annotate(r["point"].removeprefix("erase-cov"), (xi, r[fidelity_key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.axvline(ISSUE_TARGETS["gender"], color="tab:red", lw=0.8, ls="--")
        if fidelity_key == "ssim":
            ax.axhline(ISSUE_TARGETS["ssim"], color="tab:red", lw=0.8, ls="--")
        if fidelity_key == "same_person":
            different = [r["different_person"] for r in rows if r["different_person"] is not None]
            if different:
                ax.axhline(different[0], color="grey", lw=0.8, ls="--")
                ax.annotate("two different people", (0.5, different[0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("gender balanced accuracy, strongest public-model attacker\n(chance 0.5, grey; issue 14's target ≤ 0.55, red)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("concealer privacy-fidelity frontier, UTKFace test split, 128 px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print the sweep's commands")
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--lever", default=ERASER_LEVER)
    p.add_argument("--values", type=float, nargs="+", default=[0, 8, 16, 24, 32])
    p.add_argument("--epochs", type=int, default=2, help="training levers: epochs of fine-tuning per point (the run's total)")
    p.add_argument("--minutes", type=float, default=120, help="training levers: --max-minutes of each training command")
    p.add_argument("--root", required=True)
    p.add_argument("-o", "--out", type=Path, required=True)
    f = sub.add_parser("fidelity", help="write MODEL/fidelity.json for each concealer point")
    f.add_argument("models", type=Path, nargs="+")
    f.add_argument("--root", required=True)
    f.add_argument("-o", "--out", type=Path, required=True, help="folder for one NAME.json per model")
    b = sub.add_parser("baselines", help="audit blur / pixelate / black-box under the public-model threat model")
    b.add_argument("--base", type=Path, required=True)
    b.add_argument("--root", required=True)
    b.add_argument("--max-train", type=int, default=None, help="quick looks only (the headline trains on the whole split)")
    b.add_argument("--max-images", type=int, default=None, help="quick looks only")
    b.add_argument("--only", nargs="+", default=None, help="names such as blur-0.0625 (default: every baseline)")
    b.add_argument("-o", "--out", type=Path, required=True)
    c = sub.add_parser("collect", help="the frontier's table and figure: OUT.md, OUT.png, OUT.json")
    c.add_argument("points", type=Path, nargs="+", help="concealer points (audit/report.json and fidelity.json inside)")
    c.add_argument("--fidelity", type=Path, required=True, help="the fidelity command's -o folder")
    c.add_argument("--baselines", type=Path, default=None)
    c.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "plan":
        for command in plan(args.base, args.lever, args.values, args.epochs, args.out, args.minutes, args.root):
            print(shlex.join(command))
    elif args.command == "fidelity":
        for model in args.models:
            result = fidelity(model, args.root, args.out)
            print(f"[frontier] {model}: SSIM {result['ssim']['mean']:.3f}, PSNR {result['psnr']['mean']:.2f} dB", flush=True)
    elif args.command == "baselines":
        audit_baselines(args.base, args.root, args.out, args.max_train, args.max_images, args.only)
    else:
        rows = collect(args.points, args.fidelity, args.baselines)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        print(markdown(rows))
        figure(rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
