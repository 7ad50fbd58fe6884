"""What the benchmark scripts share: train one point of a sweep (or continue it), then audit it (resumable);
the options of the scripts that compare audit reports; the command line a report quotes."""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path


def sweep_arguments(description: str, epochs: int, runs: str, init_from: str, out: str, root: str) -> argparse.ArgumentParser:
    """The options every sweep script takes (its defaults): --epochs, --runs, --from, --root, -o."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs of each point")
    p.add_argument("--runs", default=runs, help="directory of the points' runs")
    p.add_argument("--from", dest="init_from", default=init_from, help="model whose weights every point starts from")
    p.add_argument("--root", default=root, help="dataset root")
    p.add_argument("-o", "--out", default=out, help="OUT.md and OUT.png are written")
    p.add_argument("--audit-options", default="", metavar="OPTIONS",
                   help="more `conceal audit` options for every point, e.g. '--max-images 1000' (default: none)")
    return p


def audit(model_dir: Path, out_dir: Path, dataset: str, root: str, options: str = "") -> Path:
    """``conceal audit MODEL -o OUT`` (with the sweep's extra options) unless OUT/report.json exists; its path."""
    report = out_dir / "report.json"
    if not report.exists():
        run(["conceal", "audit", str(model_dir), "--dataset", dataset, "--root", root, "-o", str(out_dir)] + shlex.split(options))
    return report


def run(cmd: list[str]) -> None:
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def train_then_audit(run_dir: Path, train: list[str], init_from: str, epochs: int, dataset: str, root: str,
                     audit_options: str = "") -> Path:
    """``conceal train ... --epochs E -o run_dir`` starting from ``init_from``'s weights (or ``--resume`` of an
    interrupted run), then ``conceal audit``; a point whose audit/report.json exists is not redone. Returns
    the report's path."""
    report = run_dir / "audit" / "report.json"
    if report.exists():
        return report
    done = run_dir / "checkpoint" / "model.json"
    if not done.exists():
        run(train + ["--epochs", str(epochs), "-o", str(run_dir), "--init-from", init_from])
    elif json.loads(done.read_text()).get("epoch", 0) < epochs:
        run(train + ["--epochs", str(epochs), "-o", str(run_dir), "--resume"])
    return audit(run_dir / "checkpoint", run_dir / "audit", dataset, root, audit_options)


def write_sweep_report(out: Path, title: str, intro: str, body: str) -> None:
    """OUT.md: the title, "Produced by `<this command>`." + ``intro``, then ``body`` (the table, figure links)."""
    command = invocation(sys.argv[0])
    out.with_suffix(".md").write_text("\n".join([f"# {title}", "", f"Produced by `{command}`. {intro}", "", body]))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def compare_arguments(description: str, out: str, argv=None) -> argparse.Namespace:
    """Parsed options of a script comparing audits: REPORT_JSON... (each must exist) and -o OUT (a stem)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("reports", nargs="+", metavar="REPORT_JSON", help="report.json of a `conceal audit`")
    p.add_argument("-o", "--out", default=out, help="output stem: OUT.md (and the script's figures beside it)")
    args = p.parse_args(argv)
    missing = [r for r in args.reports if not Path(r).is_file()]
    if missing:
        p.error(f"no such report.json: {', '.join(missing)}")
    out_path = Path(args.out)
    args.out = out_path.with_suffix("") if out_path.suffix == ".md" else out_path
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return args


def invocation(script: str, argv=None) -> str:
    """The command line that ran ``script`` (``argv``: the arguments when called from Python), for a report."""
    return shlex.join([Path(sys.executable).name, *(sys.argv if argv is None else [script, *argv])])
