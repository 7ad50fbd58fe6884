"""Loopback load test of `conceal serve`, side by side with `conceal apply` on the same photos -> benchmarks/SERVICE.md.

    python benchmarks/service_load.py                       # both modes, 1, 4, 16 clients x 30 s; LFW photos from ../shared
    python benchmarks/service_load.py --duration 10 --photos 16 --modes no-detect -o /tmp/SERVICE.md   # a shorter run

Starts `conceal serve MODEL` on 127.0.0.1 (a free port; nothing else is ever contacted). For each mode
(detect=true, the default: find the faces, conceal, paste back; detect=false: the photo is one centred face),
times `conceal apply` on the same photos, then for each client count posts the photos round-robin for
--duration seconds (at most --max-requests per level), every client on its own connection, honouring
Retry-After on a 503, then times `conceal apply` again: the machine is shared, so the service is compared
with the mean of the two apply rates around it. Reports requests/s, p50/p95/p99 latency of the answered
requests, and every status that is not 200.

`conceal apply`'s rate excludes its start-up: one run over --apply-photos photos, its manifest watched as it
grows; rate = photos recorded between the first and the last manifest write / the time between them. Server and
CLI run with the same thread settings (--threads, default 1: the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "datasets" / "lfw" / "lfw"


def uptime() -> str:
    """`uptime`'s line (load averages over 1, 5, 15 minutes): the machine is shared, so every report says how busy it was."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_photos(n: int, folder: Path) -> list[Path]:
    """The first n LFW photos (250x250, one person each), read in place; else generated copies of the astronaut."""
    if folder.is_dir():
        return sorted(folder.glob("*/*.jpg"))[:n]
    from PIL import Image
    from skimage import data

    folder = Path(tempfile.mkdtemp(prefix="conceal-bench-photos-"))
    for i in range(n):
        Image.fromarray(data.astronaut()).resize((250, 250)).rotate(i % 7).save(folder / f"astronaut{i}.jpg")
    return sorted(folder.glob("*.jpg"))


def start_server(model: str, port: int, workers: int | None, queue: int, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "conceal.cli", "serve", model, "--port", str(port), "--queue", str(queue),
               *(["--workers", str(workers)] if workers else [])]
    log = tempfile.NamedTemporaryFile("w+", prefix="conceal-serve-", suffix=".log", delete=False)  # a pipe would fill and block it
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"conceal serve exited: {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("conceal serve did not start within 180 s")


def load_level(url: str, photos: list[bytes], clients: int, duration: float, max_requests: int, detect: bool) -> dict:
    """`clients` threads posting back to back until the deadline or the request budget; latencies of 200s."""
    deadline = time.monotonic() + duration
    lock, budget = threading.Lock(), [max_requests]
    latencies, statuses = [], {}

    def client(index: int) -> None:
        with httpx.Client(timeout=120) as session:
            i = index
            while time.monotonic() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                started = time.perf_counter()
                try:
                    response = session.post(f"{url}/v1/apply", files={"image": ("p.jpg", photos[i % len(photos)], "image/jpeg")},
                                            data={"detect": "true" if detect else "false"})
                    status = response.status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(elapsed)
                if status == 503:
                    time.sleep(float(response.headers.get("Retry-After", 1)))
                i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    ms = np.array(latencies) * 1000
    pct = {p: float(np.percentile(ms, p)) if len(ms) else float("nan") for p in (50, 95, 99)}
    return {"clients": clients, "ok": len(latencies), "wall_s": wall, "rps": len(latencies) / wall, "pct": pct, "statuses": statuses}


