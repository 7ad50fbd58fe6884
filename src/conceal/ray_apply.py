"""``conceal apply ... --engine ray``: the single-process run's per-photo code on a Ray Data actor pool, and its bytes.

- **Plan**: the driver plans exactly what ``apply.run_apply`` plans (``apply.plan_apply``: the files, their
  output names, what a resumed run skips, every refusal), and cuts the files to do into the chunks
  ``run_apply`` hands ``conceal_images`` (``apply.batch_size``: with --no-detect the grouping is part of the
  bytes). The dataset has one row per chunk: its input paths and output names, as JSON (no image bytes).
- **Work**: ``map_batches`` runs ``ConcealChunks`` on a pool of ``actors`` actors. Each loads the model once
  (as ``cmd_apply`` does), then per chunk reads the files where they lie, conceals and writes them with
  ``apply.conceal_files`` (the single-process loop itself: metadata-free PNGs under temp names, renamed into
  place) and returns the chunk's manifest lines.
- **Manifest**: the driver streams the rows back in input order (``preserve_order``) and appends their
  lines, so the manifest is the single-process run's, line for line. A line is written after its files.
- **Memory**: rows are names and manifest lines; images live only inside one actor call, and Ray Data's
  streaming executor keeps a bounded number of chunks in flight (the driver holds the list of names, as
  ``run_apply`` does). A local Ray's object store is capped small.
- **A worker that dies**: Ray restarts the actor and runs its chunk again (``RETRIES`` times at most). The
  chunk's outputs are written again under the same names, replacing what the dead attempt left (the
  driver has already refused outputs that belong to no input of this run); its manifest lines reach the
  driver once, from the attempt that finished: nothing is lost or listed twice. If the driver itself
  dies, ``--resume`` finishes the run as it finishes a single-process one.
- **Where**: without ``address`` a local Ray (no dashboard) on this machine; with ``address`` ("auto" or
  HOST:PORT) an existing cluster, whose workers must see the inputs, the model and ``out`` at the same
  paths (a shared filesystem).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .apply import MANIFEST, THREADS, ApplyOptions, ApplySummary, batch_size, check_summary, conceal_files, manifest_line, plan_apply
from .data.base import DataError

OBJECT_STORE_BYTES = 256 * 2**20  # a local Ray's object store: rows are names and manifest lines, not images
RETRIES = 3  # restarts of a dead actor, and retries of the chunk it was on: a chunk that kills every attempt fails the run
STARTS = 3  # ray.init tries: Ray waits a fixed 30 s for its raylet, which a busy 2-core machine can miss


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DataError("--engine ray needs the ray extra: pip install 'conceal[ray]'") from None
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None):
    """Join the cluster at ``address``, or start a local Ray (``num_cpus``, no dashboard); returns (ray, whether
    this call started it, so the caller shuts it down). A Ray already running in this process is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats report (and nothing may leave the machine)
    if address:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as error:  # ConnectionError (no cluster there), a version mismatch, a timeout: Ray's words
            ray.shutdown()
            raise DataError(f"could not join the Ray cluster at --address {address}: {error}") from None
        return ray, True
    for attempt in range(1, STARTS + 1):
        try:
            ray.init(num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            return ray, True
        except Exception as error:  # Ray's own "The current node timed out during startup" is a bare Exception
            ray.shutdown()
            if attempt == STARTS or "timed out during startup" not in str(error):
                raise DataError(f"a local Ray did not start: {error}") from None


class ConcealChunks:
    """A Ray Data actor: the model loaded once; each call conceals and writes chunks of inputs."""

    def __init__(self, model_path: str, options: ApplyOptions, out: str, threads: int = 1):
        import torch

        from .methods import load_api

        torch.set_num_threads(threads)
        # Inference only, on the method's fastest backend: what cmd_apply loads, so the same bytes.
        self.model = load_api(model_path, fold_batch_norm=True, backend="auto")
        self.options, self.out = options, Path(out)
        self.pool = ThreadPoolExecutor(min(THREADS, threads))  # decode ahead, write behind, as run_apply does

    def __call__(self, batch: dict) -> dict:
        """batch["chunk"]: JSON [[input path, {kind: output name}], ...] per row -> batch["lines"]: its manifest lines."""
        import numpy as np

        lines = []
        for chunk in batch["chunk"]:
            names = {Path(path): outputs for path, outputs in json.loads(chunk)}
            files = list(names)
            # replace=True: a retried chunk replaces what its dead attempt left (foreign files were refused up front)
            done = conceal_files(self.model, files, names, self.out, self.options, self.pool, len(files), protect=files, replace=True)
            lines.append("\n".join(manifest_line(str(f), output, result) for f, output, result in done))
        return {"lines": np.array(lines, dtype=object)}


def run_apply_ray(model_path: str | Path, inputs: list[Path], out: Path, options: ApplyOptions, names: str = "keep",
                  overwrite: bool = False, resume: bool = False, address: str | None = None, actors: int | None = None,
                  progress: bool = False, batch: int | None = None, actor_class: type = ConcealChunks) -> ApplySummary:
    """``run_apply`` on Ray Data (see the module doc): the same refusals, outputs, manifest and summary.
    ``actors``: the pool's size (default: one per CPU of the cluster, each with the CPUs it can share)."""
    from .methods import load_api

    require_ray()  # before any work: the one-line "pip install" refusal
    if actors is not None and actors < 1:
        raise DataError(f"--actors must be 1 or more, not {actors}")
    plan = plan_apply(load_api(model_path), inputs, out, options, names, overwrite, resume)  # one-line refusals before Ray starts
    summary = plan.summary()
    size = batch_size(options, batch)
    rows = [{"chunk": json.dumps([[str(f), plan.names[f]] for f in plan.todo[i : i + size]])} for i in range(0, len(plan.todo), size)]
    ray, started = start_ray(address, None if address else max(actors or 0, os.cpu_count() or 1))
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = min(actors or cpus, max(1, len(rows)))
        threads = max(1, cpus // actors)  # one actor may use every core, as the single process does
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows back in input order: the manifest's order
        context.enable_progress_bars = context.print_on_execution_start = False  # our bar and summary line, not Ray Data's
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines (plan, progress, done) and notes on itself
        from tqdm import tqdm

        with plan.open_manifest() as log, tqdm(total=len(plan.todo), unit="img", disable=not progress) as bar:
            if rows:
                dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # a block per chunk: any actor takes any
                with warnings.catch_warnings():
                    # Ray 2.60 deprecates ray_remote_args_fn but has no other way to bound an actor's restarts (its
                    # default is forever: a chunk that kills every worker, e.g. a decoder crash, would never end).
                    warnings.simplefilter("ignore", DeprecationWarning)
                    results = dataset.map_batches(
                        actor_class, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                        num_cpus=threads, ray_remote_args_fn=lambda: {"max_restarts": RETRIES, "max_task_retries": RETRIES},
                        fn_constructor_kwargs={"model_path": str(model_path), "options": options, "out": str(plan.out), "threads": threads})
                try:
                    for row in results.iter_rows():
                        for line in row["lines"].split("\n"):
                            log.write(line + "\n")
                            record = json.loads(line)
                            summary.add(record["input"], record["output"], record["status"], record["reason"])
                            bar.update()
                        log.flush()
                except ray.exceptions.RayError as error:  # its text ends with the worker's own error
                    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
                    raise DataError(f"the Ray run stopped ({last}); {MANIFEST} lists what was done: --resume continues it") from None
    finally:
        if started:
            ray.shutdown()
    check_summary(summary)
    return summary
