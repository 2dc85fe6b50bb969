"""ESimCSE's objective: InfoNCE whose negatives are the in-batch positives plus a queue of momentum embeddings.

Wu et al., "ESimCSE: Enhanced Sample Building Method for Contrastive Learning of Unsupervised Sentence
Embedding", COLING 2022. With h_i the anchor (view 0: the sentence, dropout on), h_i+ its positive (view 1: the
sentence with some subwords repeated, dropout on; :mod:`csrl.data.augment`) and q_1..q_M the queue (a momentum
encoder's embeddings of the sentences of past batches, dropout off; :mod:`csrl.train.momentum`)::

    L_i = -log  e^{cos(h_i, h_i+)/tau} / ( sum_{j=1..B} e^{cos(h_i, h_j+)/tau} + sum_{m=1..M} e^{cos(h_i, q_m)/tau} )

averaged over the B anchors. The queue is a constant (no gradient flows into it). With an empty queue (the
first step, or ``queue_ratio: 0``) this is :func:`csrl.losses.infonce.info_nce` exactly.

Hyper-parameters (the paper's BERT-base setting): ``temperature`` 0.05; the method's own, which the trainer
reads through :meth:`ESimCSELoss.step_inputs`: ``dup_rate`` 0.32 (maximal repetition rate), ``momentum`` 0.995
(EMA coefficient: theta_m <- momentum * theta_m + (1 - momentum) * theta), ``queue_ratio`` 2.5 (queue size M =
2.5 x the global batch: 160 at batch 64, the released training log's ``neg_size``).

Relations: :func:`~csrl.losses.infonce.info_nce` with M extra negatives shared by every anchor (unlike
SimCSE's hard negatives, one per anchor); MoCo's queue and momentum encoder (He et al. 2020), but the queue
only adds negatives: the positive stays the online encoder's second view. SimCSE++ (:mod:`csrl.losses.simcsepp`)
changes the negatives the other way: the in-batch ones are encoded without dropout.

Gradient paradigm (paper B): dL/dh_i has paper B's form with c = 1/tau, GD = 1 - P_ii+, W = the softmax over
every negative (in-batch and queue), R = 1. csrl's decomposition (:mod:`csrl.losses.paradigm`) is over the
batch's own candidates, so it does not see the queue; the trainer therefore logs no ``paradigm/*`` values for
a step whose loss received a queue, and the registry declares no closed form. Called without a queue (as the
paradigm functions call it) the loss is InfoNCE and decomposes as InfoNCE does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from csrl.losses._functional import (
    check_no_hard_neg,
    check_pair,
    check_positive,
    check_range,
    cross_cosine,
    diagonal_cross_entropy,
)
from csrl.losses.registry import Loss, LossOutput, register_loss
from csrl.losses.step_inputs import StepInputs

MAX_QUEUE_RATIO = 1024.0  # queue sizes beyond this many batches only cost memory


def esimcse(z1: Tensor, z2: Tensor, queue: Tensor | None = None, *, temperature: float = 0.05) -> LossOutput:
    """The module docstring's L, mean over anchors. z1, z2: (B, D) paired views; queue: (M, D) or None.

    The candidates of anchor i are the rows of ``z2`` (its positive in column i), then the queue's rows.
    The queue is detached here, whatever the caller passes."""
    check_pair(z1, z2, name="esimcse")
    cands = z2
    if queue is not None:
        if queue.ndim != 2 or queue.shape[1] != z1.shape[1]:
            raise ValueError(f"esimcse: queue must be (M, {z1.shape[1]}), got {tuple(queue.shape)}")
        cands = torch.cat([z2, queue.detach().to(z2.dtype)], dim=0)
    loss = diagonal_cross_entropy(cross_cosine(z1, cands) / temperature)
    return LossOutput(loss, {"esimcse": loss.detach()})


@register_loss("esimcse")
class ESimCSELoss(Loss):
    """ESimCSE: InfoNCE at ``temperature`` over in-batch and queue negatives; the trainer repeats subwords of
    view 1 (``dup_rate``) and keeps the momentum encoder (``momentum``) and its queue (``queue_ratio`` x batch)."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = False
    paper_defaults: ClassVar[Mapping[str, Any]] = {
        "temperature": 0.05, "dup_rate": 0.32, "momentum": 0.995, "queue_ratio": 2.5,
    }  # fmt: skip

    def __init__(
        self, temperature: float = 0.05, dup_rate: float = 0.32, momentum: float = 0.995, queue_ratio: float = 2.5
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_range("dup_rate", dup_rate, 0.0, 1.0)
        check_range("momentum", momentum, 0.0, 1.0)
        check_range("queue_ratio", queue_ratio, 0.0, MAX_QUEUE_RATIO)
        self.temperature = temperature
        self.dup_rate = dup_rate
        self.momentum = momentum
        self.queue_ratio = queue_ratio

    def forward(
        self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, queue: Tensor | None = None
    ) -> LossOutput:
        check_no_hard_neg(hard_neg, "esimcse")
        return esimcse(z1, z2, queue, temperature=self.temperature)

    def step_inputs(self) -> StepInputs:
        return StepInputs(dup_rate=self.dup_rate, queue_ratio=self.queue_ratio, momentum=self.momentum)


__all__ = ["ESimCSELoss", "esimcse"]
