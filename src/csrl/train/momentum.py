"""ESimCSE's momentum contrast: an EMA copy of the encoder and a FIFO queue of its embeddings of past batches.

Wu et al., COLING 2022, Section 3.2 (after MoCo, He et al. 2020). The momentum encoder starts as a copy of the
training encoder (backbone *and* training head) and follows it by an exponential moving average::

    theta_m <- momentum * theta_m + (1 - momentum) * theta        (momentum 0.995)

over the trainable parameters (frozen ones, such as a sentence-transformers ``Dense`` tail, stay as copied). It
runs with dropout off (its backbone stays in eval mode; the encoder itself in training mode, so the training head
applies as it does to the online views) and without gradient.

One training step (:func:`csrl.train.loop.training_step`):

1. the loss uses the queue as it stands: embeddings of the *previous* batches only (the current batch's
   momentum embeddings would be near-copies of its anchors, i.e. false negatives);
2. after the backward pass and before the optimizer step, :meth:`MomentumQueue.step` applies the EMA with the
   step's weights theta_t (as ESimCSE's code does: its update runs inside the forward), encodes the step's view-0
   sentences (the original sentences, not the repeated ones) with the momentum encoder, gathers them from every
   rank (so every rank holds the same global queue) and enqueues them: appended last, the oldest rows dropped
   beyond ``size`` (FIFO).

The queue is never reset (ESimCSE's code empties it at each epoch start, an artefact of its trainer loop). The
momentum encoder and the queue are part of every resumable checkpoint (``state.pt``, :meth:`state_dict`) and of
nothing else: the saved model (``best/``) is the online encoder alone.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.train import distributed as dist


class MomentumQueue:
    """The momentum encoder (``encoder``), its coefficient ``momentum`` and a queue of at most ``size`` rows."""

    def __init__(self, encoder: Encoder, *, momentum: float, size: int) -> None:
        if size < 1:
            raise ValueError(f"the momentum queue needs at least one row, got size={size}")
        # the tokenizer is shared, not copied (it holds no weights)
        self.encoder: Encoder = copy.deepcopy(encoder, memo={id(encoder.tokenizer): encoder.tokenizer})
        self.encoder.requires_grad_(False)
        self.encoder.train()  # the training head applies (Encoder.use_head) ...
        self.encoder.backbone.eval()  # ... and dropout does not (attention dropout included)
        self.momentum = momentum
        self.size = size
        self.queue: Tensor = torch.zeros(0, encoder.dim, device=encoder.device)

    def negatives(self) -> Tensor | None:
        """The queue for this step's loss (None while it is empty)."""
        return self.queue if self.queue.shape[0] else None

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """theta_m <- momentum * theta_m + (1 - momentum) * theta for every trainable parameter of ``online``
        (matched by name: the online encoder may carry more modules, e.g. the MLM head, which are skipped)."""
        source = dict(online.named_parameters())
        pairs = [(p, source[n]) for n, p in self.encoder.named_parameters() if n in source and source[n].requires_grad]
        targets: list[Tensor] = [p for p, _ in pairs]
        sources: list[Tensor] = [s.detach() for _, s in pairs]
        torch._foreach_mul_(targets, self.momentum)
        torch._foreach_add_(targets, sources, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Append ``keys`` (K, D) after the newest rows; keep the last ``size`` rows (FIFO)."""
        self.queue = torch.cat([self.queue, keys.detach().float()])[-self.size :]

    @torch.no_grad()
    def step(
        self,
        online: nn.Module,
        features: dict[str, Tensor],
        *,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    ) -> None:
        """EMA update from ``online``, then the momentum embeddings of ``features`` (this rank's view-0 rows),
        gathered from every rank, enqueued."""
        self.update(online)
        with autocast():
            keys = self.encoder(features).float()
        self.enqueue(dist.all_gather_with_grad(keys))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the momentum encoder's tensors and the queue (CPU copies)."""
        weights = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        return {"encoder": weights, "queue": self.queue.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state is None or "encoder" not in state or "queue" not in state:
            raise CsrlError(
                "the checkpoint holds no momentum encoder and queue, which this run's loss (ESimCSE) needs",
                hint="resume a checkpoint written by this run, or start the run again with --overwrite",
            )
        self.encoder.load_state_dict(state["encoder"])
        self.queue = state["queue"].to(self.encoder.device)


__all__ = ["MomentumQueue"]
