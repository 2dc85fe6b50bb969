"""Shared pieces of the distributed tests: for the float64 parity tests (DDP and GradCache) a deterministic tiny
encoder, two gloo processes and assert messages that name the failing case; a faked ``torch.distributed`` for
the in-process gather tests; a free port and the common settings for the real ``torchrun`` tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

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


class FakeDist:
    """Stands in for ``torch.distributed`` (monkeypatched into ``csrl.train.distributed``) as rank ``rank`` of
    ``world``.

    ``all_gather`` answers from the full tensors: it finds the registered full tensor whose ``rank``-th shard
    is the local input and hands out every rank's shard of it; ``calls`` counts the gathers.
    """

    def __init__(self, rank: int, world: int, full: list[Tensor]) -> None:
        self.rank, self.world, self.full = rank, world, full
        self.calls = 0

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world

    def all_gather(self, parts: list[Tensor], x: Tensor) -> None:
        self.calls += 1
        for f in self.full:
            shards = f.detach().chunk(self.world)
            if shards[self.rank].shape == x.shape and torch.equal(shards[self.rank], x):
                for p, s in zip(parts, shards, strict=True):
                    p.copy_(s)
                return
        raise AssertionError("all_gather called with a tensor that is no shard of the batch")


def free_port() -> int:
    """A TCP port free now on 127.0.0.1, for ``torchrun --master_port``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_overrides(model: Path, train_file: Path, out: Path, *, batch_size: int, steps: int) -> list[str]:
    """``--set`` overrides shared by the ``torchrun`` tests and their single-process references: a tiny model,
    no evaluation, a checkpoint every 2 steps, one thread, no paradigm statistics, and fp32 (``auto`` is bf16 on
    CPUs with bf16 units: the rounding would then depend on each rank's padded batch shape)."""
    return [
        f"model.model={model}",
        f"data.train_files=[{train_file}]",
        f"output_dir={out}",
        f"train.batch_size={batch_size}",
        f"train.max_steps={steps}",
        "train.eval_every=0",
        "train.checkpoint_every=2",
        "train.final_eval=false",
        "train.progress=false",
        "train.lr=1e-3",
        "train.num_threads=1",
        "train.paradigm_every=0",
        "train.precision=fp32",
    ]
