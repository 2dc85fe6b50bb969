"""The masked-language-model objective: BERT's masking, the head on masked positions only, and SimCSE's
MLM auxiliary loss (``train.mlm_weight``). ``csrl pretrain`` (:mod:`csrl.pretrain`) builds on the same
functions, so the two compute the MLM loss identically.

**Masking** (:func:`mask_tokens`, BERT's recipe): every token that is neither a special token nor padding
is chosen with probability ``probability`` (15 %); labels keep the chosen tokens' ids and are -100
elsewhere; of the chosen tokens 80 % become ``[MASK]``, 10 % a random token of the vocabulary, 10 % stay.
Token-level masking is transformers' ``DataCollatorForLanguageModeling.torch_mask_tokens``. Whole-word
masking is csrl's own, because transformers' version replaces every chosen token by ``[MASK]`` (no
80/10/10) and finds words by gaps in character offsets: here a WordPiece token starting with ``##``
continues the word of the token before it (Google BERT's definition, punctuation being its own word), each
word is chosen with probability ``probability`` (so each token is masked with that probability), and the
80/10/10 replacement is drawn per token as in Google's ``create_pretraining_data.py``. Draws use torch's
global RNG, which resumable checkpoints restore.

**The head on masked positions only** (:func:`masked_lm_loss`): the prediction head (transform + the
full-vocabulary decoder) runs on the hidden states of the masked positions alone, ``(n_masked, hidden)``
instead of ``(batch, length, hidden)``; for a small encoder the decoder at every position costs more
than the encoder itself. The loss is the cross-entropy averaged over the masked positions, which equals
``BertForMaskedLM``'s loss (labels -100 are ignored there).

**SimCSE's auxiliary objective** (``train.mlm_weight`` > 0; SimCSE's ``do_mlm`` with ``mlm_weight`` 0.1):
exactly as SimCSE's ``train.py``/``models.py``: every row of the step's tokenised batch (each view: both
dropout copies of a sentence in unsupervised training; sentence, positive and hard negative in supervised
training) is masked independently (15 %, 80/10/10, special tokens and padding never), encoded in a second
forward pass of the backbone (dropout on, same attention mask), and the MLM loss over all masked positions
is added to the contrastive loss with weight ``mlm_weight`` before the single backward pass of the step
(:func:`csrl.train.step.embed_and_backward`'s ``extra_loss``). The head is the checkpoint's own
(``cls.predictions`` of a ``BertForMaskedLM`` folder such as the output of ``csrl pretrain``, or ``lm_head``
of a RoBERTa-style one), an untied copy trained with the encoder, as SimCSE loads ``cls.predictions`` into
its ``lm_head``; a model without one is refused. It is registered as the encoder's submodule ``mlm_head``,
so the optimizer, DDP and resumable checkpoints carry it; the saved sentence encoder (``best/``) does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.losses.registry import LossOutput
from csrl.train import distributed as dist

MLM_PROBABILITY = 0.15  # BERT's and SimCSE's masking rate
IGNORE = -100  # label of the positions the loss ignores (transformers' convention)
HEAD_ATTRIBUTES = ("cls", "lm_head")  # BertForMaskedLM, RobertaForMaskedLM (and their relatives)
ATTACHED_HEAD = "mlm_head"  # the encoder's submodule holding the auxiliary head

__all__ = [
    "IGNORE",
    "MLM_PROBABILITY",
    "MaskedLMOutput",
    "attach_mlm_head",
    "auxiliary_mlm_loss",
    "load_masked_lm",
    "load_mlm_head",
    "mask_tokens",
    "masked_lm_loss",
    "mlm_head_of",
    "never_masked",
    "wordpiece_continuations",
]


# ----------------------------------------------------------------------------- masking
def never_masked(input_ids: Tensor, attention_mask: Tensor | None, special_ids: Any) -> Tensor:
    """(B, T) bool: the positions masking must leave alone: special tokens ([CLS], [SEP], [PAD], ...) and
    padding (``attention_mask == 0``)."""
    special = torch.isin(input_ids, torch.as_tensor(sorted(set(special_ids)), dtype=input_ids.dtype))
    return special if attention_mask is None else special | (attention_mask == 0)


def wordpiece_continuations(tokenizer: Any) -> Tensor:
    """(vocab,) bool: True for WordPiece tokens that continue a word (``##...``), for whole-word masking."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    table = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    ids = [i for tok, i in vocab.items() if tok.startswith("##")]
    if not ids:
        raise CsrlError(
            f"whole-word masking needs a WordPiece tokenizer (words continued by '##' tokens); "
            f"{type(tokenizer).__name__} has no '##' token",
            hint="set data.whole_word_masking=false (token-level masking works with any tokenizer)",
        )
    table[torch.as_tensor(ids)] = True
    return table


def _replace(inputs: Tensor, masked: Tensor, mask_id: int, vocab_size: int) -> None:
    """80 % of ``masked`` -> ``mask_id``, 10 % -> a random token, 10 % kept (in place; the draws of
    transformers' ``torch_mask_tokens``)."""
    replaced = torch.bernoulli(torch.full(inputs.shape, 0.8)).bool() & masked
    inputs[replaced] = mask_id
    randomised = torch.bernoulli(torch.full(inputs.shape, 0.5)).bool() & masked & ~replaced
    words = torch.randint(vocab_size, inputs.shape, dtype=torch.long)
    inputs[randomised] = words[randomised]


def mask_tokens(
    input_ids: Tensor,
    tokenizer: Any,
    *,
    never: Tensor,
    probability: float = MLM_PROBABILITY,
    continuations: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking of a (B, T) CPU batch: ``(masked inputs, labels)``; ``input_ids`` is not modified.

    ``never``: (B, T) positions never masked (:func:`never_masked`). ``continuations``: the table of
    :func:`wordpiece_continuations` for whole-word masking; None masks tokens independently (transformers'
    collator). See the module docstring for the draws.
    """
    if continuations is None:
        from transformers import DataCollatorForLanguageModeling

        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
        return collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=never)  # type: ignore[no-any-return]
    starts = ~continuations[input_ids] & ~never
    chosen = torch.bernoulli(torch.where(starts, probability, 0.0)).bool()
    # each token belongs to the word of the last word start at or before it
    position = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    last_start = torch.where(starts, position, 0).cummax(dim=1).values
    masked = chosen.gather(1, last_start) & ~never
    labels = torch.where(masked, input_ids, IGNORE)
    inputs = input_ids.clone()
    _replace(inputs, masked, int(tokenizer.mask_token_id), len(tokenizer))
    return inputs, labels


# ----------------------------------------------------------------------------- the loss on masked positions
class MaskedLMOutput(NamedTuple):
    """``loss``: mean cross-entropy over the masked positions (0 when none); ``logits``: (n_masked, vocab);
    ``targets``: (n_masked,) the original token ids."""

    loss: Tensor
    logits: Tensor
    targets: Tensor


def masked_lm_loss(hidden: Tensor, labels: Tensor, head: nn.Module) -> MaskedLMOutput:
    """The MLM loss from the encoder's last hidden states (B, T, H) and labels (B, T; -100 = not masked),
    running ``head`` on the masked positions only."""
    selected = labels != IGNORE
    logits = head(hidden[selected])
    targets = labels[selected]
    if targets.numel() == 0:  # no token was masked in this batch: a zero loss that keeps the graph
        return MaskedLMOutput(logits.sum() * 0.0, logits, targets)
    return MaskedLMOutput(F.cross_entropy(logits.float(), targets), logits, targets)


def mlm_head_of(model: nn.Module) -> nn.Module:
    """The prediction head of a transformers ``*ForMaskedLM`` model (``cls`` or ``lm_head``)."""
    for name in HEAD_ATTRIBUTES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise CsrlError(
        f"{type(model).__name__} has no masked-LM head csrl knows ({' or '.join(HEAD_ATTRIBUTES)})",
        hint="use a BERT- or RoBERTa-style *ForMaskedLM checkpoint (for example one made by csrl pretrain)",
    )


# ----------------------------------------------------------------------------- SimCSE's auxiliary objective
def load_masked_lm(model: str, *, setting: str, hint: str) -> Any:  # a transformers PreTrainedModel
    """Checkpoint ``model`` (a folder or Hub id) as a ``*ForMaskedLM`` with its trained MLM head.

    Refuses a checkpoint without MLM head weights (a sentence encoder, a bare ``BertModel``): transformers would
    initialise a random head, whose predictions are noise. ``setting`` names the option that asked for the model
    in the messages; ``hint`` says what to do instead.
    """
    from transformers import AutoModelForMaskedLM

    from csrl.models.encoder import _quiet_transformers, resolve_model_name

    path = resolve_model_name(model)
    try:
        with _quiet_transformers():
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise CsrlError(f"{setting}: model {model} cannot be loaded as a masked LM ({exc})", hint=hint) from None
    mlm_head_of(mlm)  # refuses an architecture without a known MLM head
    prefixes = tuple(f"{name}." for name in HEAD_ATTRIBUTES)
    missing = [k for k in info.get("missing_keys", ()) if k.startswith(prefixes) and "decoder.weight" not in k]
    if missing:
        raise CsrlError(
            f"{setting} needs a masked-LM head, and model {model} has none "
            f"(its checkpoint lacks {', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''})",
            hint=hint,
        )
    return mlm


def load_mlm_head(model: str, hidden_size: int) -> nn.Module:
    """The MLM head of checkpoint ``model`` (a folder or Hub id), as an untied trainable copy.

    Refuses a checkpoint without MLM head weights (:func:`load_masked_lm`): a random head would make the
    auxiliary loss teach the encoder to serve random predictions.
    """
    mlm = load_masked_lm(
        model, setting="train.mlm_weight > 0",
        hint="make one with csrl pretrain (configs/pretrain-mlm-cpu.yaml) and train from its model/ folder, "
        "use a *ForMaskedLM checkpoint (e.g. bert-base-uncased), or set train.mlm_weight=0",
    )  # fmt: skip
    head = mlm_head_of(mlm)
    if int(mlm.config.hidden_size) != hidden_size:
        raise CsrlError(f"model {model}: its MLM head expects {mlm.config.hidden_size}-dim states, not {hidden_size}")
    for p in head.parameters():  # untie the decoder from the discarded model's embeddings: an own copy
        p.data = p.data.clone()
    return head


def attach_mlm_head(encoder: nn.Module, model: str, *, weight: float) -> None:
    """With ``weight`` > 0, load the checkpoint's MLM head and register it as ``encoder.mlm_head`` (on the
    encoder's device); with 0 do nothing."""
    if not weight:
        return
    device = next(encoder.parameters()).device
    backbone: Any = getattr(encoder, "backbone")
    encoder.add_module(ATTACHED_HEAD, load_mlm_head(model, int(backbone.config.hidden_size)).to(device))


def auxiliary_mlm_loss(
    encoder: nn.Module,
    features: dict[str, Tensor],
    *,
    weight: float,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> LossOutput:
    """SimCSE's MLM term for one step: every row of ``features`` masked, encoded again, scored on its masked
    positions; ``total`` is ``weight`` x the MLM loss and ``terms["mlm"]`` the MLM loss itself.

    Under torchrun ``total``'s value is multiplied by the world size like the contrastive loss's
    (:func:`csrl.train.step.compute_loss`, so ``train/loss`` logs the sum), while its gradient is not: DDP's
    mean over ranks of the per-rank MLM gradients is the gradient of the mean MLM loss.
    """
    backbone: Any = getattr(encoder, "backbone")
    head = getattr(encoder, ATTACHED_HEAD)
    ids = features["input_ids"]
    attention = features.get("attention_mask")
    tokenizer: Any = getattr(encoder, "tokenizer")
    never = never_masked(ids.cpu(), None if attention is None else attention.cpu(), tokenizer.all_special_ids)
    inputs, labels = mask_tokens(ids.cpu(), tokenizer, never=never)
    extra = {k: v for k, v in features.items() if k in ("attention_mask", "token_type_ids")}
    with autocast():
        hidden = backbone(input_ids=inputs.to(ids.device), **extra, return_dict=True).last_hidden_state
        out = masked_lm_loss(hidden, labels.to(ids.device), head)
    mlm = out.loss.float()
    scaled = mlm + (dist.world_size() - 1) * mlm.detach()
    return LossOutput(weight * scaled, {"mlm": mlm.detach()})
