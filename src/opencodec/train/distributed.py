"""Distributed helpers for ``torchrun``: process group set-up and codebook/norm syncing.

``torchrun --nproc_per_node N -m opencodec.train CONFIG`` sets ``RANK``/``WORLD_SIZE``;
``init()`` then joins the process group (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..quantization.vq import EuclideanCodebook


@dataclass
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class TorchDistributedSync:
    """``CodebookSync`` over the default process group (equal-sized inputs on every rank)."""

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    def all_reduce_sum(self, x: torch.Tensor) -> None:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)


def attach_codebook_sync(model: torch.nn.Module) -> None:
    """Make every codebook of ``model`` use global statistics across ranks."""
    sync = TorchDistributedSync()
    for module in model.modules():
        if isinstance(module, EuclideanCodebook):
            module.sync = sync


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` without syncing buffers at each forward (the
    codebooks stay identical through their own collectives). Newer torch names this
    ``forward_sync_buffers`` and warns at ``broadcast_buffers``; both ranks' buffers are equal at
    the start, so the initial sync of the new option changes nothing."""
    import inspect

    ddp = torch.nn.parallel.DistributedDataParallel
    option = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
              else "broadcast_buffers")
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None, **{option: False})


def mean_over_ranks(value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Average a tensor (0-d: a norm; 1-d: the logged sums) over ranks, in float64 (identity
    for a single process; no host sync)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = value.detach().to(device=device, dtype=torch.float64).reshape(-1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).reshape(value.shape).to(value.dtype)


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
