"""Compiling the backbone for training (``train.compile``), and the length buckets CUDA graphs need.

At SimCSE's batch (64 sentences x 2 views x 32 tokens) a GPU step is bound by kernel launches and host
work, not arithmetic. ``train.compile=reduce-overhead`` removes both: the backbone is compiled with static
shapes (``dynamic=False``) and, on a CUDA device with the inductor backend, captured as CUDA graphs that
replay a whole forward (and backward) as one launch. A CUDA graph replays fixed shapes, so training
batches are padded to a few lengths (:func:`length_buckets`, applied in
:meth:`csrl.train.batches.TrainingData.features`): a step has one of at most ``len(buckets)`` shapes,
``(batch_size * n_views / world_size, bucket)``; the row count is fixed because the samplers only emit
full batches. Padding appends masked columns, so real tokens keep their positions and every pooler ignores
the new ones: embeddings are unchanged (up to float rounding of the differently shaped matmuls).

The modes (:data:`csrl.train.config.COMPILE_MODES`):

- ``off``: eager.
- ``default``: plain ``torch.compile`` (what ``train.compile=true`` meant): dynamic shapes after the first
  recompile, training and evaluation compiled.
- ``reduce-overhead``: length buckets, static shapes, CUDA graphs where possible. Only training-mode
  forwards are compiled; evaluation (``Encoder.encode``, eval mode) runs eagerly, because its batches are not
  bucketed and each of its shapes would cost a compilation and a captured graph. Without CUDA (or with a
  backend other than inductor) there are no CUDA graphs: the run compiles with static shapes and buckets
  all the same, and says so once (a warning).

Explicit ``train.length_buckets`` pad in every mode: an eager run with a compiled run's buckets has the same
shapes, hence, with a backend that draws dropout as eager code does, takes the same steps.

The backbone's ``forward`` is replaced on the instance (its parameters, ``state_dict`` keys and
``save_pretrained`` are untouched): checkpoints of a compiled run load into an eager one and back, so a
resume may change ``train.compile``.

Dropout under compilation: ``aot_eager``/``eager`` draw their masks from torch's generator exactly as eager
code does (same masks for the same RNG state; in fp32 the same steps bit for bit, while under bf16 autocast
the backward of dropout rounds differently: eager CPU dropout multiplies by a bf16 noise tensor holding
1/(1-p) rounded to bf16, the traced graph calls ``native_dropout_backward`` with the fp32 scale). Inductor
draws from its own Philox stream, seeded from torch's generator at every call, so its masks differ from
eager ones but are fresh per call and per element (the two dropout views of a sentence differ). Under CUDA
graphs the captured generator's offset advances at every replay (not verified here: no GPU in the tests).

Under CUDA graphs, a step's outputs live in memory the next step's replay overwrites; each training step
must begin with :func:`mark_step` (before its first forward) so the graphs know where a step starts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from csrl.models.encoder import Encoder
from csrl.train.config import RunConfig

_ATTR = "_csrl_compilation"


@dataclass(frozen=True)
class Compilation:
    """How an encoder's backbone was compiled; kept on the backbone (:func:`compilation` reads it)."""

    mode: str  # train.compile: default or reduce-overhead
    backend: str  # train.compile_backend
    cuda_graphs: bool  # captured as CUDA graphs: every training step must call mark_step() first
    buckets: tuple[int, ...] | None  # reduce-overhead: the padded lengths of training batches
    eager_forward: Callable[..., Any]  # the backbone's own forward (evaluation under reduce-overhead)


def default_length_buckets(max_length: int) -> tuple[int, ...]:
    """Multiples of ``8 * ceil(max_length / 64)`` below ``max_length``, then ``max_length``: at most 8 shapes
    (each a compilation and a captured graph per kind of call), lengths tensor cores like, and at most one
    step of padding per batch. ``32 -> (8, 16, 24, 32)``, ``128 -> (16, 32, ..., 128)``."""
    step = 8 * math.ceil(max_length / 64)
    return (*range(step, max_length, step), max_length)


