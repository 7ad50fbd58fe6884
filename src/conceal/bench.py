"""``conceal bench``: one run measures every number of ``benchmarks/RESULTS.md`` on this machine.

- inference of each model's release (the graph ``conceal export`` writes): batch-1 latency and
  large-batch throughput in torch eager, torch channels_last and onnxruntime; FLOPs per image (torch's
  FlopCounterMode: convolutions and matmuls) and the GFLOP/s achieved, against the fp32 matmul peak
  measured in the same run;
- end-to-end ``conceal apply`` (the CLI's own code path, in process) over a folder of generated
  200×200 JPEGs, against decode -> Gaussian blur -> encode of the same folder (Pillow);
- training throughput and the share of step time spent waiting for data (the training loop's own
  timing, from a short ``fit`` on synthetic faces);
- peak RSS of ``conceal apply`` in a subprocess, at two folder sizes 10× apart: flat means streaming.

Ratios are the headline: absolute numbers depend on the machine and on what else runs on it (the
load average at the start is recorded for that reason).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig, TrainConfig
from .data.images import iter_image_files, read_image, write_image
from .methods import METHODS, Method, build_method

BLUR_SIGMA = 8.0  # px on a 200 px photo: a face blurred past recognition


@dataclass
class Counts:
    """How much each measurement does; ``QUICK`` shrinks everything so a test runs it in seconds."""

    latency_iters: int = 50  # batch-1 calls timed (median)
    batch: int = 256  # throughput batch
    batch_iters: int = 5  # throughput calls timed (median)
    matmul_size: int = 2048  # n of the n×n fp32 matmul that measures the peak
    matmul_iters: int = 10  # matmuls timed (best)
    apply_files: int = 2000  # generated JPEGs for the end-to-end comparison
    rss_files: int = 20000  # files of the larger RSS run (the smaller has a tenth)
    train_steps: int = 20
    train_batch: int = 64


FULL = Counts()
QUICK = Counts(latency_iters=3, batch=8, batch_iters=2, matmul_size=256, matmul_iters=3, apply_files=50, rss_files=200,
               train_steps=3, train_batch=8)


@dataclass
class BenchConfig:
    models: list[str] = field(default_factory=list)  # model directories; empty: every models/*/ with a model.json
    models_root: str = "models"
    quick: bool = False
    threads: int | None = None  # torch (and onnxruntime) intra-op threads; None: torch's default
    photo_side: int = 200  # side of the generated JPEGs
    fresh_size: int = 64  # image size of the fresh default-config models used when no model is found
    command: str = "conceal bench"  # recorded in the report

    @property
    def counts(self) -> Counts:
        return QUICK if self.quick else FULL


@dataclass
class BenchModel:
    label: str
    directory: Path  # a model directory `conceal apply` can open (fresh models are saved to the work folder)
    method: Method


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "torch": torch.__version__,
        "torch threads": f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "OS": platform.platform(),
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    if hasattr(os, "getloadavg"):
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    return info


def matmul_peak(counts: Counts) -> float:
    """Best fp32 GFLOP/s of an n×n torch.mm: the ceiling the models' achieved GFLOP/s is compared with."""
    n = counts.matmul_size
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up: thread pool, caches
    best = math.inf
    for _ in range(counts.matmul_iters):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


# --- the models ----------------------------------------------------------------------------------


def find_models(cfg: BenchConfig, work: Path) -> tuple[list[BenchModel], str]:
    """The shipped (or given) models, else a fresh default-config model of each method; and a note saying which."""
    from .train.checkpoint import load_model, write_model_files

    dirs = [Path(m) for m in cfg.models]
    if not dirs and Path(cfg.models_root).is_dir():
        dirs = sorted(p for p in Path(cfg.models_root).iterdir() if (p / "model.json").is_file())
    if dirs:
        return [BenchModel(d.name, d, load_model(d)) for d in dirs], f"models: {', '.join(str(d) for d in dirs)}"
    from .data.synthetic import SYNTHETIC_SCHEMA

    models = []
    for name in METHODS:
        method = build_method(name, METHODS[name].Config(), SYNTHETIC_SCHEMA, cfg.fresh_size).eval()
        directory = work / "fresh" / name
        directory.mkdir(parents=True)
        run_cfg = RunConfig(method=name, model=method.cfg)
        run_cfg.data.size = cfg.fresh_size
        write_model_files(directory, method, run_cfg)
        models.append(BenchModel(f"{name} (fresh)", directory, method))
    note = (f"no models found under {cfg.models_root}/: each method is a **freshly initialised default-config model** "
            f"({cfg.fresh_size} px, synthetic-face labels); its speed is a trained model's, its outputs are not")
    return models, note


