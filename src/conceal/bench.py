"""``conceal bench``: one run measures every number of ``benchmarks/RESULTS.md`` on this machine.

- inference of each model's release (the graph ``conceal export`` writes): batch-1 latency and
  large-batch throughput in torch eager, torch channels_last, torch channels_last with batch norms folded
  into the convs (what ``conceal apply`` runs) and onnxruntime; FLOPs per image (torch's
  FlopCounterMode: convolutions and matmuls) and the GFLOP/s achieved, against the fp32 matmul peak
  measured in the same run, with the same threads, right before and right after the model
  measurements (several sizes, several sustained repeats each; a run whose two peaks differ by more
  than 10% is flagged as noisy);
- where the inference time goes: torch.profiler over large-batch forwards of chosen methods' models
  (default: the concealer), per torch backend: top ops by self CPU time, and time per layer kind;
- end-to-end ``conceal apply`` (the CLI's own code path, in process) over a folder of generated
  200×200 JPEGs, against decode -> Gaussian blur -> encode of the same folder (Pillow);
- training throughput and the share of step time spent waiting for data (the training loop's own
  timing, from a short ``fit`` on synthetic faces);
- peak RSS of ``conceal apply`` in a subprocess, at two folder sizes 10× apart: flat means streaming;
- whole photos against deface: ``conceal apply`` (detect, align, the concealer, paste back, PNG) and
  ``deface`` (detects with the same CenterFace model and blurs) as subprocesses on the same ``--photos``
  generated photos (``faces.composites``: the astronaut's head planted 1-4 times into skimage's bundled
  backgrounds), back to back in this run: photos/s of each and their ratio.

Ratios are the headline: absolute numbers depend on the machine and on what else runs on it (the
load average at the start is recorded for that reason).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
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
NOISY_PEAK = 0.10  # relative difference of the matmul peaks before and after the models that flags a noisy run
PROFILE_TOP = 10  # ops listed per profiled backend
TORCH_BACKENDS = ("eager", "channels_last", "folded")
BACKENDS = (*TORCH_BACKENDS, "onnxruntime")
BACKEND_NAMES = {"eager": "eager", "channels_last": "channels_last", "folded": "channels_last + folded", "onnxruntime": "onnxruntime (folded)"}


def apply_backend(method: Method) -> str:
    """The backend of this table `conceal apply` runs the method on (``Method.fastest_backend``; onnxruntime installed)."""
    return "onnxruntime" if method.fastest_backend == "onnxruntime" else "folded"


@dataclass
class Counts:
    """How much each measurement does; ``QUICK`` shrinks everything so a test runs it in seconds."""

    latency_iters: int = 50  # batch-1 calls timed (median)
    batch: int = 256  # throughput batch
    batch_iters: int = 5  # throughput calls timed (median)
    matmul_sizes: tuple[int, ...] = (1024, 2048, 3072)  # n of the n×n fp32 matmuls that measure the peak
    matmul_repeats: int = 7  # timed repeats per size (median and max reported)
    matmul_min_seconds: float = 0.25  # each repeat runs back-to-back matmuls for at least this long: a sustained rate
    paired_matmul: int = 2048  # n of the matmul burst timed right before and after each throughput call (paired efficiency)
    profile_iters: int = 3  # profiled forwards per backend (after a warm-up one)
    apply_files: int = 2000  # generated JPEGs for the end-to-end comparison
    rss_files: int = 20000  # files of the larger RSS run (the smaller has a tenth)
    train_steps: int = 20
    train_batch: int = 64
    photos: int = 20  # generated photos for conceal apply against deface (`--photos`; the measurement uses 200)
    photo_rounds: int = 1  # passes of each tool over them (order alternated per round; the best pass is reported)


FULL = Counts()
QUICK = Counts(latency_iters=3, batch=8, batch_iters=2, matmul_sizes=(64, 128), matmul_repeats=3, matmul_min_seconds=0.002, paired_matmul=128,
               profile_iters=1, apply_files=50, rss_files=200, train_steps=3, train_batch=8, photos=2)


@dataclass
class BenchConfig:
    models: list[str] = field(default_factory=list)  # model directories; empty: every models/*/ with a model.json
    models_root: str = "models"
    quick: bool = False
    threads: int | None = None  # torch (and onnxruntime) intra-op threads; None: torch's default
    profile: list[str] = field(default_factory=lambda: ["concealer"])  # methods whose models are profiled; empty: none
    photo_side: int = 200  # side of the generated JPEGs
    fresh_size: int = 64  # image size of the fresh default-config models used when no model is found
    command: str = "conceal bench"  # recorded in the report
    photos: int | None = None  # photos of the deface comparison; None: the counts' (20, --quick 2); 0: no photo section
    photos_only: bool = False  # only the machine and the photo section (the 200-photo run without the rest)

    @property
    def counts(self) -> Counts:
        counts = QUICK if self.quick else FULL
        return counts if self.photos is None else dataclasses.replace(counts, photos=self.photos)


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


@dataclass
class MatmulSize:
    """The repeats of one n×n fp32 ``torch.mm``: GFLOP/s of each (a repeat is ``per_repeat`` back-to-back matmuls)."""

    n: int
    per_repeat: int
    gflops: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.gflops)


@dataclass
class MatmulPeak:
    """One measurement of the fp32 matmul peak: every size's repeats; the peak is the best size's median."""

    threads: int  # torch intra-op threads it ran with (the models' own)
    sizes: list[MatmulSize]

    @property
    def best(self) -> MatmulSize:
        return max(self.sizes, key=lambda s: s.median)

    @property
    def gflops(self) -> float:
        """The sustained peak: the median repeat of the size with the highest median (not one lucky burst)."""
        return self.best.median


def matmul_peak(counts: Counts, threads: int) -> MatmulPeak:
    """The fp32 matmul rate this machine sustains now with ``threads`` torch threads: the ceiling the models' GFLOP/s is compared with.

    Per size: a warm-up matmul (thread pool, caches, page faults), a second one whose time sets how many
    back-to-back matmuls make one repeat last ``counts.matmul_min_seconds``, then ``counts.matmul_repeats``
    timed repeats.
    """
    torch.set_num_threads(threads)
    sizes = []
    for n in counts.matmul_sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        per_repeat = max(1, math.ceil(counts.matmul_min_seconds / max(time.perf_counter() - t0, 1e-9)))
        rates = []
        for _ in range(counts.matmul_repeats):
            t0 = time.perf_counter()
            for _ in range(per_repeat):
                torch.mm(a, b, out=c)
            rates.append(2 * n**3 * per_repeat / (time.perf_counter() - t0) / 1e9)
        sizes.append(MatmulSize(n, per_repeat, rates))
    return MatmulPeak(threads, sizes)


def peak_difference(before: MatmulPeak, after: MatmulPeak) -> float:
    """|before - after| / the higher of the two; above ``NOISY_PEAK`` the machine's speed moved during the run."""
    return abs(before.gflops - after.gflops) / max(before.gflops, after.gflops)


