"""Loopback load test of `conceal serve`, side by side with `conceal apply` on the same photos -> benchmarks/SERVICE.md.

    python benchmarks/service_load.py                       # 1, 4, 16 clients x 30 s; LFW photos from ../shared
    python benchmarks/service_load.py --duration 10 --photos 32 -o /tmp/SERVICE.md   # a shorter run

Starts `conceal serve MODEL` on 127.0.0.1 (a free port; nothing else is ever contacted), then for each client
count posts the photos round-robin for --duration seconds (at most --max-requests per level), every client on
its own connection, honouring Retry-After on a 503. Reports requests/s, p50/p95/p99 latency of the answered
requests, and every status that is not 200. Then times `conceal apply` on the same photos twice (N and 4N
inputs; --apply-factor K), so its per-photo rate excludes start-up: rate = (K - 1) N / (t(KN) - t(N)). Server and CLI run with the
same thread settings (--threads, default 1: the machine is shared).
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


def start_server(model: str, port: int, workers: int, queue: int, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "conceal.cli", "serve", model, "--port", str(port), "--workers", str(workers), "--queue", str(queue)]
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


def time_apply(model: str, files: list[Path], env: dict) -> float:
    out = Path(tempfile.mkdtemp(prefix="conceal-bench-out-"))
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "conceal.cli", "apply", model, *map(str, files), "-o", str(out), "--quiet"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "concealer-utkface-64"))
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per client count")
    p.add_argument("--max-requests", type=int, default=5000, help="at most this many requests per client count")
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--photo-dir", type=Path, default=LFW, help="LFW's image folder (default: ../shared/datasets/lfw/lfw)")
    p.add_argument("--apply-factor", type=int, default=8, help="conceal apply runs on N and on K*N photos")
    p.add_argument("--no-apply", action="store_true", help="skip the conceal apply comparison")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queue", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the server and of conceal apply")
    p.add_argument("--no-detect", action="store_true", help="post detect=false (the photo is one centred face)")
    p.add_argument("-o", "--out", default=str(REPO / "benchmarks" / "SERVICE.md"))
    args = p.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}
    all_files = pick_photos(args.apply_factor * args.photos, args.photo_dir)  # apply reads each file once: KN distinct photos
    files = all_files[: args.photos]
    photos = [f.read_bytes() for f in files]
    load_before = os.getloadavg()
    port = free_port()
    server = start_server(args.model, port, args.workers, args.queue, env)
    try:
        url = f"http://127.0.0.1:{port}"
        for photo in photos[:2]:  # warm-up, not counted
            httpx.post(f"{url}/v1/apply", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=120)
        levels = [load_level(url, photos, c, args.duration, args.max_requests, not args.no_detect) for c in args.clients]
    finally:
        server.terminate()
        server.wait(30)
    t1, t4 = (float("nan"), float("nan")) if args.no_apply else (time_apply(args.model, files, env), time_apply(args.model, all_files, env))
    load_after = os.getloadavg()
    report = format_report(args, files, all_files, levels, t1, t4, load_before, load_after)
    Path(args.out).write_text(report)
    print(report)


def format_report(args, files, all_files, levels, t1, t4, load_before, load_after) -> str:
    apply_rate = (len(all_files) - len(files)) / (t4 - t1) if t4 > t1 else float("nan")
    best = max(levels, key=lambda level: level["rps"])
    source = f"LFW photos (250x250 JPEG, read in place from {args.photo_dir})" if args.photo_dir.is_dir() else "generated 250x250 astronaut JPEGs"
    command = " ".join(["python benchmarks/service_load.py", *sys.argv[1:]])
    lines = [
        "# `conceal serve` under load (loopback)",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Model `{Path(args.model).name}`, `--workers {args.workers} --queue {args.queue}`, {args.threads} thread(s) "
        f"(OMP_NUM_THREADS) for the server and for `conceal apply`; detect={'false' if args.no_detect else 'true'}; "
        f"{len(files)} {source} posted round-robin; {args.duration:g} s per client count (at most {args.max_requests} requests).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average {load_before[0]:.1f} at start, "
        f"{load_after[0]:.1f} at end (the machine is shared: absolute numbers hold for this load only; the ratio is side by side).",
        "",
        "| clients | answered 200 | requests/s | p50 ms | p95 ms | p99 ms | other statuses |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for level in levels:
        others = ", ".join(f"{k}: {v}" for k, v in sorted(level["statuses"].items(), key=str) if k != 200) or "none"
        pct = level["pct"]
        lines.append(f"| {level['clients']} | {level['ok']} | {level['rps']:.2f} | {pct[50]:.0f} | {pct[95]:.0f} | {pct[99]:.0f} | {others} |")
    errors = sum(v for level in levels for k, v in level["statuses"].items() if k not in (200, 503))
    lines += [
        "",
        f"Errors other than 503: {errors}. A 503 (busy, with Retry-After) is the designed answer once {args.workers} photo(s) "
        f"are being concealed and {args.queue} more wait; clients here honour Retry-After.",
    ]
    if args.no_apply:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"`conceal apply` on the same kind of photos: {len(files)} photos in {t1:.1f} s, {len(all_files)} in {t4:.1f} s (wall, "
        f"with start-up and model loading), so {apply_rate:.2f} photos/s once running.",
        f"Service at its best client count ({best['clients']}): {best['rps']:.2f} requests/s = "
        f"**{best['rps'] / apply_rate:.2f}x** `conceal apply`'s rate (the issue asks for at least 0.7x).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