# --- inference -----------------------------------------------------------------------------------


def _median_seconds(fn, iters: int) -> float:
    fn()  # warm-up: first-call allocations, lazy initialisation
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops_per_image(method: Method) -> float:
    """Forward FLOPs of one image through the release graph (torch counts convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .export import example_inputs, graph_of, input_names

    graph, inputs = graph_of(method), example_inputs(method, 1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        graph(*(inputs[n] for n in input_names(method)))
    return float(counter.get_total_flops())


def bench_inference(model: BenchModel, counts: Counts, work: Path) -> dict:
    """Seconds per batch-1 call and images/s at ``counts.batch``, per backend (eager, channels_last, onnxruntime)."""
    from .export import example_inputs, export_onnx, graph_of, input_names, onnx_session

    method, names = model.method, input_names(model.method)
    eager = graph_of(method)
    channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    session = onnx_session(export_onnx(method, work / "onnx" / f"{model.directory.name}.onnx"))

    def runners(batch: int) -> dict:
        inputs = example_inputs(method, batch)
        args = [inputs[n] for n in names]
        cl_args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]
        feed = {n: inputs[n].numpy() for n in names}
        return {
            "eager": lambda: eager(*args),
            "channels_last": lambda: channels_last(*cl_args),
            "onnxruntime": lambda: session.run(None, feed),
        }

    result = {"latency_s": {}, "throughput": {}, "batch": counts.batch}
    with torch.inference_mode():
        for backend, fn in runners(1).items():
            result["latency_s"][backend] = _median_seconds(fn, counts.latency_iters)
        for backend, fn in runners(counts.batch).items():
            result["throughput"][backend] = counts.batch / _median_seconds(fn, counts.batch_iters)
    result["flops"] = flops_per_image(method)
    return result


# --- end-to-end apply vs blur ----------------------------------------------------------------------


def make_photos(folder: Path, n: int, side: int, distinct: int = 64) -> Path:
    """``n`` JPEG faces of ``side``×``side`` px in ``folder`` (``distinct`` rendered faces, written round-robin)."""
    from PIL import Image

    from .data.synthetic import SyntheticFaces

    faces = SyntheticFaces(n=min(n, distinct), seed=0, size=side).arrays().images  # (distinct, side, side, 3)
    blobs = []
    for face in faces:
        buffer = io.BytesIO()
        Image.fromarray(face).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"face{i:05d}.jpg").write_bytes(blobs[i % len(blobs)])
    return folder


def time_apply(model_dir: Path, photos: Path, out: Path) -> float:
    """Seconds of `conceal apply MODEL PHOTOS -o OUT`, run in process through the CLI's own entry point."""
    from .cli import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        rc = main(["apply", str(model_dir), str(photos), "-o", str(out), "--quiet"])
    if rc != 0:
        raise RuntimeError(f"conceal apply failed (exit {rc}): {printed.getvalue().strip()}")
    return time.perf_counter() - t0


def time_blur(photos: Path, out: Path, sigma: float = BLUR_SIGMA) -> float:
    """Seconds to decode, Gaussian-blur (Pillow) and re-encode (metadata-free JPEG) every photo."""
    from PIL import Image, ImageFilter

    files, _ = iter_image_files([photos])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for f in files:
        blurred = Image.fromarray(read_image(f)).filter(ImageFilter.GaussianBlur(radius=sigma))
        write_image(out / f.name, np.asarray(blurred), protect=files)
    return time.perf_counter() - t0


# --- training --------------------------------------------------------------------------------------


