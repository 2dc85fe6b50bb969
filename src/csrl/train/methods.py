"""The training-side machinery of methods whose loss needs more than the batch's views (ESimCSE, SimCSE++).

A loss declares what it needs with ``step_inputs()`` (:class:`csrl.losses.step_inputs.StepInputs`); the run builds
a :class:`Method` from it once (:func:`build_method`), and every step asks it for:

- the word-repeated positive view (ESimCSE, ``dup_rate``): done when the batch is tokenised
  (:meth:`csrl.train.batches.TrainingData.features`, :mod:`csrl.data.augment`);
- extra loss inputs (:meth:`Method.extra_views`): ``queue=`` (ESimCSE's momentum queue, :mod:`csrl.train.momentum`)
  and ``clean=`` (SimCSE++'s dropout-free forward of the view-0 rows, with gradient, :func:`clean_embeddings`);
- after the backward pass, the momentum encoder's update and this batch's keys (:meth:`Method.after_backward`).

Refused (:func:`check_method`), with the reason: GradCache (``train.cache_chunk_size``: the extra forward and the
queue are not cached), length buckets (``train.compile=reduce-overhead`` or ``train.length_buckets``) with word
repetition (a repeated row may be longer than ``data.max_length``, hence than every bucket), and hard-negative
triplets (neither method has a hard-negative form). Distributed training works: the clean view is gathered like
the other views, and the queue holds every rank's keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.losses.step_inputs import StepInputs, step_inputs
from csrl.models.encoder import Encoder, model_limits
from csrl.train.batches import TrainingData
from csrl.train.compile import length_buckets
from csrl.train.config import RunConfig
from csrl.train.momentum import MomentumQueue

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


@contextlib.contextmanager
def dropout_off(module: nn.Module) -> Iterator[None]:
    """``module`` and its submodules in eval mode (no dropout: ``nn.Dropout`` and the attention's own dropout,
    which reads the attention module's flag) for the ``with`` block; every flag restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, was in flags:
            m.training = was


def view_rows(features: dict[str, Tensor], n_views: int, view: int = 0) -> dict[str, Tensor]:
    """The rows of view ``view`` of the view-major ``features`` (all anchors, then all positives, ...)."""
    rows = features["input_ids"].shape[0] // n_views
    return {k: v[view * rows : (view + 1) * rows] for k, v in features.items()}


def clean_embeddings(encoder: Encoder, features: dict[str, Tensor], n_views: int, *, autocast: Autocast) -> Tensor:
    """SimCSE++'s dropout-free embeddings of the view-0 rows, in the graph (their gradient trains the encoder).

    The backbone runs in eval mode; the encoder stays in training mode, so the training head applies as it does
    to the dropout views."""
    with dropout_off(encoder.backbone), autocast():
        return encoder(view_rows(features, n_views)).float()


@dataclass
class Method:
    """A run's :class:`StepInputs` and what they need built (empty for plain losses)."""

    inputs: StepInputs = field(default_factory=StepInputs)
    momentum: MomentumQueue | None = None
    paradigm_form: bool = True  # the loss's gradient has paper B's form on this data (loss trait, not scored pairs)

    @property
    def paradigm_applies(self) -> bool:
        """False when the loss gets negatives that are not rows of the batch (queue) or another forward
        (clean view), when the loss declares ``paradigm_applies = False`` (AnglE), and on scored pairs (CoSENT's
        ranking of gold-scored pairs has no negatives): paper B's decomposition (csrl.losses.paradigm) does not
        describe such a step, and the trainer logs no ``paradigm/*`` values."""
        return self.paradigm_form and self.momentum is None and not self.inputs.clean_view

    def extra_views(
        self, encoder: Encoder, features: dict[str, Tensor], n_views: int, *, autocast: Autocast
    ) -> dict[str, Tensor]:
        """The loss's extra inputs for this step: ``clean`` and ``queue`` where the method uses them."""
        extras: dict[str, Tensor] = {}
        if self.inputs.clean_view:
            extras["clean"] = clean_embeddings(encoder, features, n_views, autocast=autocast)
        queue = self.momentum.negatives() if self.momentum is not None else None
        if queue is not None:
            extras["queue"] = queue
        return extras

    def after_backward(
        self, encoder: Encoder, features: dict[str, Tensor], n_views: int, *, autocast: Autocast
    ) -> None:
        """ESimCSE: EMA update of the momentum encoder, then this batch's view-0 keys enqueued."""
        if self.momentum is not None:
            self.momentum.step(encoder, view_rows(features, n_views), autocast=autocast)

    def state_dict(self) -> dict[str, Any] | None:
        """What resumable checkpoints keep (None: nothing)."""
        return None if self.momentum is None else {"momentum": self.momentum.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.momentum is not None:
            self.momentum.load_state_dict(None if state is None else state.get("momentum"))


def check_method(cfg: RunConfig, inputs: StepInputs, n_fields: int) -> None:
    """Refuse the settings a method cannot honour (before any model is loaded)."""
    if not inputs.any:
        return
    name, t = cfg.loss.name, cfg.train
    if t.cache_chunk_size is not None:
        raise CsrlError(
            f"loss {name!r} with train.cache_chunk_size: GradCache does not cache its extra inputs (the dropout-free "
            "forward, the momentum queue)",
            hint="set train.cache_chunk_size=null (and a batch that fits in memory)",
        )
    if n_fields == 3:
        raise CsrlError(
            f"loss {name!r} has no hard-negative form, and the corpus has 3 fields (anchor, positive, hard negative)",
            hint="train on single sentences (unsupervised) or pairs: data.columns=[sent0,sent1]",
        )
    if inputs.dup_rate > 0 and length_buckets(cfg) is not None:
        raise CsrlError(
            f"loss {name!r} repeats subwords of the positive view, so its rows may be longer than data.max_length, "
            "and train.compile=reduce-overhead / train.length_buckets pad every row to a bucket up to that length",
            hint="use train.compile=off or default and train.length_buckets=null, or loss.dup_rate=0",
        )


def build_method(cfg: RunConfig, loss_fn: nn.Module, encoder: Encoder, data: TrainingData | None = None) -> Method:
    """The :class:`Method` of ``loss_fn`` for this run (the momentum encoder copies ``encoder`` as it is now:
    build it before anything else is attached to the encoder or compiled); ``data`` gets the word-repetition
    rate and the backbone's length limit."""
    inputs = step_inputs(loss_fn)
    size = round(inputs.queue_ratio * cfg.train.batch_size)
    momentum = MomentumQueue(encoder, momentum=inputs.momentum, size=size) if size >= 1 else None
    if data is not None and inputs.dup_rate > 0:
        data.dup_rate, data.repeat_limit = inputs.dup_rate, model_limits(cfg.model.model)[0]
    return Method(inputs, momentum, paradigm_form=paradigm_form(loss_fn, data))


def paradigm_form(loss_fn: nn.Module, data: TrainingData | None) -> bool:
    """Whether paper B's decomposition describes ``loss_fn`` on ``data``: not for a loss declaring
    ``paradigm_applies = False`` (nor a wrapper of one: matryoshka's ``inner_traits``), nor on scored pairs."""
    inner = getattr(loss_fn, "inner_traits", None)
    declared = bool(getattr(loss_fn, "paradigm_applies", True)) and bool(getattr(inner, "paradigm_applies", True))
    return declared and not (data is not None and data.scored)


__all__ = [
    "Method", "build_method", "check_method", "clean_embeddings", "dropout_off", "paradigm_form", "view_rows",
]  # fmt: skip
