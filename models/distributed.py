"""Data-parallel training over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each process computes its contiguous share of every global batch
(:func:`models.schedules.local_slice`) and scales its loss by
``local_batch / global_batch``; summing the gradients over processes after the
backward pass then gives exactly the gradient of the mean loss over the global
batch, i.e. the per-process gradients averaged with their batch sizes as
weights. Every process then takes the same optimiser step, so the replicas stay
identical. Buffers (BatchNorm running statistics) are broadcast from rank 0 after
each step.

BatchNorm in training mode normalises each process's share with its own
statistics, as ``DistributedDataParallel`` without ``SyncBatchNorm`` does
(``SyncBatchNorm`` has no CPU implementation); with BatchNorm frozen, as in ATCON
fine-tuning or ``SupervisedConfig(freeze_batchnorm=True)``, a data-parallel run
equals a single-process run on the same global batch up to float rounding.
Gradient balancing in fine-tuning measures each process's own gradient norms.

Started by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedContext", "init_from_environment", "shutdown"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Which process this is. ``world_size == 1`` is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Sum each parameter's gradient over processes (one flat buffer, one call)."""
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            assert p.grad is not None
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def sum_scalar(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())

    def any_flag(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any of them."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self._comm_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def broadcast_buffers(self, model: nn.Module) -> None:
        if not self.enabled:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def replica_max_abs_diff(self, model: nn.Module) -> float:
        """The largest difference of any weight between processes (0.0 when identical)."""
        if not self.enabled:
            return 0.0
        flat = torch.cat([t.detach().float().reshape(-1) for t in model.state_dict().values()])
        high, low = flat.clone(), flat.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        return float((high - low).max())

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def init_from_environment(device: str | torch.device | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes, or return a single-process context.

    ``device=None`` picks CUDA (this process's ``LOCAL_RANK``) when available, else
    the CPU. The backend is NCCL for CUDA and gloo for the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", local_rank)
    if world_size <= 1:
        return DistributedContext(device=target)
    if not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group(backend=backend)
        logger.info("process %d of %d joined (%s, %s)", rank, world_size, backend, target)
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=target
    )


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