def bench_training(model: BenchModel, counts: Counts, work: Path, threads: int | None) -> dict:
    """Images/s and data-wait share of a short ``fit`` of the model's method and config on synthetic faces."""
    from .data.synthetic import SyntheticFaces
    from .train import fit

    size, name = model.method.image_size, model.method.name
    batch, steps = counts.train_batch, counts.train_steps
    # The train split is ~80%: enough faces that the steps end mid-epoch (no validation pass is timed).
    faces = SyntheticFaces(n=math.ceil((steps + 2) * batch / 0.75), seed=0, size=size).arrays()
    method = build_method(name, copy.deepcopy(model.method.cfg), faces.schema, size)
    run_cfg = RunConfig(method=name, train=TrainConfig(epochs=1, batch_size=batch, progress=False, device="cpu", threads=threads))
    run_cfg.data.size, run_cfg.model = size, method.cfg
    state = fit(method, faces.subset("train"), faces.subset("val"), run_cfg, work / "train" / model.directory.name,
                stop_after_steps=steps, log=lambda *_: None)
    timing = state["timing"]
    return {
        "batch": batch,
        "steps": steps,
        "images_per_s": timing["images"] / timing["step_seconds"],
        "data_wait": timing["data_seconds"] / timing["step_seconds"],
    }


# --- memory ----------------------------------------------------------------------------------------

# Runs the command given after it and prints its peak RSS: a fresh parent per measurement, so the
# RUSAGE_CHILDREN maximum is this one command's and not that of every child the bench ever had.
_RSS_PROBE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss_mib(model_dir: Path, photos: Path, out: Path) -> float:
    """Peak RSS (MiB) of `python -m conceal.cli apply MODEL PHOTOS -o OUT` in a subprocess."""
    command = [sys.executable, "-m", "conceal.cli", "apply", str(model_dir), str(photos), "-o", str(out), "--quiet"]
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"conceal apply failed in the RSS run: {done.stderr.strip().splitlines()[-1:]}")
    kib = int(done.stdout.split()[-1])
    return kib / 1024 / (1024 if sys.platform == "darwin" else 1)  # ru_maxrss: KiB on Linux, bytes on macOS


# --- the report ------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|", *("| " + " | ".join(r) + " |" for r in rows), ""]