# --- the models ----------------------------------------------------------------------------------


def find_models(cfg: BenchConfig, work: Path) -> tuple[list[BenchModel], str]:
    """The shipped (or given) models, else a fresh default-config model of each method; and a note saying which."""
    from .methods import load_model
    from .modelfile import write_model_files

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


def torch_runners(method: Method, batch: int) -> dict:
    """backend -> a no-argument call of the release graph on ``batch`` example inputs: "eager" (NCHW),
    "channels_last" (NHWC weights and images) and "folded" (channels_last with the inference rewrites of
    ``blocks.fold_for_inference``: batch norms folded into their convs, nearest upsampling + conv as a phase
    conv + pixel shuffle; as `conceal apply` runs a torch-backend method). Call them under inference_mode."""
    from .export import example_inputs, graph_of, input_names
    from .methods.blocks import fold_for_inference

    eager = graph_of(method)
    channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    folded = copy.deepcopy(channels_last)
    fold_for_inference(folded)
    inputs = example_inputs(method, batch)
    args = [inputs[n] for n in input_names(method)]
    cl_args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]
    return {"eager": lambda: eager(*args), "channels_last": lambda: channels_last(*cl_args), "folded": lambda: folded(*cl_args)}


def matmul_burst(n: int, seconds: float) -> float:
    """GFLOP/s of back-to-back n×n fp32 matmuls for about ``seconds`` (one short sample of the machine's speed now)."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    count, t0 = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=c)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def bench_inference(model: BenchModel, counts: Counts, work: Path) -> dict:
    """Seconds per batch-1 call and images/s at ``counts.batch``, per backend (``BACKENDS``), and the paired efficiency.

    onnxruntime runs the graph after the inference rewrites (``blocks.fold_for_inference``), as `conceal apply`
    does. Paired efficiency: each timed batch-``counts.batch`` call sits between two matmul bursts of
    ``counts.matmul_min_seconds``; its GFLOP/s over the bursts' mean, median over the calls. On a shared machine
    whose speed moves by 2x within minutes, this ratio holds still where the run-wide peak does not.
    """
    from .export import example_inputs, export_onnx, input_names, onnx_session
    from .methods.blocks import fold_for_inference

    method, names = model.method, input_names(model.method)
    folded = copy.deepcopy(method).eval()
    fold_for_inference(folded)
    session = onnx_session(export_onnx(folded, work / "onnx" / f"{model.directory.name}.onnx"))
    flops = flops_per_image(method)

    def runners(batch: int) -> dict:
        inputs = example_inputs(method, batch)
        feed = {n: inputs[n].numpy() for n in names}
        return {**torch_runners(method, batch), "onnxruntime": lambda: session.run(None, feed)}

    result = {"latency_s": {}, "throughput": {}, "paired": {}, "batch": counts.batch, "threads": torch.get_num_threads(), "flops": flops}
    burst = lambda: matmul_burst(counts.paired_matmul, counts.matmul_min_seconds)  # noqa: E731
    with torch.inference_mode():
        for backend, fn in runners(1).items():
            result["latency_s"][backend] = _median_seconds(fn, counts.latency_iters)
        big = runners(counts.batch)
        times: dict[str, list[float]] = {b: [] for b in big}
        ratios: dict[str, list[float]] = {b: [] for b in big}
        for fn in big.values():
            fn()  # warm-up
        for _ in range(counts.batch_iters):  # backends interleaved, so a slow minute slows all of them alike
            for backend, fn in big.items():
                before = burst()
                t0 = time.perf_counter()
                fn()
                seconds = time.perf_counter() - t0
                times[backend].append(seconds)
                ratios[backend].append(counts.batch * flops / seconds / 1e9 / ((before + burst()) / 2))
        for backend in big:
            result["throughput"][backend] = counts.batch / statistics.median(times[backend])
            result["paired"][backend] = statistics.median(ratios[backend])
    return result


# --- where the inference time goes ----------------------------------------------------------------


def profile_inference(model: BenchModel, counts: Counts) -> dict:
    """backend -> where a batch-``counts.batch`` forward of the release graph spends its CPU time (torch.profiler).

    "ops": the top ``PROFILE_TOP`` ops by self CPU time (time in the op itself, not in the ops it calls), as
    (name, share of all self time, calls per forward, {layer: share of the op's self time spent under it});
    "layers": every op the forward calls directly (conv2d, conv_transpose2d, batch_norm, ...), with what it
    calls, as (name, share), largest first; "ms": profiled milliseconds per forward (profiler overhead included).
    """
    from torch.profiler import ProfilerActivity, profile

    iters, result = counts.profile_iters, {}
    with torch.inference_mode():
        for backend, fn in torch_runners(model.method, counts.batch).items():
            fn()  # warm-up: first-call allocations, lazy initialisation
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(iters):
                    fn()
            self_time: collections.Counter = collections.Counter()
            calls: collections.Counter = collections.Counter()
            under: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            for e in prof.events():
                root = e
                while root.cpu_parent is not None:
                    root = root.cpu_parent
                self_time[e.name] += e.self_cpu_time_total
                calls[e.name] += 1
                under[e.name][root.name] += e.self_cpu_time_total
            # Self times add up to the whole (each microsecond is some op's own), and so do the layers' totals.
            total = sum(self_time.values()) or 1.0
            layers: collections.Counter = collections.Counter()
            for by_root in under.values():
                layers.update(by_root)
            result[backend] = {
                "ops": [(name, t / total, calls[name] / iters, {r: u / (t or 1.0) for r, u in under[name].most_common()})
                        for name, t in self_time.most_common(PROFILE_TOP)],
                "layers": [(name, t / total) for name, t in layers.most_common()],
                "ms": total / 1e3 / iters,
            }
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


def time_apply(model_dir: Path, photos: Path, out: Path, cli_main) -> float:
    """Seconds of `conceal apply MODEL PHOTOS -o OUT`, run in process through the CLI's own entry point
    ``cli_main`` (``conceal.cli.main``, handed in by the CLI: the benchmarks sit below the command line)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        rc = cli_main(["apply", str(model_dir), str(photos), "-o", str(out), "--quiet", "--no-detect"])
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


# --- whole photos against deface ------------------------------------------------------------------

PHOTO_SIZE = (640, 480)  # generated photos: a phone photo scaled down, 1-4 faces of PHOTO_FACES px
PHOTO_FACES = (40, 160)
PHOTO_TILTS = (-30, 30)


def make_face_photos(folder: Path, n: int, size: tuple[int, int] = PHOTO_SIZE, seed: int = 1000) -> Path:
    """``n`` JPEG photos (quality 92) in ``folder``, photo i with 1 + i % 4 planted faces (``faces.composites``)."""
    from PIL import Image

    from .faces.composites import composite

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for retry in range(10):  # a seed whose large faces leave no room for the rest: the next one (deterministic)
            try:
                photo, _ = composite(1 + i % 4, seed=seed + i + 100_000 * retry, width=size[0], height=size[1],
                                     sides=PHOTO_FACES, tilts=PHOTO_TILTS)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"could not place {1 + i % 4} faces in {size[0]}x{size[1]} (photo {i})")
        Image.fromarray(photo).save(folder / f"photo{i:04d}.jpg", quality=92)
    return folder


def deface_command() -> list[str] | None:
    """How to run deface (its console script beside this Python, else on PATH), or None when it is not installed."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("deface") is None:
        return None
    beside = Path(sys.executable).with_name("deface")
    script = str(beside) if beside.is_file() else shutil.which("deface")
    return [script] if script else [sys.executable, "-m", "deface.deface"]


def concealer_request(method: Method) -> str | None:
    """The ``--as`` of the photo comparison: gender=female where the model has that label, else none."""
    if method.name == "concealer" and "gender" in method.schema and "female" in method.schema["gender"].classes:
        return "gender=female"
    return None


def time_photo_tools(model_dir: Path, photos: Path, work: Path, as_: str | None, rounds: int) -> dict:
    """Seconds of each tool over the folder ``photos``, as subprocesses (start-up included), back to back:
    ``conceal apply MODEL PHOTOS -o OUT [--as AS]`` (detects by default, writes PNGs) and
    ``deface FOLDER --backend onnxrt`` (its defaults: blurs every face, writes NAME_anonymized.jpg beside each
    input, so it runs on a copy). Rounds alternate the order (deface first in even rounds); the best pass of
    each tool counts. Returns {"conceal": s, "deface": s or None (not installed), "load": [(when, 1-min load)]}."""
    import shutil

    deface = deface_command()
    best: dict[str, float | None] = {"conceal": None, "deface": None}
    load = [("start", os.getloadavg()[0])] if hasattr(os, "getloadavg") else []
    for attempt in range(rounds):
        tools = ["deface", "conceal"] if attempt % 2 == 0 else ["conceal", "deface"]
        for tool in tools:
            if tool == "deface":
                if deface is None:
                    continue
                target = work / f"deface{attempt}"
                shutil.copytree(photos, target)
                command = [*deface, str(target), "--backend", "onnxrt"]
            else:
                target = work / f"conceal{attempt}"
                command = [sys.executable, "-m", "conceal", "apply", str(model_dir), str(photos), "-o", str(target), "--quiet"]
                command += ["--as", as_] if as_ else []
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"{tool} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
            best[tool] = seconds if best[tool] is None else min(best[tool], seconds)
            if hasattr(os, "getloadavg"):
                load.append((f"after {tool} {attempt + 1}", os.getloadavg()[0]))
    return {**best, "load": load}


def photo_section(result: dict, n: int, model: BenchModel, as_: str | None, rounds: int) -> tuple[list[str], str]:
    """The report's photo section and its headline sentence."""
    conceal_rate = n / result["conceal"]
    deface_rate = n / result["deface"] if result["deface"] else None
    threads = os.environ.get("OMP_NUM_THREADS")
    lines = ["## Photos against deface", "",
             f"The same {n} generated {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} JPEGs (photo i has 1 + i mod 4 faces: the astronaut's "
             f"head planted {PHOTO_FACES[0]}-{PHOTO_FACES[1]} px tall, tilted {PHOTO_TILTS[0]}..{PHOTO_TILTS[1]}°, into "
             "skimage's bundled backgrounds), each tool as a subprocess (start-up included), back to back in this run, "
             f"{plural(rounds, 'round')} (order alternated per round; best pass of each). `conceal apply {model.directory.name}"
             f"{' --as ' + as_ if as_ else ''}`: detect (CenterFace), align, the model, paste back, PNG writes. `deface "
             "--backend onnxrt` (its defaults): the same CenterFace model, blurs each face, JPEG writes. Threads: "
             f"OMP_NUM_THREADS={threads or 'unset'} (conceal's torch and detector follow it; deface's onnxruntime session "
             "takes its own default, a thread per core). 1-minute load average: "
             + ", ".join(f"{when} {v:.2f}" for when, v in result["load"]) + ".", ""]
    rows = []
    if deface_rate is not None:
        rows.append(["deface", f"{result['deface']:.1f}", f"{deface_rate:.2f}", "1.00"])
    rows.append([f"conceal apply {model.label}", f"{result['conceal']:.1f}", f"{conceal_rate:.2f}",
                 f"{conceal_rate / deface_rate:.2f}" if deface_rate else "—"])
    lines += _table(["tool", "seconds", "photos/s", "vs deface"], rows)
    if deface_rate is None:
        lines += ["deface is not installed (`pip install 'conceal[photos]'`): conceal apply alone.", ""]
        headline = f"Photos: conceal apply {conceal_rate:.2f} photos/s over {n} generated photos (deface not installed)."
    else:
        headline = (f"Photos: conceal apply {conceal_rate:.2f} photos/s, deface {deface_rate:.2f}, over the same {n} "
                    f"generated photos: **{conceal_rate / deface_rate:.2f}×** deface's rate (see Photos against deface).")
    return lines, headline


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


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
    command = [sys.executable, "-m", "conceal.cli", "apply", str(model_dir), str(photos), "-o", str(out), "--quiet", "--no-detect"]
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"conceal apply failed in the RSS run: {done.stderr.strip().splitlines()[-1:]}")
    kib = int(done.stdout.split()[-1])
    return kib / 1024 / (1024 if sys.platform == "darwin" else 1)  # ru_maxrss: KiB on Linux, bytes on macOS


