"""Reading a sentence-transformers folder (or Hub id) into what csrl's :class:`~csrl.models.encoder.Encoder` runs.

Everything is read through sentence-transformers' own code: ``load_file_path`` finds a file in a local
folder or a Hub repository alike, each module class's ``load_config`` reads its configuration (with the
backward-compatibility of the installed version: the 2.x-5.x ``pooling_mode_*_token`` keys, the
``sentence_*_config.json`` file names, the old ``sentence_transformers.models.X`` class paths), and the
modules after pooling (``Dense``, ``Normalize``) are sentence-transformers' own modules, loaded by
their own ``load``, so they compute exactly what ``SentenceTransformer.encode`` computes.

What csrl reproduces exactly (anything else is refused with a message, never approximated):

- ``Transformer`` (feature extraction on text): the backbone, ``max_seq_length``, ``do_lower_case``
  and the tokenizer arguments;
- ``Pooling`` with one mode: ``cls``, ``mean``, ``max``, ``mean_sqrt_len_tokens``, ``weightedmean`` or
  ``lasttoken`` (csrl's poolers of the same computation), and ``include_prompt``;
- ``Dense`` (a ``torch.nn`` activation) and ``Normalize`` on the sentence embedding, in their order;
- csrl's own ``LayerAveragePooling`` and ``TanhLinear`` (:mod:`csrl.models.st_modules`), and
  ``PromptMaskPooling``, the record of csrl's ``prompt`` pooler, which only csrl can run;
- the default prompt of ``config_sentence_transformers.json`` (``default_prompt_name``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from csrl.errors import CsrlError

ST_POOLING_MODES = {
    "cls": "cls_before_pooler",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weightedmean",
    "lasttoken": "lasttoken",
}
CSRL_MODULES = (
    "csrl.models.st_modules.LayerAveragePooling",
    "csrl.models.st_modules.TanhLinear",
    "csrl.models.st_modules.PromptMaskPooling",
)
_TEXT_FEATURES = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
_HUB_KEYS = ("subfolder", "token", "cache_dir", "cache_folder", "revision", "local_files_only", "trust_remote_code")


@dataclass
class STPipeline:
    """What a sentence-transformers folder asks for, in csrl's terms.

    pooler: csrl's pooler of the same computation (``cls`` mode -> ``cls_before_pooler``: no head).
    tail: modules applied after pooling (and after a csrl head kept at inference) by ``encode``.
    """

    source: str
    backbone_subfolder: str = ""
    pooler: str = "mean"
    pooling_dim: int | None = None
    first_last_layers: tuple[int, int] | None = None
    prompt_pooling: dict[str, Any] = field(default_factory=dict)  # the prompt pooler's model.prompt_* settings
    include_prompt: bool = True
    tail: list[nn.Module] = field(default_factory=list)
    max_seq_length: int | None = None
    do_lower_case: bool = False
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    module_types: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        """The prompt ``SentenceTransformer.encode`` prepends by default ('' when none)."""
        if self.default_prompt_name is None:
            return ""
        return self.prompts.get(self.default_prompt_name) or ""


def model_file(model: str, name: str, subfolder: str = "") -> str | None:
    """The path of ``subfolder/name`` in a local folder or a Hub repository (sentence-transformers'
    ``load_file_path``), None when it has no such file. A local folder is read directly: importing
    sentence-transformers takes seconds, and a plain transformers folder does not need it."""
    parts = Path(subfolder).parts + Path(name).parts
    if Path(subfolder).is_absolute() or Path(name).is_absolute() or ".." in parts:
        raise CsrlError(f"{model}: the module path {subfolder!r}/{name!r} leaves the model folder")
    if Path(model).is_dir():
        local = Path(model, subfolder, name)
        return str(local) if local.is_file() else None
    from sentence_transformers.util import load_file_path

    return load_file_path(model, name, subfolder=subfolder)


def _read_json(model: str, name: str) -> Any:
    path = model_file(model, name)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CsrlError(
            f"{model}: {name} cannot be read ({exc})",
            hint="the model folder is damaged; save or download it again",
        ) from None


def _refuse(model: str, what: str) -> CsrlError:
    return CsrlError(
        f"{model}: {what}; csrl cannot reproduce it exactly and does not guess",
        hint="see docs/models.md for what loads; use sentence-transformers itself for this model",
    )


def _module_class(ref: str, model: str) -> type:
    """The class a ``modules.json`` type names: sentence-transformers' own, or csrl's, nothing else."""
    if ref in CSRL_MODULES:
        from csrl.models import st_modules

        return getattr(st_modules, ref.rpartition(".")[2])  # type: ignore[no-any-return]
    if not ref.startswith("sentence_transformers."):
        raise _refuse(model, f"module type {ref!r} is custom code")
    from sentence_transformers.util import import_from_string

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 2.x-5.x class paths import through a deprecation alias
        try:
            return import_from_string(ref)  # type: ignore[no-any-return]
        except ImportError:
            raise _refuse(model, f"module type {ref!r} is not a class of the installed sentence-transformers") from None


def _read_transformer(model: str, path: str, pipe: STPipeline) -> None:
    from sentence_transformers.base.modules import Transformer

    cfg = Transformer.load_config(model, subfolder=path)
    if cfg.get("transformer_task", "feature-extraction") != "feature-extraction":
        raise _refuse(model, f"its Transformer runs the task {cfg['transformer_task']!r}")
    if cfg.get("modality_config", _TEXT_FEATURES) != _TEXT_FEATURES or cfg.get("module_output_name") not in (
        None,
        "token_embeddings",
    ):
        raise _refuse(model, f"its Transformer is configured for {cfg.get('modality_config')} (not text tokens)")
    for key in ("processing_kwargs", "query_length", "document_length", "query_expansion"):
        if cfg.get(key):
            raise _refuse(model, f"its Transformer sets {key}={cfg[key]!r}")
    pipe.backbone_subfolder = path
    pipe.max_seq_length = cfg.get("max_seq_length")
    pipe.do_lower_case = bool(cfg.get("do_lower_case", False))
    tok = cfg.get("processor_kwargs") or cfg.get("tokenizer_args") or {}
    pipe.tokenizer_kwargs = {k: v for k, v in tok.items() if k not in _HUB_KEYS}


def _read_pooling(model: str, path: str, pipe: STPipeline) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling

    cfg = Pooling.load_config(model, subfolder=path)  # converts the 2.x-5.x pooling_mode_* keys
    mode = cfg.get("pooling_mode", "mean")
    if isinstance(mode, list | tuple):
        if len(mode) != 1:
            raise _refuse(model, f"its Pooling concatenates the modes {'+'.join(mode)}")
        mode = mode[0]
    if mode not in ST_POOLING_MODES:
        raise _refuse(model, f"its Pooling mode is {mode!r}")
    pipe.pooler = ST_POOLING_MODES[mode]
    pipe.pooling_dim = cfg.get("embedding_dimension")
    pipe.include_prompt = bool(cfg.get("include_prompt", True))


def _read_layer_pooling(model: str, path: str, pipe: STPipeline) -> None:
    from csrl.models.st_modules import LayerAveragePooling

    cfg = LayerAveragePooling.load_config(model, subfolder=path)
    layers = [int(i) for i in cfg.get("layers", [-2, -1])]
    pipe.include_prompt = bool(cfg.get("include_prompt", True))
    if len(layers) != 2:
        raise _refuse(model, f"its LayerAveragePooling averages {len(layers)} layers (csrl's poolers take 2)")
    pipe.pooler = "last2_avg" if layers == [-2, -1] else "first_last_avg"
    pipe.first_last_layers = (layers[0], layers[1])


def _read_prompt_pooling(model: str, path: str, pipe: STPipeline) -> None:
    """csrl's ``prompt`` pooler: its settings (the module's config), never its ``load`` (which refuses)."""
    from csrl.models.st_modules import PromptMaskPooling

    cfg = PromptMaskPooling.load_config(model, subfolder=path)
    pipe.pooler = "prompt"
    pipe.pooling_dim = cfg.get("embedding_dimension")
    pipe.prompt_pooling = {k: cfg[k] for k in PromptMaskPooling.config_keys if k != "embedding_dimension" and k in cfg}


def _load_tail_module(cls: type, model: str, path: str) -> nn.Module:
    from sentence_transformers.base.modules import Dense, Normalize

    if issubclass(cls, Dense):
        cfg = Dense.load_config(model, subfolder=path)
        act = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
        if not act.startswith("torch."):
            raise _refuse(model, f"its Dense uses the activation {act!r} (not a torch.nn module)")
        unknown = set(cfg) - set(Dense.config_keys)
        if unknown:
            raise _refuse(model, f"its Dense has the settings {sorted(unknown)} this sentence-transformers lacks")
    if issubclass(cls, Dense | Normalize):
        cfg = cls.load_config(model, subfolder=path)
        io = {cfg.get("module_input_name", "sentence_embedding"), cfg.get("module_output_name") or "sentence_embedding"}
        if io != {"sentence_embedding"}:
            raise _refuse(model, f"its {cls.__name__} reads or writes {sorted(io)}, not the sentence embedding")
    module: nn.Module = cls.load(model, subfolder=path)  # type: ignore[attr-defined]
    return module


def read_st_pipeline(model: str, *, head_module: str | None = None) -> STPipeline | None:
    """The pipeline of the sentence-transformers folder or Hub id ``model``; None when it has no ``modules.json``.

    head_module: the ``modules.json`` name of a csrl training head kept at inference (csrl's own saved
    folders say which in ``csrl_encoder.json``); it is left to csrl's head, not added to the tail.
    Raises :class:`CsrlError` for anything csrl cannot reproduce exactly.
    """
    modules = _read_json(model, "modules.json")
    if modules is None:
        return None
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from csrl.models.st_modules import LayerAveragePooling, PromptMaskPooling, TanhLinear

    pipe = _read_model_config(model)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise CsrlError(f"{model}: modules.json is not a list of modules", hint="the model folder is damaged")
    pooled = False
    for i, entry in enumerate(modules):
        ref, path, name = str(entry["type"]), str(entry.get("path", "")), str(entry.get("name", i))
        cls = _module_class(ref, model)
        pipe.module_types.append(cls.__name__)
        if entry.get("kwargs"):
            raise _refuse(model, f"module {name} ({cls.__name__}) takes encode-time arguments {entry['kwargs']}")
        if i == 0:
            if not issubclass(cls, Transformer):
                raise _refuse(model, f"its first module is {cls.__name__}, not a Transformer")
            _read_transformer(model, path, pipe)
        elif not pooled:
            if issubclass(cls, Pooling):
                _read_pooling(model, path, pipe)
            elif issubclass(cls, LayerAveragePooling):
                _read_layer_pooling(model, path, pipe)
            elif issubclass(cls, PromptMaskPooling):
                _read_prompt_pooling(model, path, pipe)
            else:
                raise _refuse(model, f"module {name} ({cls.__name__}) comes where csrl expects the pooling")
            pooled = True
        elif name == head_module and issubclass(cls, Dense | TanhLinear):
            continue  # csrl's own head, loaded with csrl's weights
        elif issubclass(cls, Dense | Normalize | TanhLinear):
            pipe.tail.append(_load_tail_module(cls, model, path))
        else:
            raise _refuse(model, f"module {name} ({cls.__name__}) after the pooling")
    if not pooled:
        raise _refuse(model, "it has no pooling module")
    return pipe


def _read_model_config(model: str) -> STPipeline:
    """Prompts and model type from ``config_sentence_transformers.json`` (absent before 2.x: none)."""
    cfg = _read_json(model, "config_sentence_transformers.json") or {}
    if cfg.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        raise _refuse(model, f"it is a {cfg['model_type']}, not a SentenceTransformer")
    prompts = {str(k): str(v or "") for k, v in (cfg.get("prompts") or {}).items()}
    default = cfg.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise CsrlError(
            f"{model}: config_sentence_transformers.json names the default prompt {default!r}, "
            f"which is not among its prompts {sorted(prompts)}",
            hint="fix default_prompt_name in that file",
        )
    return STPipeline(
        source=model, prompts=prompts, default_prompt_name=default, similarity_fn_name=cfg.get("similarity_fn_name")
    )


__all__ = ["CSRL_MODULES", "ST_POOLING_MODES", "STPipeline", "model_file", "read_st_pipeline"]