def length_buckets(cfg: RunConfig) -> tuple[int, ...] | None:
    """The lengths training batches are padded to: ``train.length_buckets`` with ``data.max_length`` added last,
    in any compile mode (eager runs with the buckets of a compiled one take the same steps, see the tests);
    unset, :func:`default_length_buckets` under ``train.compile=reduce-overhead`` and None (pad to the batch's
    longest row) otherwise."""
    t, longest = cfg.train, cfg.data.max_length
    if t.length_buckets is not None:
        given = tuple(t.length_buckets)
        return given if given[-1] == longest else (*given, longest)
    return default_length_buckets(longest) if t.compile == "reduce-overhead" else None


def compilation(model: nn.Module) -> Compilation | None:
    """How the backbone of ``model`` (an :class:`Encoder`, or its DDP wrapper) was compiled; None when eager."""
    encoder = getattr(model, "module", model)  # DistributedDataParallel keeps the encoder as .module
    backbone = getattr(encoder, "backbone", None)
    info = getattr(backbone, _ATTR, None)
    return info if isinstance(info, Compilation) else None


def _allow_recompiles(n: int) -> None:
    """Let dynamo compile ``n`` variants of the backbone's forward (one per bucket and kind of call: the
    embedding forward and the MLM auxiliary one); past its limit (8 by default) it would quietly run eagerly."""
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(int(getattr(dynamo_config, name)), n))


def compile_backbone(encoder: Encoder, cfg: RunConfig, device: torch.device) -> Compilation | None:
    """Apply ``train.compile`` to ``encoder.backbone`` (in place) for training on ``device``; returns what was
    done (None for ``off``). Compiling again replaces the previous compilation."""
    t = cfg.train
    if t.compile == "off":
        return None
    backbone: Any = encoder.backbone
    previous = compilation(encoder)
    eager: Callable[..., Any] = previous.eager_forward if previous is not None else backbone.forward
    if t.compile == "default":
        info = Compilation("default", t.compile_backend, False, length_buckets(cfg), eager)
        backbone.forward = torch.compile(eager, backend=t.compile_backend)
        setattr(backbone, _ATTR, info)
        return info
    buckets = length_buckets(cfg)
    assert buckets is not None  # reduce-overhead always has buckets
    graphs = device.type == "cuda" and t.compile_backend == "inductor"
    if not graphs:
        why = "a CUDA device" if device.type != "cuda" else "the inductor backend"
        warnings.warn(
            f"train.compile=reduce-overhead on {device.type} with {t.compile_backend}: CUDA graphs need {why}; "
            f"compiling with static shapes (lengths {list(buckets)}) and no CUDA graphs",
            stacklevel=2,
        )
    _allow_recompiles(2 * len(buckets) + 2)
    options: dict[str, Any] = {"mode": "reduce-overhead"} if graphs else {}
    compiled = torch.compile(eager, backend=t.compile_backend, dynamic=False, **options)

    def forward(*args: Any, **kwargs: Any) -> Any:
        """Training forwards (bucketed shapes) run the compiled graphs; evaluation runs eagerly."""
        return (compiled if backbone.training else eager)(*args, **kwargs)

    info = Compilation("reduce-overhead", t.compile_backend, graphs, buckets, eager)
    backbone.forward = forward
    setattr(backbone, _ATTR, info)
    return info


def mark_step(model: nn.Module) -> None:
    """Tell CUDA graphs that a training step begins (``torch.compiler.cudagraph_mark_step_begin``); call it once
    per step before the step's first forward. A no-op unless ``model``'s backbone is captured as CUDA graphs."""
    info = compilation(model)
    if info is not None and info.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()


__all__ = ["Compilation", "compilation", "compile_backbone", "default_length_buckets", "length_buckets", "mark_step"]