# --- the report ------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _shares(under: dict[str, float], least: float = 0.05) -> str:
    """'conv_transpose2d 98%, conv2d 2%': the layers holding at least ``least`` of an op's self time."""
    major = [f"{name.removeprefix('aten::')} {100 * share:.0f}%" for name, share in under.items() if share >= least]
    return ", ".join(major) + (", …" if len(major) < len(under) else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|", *("| " + " | ".join(r) + " |" for r in rows), ""]


def run_benchmarks(cfg: BenchConfig, cli_main) -> str:
    """Measure everything in one run and return the markdown report, top to bottom as it reads (``cli_main``:
    the command line's entry point, for timing `conceal apply` as users run it)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = torch.get_num_threads()  # the matmul peak and every model measurement run with these
    counts = cfg.counts
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="conceal-bench-") as tmp:
        work = Path(tmp)
        started = time.strftime("%Y-%m-%d %H:%M %Z")
        host = machine()
        models, models_note = find_models(cfg, work)
        photo_lines, photo_headline = run_photo_section(cfg, counts, models, work)
        if cfg.photos_only:
            return photos_only_report(cfg, host, started, models_note, photo_lines, photo_headline, t_start)

        log(f"fp32 matmul peak before the models ({_threads(threads)})")
        peak_before = matmul_peak(counts, threads)
        inference = {}
        for m in models:
            log(f"inference of {m.label}")
            torch.set_num_threads(threads)
            inference[m.label] = bench_inference(m, counts, work)
        log(f"fp32 matmul peak after the models ({_threads(threads)})")
        peak_after = matmul_peak(counts, threads)

        profiles = {}
        for m in models:
            if m.method.name in cfg.profile:
                log(f"profile of {m.label}")
                profiles[m.label] = profile_inference(m, counts)

        log(f"end-to-end apply vs blur over {counts.apply_files} JPEGs")
        photos = make_photos(work / "photos", counts.apply_files, cfg.photo_side)
        blur_s = time_blur(photos, work / "blurred")
        apply_s = {m.label: time_apply(m.directory, photos, work / "applied" / m.directory.name, cli_main) for m in models}

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
    if hasattr(os, "getloadavg"):
        host["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    # The run's peak: the higher of the two sustained measurements, i.e. the conservative ceiling for the efficiency.
    peak = max(peak_before.gflops, peak_after.gflops)
    drift = peak_difference(peak_before, peak_after)
    noisy = drift > NOISY_PEAK

    n_small, n_large = counts.rss_files // 10, counts.rss_files
    lines = [
        "# conceal benchmarks",
        "",
        f"Measured by `{cfg.command}` on {started} (the whole run took {minutes:.1f} min){' (**--quick**: counts shrunk, numbers are a smoke test only)' if cfg.quick else ''}.",
        f"{models_note}.",
        "",
        "## Headline ratios",
        "",
        f"Throughput at batch {counts.batch}; apply backend: the one `conceal apply` runs the method on (its fastest where "
        "onnxruntime is installed); efficiency = its achieved GFLOP/s / this machine's fp32 matmul peak "
        f"({peak:.1f} GFLOP/s sustained, {_threads(threads)}, the higher of before and after the models: see Matmul peak); "
        "paired = the same over matmul bursts timed right before and after each call (robust to a machine whose speed "
        "moves: see Inference); apply / blur = time of `conceal apply` / time of decode → blur → encode over the same "
        f"{counts.apply_files} photos (> 1: apply is slower); RSS ×{n_large // n_small} files = peak RSS over {n_large} files / over {n_small}.",
        "",
    ]
    rows = []
    for m in models:
        inf, tr = inference[m.label], training[m.label]
        tp, chosen = inf["throughput"], apply_backend(m.method)
        achieved = tp[chosen] * inf["flops"] / 1e9
        rows.append([m.label, f"{tp['onnxruntime'] / tp['eager']:.2f}×", f"{tp['channels_last'] / tp['eager']:.2f}×",
                     f"{tp['folded'] / tp['eager']:.2f}×", BACKEND_NAMES[chosen], f"{100 * achieved / peak:.1f}%",
                     f"{100 * inf['paired'][chosen]:.1f}%", f"{apply_s[m.label] / blur_s:.2f}",
                     f"{100 * tr['data_wait']:.1f}%", f"{rss[n_large] / rss[n_small]:.2f}" if m is rss_model else "—"])
    lines += _table(["model", "onnxruntime / eager", "channels_last / eager", f"{BACKEND_NAMES['folded']} / eager", "apply backend",
                     "efficiency (of peak)", "efficiency (paired)", "apply / blur", "training data wait",
                     f"RSS ×{n_large // n_small} files"], rows)
    if photo_headline:
        lines += [photo_headline, ""]
    if noisy:
        lines += [f"**Noisy run**: the matmul peak measured before the models ({peak_before.gflops:.1f} GFLOP/s) and after them "
                  f"({peak_after.gflops:.1f}) differ by {100 * drift:.1f}% (> {100 * NOISY_PEAK:.0f}%): the machine's speed moved "
                  "during the run, so the efficiencies are not to be judged by; rerun on an idle machine.", ""]

    lines += ["## Machine", ""]
    lines += _table(["", ""], [[k, v] for k, v in host.items()] + [[
        "fp32 matmul peak", f"{peak:.1f} GFLOP/s (before the models {peak_before.gflops:.1f}, after {peak_after.gflops:.1f}; "
                            f"{_threads(threads)}; {'**noisy**' if noisy else 'steady'}: see Matmul peak)"]])

    lines += ["## Matmul peak", "",
              f"fp32 `torch.mm` of n×n matrices on {_threads(threads)} (torch intra-op: the setting every model measurement "
              "below runs with), measured right before and right after the inference measurements. Per size: a warm-up "
              f"matmul, then {counts.matmul_repeats} timed repeats, each of back-to-back matmuls lasting at least "
              f"{counts.matmul_min_seconds:g} s (a sustained rate, not a burst); 2n³ FLOPs per matmul. A measurement's peak "
              "is the **median repeat of its best size** (the size with the highest median); the run's peak is the higher "
              "of the two measurements: a rate the machine sustained in this run, and the conservative ceiling for the "
              "efficiencies.", ""]
    rows = []
    for when, measured in (("before", peak_before), ("after", peak_after)):
        for size in measured.sizes:
            mark = " (peak)" if size is measured.best else ""
            rows.append([when, str(size.n), str(size.per_repeat), f"{size.median:.1f}{mark}", f"{max(size.gflops):.1f}",
                         f"{min(size.gflops):.1f}"])
    lines += _table(["measured", "n", "matmuls / repeat", "median GFLOP/s", "max", "min"], rows)
    verdict = (f"**noisy** (> {100 * NOISY_PEAK:.0f}%): the machine's speed moved during the run" if noisy
               else f"steady (≤ {100 * NOISY_PEAK:.0f}%)")
    lines += [f"Peak before the models {peak_before.gflops:.1f} GFLOP/s, after {peak_after.gflops:.1f}: they differ by "
              f"{100 * drift:.1f}% of the higher, {verdict}. Peak used: {peak:.1f} GFLOP/s.", ""]

    lines += ["## Inference", "",
              "The release graph `conceal export` writes (concealer: encode μ + decode with the attributes; masker: the "
              "masked image; anonymizer: the reconstruction), on float32 input; no image decoding or writing. Eager: "
              "NCHW tensors and weights; channels_last: NHWC; channels_last + folded BN: NHWC with each eval-mode batch "
              "norm folded into the conv before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`) and each nearest 2× upsampling + 3×3 conv "
              "rewritten as a phase conv + pixel shuffle (`blocks.fold_for_inference`); onnxruntime runs that folded graph. "
              f"Paired efficiency: each of the {counts.batch_iters} timed calls per backend (backends interleaved) between two "
              f"{counts.paired_matmul}² matmul bursts; its GFLOP/s over the bursts' mean, median over the calls. "
              f"{_threads(threads)} (torch and onnxruntime intra-op), as the matmul peak. "
              f"Latency: median of {counts.latency_iters} batch-1 calls; throughput: median of {counts.batch_iters} "
              f"batch-{counts.batch} calls. FLOPs: convolutions and matmuls (torch FlopCounterMode), 2 per multiply-add.", ""]
    rows = []
    for m in models:
        inf = inference[m.label]
        lat, tp = inf["latency_s"], inf["throughput"]
        gflops = {b: tp[b] * inf["flops"] / 1e9 for b in tp}
        rows.append([m.label, f"{inf['flops'] / 1e6:.1f}",
                     *(_ms(lat[b]) for b in BACKENDS),
                     *(f"{tp[b]:.0f}" for b in BACKENDS),
                     *(f"{gflops[b]:.1f} ({100 * gflops[b] / peak:.1f}%)" for b in BACKENDS),
                     *(f"{100 * inf['paired'][b]:.1f}%" for b in BACKENDS)])
    others = [BACKEND_NAMES[b] for b in BACKENDS[1:]]
    lines += _table(["model", "MFLOPs / image", "batch-1 ms eager", *others, f"batch-{counts.batch} img/s eager", *others,
                     "GFLOP/s (of peak) eager", *others, "paired efficiency eager", *others], rows)

    lines += ["## Profile", ""]
    if not profiles:
        lines += [f"Not profiled: {'no model of ' + ', '.join(cfg.profile) + ' in this run' if cfg.profile else '--no-profile'}.", ""]
    else:
        lines += [f"Where the batch-{counts.batch} inference time goes: torch.profiler (CPU) over {counts.profile_iters} forward"
                  f"{'s' if counts.profile_iters != 1 else ''} of the release graph after a warm-up one, {_threads(threads)} "
                  "(the profiler adds overhead: read the shares, not the times). Top ops by **self CPU** time (in the op "
                  "itself, not in the ops it calls), as a share of all self time, with calls per forward. **By layer**: the "
                  "ops the forward calls directly (conv2d, conv_transpose2d, batch_norm, ...), each with everything it calls; an "
                  "op's layers: those holding ≥ 5% of its self time (…: smaller ones). Every torch backend of the Inference "
                  "table (channels_last + folded has no batch_norm left: it is in the convs' weights).", ""]
        for label, by_backend in profiles.items():
            for backend, prof in by_backend.items():
                major = [(name, share) for name, share in prof["layers"] if share >= 0.01]
                rest = 1.0 - sum(share for _, share in major)
                layers = ", ".join(f"{name.removeprefix('aten::')} {100 * share:.1f}%" for name, share in major)
                if rest >= 0.0005:
                    layers += f", other {100 * rest:.1f}%"
                lines += [f"### {label}, {BACKEND_NAMES[backend]} ({prof['ms']:.1f} ms per profiled forward)", "", f"By layer: {layers}.", ""]
                lines += _table(["op", "self CPU", "calls / forward", "in layers (share of its self time)"],
                                [[f"`{name}`", f"{100 * share:.1f}%", f"{calls:g}", _shares(under)]
                                 for name, share, calls, under in prof["ops"]])

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
    lines += photo_lines
    return "\n".join(lines)


def run_photo_section(cfg: BenchConfig, counts: Counts, models: list[BenchModel], work: Path) -> tuple[list[str], str]:
    """conceal apply against deface over ``counts.photos`` generated photos (first in the run, before the
    long measurements warm the machine up): (the report's section, its headline sentence); nothing for 0 photos."""
    if counts.photos <= 0:
        return [], ""
    model = next((m for m in models if m.method.name == "concealer"), models[0])
    as_ = concealer_request(model.method)
    log(f"conceal apply vs deface over {counts.photos} generated photos ({model.label})")
    folder = make_face_photos(work / "face_photos", counts.photos)
    result = time_photo_tools(model.directory, folder, work / "photo_runs", as_, counts.photo_rounds)
    return photo_section(result, counts.photos, model, as_, counts.photo_rounds)


def photos_only_report(cfg: BenchConfig, host: dict, started: str, models_note: str, photo_lines: list[str],
                       photo_headline: str, t_start: float) -> str:
    """``--photos-only``: the machine and the photo section."""
    if hasattr(os, "getloadavg"):
        host["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    minutes = (time.perf_counter() - t_start) / 60
    lines = ["# conceal benchmarks", "",
             f"Measured by `{cfg.command}` on {started} (the whole run took {minutes:.1f} min; **--photos-only**: the photo "
             "section alone).", f"{models_note}.", ""]
    if photo_headline:
        lines += [photo_headline, ""]
    lines += ["## Machine", ""] + _table(["", ""], [[k, v] for k, v in host.items()])
    return "\n".join(lines + photo_lines)
