"""Data-parallel training under ``torchrun``: ``torchrun --nproc_per_node N -m conceal train ...``.

torchrun starts N processes and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (multi-node:
its usual ``--nnodes`` / ``--rdzv-*`` flags); ``setup`` joins them into one process group (gloo on CPU, nccl on
GPU). Without those variables everything here is a no-op and the loop is the single-process one.

What each process does, and why it equals one process with the whole batch:

- **Data**: global batch b is rows ``order[b·B·N : (b+1)·B·N]`` of the loop's epoch order (``epoch_order``, a
  pure function of seed and epoch, the same in every process); rank r trains on its r-th slice of B
  (``train.batch_size`` is per process). Two processes with batch B/2 see exactly the batches one process
  with batch B sees, in the same order, and a resumed run continues that order.
- **Gradients**: averaged over the processes (``torch.distributed.all_reduce``, one flat buffer per step)
  right before every optimizer step, by a hook on each optimizer. That is DistributedDataParallel's rule,
  applied where the methods need it: a method owns several optimizers and one ``training_step`` runs
  submodules several times, some frozen or without gradient (the masker's classifier three times per
  step, the anonymizer's encoder twice), which DDP's wrapper, built for one forward and one backward per
  step, cannot follow. The per-optimizer hook works for every method without touching them.
- **Buffers** (batch-norm running statistics) are averaged after every step, so all processes hold the same
  model (DDP instead copies rank 0's); **parameters** start as rank 0's (broadcast).
- **Logging, validation and checkpoints**: rank 0 only; the logged losses are the processes' mean. Every
  process reads the same checkpoint on ``--resume``. A stop (Ctrl-C, SIGTERM, ``--max-minutes``) in any
  process stops all of them at the same step.

The GPU (nccl) path is written but has not been run: no GPU was available when this was built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process logs, validates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_environment() -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun prepared (if any); -> (world, this process's device).

    gloo for CPU training, nccl for CUDA (each process on GPU ``LOCAL_RANK``).
    """
    world = from_environment()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    return world, device


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing the last checkpoint the others' callers will read
        dist.destroy_process_group()


def batch_rows(order: np.ndarray, b: int, batch_size: int, world: World) -> np.ndarray:
    """Rows of this process's part of global batch ``b``: the ``world.rank``-th slice of ``batch_size`` of it."""
    start = (b * world.size + world.rank) * batch_size
    return order[start : start + batch_size]


def batches_per_epoch(n_rows: int, batch_size: int, world: World) -> int:
    """Global batches in an epoch (each of ``batch_size`` rows per process); the remainder is dropped."""
    return n_rows // (batch_size * world.size)


def average_gradients(optimizers: dict[str, torch.optim.Optimizer], world: World) -> None:
    """Hook every optimizer so that its ``step`` first averages its parameters' gradients over the processes."""
    if not world.distributed:
        return

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)  # one collective per step, not one per tensor
        dist.all_reduce(flat)
        flat /= world.size
        for grad, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(averaged)

    for optimizer in optimizers.values():
        optimizer.register_step_pre_hook(hook)


def broadcast_parameters(module: torch.nn.Module, world: World) -> None:
    """Every process starts from rank 0's parameters and buffers."""
    if world.distributed:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_buffers(module: torch.nn.Module, world: World) -> None:
    """Floating-point buffers (batch-norm running statistics) averaged over the processes."""
    if not world.distributed:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if buffers:
        flat = _flatten_dense_tensors([b.data for b in buffers])
        dist.all_reduce(flat)
        flat /= world.size
        for buffer, averaged in zip(buffers, _unflatten_dense_tensors(flat, buffers)):
            buffer.data.copy_(averaged)


def mean_logs(logs: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """A step's logged losses, averaged over the processes (every process logs the same keys)."""
    if not world.distributed or not logs:
        return logs
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(keys, (values / world.size).tolist()))


def any_process(flag: bool, world: World, device: torch.device) -> bool:
    """True in every process when ``flag`` is true in any (so all stop at the same step)."""
    if not world.distributed:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def seed_process(seed: int, world: World) -> None:
    """After the parameters are broadcast: each process its own random stream (noise, dropout), so the
    processes' halves of a batch do not draw the same noise; one process keeps the seed as it was."""
    if world.distributed:
        torch.manual_seed(seed * 1009 + world.rank)
