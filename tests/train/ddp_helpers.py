"""Shared pieces of the float64 parity tests (DDP and GradCache): a deterministic tiny encoder,
two gloo processes, and assert messages that name the failing case."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from csrl.models.encoder import Encoder, EncoderConfig

WORLD = 2


def float64_encoder(model_dir: Path | str, *, dropout: bool = False) -> Encoder:
    """The tiny BERT in float64, train mode, mean pooling (its random [CLS] vectors are nearly parallel,
    which zeroes the margin losses' gradients); ``dropout=False`` makes it a deterministic function."""
    enc = Encoder.from_pretrained(EncoderConfig(model=str(model_dir), pooler="mean"))
    if not dropout:
        for m in enc.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0  # attention dropout reads this p too
    return enc.double().train()


def prefixed(prefix: str) -> Callable[[str], str]:
    """An ``assert_close`` message that names the failing case and keeps torch's details."""
    return lambda message: f"{prefix}: {message}"


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is fastest, and far faster than two on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextlib.contextmanager
def gloo_group(rank: int, init_file: str) -> Iterator[None]:
    """Inside a worker: one thread, a gloo process group of WORLD ranks for the body, torn down after."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_workers(worker: Callable[..., None], model_dir: Path | str, out_dir: Path) -> list[object]:
    """Run ``worker(rank, init_file, model_dir, out_dir)`` on WORLD processes; return what each saved to
    ``out_dir/rank{r}.pt``.

    ``fork`` where available: the children inherit the imported modules (spawn re-imports torch and
    transformers in each child, 10+ s on a loaded 2-core machine); PyTorch resets the forked children's
    thread pools, and the workers use one thread each."""
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    init_file = str(out_dir / "init")
    mp.start_processes(
        worker, args=(init_file, str(model_dir), str(out_dir)), nprocs=WORLD, join=True, start_method=method
    )
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]