def run_benchmarks(cfg: BenchConfig) -> str:
    """Measure everything in one run and return the markdown report, top to bottom as it reads."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    counts = cfg.counts
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="conceal-bench-") as tmp:
        work = Path(tmp)
        started = time.strftime("%Y-%m-%d %H:%M %Z")
        host = machine()
        log("fp32 matmul peak")
        peak = matmul_peak(counts)
        models, models_note = find_models(cfg, work)

        inference = {}
        for m in models:
            log(f"inference of {m.label}")
            inference[m.label] = bench_inference(m, counts, work)

        log(f"end-to-end apply vs blur over {counts.apply_files} JPEGs")
        photos = make_photos(work / "photos", counts.apply_files, cfg.photo_side)
        blur_s = time_blur(photos, work / "blurred")
        apply_s = {m.label: time_apply(m.directory, photos, work / "applied" / m.directory.name) for m in models}

        training = {}
        for m in models:
            log(f"training steps of {m.label}")
            training[m.label] = bench_training(m, counts, work, cfg.threads)

        log(f"peak RSS of conceal apply over {counts.rss_files // 10} and {counts.rss_files} files")
        small = make_photos(work / "rss_small", counts.rss_files // 10, cfg.photo_side)
        large = make_photos(work / "rss_large", counts.rss_files, cfg.photo_side)
        rss_model = models[0]
        rss = {n: peak_rss_mib(rss_model.directory, folder, work / f"rss_out_{n}")
               for n, folder in ((counts.rss_files // 10, small), (counts.rss_files, large))}
    minutes = (time.perf_counter() - t_start) / 60

    n_small, n_large = counts.rss_files // 10, counts.rss_files
    lines = [
        "# conceal benchmarks",
        "",
        f"Measured by `{cfg.command}` on {started} (the whole run took {minutes:.1f} min){' (**--quick**: counts shrunk, numbers are a smoke test only)' if cfg.quick else ''}.",
        f"{models_note}.",
        "",
        "## Headline ratios",
        "",
        f"Throughput at batch {counts.batch}; efficiency = achieved GFLOP/s of the best backend / this machine's fp32 matmul peak "
        f"({peak:.1f} GFLOP/s); apply / blur = time of `conceal apply` / time of decode → blur → encode over the same "
        f"{counts.apply_files} photos (> 1: apply is slower); RSS ×{n_large // n_small} files = peak RSS over {n_large} files / over {n_small}.",
        "",
    ]
    rows = []
    for m in models:
        inf, tr = inference[m.label], training[m.label]
        tp = inf["throughput"]
        best = max(tp.values()) * inf["flops"] / 1e9
        rows.append([m.label, f"{tp['onnxruntime'] / tp['eager']:.2f}×", f"{tp['channels_last'] / tp['eager']:.2f}×",
                     f"{100 * best / peak:.1f}%", f"{apply_s[m.label] / blur_s:.2f}", f"{100 * tr['data_wait']:.1f}%",
                     f"{rss[n_large] / rss[n_small]:.2f}" if m is rss_model else "—"])
    lines += _table(["model", "onnxruntime / eager", "channels_last / eager", "efficiency (of peak)", "apply / blur",
                     "training data wait", f"RSS ×{n_large // n_small} files"], rows)

    lines += ["## Machine", ""]
    lines += _table(["", ""], [[k, v] for k, v in host.items()] + [["fp32 matmul peak", f"{peak:.1f} GFLOP/s ({counts.matmul_size}² torch.mm, best of {counts.matmul_iters})"]])

    lines += ["## Inference", "",
              "The release graph `conceal export` writes (concealer: encode μ + decode with the attributes; masker: the "
              "masked image; anonymizer: the reconstruction), on float32 input; no image decoding or writing. Eager: "
              "NCHW tensors and weights; channels_last: NHWC, as `conceal apply` runs it. "
              f"Latency: median of {counts.latency_iters} batch-1 calls; throughput: median of {counts.batch_iters} "
              f"batch-{counts.batch} calls. FLOPs: convolutions and matmuls (torch FlopCounterMode), 2 per multiply-add.", ""]
    rows = []
    for m in models:
        inf = inference[m.label]
        lat, tp = inf["latency_s"], inf["throughput"]
        gflops = {b: tp[b] * inf["flops"] / 1e9 for b in tp}
        rows.append([m.label, f"{inf['flops'] / 1e6:.1f}",
                     *(_ms(lat[b]) for b in ("eager", "channels_last", "onnxruntime")),
                     *(f"{tp[b]:.0f}" for b in ("eager", "channels_last", "onnxruntime")),
                     *(f"{gflops[b]:.1f} ({100 * gflops[b] / peak:.1f}%)" for b in ("eager", "channels_last", "onnxruntime"))])
    lines += _table(["model", "MFLOPs / image", "batch-1 ms eager", "channels_last", "onnxruntime",
                     f"batch-{counts.batch} img/s eager", "channels_last", "onnxruntime",
                     "GFLOP/s (of peak) eager", "channels_last", "onnxruntime"], rows)

    lines += ["## End-to-end apply", "",
              f"{counts.apply_files} generated {cfg.photo_side}×{cfg.photo_side} JPEG faces. `conceal apply` (in process, "
              "the CLI's code path: load, decode, centre crop + resize, model, PNG writes) against Pillow decode → "
              f"Gaussian blur (σ = {BLUR_SIGMA:g} px) → metadata-free JPEG write of the same files, one after the other in this run.", ""]
    rows = [["blur (Pillow)", f"{blur_s:.2f}", f"{counts.apply_files / blur_s:.0f}", "1.00"]]
    rows += [[f"conceal apply {m.label}", f"{apply_s[m.label]:.2f}", f"{counts.apply_files / apply_s[m.label]:.0f}",
              f"{apply_s[m.label] / blur_s:.2f}"] for m in models]
    lines += _table(["pipeline", "seconds", "images/s", "time / blur"], rows)

    lines += ["## Training", "",
              f"`fit` (the one training loop) of each model's method and config on synthetic faces at its size: "
              f"{counts.train_steps} steps of batch {counts.train_batch}, timed by the loop itself (data wait = batch "
              "assembly / whole step).", ""]
    lines += _table(["model", "images/s", "data wait"],
                    [[m.label, f"{training[m.label]['images_per_s']:.0f}", f"{100 * training[m.label]['data_wait']:.1f}%"] for m in models])

    lines += ["## Memory", "",
              f"Peak RSS of `conceal apply` ({rss_model.label}) in a subprocess (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`). "
              "Files are streamed in batches, so the peak should not grow with the number of files.", ""]
    lines += _table(["files", "peak RSS (MiB)"], [[str(n), f"{v:.0f}"] for n, v in rss.items()])
    return "\n".join(lines)
