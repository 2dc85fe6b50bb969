"""Rank, world size and gathering: the only place that touches torch.distributed.

Every function is the identity (or the trivial answer) when no process group is initialised, so the
training loop calls them unconditionally.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


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