def apply_rate(model: str, files: list[Path], env: dict, detect: bool) -> dict:
    """Photos/s of one `conceal apply` run over ``files`` once it is running (``--no-detect`` when not ``detect``):
    the manifest's lines over time, from its first write to its last, so start-up and model loading are left out."""
    out = Path(tempfile.mkdtemp(prefix="conceal-bench-out-"))
    manifest = out / "manifest.jsonl"
    command = [sys.executable, "-m", "conceal.cli", "apply", model, *map(str, files), "-o", str(out), "--quiet",
               *([] if detect else ["--no-detect"])]
    try:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        writes: list[tuple[float, int]] = []  # (time, manifest lines) at each change
        while True:
            done = process.poll() is not None
            lines = manifest.read_bytes().count(b"\n") if manifest.is_file() else 0
            if lines and (not writes or lines != writes[-1][1]):
                writes.append((time.perf_counter(), lines))
            if done:
                break
            time.sleep(0.02)
        if process.returncode != 0:
            raise SystemExit(f"conceal apply failed: {process.stderr.read()[-2000:]}")
        (t0, n0), (t1, n1) = writes[0], writes[-1]
        return {"rate": (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan"), "photos": len(files),
                "measured": n1 - n0, "wall_s": time.perf_counter() - started}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "concealer-utkface-64"))
    p.add_argument("--modes", nargs="+", choices=["detect", "no-detect"], default=["detect", "no-detect"])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per client count")
    p.add_argument("--max-requests", type=int, default=5000, help="at most this many requests per client count")
    p.add_argument("--photos", type=int, default=32, help="photos the clients post, round-robin")
    p.add_argument("--photo-dir", type=Path, default=LFW, help="LFW's image folder (default: ../shared/datasets/lfw/lfw)")
    p.add_argument("--apply-photos", type=int, nargs=2, default=[32, 256], metavar=("DETECT", "NO_DETECT"),
                   help="photos per `conceal apply` run in each mode (the first ones of the same folder)")
    p.add_argument("--no-apply", action="store_true", help="skip the conceal apply comparison")
    p.add_argument("--workers", type=int, default=None, help="the server's --workers (default: its own)")
    p.add_argument("--queue", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the server and of conceal apply")
    p.add_argument("-o", "--out", default=str(REPO / "benchmarks" / "SERVICE.md"))
    args = p.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}
    all_files = pick_photos(max(args.photos, *args.apply_photos), args.photo_dir)
    files = all_files[: args.photos]
    photos = [f.read_bytes() for f in files]
    load_before = uptime()
    port = free_port()
    server = start_server(args.model, port, args.workers, args.queue, env)
    url = f"http://127.0.0.1:{port}"
    runs = []
    try:
        for mode in args.modes:
            detect = mode == "detect"
            apply_files = all_files[: args.apply_photos[0 if detect else 1]]
            applies = [] if args.no_apply else [apply_rate(args.model, apply_files, env, detect)]
            for photo in photos[:2]:  # warm-up, not counted
                httpx.post(f"{url}/v1/apply", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"detect": str(detect).lower()}, timeout=120)
            levels = [load_level(url, photos, c, args.duration, args.max_requests, detect) for c in args.clients]
            if not args.no_apply:
                applies.append(apply_rate(args.model, apply_files, env, detect))
            runs.append({"mode": mode, "levels": levels, "applies": applies, "uptime": uptime()})
    finally:
        server.terminate()
        server.wait(30)
    report = format_report(args, files, runs, load_before)
    Path(args.out).write_text(report)
    print(report)


def format_report(args, files, runs, load_before) -> str:
    source = f"LFW photos (250x250 JPEG, read in place from {args.photo_dir})" if args.photo_dir.is_dir() else "generated 250x250 astronaut JPEGs"
    command = " ".join(["python benchmarks/service_load.py", *sys.argv[1:]])
    workers = f"--workers {args.workers}" if args.workers else "its default --workers"
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Model `{Path(args.model).name}`, server with {workers} and `--queue {args.queue}`, {args.threads} thread(s) "
        f"(OMP_NUM_THREADS) for the server and for `conceal apply`; the clients post {len(files)} {source} round-robin, "
        f"{args.duration:g} s per client count (at most {args.max_requests} requests).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs "
        f"(absolute numbers hold for this load only; the ratios are side by side). `uptime` at start: `{load_before}`.",
    ]
    for run in runs:
        detect = run["mode"] == "detect"
        lines += ["", f"### detect={'true' if detect else 'false'}", "",
                  "| clients | answered 200 | requests/s | p50 ms | p95 ms | p99 ms | other statuses |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for level in run["levels"]:
            others = ", ".join(f"{k}: {v}" for k, v in sorted(level["statuses"].items(), key=str) if k != 200) or "none"
            pct = level["pct"]
            lines.append(f"| {level['clients']} | {level['ok']} | {level['rps']:.2f} | {pct[50]:.0f} | {pct[95]:.0f} | {pct[99]:.0f} | {others} |")
        errors = sum(v for level in run["levels"] for k, v in level["statuses"].items() if k not in (200, 503))
        lines += ["", f"Errors other than 503: {errors}. `uptime` after this mode: `{run['uptime']}`."]
        if not run["applies"]:
            continue
        rates = [a["rate"] for a in run["applies"]]
        apply_mean = sum(rates) / len(rates)
        best = max(run["levels"], key=lambda level: level["rps"])
        what = "finds the faces, conceals them, writes full-size PNGs" if detect else \
            "`--no-detect`: conceals the centre crops in batches of 64, writes the model's 64x64 crops (the service pastes each back into the photo)"
        lines += [
            f"`conceal apply` on the first {run['applies'][0]['photos']} of the same photos ({what}): "
            + " and ".join(f"{a['rate']:.2f} photos/s ({a['measured']} photos timed, {a['wall_s']:.0f} s wall)" for a in run["applies"])
            + f" before and after the service's levels; mean {apply_mean:.2f}.",
            f"Service at its best client count ({best['clients']}): {best['rps']:.2f} requests/s = "
            f"**{best['rps'] / apply_mean:.2f}x** `conceal apply`'s rate (the issue asks for at least 0.7x); "
            + ", ".join(f"{level['clients']} client{'s' if level['clients'] > 1 else ''}: {level['rps'] / apply_mean:.2f}x" for level in run["levels"]) + ".",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
