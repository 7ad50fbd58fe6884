"""`conceal apply` on one process vs `--engine ray` with 1 and 2 actors (photos/s, ratios from one run), and the
peak memory of a Ray apply over many small files, for benchmarks/SCALE.md.

    PYTHONPATH=src python benchmarks/ray_apply_bench.py throughput models/masker-lfw-gender --photos 200
    PYTHONPATH=src python benchmarks/ray_apply_bench.py memory models/anonymizer-lfw-leace --files 2000 20000

throughput: generated photos (the astronaut's head planted into 256x192 backgrounds, tests/photo_fixtures.py,
JPEG q90), the whole photo pipeline (detect, align, model, paste, encode). One local Ray is started first
(its start is timed on its own); each engine then runs on the same photos, in the order local, ray x1, ray x2
(``--rounds`` repeats the sequence), timed from the model's loading to the last manifest line (for Ray: the
actors' start and model loads included). The outputs of every run are compared byte for byte.

memory: ``--files`` small face crops (copies of 100 distinct generated 48x48 JPEGs), `conceal apply --no-detect
--engine ray --actors 2` as a child process; every 0.25 s the RSS of the child (the driver) and of every
process under it (Ray's GCS, raylet and the actors) is read from /proc. Peaks: the driver, the largest
single process, and the sum over the tree (shared pages counted once per process: an upper bound).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from photo_fixtures import composite  # noqa: E402

from conceal.apply import ApplyOptions, run_apply  # noqa: E402


def load() -> str:
    return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def throughput(args) -> None:
    from conceal.methods import load_api
    from conceal.ray_apply import run_apply_ray, start_ray

    work = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    photos = work / "photos"
    photos.mkdir()
    for i in range(args.photos):
        image, _ = composite(1, seed=2000 + i, width=256, height=192, sides=(40, 64), tilts=(-20, 20))
        Image.fromarray(image).save(photos / f"{i:05d}.jpg", quality=90)
    print(f"{args.photos} photos in {photos}; {load()}; {os.cpu_count()} CPUs", flush=True)
    t0 = time.perf_counter()
    ray, _ = start_ray(num_cpus=os.cpu_count())
    print(f"local Ray started in {time.perf_counter() - t0:.1f} s; {load()}", flush=True)
    options = ApplyOptions()
    rows = []
    for round_ in range(args.rounds):
        for engine, actors in (("local", None), ("ray", 1), ("ray", 2)):
            out = work / f"out_{engine}{actors or ''}_{round_}"
            t0 = time.perf_counter()
            if engine == "local":
                summary = run_apply(load_api(args.model, fold_batch_norm=True, backend="auto"), [photos], out, options)
            else:
                summary = run_apply_ray(args.model, [photos], out, options, actors=actors)
            seconds = time.perf_counter() - t0
            rows.append((engine, actors, seconds, summary.written, digest(out), load()))
            print(rows[-1], flush=True)
    ray.shutdown()
    local = np.median([s for e, _, s, *_ in rows if e == "local"])
    print(f"\n| engine | photos/s | vs one process | outputs (sha256 of the tree) | {load().split(' ', 2)[0]} after |\n|---|---|---|---|---|")
    for engine, actors, seconds, written, tree, after in rows:
        name = "one process" if engine == "local" else f"Ray, {actors} actor{'s' if actors > 1 else ''}"
        print(f"| {name} | {written / seconds:.2f} | {local / seconds:.2f}x | {tree} | {after.split(' ', 2)[2]} |")
    shutil.rmtree(work)


def tree_rss(root: int) -> tuple[int, int, int]:
    """(RSS of ``root``, the largest RSS under it, the sum over it and every descendant), in bytes."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/statm") as f:
                    rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                pass
    family, frontier = {root}, [root]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier and p not in family]
        family.update(frontier)
    sizes = [rss.get(p, 0) for p in family]
    return rss.get(root, 0), max(sizes), sum(sizes)


def memory(args) -> None:
    from conceal.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(n=100, seed=3, size=48).arrays().images
    encoded = []
    for face in faces:
        buffer = io.BytesIO()
        Image.fromarray(face).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    print(f"{load()}; {os.cpu_count()} CPUs", flush=True)
    rows = []
    for n in args.files:
        work = Path(tempfile.mkdtemp(prefix="ray_rss_"))
        crops = work / "crops"
        for i in range(n):
            folder = crops / f"{i // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:06d}.jpg").write_bytes(encoded[i % len(encoded)])
        command = [sys.executable, "-m", "conceal", "apply", args.model, str(crops), "-o", str(work / "out"), "--no-detect",
                   "--engine", "ray", "--actors", "2", "--quiet"]
        before = load()
        t0 = time.perf_counter()
        logs = [open(work / name, "w+") for name in ("stdout", "stderr")]  # files: a full pipe would stall the child
        child = subprocess.Popen(command, stdout=logs[0], stderr=logs[1], text=True)
        peaks = [0, 0, 0]
        done = threading.Event()
        reader = threading.Thread(target=lambda: (child.wait(), done.set()))
        reader.start()
        while not done.wait(0.25):
            peaks = [max(a, b) for a, b in zip(peaks, tree_rss(child.pid))]
        out, err = ((log.seek(0), log.read())[1] for log in logs)
        seconds = time.perf_counter() - t0
        print(f"{n} files: rc {child.returncode}, {seconds:.0f} s; {out.strip()}; stderr {len(err.splitlines())} lines", flush=True)
        if child.returncode:
            print(err[-3000:])
        rows.append((n, seconds, *(p / 2**20 for p in peaks), before, load()))
        shutil.rmtree(work)
    print("\n| files | wall s | files/s | peak RSS: driver | largest process | sum over the tree | load before -> after |\n|---|---|---|---|---|---|---|")
    for n, seconds, driver, largest, total, before, after in rows:
        print(f"| {n:,} | {seconds:.0f} | {n / seconds:.1f} | {driver:.0f} MiB | {largest:.0f} MiB | {total:.0f} MiB | "
              f"{before.split(' ', 2)[2]} -> {after.split(' ', 2)[2]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("model")
    t.add_argument("--photos", type=int, default=200)
    t.add_argument("--rounds", type=int, default=1)
    m = sub.add_parser("memory")
    m.add_argument("model")
    m.add_argument("--files", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    throughput(args) if args.what == "throughput" else memory(args)


if __name__ == "__main__":
    main()
