"""Learning dynamics: a training callback that probes the embedding geometry every ``k`` steps.

Paper A (papers.md 2) follows anisotropy, self-similarity of functional and content tokens,
intra-sentence similarity and token norms over training; SimCSE (papers.md 5) follows alignment and
uniformity. :class:`DynamicsCallback` computes them on a fixed probe set (by default the first
``train.dynamics_probe_size`` STS-B test ``sentence1``, paper A's analysis sentences), last layer, with
:func:`csrl.analysis.suite.dynamics_probe`: the metrics registered with ``probe=True`` in
:mod:`csrl.analysis.catalogue`, returned as ``"geometry/<key>"`` metrics, which the trainer merges into
``metrics.jsonl``, and every layer's anisotropy baseline, mean token norm and top rogue-dimension share
(``"layers/L<i>/<key>"``, :func:`csrl.analysis.suite.per_layer_probe`). ``train.dynamics_early_every`` /
``train.dynamics_early_until`` probe densely early in training, where paper A sees most of the change.
Alignment uses STS-B test pairs with a gold score above 4.

The probe runs in eval mode (no dropout, no training head under ``mlp_only_train``: the geometry of the
embeddings that are evaluated), restores the training mode, and runs inside ``torch.random.fork_rng``,
so a run with the callback is bit-identical to a run without it. Step 0 (the untrained model) has no
:class:`~csrl.train.callbacks.StepInfo`; the trainer records it with :meth:`DynamicsCallback.initial`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import torch

from csrl.analysis.function_words import IdToToken, tokenizer_vocab
from csrl.analysis.suite import dynamics_probe, encode_pairs
from csrl.data.sts import POSITIVE_THRESHOLD, load_positive_pairs
from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.train.callbacks import StepInfo
from csrl.train.config import RunConfig
from csrl.utils.checks import check_probe_schedule


class DynamicsCallback:
    """Geometry of a fixed probe set every ``every`` steps (``"geometry/..."`` metrics).

    sentences: the probe set. positive_pairs: (x sentences, y sentences) for alignment, or None.
    vocab / special_tokens: for the functional/content split; None = read from the encoder's tokenizer
    at the first call. Other arguments go to :func:`~csrl.analysis.suite.dynamics_probe`.
    """

    def __init__(
        self,
        sentences: Sequence[str],
        *,
        every: int,
        positive_pairs: tuple[Sequence[str], Sequence[str]] | None = None,
        vocab: IdToToken | None = None,
        special_tokens: Collection[str] | None = None,
        functional: Collection[str] | None = None,
        batch_size: int = 64,
        seed: int = 0,
        anisotropy_samples: int = 1000,
        min_count: int = 5,
        early_every: int = 0,
        early_until: int = 0,
        per_layer: bool = True,
    ) -> None:
        if every < 1:
            raise CsrlError(f"dynamics probe every {every} steps: must be >= 1")
        if early_every < 0 or early_until < 0:
            raise CsrlError(f"dynamics probe early_every={early_every}, early_until={early_until}: must be >= 0")
        if len(sentences) < 2:
            raise CsrlError(f"the dynamics probe needs at least 2 sentences, got {len(sentences)}")
        self.sentences = list(sentences)
        self.every = every
        self.pairs = None if positive_pairs is None else (list(positive_pairs[0]), list(positive_pairs[1]))
        if self.pairs is not None and len(self.pairs[0]) != len(self.pairs[1]):
            raise CsrlError("positive pairs: the two sides differ in length")
        self.vocab = vocab
        self.special_tokens = special_tokens
        self.functional = functional
        self.batch_size = batch_size
        self.seed = seed
        self.anisotropy_samples = anisotropy_samples
        self.min_count = min_count
        self.early_every = early_every
        self.early_until = early_until
        self.per_layer = per_layer
        self.steps: list[int] = []  # steps probed so far (step 0 included)

    def due(self, step: int) -> bool:
        """Whether ``step`` is probed: every ``every`` steps, and every ``early_every`` up to ``early_until``."""
        early = self.early_every > 0 and step <= self.early_until and step % self.early_every == 0
        return early or step % self.every == 0

    def __call__(self, info: StepInfo) -> dict[str, float] | None:
        if not self.due(info.step):
            return None
        return self.probe(info.encoder, step=info.step)

    def initial(self, encoder: Encoder) -> dict[str, float]:
        """The step-0 probe (before the first update); the trainer logs it at step 0."""
        return self.probe(encoder, step=0)

    def probe(self, encoder: Encoder, *, step: int | None = None) -> dict[str, float]:
        """Run the probe now: eval mode, no grad, the torch RNG untouched, training mode restored."""
        if self.vocab is None:
            self.vocab, self.special_tokens = tokenizer_vocab(encoder.tokenizer)
        was_training = encoder.training
        dev = encoder.device
        cuda = [dev.index or 0] if dev.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                encoder.eval()
                states = encoder.token_states(self.sentences, batch_size=self.batch_size)
                pairs = self._encode_pairs(encoder)
        finally:
            encoder.train(was_training)
        out = dynamics_probe(
            states,
            positive_pairs=pairs,
            vocab=self.vocab,
            functional=self.functional,
            special_tokens=self.special_tokens,
            seed=self.seed,
            anisotropy_samples=self.anisotropy_samples,
            min_count=self.min_count,
            per_layer=self.per_layer,
        )
        if step is not None:
            self.steps.append(step)
        return out

    def _encode_pairs(self, encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.pairs or not self.pairs[0]:
            return None
        return encode_pairs(lambda s: encoder.encode(s, batch_size=self.batch_size), *self.pairs)


def probe_sentences(data_dir: Path | None, limit: int) -> list[str]:
    """STS-B test ``sentence1`` (the raw, cased release; the SentEval copy when the raw one is absent)."""
    from csrl.data.sts import load_analysis_sentences, load_sts_task

    try:
        return load_analysis_sentences(data_dir, limit=limit)
    except CsrlError as raw_error:
        try:
            task = load_sts_task("stsb", data_dir, split="test")
        except CsrlError:
            raise raw_error from None
        return list(task.subsets[0].sentences1[:limit])


def positive_pairs(data_dir: Path | None, threshold: float = POSITIVE_THRESHOLD) -> tuple[list[str], list[str]] | None:
    """STS-B test pairs with a gold score above ``threshold``; None when STS-B is not available."""
    try:
        return load_positive_pairs(data_dir, threshold)
    except CsrlError:
        return None


def make_dynamics_callback(cfg: RunConfig, encoder: Encoder, data_dir: Path | None) -> DynamicsCallback | None:
    """The callback for ``cfg.train.dynamics_every`` (None when it is 0).

    The trainer calls callbacks only on logged steps, so ``dynamics_every`` must be a multiple of
    ``log_every``.
    """
    t = cfg.train
    if not t.dynamics_every:
        return None
    check_probe_schedule(t.dynamics_every, t.dynamics_early_every, t.log_every)
    if t.dynamics_probe_size < 2:
        raise CsrlError(f"train.dynamics_probe_size must be >= 2, got {t.dynamics_probe_size}")
    vocab, special_tokens = tokenizer_vocab(encoder.tokenizer)
    return DynamicsCallback(
        probe_sentences(data_dir, t.dynamics_probe_size),
        every=t.dynamics_every,
        positive_pairs=positive_pairs(data_dir),
        vocab=vocab,
        special_tokens=special_tokens,
        batch_size=min(t.eval_batch_size, 128),
        seed=0,  # the same anisotropy token draw in every run, so runs compare on the same tokens
        early_every=t.dynamics_early_every,
        early_until=t.dynamics_early_until,
    )


__all__ = ["POSITIVE_THRESHOLD", "DynamicsCallback", "make_dynamics_callback", "positive_pairs", "probe_sentences"]
