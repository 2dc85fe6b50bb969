"""DiffCSE (Chuang et al., NAACL 2022, "DiffCSE: Difference-based Contrastive Learning for Sentence
Embeddings"): unsupervised SimCSE plus a *conditional* replaced-token-detection (RTD) loss
(``train.diffcse_weight`` > 0, ``train.diffcse_generator``, ``train.diffcse_mask_ratio``).

**The objective.** For a batch of sentences x with embeddings h = f(x):

    L = L_SimCSE + lambda * L_RTD
    L_RTD = mean over the scored positions t of BCE(D(x'', h)_t, y_t),   y_t = 1[x''_t != x_t]

- x' is x with a fraction ``diffcse_mask_ratio`` (paper, BERT: 30 %) of its tokens replaced by ``[MASK]``; only
  tokens that are neither special tokens nor padding are drawn (each independently with that probability; every
  drawn token becomes ``[MASK]``, no 80/10/10). The draws use torch's global CPU RNG, which resumable
  checkpoints restore.
- x'' = G(x'): a **frozen** masked LM G (``diffcse_generator``: a ``*ForMaskedLM`` folder such as the output of
  ``csrl pretrain``, or a Hub id) samples one token from its softmax at each masked position (temperature 1,
  the whole vocabulary); other positions keep x's token. G runs in eval mode without gradient, is not a
  parameter of the encoder (not in the optimizer, the checkpoints or ``best/``) and only has to share the
  encoder's vocabulary: a generator whose tokenizer vocabulary or special-token ids differ is refused, since
  its samples would be other words than the ids say (a silent wrong result).
- y_t = 1 ("replaced") where the sampled token differs from the original, 0 ("original") everywhere else,
  including masked positions where G sampled the original token back (ELECTRA's labelling).
- D is a transformer initialised as a copy of the encoder's backbone as training starts, plus a per-token
  head ``Linear(hidden, 1)`` (logits of "replaced"). It reads x'' with h **in place of the input embedding of
  position 0** (the [CLS] slot; position and token-type embeddings and the embedding LayerNorm then apply as for
  any token), so the only way D learns which tokens of x'' differ from x is through h: the RTD gradient flows
  into D and, through h, into f.
- The BCE is averaged over the positions of x'' that are neither special tokens nor padding (position 0, where
  h sits, is [CLS] and is not scored); a batch without any such position contributes 0.
- h is the training embedding of the **first dropout view** (``Views.z1``: the pooler and the training head, as
  the InfoNCE term sees it), taken from the step's one forward pass rather than a third forward: it is f(x)
  under the same dropout as the contrastive term, and its RTD gradient adds to the InfoNCE gradient of the same
  rows. The paper conditions D on "the sentence embedding h = f(x)" without more detail.
- The paper's lambda is 0.005 for BERT; csrl's default ``train.diffcse_weight`` is 0 (off) and the recipe
  ``configs/methods/diffcse.yaml`` sets 0.005 and mask ratio 0.3.

Not reproduced: the paper's BERT models use a projector with BatchNorm; csrl keeps the run's pooler and head.

**Where it sits.** D (backbone copy + head) is registered as the encoder's submodule ``diffcse``, like SimCSE's
``mlm_head`` (:mod:`csrl.train.mlm_aux`): the optimizer, DDP and resumable checkpoints carry it, the saved
sentence encoder (``best/``, :func:`csrl.models.save.save_encoder`, which writes the backbone and the head only)
does not. G hangs off that module outside PyTorch's registry (moved with it by ``.to()``, never in
``parameters()`` or ``state_dict()``). The loss enters the step as ``views_loss`` of
:func:`csrl.train.step.embed_and_backward`, before the step's single backward pass.

**Siblings.** SimCSE is DiffCSE with lambda = 0. ELECTRA's RTD is the same per-token detection without the
conditioning h (a pre-training objective of the token encoder itself, D's own [CLS]). SimCSE's auxiliary MLM
loss (``train.mlm_weight``, :mod:`csrl.train.mlm_aux`) makes the encoder reconstruct masked tokens; the DiffCSE
paper reports that it hurts STS while the conditional RTD term helps.

**Gradient paradigm (paper B's GD / W / R).** The InfoNCE term keeps its form, and the trainer still logs
``paradigm/*`` (:attr:`csrl.train.methods.Method.paradigm_applies`), computed from the views and the loss function
alone: those values describe the **InfoNCE term only**. The RTD term's gradient reaches h = z1 through D, a
per-token classifier, and has no such decomposition (no positives, negatives or weights over the batch); the
step's actual gradient on z1 is the InfoNCE one plus lambda times that. ``loss/rtd`` (the unweighted RTD loss)
and ``loss/rtd_replaced`` (the fraction of scored positions that were replaced) are logged beside it.

Under torchrun the term's value is multiplied by the world size like the contrastive loss's (so ``train/loss``
logs the sum) while its gradient is not, as for the MLM auxiliary loss: DDP's mean over ranks of the per-rank
gradients is the gradient of the mean RTD loss.
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
from csrl.train.mlm_aux import load_masked_lm, mlm_head_of, never_masked

DIFFCSE_MASK_RATIO = 0.3  # the paper's masking ratio for BERT
DIFFCSE_WEIGHT = 0.005  # the paper's lambda for BERT
ATTACHED = "diffcse"  # the encoder's submodule holding the discriminator

__all__ = [
    "ATTACHED",
    "DIFFCSE_MASK_RATIO",
    "DIFFCSE_WEIGHT",
    "Corruption",
    "Discriminator",
    "attach_diffcse",
    "check_same_vocabulary",
    "corrupt",
    "diffcse_rtd_loss",
    "discriminator_of",
    "load_generator",
    "mask_for_generator",
]


# ----------------------------------------------------------------------------- x -> x' -> x''
def mask_for_generator(input_ids: Tensor, never: Tensor, mask_id: int, ratio: float) -> tuple[Tensor, Tensor]:
    """``(x', masked)``: each position outside ``never`` is masked with probability ``ratio`` (CPU draws from
    torch's global RNG) and becomes ``mask_id``; ``input_ids`` is not modified."""
    probability = torch.where(never.cpu(), 0.0, float(ratio))
    masked = torch.bernoulli(probability).bool().to(input_ids.device)
    return input_ids.masked_fill(masked, mask_id), masked


class Corruption(NamedTuple):
    """``replaced_ids``: x'' (B, T); ``labels``: (B, T) float, 1 where x'' differs from x; ``scored``: (B, T) bool,
    the positions the loss averages over (neither special nor padding); ``masked``: (B, T) bool, where G sampled."""

    replaced_ids: Tensor
    labels: Tensor
    scored: Tensor
    masked: Tensor


@torch.no_grad()
def corrupt(
    generator: nn.Module,
    features: dict[str, Tensor],
    *,
    special_ids: Any,
    mask_id: int,
    ratio: float,
) -> Corruption:
    """x'' and its labels for the rows of ``features``: mask (:func:`mask_for_generator`), then one token sampled
    from the frozen generator's softmax at each masked position (its head runs on those positions only)."""
    ids = features["input_ids"]
    attention = features.get("attention_mask")
    never = never_masked(ids.cpu(), None if attention is None else attention.cpu(), special_ids).to(ids.device)
    masked_inputs, masked = mask_for_generator(ids, never, mask_id, ratio)
    extra = {k: v for k, v in features.items() if k in ("attention_mask", "token_type_ids")}
    replaced = ids.clone()
    if bool(masked.any()):
        base: Any = getattr(generator, "base_model")
        hidden = base(input_ids=masked_inputs, **extra, return_dict=True).last_hidden_state
        logits = mlm_head_of(generator)(hidden[masked]).float()
        replaced[masked] = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
    labels = (replaced != ids).float()
    return Corruption(replaced, labels, ~never, masked)


# ----------------------------------------------------------------------------- the discriminator
class Discriminator(nn.Module):
    """D: a transformer (a copy of the encoder's backbone) and a per-token ``Linear(hidden, 1)``; the frozen
    generator G rides along outside the module registry (see the module docstring)."""

    def __init__(self, backbone: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(getattr(backbone, "config").hidden_size), 1)
        self.__dict__["generator"] = generator  # not a submodule: no parameters, no state_dict entries

    @property
    def generator(self) -> nn.Module:
        generator: nn.Module = self.__dict__["generator"]
        return generator

    def _apply(self, fn: Any, recurse: bool = True) -> Discriminator:
        super()._apply(fn, recurse)
        self.generator._apply(fn)  # .to(device) / .half() move the generator with D
        return self

    def train(self, mode: bool = True) -> Discriminator:
        super().train(mode)
        self.generator.eval()  # always frozen, never dropout
        return self

    def forward(self, input_ids: Tensor, h: Tensor, features: dict[str, Tensor]) -> Tensor:
        """(B, T) logits of "replaced" for ``input_ids`` (x''), ``h`` (B, hidden) replacing position 0's input
        embedding; ``features`` gives the attention mask and token types."""
        backbone: Any = self.backbone
        embeds = backbone.get_input_embeddings()(input_ids)
        embeds = torch.cat([h.to(embeds.dtype).unsqueeze(1), embeds[:, 1:]], dim=1)
        extra = {k: v for k, v in features.items() if k in ("attention_mask", "token_type_ids")}
        hidden = backbone(inputs_embeds=embeds, **extra, return_dict=True).last_hidden_state
        logits: Tensor = self.head(hidden).squeeze(-1)
        return logits


def discriminator_of(encoder: nn.Module) -> Discriminator:
    module = getattr(encoder, ATTACHED, None)
    if not isinstance(module, Discriminator):
        raise CsrlError("DiffCSE: the encoder has no discriminator attached (train.diffcse_weight is 0)")
    return module


# ----------------------------------------------------------------------------- the generator
_SPECIALS = ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id", "bos_token_id")


def check_same_vocabulary(tokenizer: Any, generator_tokenizer: Any, generator_vocab: int, encoder_vocab: int,
                          name: str) -> None:  # fmt: skip
    """Refuse a generator whose token ids mean other words than the encoder's: another vocabulary, other
    special-token ids, or another embedding size (sampled ids must index D's embeddings)."""
    hint = (
        "use a masked LM trained with the encoder's tokenizer: csrl pretrain (configs/pretrain-mlm-cpu.yaml) "
        "keeps the tokenizer of its base model, or a *ForMaskedLM of the encoder's family"
    )
    if generator_vocab != encoder_vocab:
        raise CsrlError(
            f"train.diffcse_generator {name}: its vocabulary has {generator_vocab} tokens, the encoder's "
            f"{encoder_vocab}: DiffCSE's generator must share the encoder's vocabulary",
            hint=hint,
        )
    if generator_tokenizer.get_vocab() != tokenizer.get_vocab():
        diff = sorted(set(generator_tokenizer.get_vocab().items()) ^ set(tokenizer.get_vocab().items()))
        raise CsrlError(
            f"train.diffcse_generator {name}: its tokenizer maps tokens to other ids than the encoder's "
            f"({len(diff)} differing entries, e.g. {diff[:2]}): DiffCSE's generator must share the encoder's "
            "vocabulary",
            hint=hint,
        )
    for key in _SPECIALS:
        mine, theirs = getattr(tokenizer, key, None), getattr(generator_tokenizer, key, None)
        if mine != theirs:
            raise CsrlError(
                f"train.diffcse_generator {name}: its {key} is {theirs}, the encoder's {mine}: DiffCSE's generator "
                "must share the encoder's vocabulary and special tokens",
                hint=hint,
            )


def load_generator(name: str, tokenizer: Any, encoder_vocab: int) -> nn.Module:
    """The frozen masked LM ``name`` (folder or Hub id) in eval mode, checked against the encoder's tokenizer."""
    from transformers import AutoTokenizer

    from csrl.models.encoder import resolve_model_name

    path = resolve_model_name(name)
    generator = load_masked_lm(
        name, setting="train.diffcse_generator",
        hint="make one with csrl pretrain configs/pretrain-mlm-cpu.yaml (its model/ folder), or use a "
        "*ForMaskedLM checkpoint sharing the encoder's vocabulary",
    )  # fmt: skip
    try:
        generator_tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CsrlError(
            f"train.diffcse_generator {name} has no tokenizer to check its vocabulary against the encoder's ({exc})",
            hint="save the tokenizer with the generator (csrl pretrain does)",
        ) from None
    check_same_vocabulary(tokenizer, generator_tokenizer, int(generator.config.vocab_size), encoder_vocab, name)
    generator.requires_grad_(False)
    return generator.eval()


def attach_diffcse(encoder: nn.Module, generator: str | None, *, weight: float) -> None:
    """With ``weight`` > 0: D (a copy of the encoder's backbone as it is now, and a new head) as
    ``encoder.diffcse``, carrying the frozen generator, on the encoder's device; with 0 do nothing."""
    if not weight:
        return
    import copy

    if not generator:
        raise CsrlError("train.diffcse_weight > 0 needs train.diffcse_generator")
    backbone: Any = getattr(encoder, "backbone")
    tokenizer: Any = getattr(encoder, "tokenizer")
    if tokenizer.mask_token_id is None:
        raise CsrlError(f"DiffCSE masks tokens, and the tokenizer {type(tokenizer).__name__} has no mask token")
    encoder_vocab = int(backbone.get_input_embeddings().num_embeddings)
    gen = load_generator(generator, tokenizer, encoder_vocab)
    device = next(encoder.parameters()).device
    encoder.add_module(ATTACHED, Discriminator(copy.deepcopy(backbone), gen).to(device))


# ----------------------------------------------------------------------------- the loss of a step
def diffcse_rtd_loss(
    encoder: nn.Module,
    features: dict[str, Tensor],
    h: Tensor,
    *,
    weight: float,
    mask_ratio: float,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> LossOutput:
    """DiffCSE's term for one step: ``features`` are the rows of x (this rank's first view), ``h`` (B, hidden)
    their embeddings in the graph; ``total`` is ``weight`` x the RTD loss, ``terms`` the unweighted ``rtd`` and
    ``rtd_replaced`` (the fraction of scored positions replaced)."""
    disc = discriminator_of(encoder)
    tokenizer: Any = getattr(encoder, "tokenizer")
    hidden = int(getattr(disc.backbone, "config").hidden_size)
    if h.ndim != 2 or h.shape[-1] != hidden:
        raise CsrlError(
            f"DiffCSE conditions the discriminator on the sentence embedding, of shape {tuple(h.shape)}, and the "
            f"discriminator's hidden size is {hidden}",
            hint="use a pooler and head that keep the backbone's hidden size (e.g. model.pooler=cls)",
        )
    ids = features["input_ids"]
    if not bool(torch.isin(ids[:, 0].cpu(), torch.as_tensor(tokenizer.all_special_ids)).all()):
        raise CsrlError("DiffCSE puts h at position 0, and some rows do not start with a special token ([CLS])")
    with autocast():
        bad = corrupt(disc.generator, features, special_ids=tokenizer.all_special_ids,
                      mask_id=int(tokenizer.mask_token_id), ratio=mask_ratio)  # fmt: skip
        logits = disc(bad.replaced_ids, h, features)
    selected = logits.float()[bad.scored]
    if selected.numel() == 0:  # nothing to score in this batch: a zero loss that keeps the graph
        rtd = logits.float().sum() * 0.0
        replaced = rtd.detach()
    else:
        rtd = F.binary_cross_entropy_with_logits(selected, bad.labels[bad.scored])
        replaced = bad.labels[bad.scored].mean()
    scaled = rtd + (dist.world_size() - 1) * rtd.detach()
    return LossOutput(weight * scaled, {"rtd": rtd.detach(), "rtd_replaced": replaced})
