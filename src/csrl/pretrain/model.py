"""The masked LM: built from a size or loaded from a checkpoint, its loss on masked positions only, a csrl
:class:`~csrl.models.encoder.Encoder` view of its encoder, and the saved folder.

:class:`MaskedLM` is what a pretraining step calls (and DDP wraps): the encoder (``model.bert`` or the
model's ``base_model``) over the whole batch, then the prediction head (``model.cls`` / ``model.lm_head``)
on the rows of the masked positions only (:func:`csrl.train.mlm_aux.masked_lm_loss`); a 4-layer, 256-wide
``BertForMaskedLM`` spends about 2.5 times its encoder's time in the full-vocabulary decoder when the
head runs at every position.

The saved folder is ``save_pretrained`` of the ``*ForMaskedLM`` model plus its tokenizer (with
``model_max_length`` = the position embeddings), so ``AutoModelForMaskedLM.from_pretrained(DIR)`` and
``AutoModel.from_pretrained(DIR)`` load it, and ``csrl train --set model.model=DIR``, ``csrl eval DIR
--pooler mean`` and ``csrl analyze DIR`` accept it as a model (no pooler is recorded: a raw MLM has none of
its own, so give one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder, EncoderConfig, _quiet_transformers, resolve_model_name
from csrl.pretrain.config import PretrainConfig, PretrainModelConfig
from csrl.train.mlm_aux import MaskedLMOutput, masked_lm_loss, mlm_head_of
from csrl.utils.io import atomic_dir

__all__ = [
    "MODEL_DIR",
    "MaskedLM",
    "build_mlm",
    "build_tokenizer",
    "encoder_view",
    "load_mlm",
    "load_tokenizer",
    "new_mlm",
    "save_mlm",
]

MODEL_DIR = "model"  # the run's final model folder


def load_tokenizer(name: str) -> Any:
    """A tokenizer from a folder, Hub id or ``embedded:all-MiniLM-L6-v2`` (its bert-base-uncased vocabulary)."""
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(resolve_model_name(name))
    except Exception as exc:  # OSError, ValueError, tokenizers' own errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CsrlError(
            f"tokenizer {name!r} cannot be loaded ({type(exc).__name__}: {first})",
            hint="pass a folder with tokenizer files, a Hub id (online), or embedded:all-MiniLM-L6-v2",
        ) from None


def new_mlm(cfg: PretrainModelConfig, tokenizer: Any) -> nn.Module:
    """A randomly initialised ``BertForMaskedLM`` of ``cfg``'s size over ``tokenizer``'s vocabulary (seed
    torch first: the initial weights come from its RNG)."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_position,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        initializer_range=cfg.initializer_range,
        pad_token_id=int(tokenizer.pad_token_id or 0),
    )
    return BertForMaskedLM(config)


def load_mlm(name: str) -> nn.Module:
    """The model of a masked-LM checkpoint (folder or Hub id) to continue pretraining; refuses a
    checkpoint whose head weights are missing (they would start random)."""
    from transformers import AutoModelForMaskedLM

    path = resolve_model_name(name)
    try:
        with _quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except Exception as exc:
        raise CsrlError(
            f"model.init_from={name!r} cannot be loaded as a masked LM ({type(exc).__name__}: {exc})",
            hint="pass a *ForMaskedLM checkpoint folder or Hub id (e.g. bert-base-uncased, or a csrl pretrain model/)",
        ) from None
    mlm_head_of(model)
    missing = [k for k in info.get("missing_keys", ()) if "decoder.weight" not in k]
    if missing:
        raise CsrlError(
            f"model.init_from={name!r} lacks {len(missing)} weights of the masked LM "
            f"({', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''}); they would start random",
            hint="continue from a checkpoint with an MLM head (a sentence encoder has none), or pretrain from scratch",
        )
    return model  # type: ignore[no-any-return]


def build_tokenizer(cfg: PretrainConfig) -> Any:
    """The run's tokenizer: ``model.init_from``'s, or ``model.tokenizer`` (from scratch, with ``model_max_length``
    set to ``model.max_position``)."""
    if cfg.model.init_from is not None:
        return load_tokenizer(cfg.model.init_from)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    tokenizer.model_max_length = cfg.model.max_position
    return tokenizer


def build_mlm(cfg: PretrainConfig, tokenizer: Any) -> nn.Module:
    """The model to pretrain: ``model.init_from`` loaded, or a new one of ``model``'s size (from torch's RNG)."""
    if cfg.model.init_from is None:
        return new_mlm(cfg.model, tokenizer)
    mlm = load_mlm(cfg.model.init_from)
    positions = int(getattr(getattr(mlm, "config"), "max_position_embeddings", 0) or 0)
    if positions and cfg.data.max_length > positions:
        raise CsrlError(
            f"data.max_length={cfg.data.max_length} is more than the {positions} positions of {cfg.model.init_from}",
            hint=f"use data.max_length <= {positions}",
        )
    return mlm


class MaskedLM(nn.Module):
    """``forward(input_ids, attention_mask, labels) -> MaskedLMOutput``: the encoder over the batch, the head on
    the masked positions only. Holds the ``*ForMaskedLM`` model as ``mlm`` (its state dict is the model's,
    prefixed ``mlm.``)."""

    def __init__(self, mlm: nn.Module) -> None:
        super().__init__()
        self.mlm = mlm
        mlm_head_of(mlm)  # refuses a model without a known head now, not at the first step

    def encoder(self) -> nn.Module:
        base: nn.Module = getattr(self.mlm, "base_model")
        return base

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> MaskedLMOutput:
        hidden = self.encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return masked_lm_loss(hidden, labels, mlm_head_of(self.mlm))


def encoder_view(mlm: nn.Module, tokenizer: Any, *, pooler: str, name: str) -> Encoder:
    """A csrl :class:`Encoder` over the masked LM's own encoder module (shared weights, no copy), for the
    geometry probe during pretraining; ``name`` is what it reports as its model."""
    config = EncoderConfig(model=name, pooler=pooler, head="none")
    return Encoder(getattr(mlm, "base_model"), tokenizer, config)


def save_mlm(mlm: nn.Module, tokenizer: Any, path: Path, *, card: str) -> Path:
    """Write the model, its tokenizer and ``README.md`` (``card``) to ``path``, replacing it atomically."""
    with atomic_dir(path) as tmp:
        with _quiet_transformers():
            getattr(mlm, "save_pretrained")(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return path
