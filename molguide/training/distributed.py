"""Data-parallel training across processes (``torchrun``): who am I, and my part of a batch.

``torchrun --nproc-per-node N molguide run train-score ...`` starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in their environment; :func:`init_from_env`
joins them into one process group (NCCL on GPUs, gloo on CPUs). Every process then
draws the same global batch of indices and the same random numbers, and keeps its
contiguous slice (:class:`Shard`), so N processes compute exactly the gradient one
process computes on the whole global batch. Only rank 0 writes checkpoints and talks
to MLflow.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context = DistContext()


def context() -> DistContext:
    """The current process's :class:`DistContext` (set by :func:`init_from_env`)."""
    return _context


def launched_by_torchrun() -> bool:
    """Whether the environment asks for more than one process (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu") -> tuple[DistContext, str]:
    """Join the process group torchrun describes; returns (context, this process's device).

    On CUDA each process takes the GPU of its ``LOCAL_RANK``; on CPU the gloo backend
    is used. Without torchrun (``WORLD_SIZE`` unset or 1) nothing happens.
    """
    global _context
    if not launched_by_torchrun():
        return _context, device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if use_cuda:
        if torch.cuda.device_count() <= local_rank:
            raise RuntimeError(
                f"process {rank} wants GPU {local_rank}, but only {torch.cuda.device_count()} are visible"
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    _context = DistContext(rank, world, local_rank)
    log.info("data-parallel process %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return _context, device


def shutdown() -> None:
    """Leave the process group (after the last collective call)."""
    global _context
    if dist.is_initialized():
        dist.destroy_process_group()
    _context = DistContext()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (the tensor itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


@dataclass(frozen=True)
class Shard:
    """This process's slice of a global batch: molecules and atoms as row ranges.

    Random draws are made for the whole global batch (``total_graphs`` molecules,
    ``total_nodes`` atoms) from the step's generator and then sliced, so the numbers a
    molecule gets do not depend on how many processes share the batch.
    """

    graph_offset: int
    num_graphs: int
    total_graphs: int
    node_offset: int
    num_nodes: int
    total_nodes: int
    world_size: int

    def graph_rows(self, draw: torch.Tensor) -> torch.Tensor:
        """This shard's rows of a per-molecule draw over the global batch."""
        return draw[self.graph_offset : self.graph_offset + self.num_graphs]

    def node_rows(self, draw: torch.Tensor) -> torch.Tensor:
        """This shard's rows of a per-atom draw over the global batch."""
        return draw[self.node_offset : self.node_offset + self.num_nodes]

    def data_parallel_loss(self, local_sum: torch.Tensor, global_denominator: torch.Tensor | float):
        """The loss whose gradient, averaged by DDP over processes, is that of sum / denominator.

        DDP averages gradients over ``world_size`` processes, so each process returns
        ``world_size * local_sum / global_denominator``.
        """
        return self.world_size * local_sum / global_denominator


def split_global_batch(indices, node_counts, rank: int, world_size: int) -> tuple:
    """(this rank's indices, its :class:`Shard`) of a global batch split into contiguous parts.

    ``node_counts`` are the atom counts of ``indices``. Parts differ by at most one
    molecule; every process needs at least one.
    """
    import numpy as np

    n = len(indices)
    if n < world_size:
        raise ValueError(f"a batch of {n} molecules cannot be split over {world_size} processes")
    bounds = np.linspace(0, n, world_size + 1).round().astype(int)
    start, stop = int(bounds[rank]), int(bounds[rank + 1])
    counts = np.asarray(node_counts, dtype=np.int64)
    shard = Shard(
        graph_offset=start,
        num_graphs=stop - start,
        total_graphs=n,
        node_offset=int(counts[:start].sum()),
        num_nodes=int(counts[start:stop].sum()),
        total_nodes=int(counts.sum()),
        world_size=world_size,
    )
    return indices[start:stop], shard
