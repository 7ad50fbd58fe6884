"""The one training loop every method uses.

The loop owns batching, devices, progress, validation, checkpoints, resuming and stopping; the method
owns its update rule (``Method.training_step``). Batches come from ``FaceArrays`` (decoded once into
the preprocessing cache), shuffled by a generator seeded with (seed, epoch): a run resumed from any
step sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import ConfigError, RunConfig, save_toml
from ..data import FaceArrays
from ..methods.base import Batch, Method, to_tensor_images
from . import distributed
from .checkpoint import load_train_state, save_checkpoint

POINTS_PER_EPOCH = 8  # train-loss points per epoch on the loss curves, so a short run draws lines, not dots


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def make_batch(data: FaceArrays, index: np.ndarray, device: torch.device) -> Batch:
    """Rows ``index`` of the arrays -> a batch of tensors on ``device``."""
    return {
        "image": to_tensor_images(data.images[index], device),  # (B, 3, H, W) in [0, 1]
        "labels": {k: torch.from_numpy(v[index]).to(device) for k, v in data.labels.items()},  # (B,) float, NaN = unknown
        "identity": torch.from_numpy(data.identity[index]).to(device),  # (B,) long
    }


def epoch_order(data: FaceArrays, seed: int, epoch: int, faces_per_identity: int = 0) -> np.ndarray:
    """The order in which an epoch visits ``data``'s rows: a permutation of all of them, a pure function of
    (seed, epoch) so a resumed run sees the same batches.

    ``faces_per_identity`` K >= 2: each person's faces, shuffled, are cut into groups of K (the last may be
    smaller) and the groups are shuffled, so consecutive rows -- hence every batch -- hold K faces of each
    of its people. Faces of unknown identity (-1) are groups of one.
    """
    if faces_per_identity == 1 or faces_per_identity < 0:
        raise ValueError(f"train.faces_per_identity must be 0 (plain shuffling) or at least 2, not {faces_per_identity}")
    rng = np.random.default_rng([seed, epoch])
    rows = rng.permutation(len(data))
    if faces_per_identity == 0:
        return rows
    identity = data.identity[rows]
    groups = [row[None] for row in rows[identity < 0]]  # unknown identity: a group of one
    known = rows[identity >= 0]
    by_person = known[np.argsort(identity[identity >= 0], kind="stable")]  # still shuffled within each person
    _, starts = np.unique(data.identity[by_person], return_index=True)
    for members in np.split(by_person, starts[1:]) if len(by_person) else []:
        groups += np.array_split(members, math.ceil(len(members) / faces_per_identity))
    return np.concatenate([groups[i] for i in rng.permutation(len(groups))]) if groups else rows


@torch.no_grad()
def evaluate(method: Method, data: FaceArrays, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """Mean of ``validation_step`` over ``data``, weighted by batch size."""
    method.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        for k, v in method.validation_step(make_batch(data, index, device)).items():
            totals[k] = totals.get(k, 0.0) + v * len(index)
    method.train()
    return {k: v / max(len(data), 1) for k, v in totals.items()}


class _StopRequest:
    """Turns Ctrl-C / SIGTERM into a flag checked between steps, so a stop always saves a clean checkpoint."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train_curve(curve: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``state["curve"]`` (running sums of each epoch, snapshotted ``POINTS_PER_EPOCH`` times an epoch) ->
    (x (P,) in epochs, key -> (P,) mean of each stretch of batches between two snapshots)."""
    xs, ys, previous = [], {}, {"epoch": None, "batch": 0, "sums": {}}
    for point in curve:
        if point["epoch"] != previous["epoch"]:
            previous = {"epoch": point["epoch"], "batch": 0, "sums": {}}
        n = point["batch"] - previous["batch"]
        xs.append(point["epoch"] + point["batch"] / point["of"])
        for k, total in point["sums"].items():
            ys.setdefault(k, [np.nan] * (len(xs) - 1))
        for k in ys:
            ys[k].append((point["sums"].get(k, np.nan) - previous["sums"].get(k, 0.0)) / max(n, 1))
        previous = point
    return np.array(xs), {k: np.array(v) for k, v in ys.items()}


def plot_history(history: list[dict], path: Path, curve: list[dict] = ()) -> None:
    """One panel per logged quantity: the train loss within epochs (from ``curve``; else each epoch's mean)
    as a line with markers, and the validation value after each epoch as markers on a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for h in history for k in h["train"]} | {k for h in history for k in h["val"]})
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    steps_x, steps_y = train_curve(list(curve))
    for ax, key in zip(axes.flat, keys):
        if key in steps_y and not np.isnan(steps_y[key]).all():
            ax.plot(steps_x, steps_y[key], "-", marker="o", ms=3, label="train")
        else:
            ys = [h["train"].get(key, np.nan) for h in history]
            if not all(np.isnan(ys)):
                ax.plot(epochs, ys, "-", marker="o", ms=5, label="train (epoch mean)")
        ys = [h["val"].get(key, np.nan) for h in history]
        if not all(np.isnan(ys)):
            ax.plot(epochs, ys, "--", marker="s", ms=6, color="C1", label="val")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fit(
    method: Method,
    train: FaceArrays,
    val: FaceArrays,
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    stop_after_steps: int | None = None,
    log=print,
) -> dict:
    """Train ``method`` for ``cfg.train.epochs``; returns the loop state (epoch, step, history, stopped,
    and ``timing``: images, data_seconds and step_seconds of this call's steps).

    ``stop_after_steps`` stops after that many steps in this call, as an interruption would (for tests
    and for callers that slice work).
    """
    tc = cfg.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world, device = distributed.setup(resolve_device(tc.device))  # torchrun: this process's rank and device
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    method.to(device).train()
    optimizers = method.configure_optimizers(tc.lr)
    distributed.average_gradients(optimizers, world)
    n_batches = distributed.batches_per_epoch(len(train), tc.batch_size, world)
    if n_batches == 0:
        raise ConfigError(f"train.batch_size {tc.batch_size} is more than the {len(train)} training images"
                          + (f" can give each of {world.size} processes" if world.distributed else ""))
    if not world.main:
        log = lambda *_: None  # noqa: E731  (rank 0 speaks for all)

    state = {"epoch": 0, "batch": 0, "step": 0, "history": [], "train_seconds": 0.0}
    if resume:
        state = load_train_state(run_dir, method, optimizers)
        if state["epoch"] >= tc.epochs:
            log(f"{run_dir} has finished: it trained {state['epoch']} epochs and asks for {tc.epochs}; to train "
                f"further, resume with more epochs (--resume --epochs {state['epoch'] + max(1, tc.epochs)})")
            return {**state, "stopped": None, "finished_before": True, "timing": {"images": 0, "data_seconds": 0.0, "step_seconds": 0.0}}
        # Counted as the stop line counts: the epoch in progress (from 1) and the batches of it already done.
        log(f"resumed from {run_dir / 'checkpoint'} at epoch {state['epoch'] + 1}/{tc.epochs}, batch {state['batch']}/{n_batches}")
    distributed.broadcast_parameters(method, world)
    distributed.seed_process(tc.seed, world)
    if world.main:
        save_toml(cfg, run_dir / "config.toml")

    # --max-minutes limits this invocation's training time only: a resumed run gets the limit it is given.
    began = start = time.monotonic()
    steps_here = 0
    timing = {"images": 0, "data_seconds": 0.0, "step_seconds": 0.0}  # this call's steps (for `conceal bench`)
    stopped = None
    with _StopRequest() as stop:
        for epoch in range(state["epoch"], tc.epochs):
            order = epoch_order(train, tc.seed, epoch, tc.faces_per_identity)
            sums: dict[str, float] = dict(state.get("partial_sums", {}))
            bar = tqdm(
                range(state["batch"], n_batches),
                desc=f"epoch {epoch + 1}/{tc.epochs}",
                disable=not tc.progress or not world.main,
                unit="batch",
                leave=False,
            )
            data_time = step_time = 0.0
            first = state["batch"]
            for b in bar:
                t0 = time.perf_counter()
                batch = make_batch(train, np.sort(distributed.batch_rows(order, b, tc.batch_size, world)), device)
                t1 = time.perf_counter()
                logs = method.training_step(batch, optimizers, state["step"])
                distributed.average_buffers(method, world)
                logs = distributed.mean_logs(logs, world, device)
                t2 = time.perf_counter()
                data_time, step_time = data_time + (t1 - t0), step_time + (t2 - t0)
                timing["images"] += len(batch["image"])
                timing["data_seconds"] += t1 - t0
                timing["step_seconds"] += t2 - t0
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                state["step"] += 1
                state["batch"] = b + 1
                steps_here += 1
                if (b + 1) % math.ceil(n_batches / POINTS_PER_EPOCH) == 0 or b + 1 == n_batches:
                    state.setdefault("curve", []).append({"epoch": epoch, "batch": b + 1, "of": n_batches, "sums": dict(sums)})
                shown = {k: f"{v / (b + 1):.3g}" for k, v in sums.items() if k in method.shown_losses}
                bar.set_postfix(shown | {"img/s": f"{tc.batch_size * (b + 1 - first) / max(step_time, 1e-9):.0f}"})
                elapsed_min = (time.monotonic() - began) / 60
                if distributed.any_process(stop.requested or bool(tc.max_minutes and elapsed_min >= tc.max_minutes), world, device) or (
                    stop_after_steps is not None and steps_here >= stop_after_steps
                ):
                    stopped = "interrupted" if stop.requested else ("max_minutes" if not stop_after_steps else "steps")
                    break
            bar.close()
            state["train_seconds"] += time.monotonic() - start
            start = time.monotonic()
            if stopped:
                # Mid-epoch: keep the running sums so the epoch's means come out as if never stopped.
                state["partial_sums"] = sums
                if world.main:
                    save_checkpoint(run_dir, method, cfg, optimizers, state)
                log(f"stopped ({stopped}) at epoch {epoch + 1}/{tc.epochs}, batch {state['batch']}/{n_batches}; checkpoint saved; continue with --resume")
                break
            train_means = {k: v / n_batches for k, v in sums.items()}
            val_logs = evaluate(method, val, device) if len(val) and world.main else {}
            state["history"].append({"epoch": epoch + 1, "train": train_means, "val": val_logs, "data_wait": data_time / max(step_time, 1e-9)})
            state.update(epoch=epoch + 1, batch=0, partial_sums={})
            if world.main:
                save_checkpoint(run_dir, method, cfg, optimizers, state)
                plot_history(state["history"], run_dir / "loss_curves.png", state.get("curve", []))
            log(
                f"epoch {epoch + 1}/{tc.epochs}  "
                + "  ".join(f"{k} {v:.4g}" for k, v in train_means.items())
                + "  | val "
                + "  ".join(f"{k} {v:.4g}" for k, v in val_logs.items())
                + f"  | {world.size * tc.batch_size * (n_batches - first) / max(step_time, 1e-9):.0f} img/s, data wait {100 * data_time / max(step_time, 1e-9):.1f}%"
            )
    state["stopped"] = stopped
    state["world_size"], state["rank"] = world.size, world.rank  # returned only: the processes this call trained with
    state["timing"] = timing  # returned only, never checkpointed: it describes this call, not the run
    return state
