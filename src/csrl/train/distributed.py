"""Rank, world size and gathering: the only place that touches torch.distributed.

Every function is the identity (or the trivial answer) when no process group is initialised, so the
training loop calls them unconditionally.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env(device: str = "auto") -> bool:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment).

    Backend: NCCL when the run uses CUDA, gloo otherwise. Returns True if this call created the group
    (the caller then owns :func:`shutdown`); False on one process or when a group already exists.
    """
    if is_dist() or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda:")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def shutdown() -> None:
    if is_dist():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping this rank's shard in the graph.

    SimCSE's pattern: ``all_gather`` returns detached copies; the entry at this rank is replaced by the
    original tensor so its gradient flows. With the loss computed on the gathered batch and multiplied by
    ``world_size()``, DDP's gradient average equals the single-process gradient on the full batch.
    Requires equal shard sizes on every rank.
    """
    if not is_dist():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = x
    return torch.cat(parts, dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of a (detached) tensor over ranks; identity on one process."""
    if not is_dist():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()
