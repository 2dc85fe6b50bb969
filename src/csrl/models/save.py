"""Save an :class:`Encoder` in the sentence-transformers folder format, through sentence-transformers' own save.

The folder is built as a ``SentenceTransformer`` of sentence-transformers' modules and written by its
``save`` (atomically: a temporary folder beside the target, then a rename)::

    model.safetensors, config.json, tokenizer files   the backbone (AutoModel.from_pretrained(dir) works),
                                                      with the base checkpoint's pooling layer (BERT ``pooler.*``)
    modules.json, config_sentence_transformers.json   the pipeline; prompts, similarity function, versions
    sentence_bert_config.json                         the Transformer module
    1_Pooling/ (or 1_LayerAveragePooling/)            ST Pooling (the csrl pooler's mode) or csrl's module
                                                      (1_PromptMaskPooling/: the prompt pooler, csrl only)
    2_Dense/ or 2_TanhLinear/ (head at inference)     ST Dense (linear, linear_tanh) or csrl's TanhLinear
    then the base model's own tail                    e.g. Normalize for all-MiniLM-L6-v2, a Dense projection
    csrl_encoder.json, csrl_head.safetensors          csrl's full encoder config and the training head
    README.md                                         the model card (csrl.models.card)

``max_seq_length`` is the encoder's (the base folder's, e.g. 256 for all-MiniLM-L6-v2), stored where
sentence-transformers 6 keeps it (the tokenizer's ``model_max_length``). A base checkpoint without a
pooling layer is saved without one and ``sentence_bert_config.json`` says so (``model_kwargs:
{add_pooling_layer: false}``, read by sentence-transformers' ``Transformer.load``), so nothing loads as
"newly initialised"; ``do_lower_case`` is written there too. Folders load with sentence-transformers >= 6
(its module paths); csrl's own modules (``first_last_avg``, ``last2_avg``, a ``tanh_linear`` head kept at
inference) need csrl installed and ``trust_remote_code=True``. The ``prompt`` pooler (PromptBERT) cannot be
expressed in the format at all: its folder records the pooler in csrl's ``PromptMaskPooling`` module, which
sentence-transformers refuses to load with a message saying so (never another pooler in its place); csrl
loads the folder exactly, and its model card says so.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from csrl.errors import CsrlError
from csrl.models.card import CardFacts, hub_base_model, model_card
from csrl.models.encoder import CSRL_CONFIG, HEAD_POOLERS, HEAD_WEIGHTS, Encoder, _quiet_transformers
from csrl.utils.io import atomic_dir

ST_MODES = {
    "cls": "cls",
    "cls_before_pooler": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len": "mean_sqrt_len_tokens",
    "weightedmean": "weightedmean",
    "lasttoken": "lasttoken",
}
_STAGE = ".backbone-stage"


@contextlib.contextmanager
def _quiet_sentence_transformers() -> Iterator[None]:
    """sentence-transformers logs what it builds at INFO/WARNING; a save is not news."""
    logger = logging.getLogger("sentence_transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _quiet_transformers():
            yield
    finally:
        logger.setLevel(level)


def _pooling_module(enc: Encoder) -> nn.Module:
    from sentence_transformers.sentence_transformer.modules import Pooling

    from csrl.models.st_modules import LayerAveragePooling, PromptMaskPooling

    if enc.pooler in ST_MODES:
        return Pooling(enc.dim, pooling_mode=ST_MODES[enc.pooler], include_prompt=enc.include_prompt)  # type: ignore[arg-type]
    if enc.pooler in ("first_last_avg", "last2_avg"):
        layers = list(enc.config.first_last_layers) if enc.pooler == "first_last_avg" else [-2, -1]
        return LayerAveragePooling(enc.dim, layers, include_prompt=enc.include_prompt)
    if enc.pooler == "prompt":
        c = enc.config
        return PromptMaskPooling(enc.dim, c.prompt_template, c.prompt_template_view2, c.prompt_denoise,
                                 c.prompt_denoise_at_inference)  # fmt: skip
    raise CsrlError(f"pooler {enc.pooler!r} has no module to save it with")  # a new pooler must say how it saves


def _head_module(enc: Encoder) -> nn.Module | None:
    """csrl's training head as a module after pooling, when it is kept at inference."""
    from sentence_transformers.base.modules import Dense

    from csrl.models.st_modules import TanhLinear

    linear = enc.head.linear
    if enc.pooler not in HEAD_POOLERS or enc.config.mlp_only_train or linear is None:
        return None
    weight, bias = linear.weight.detach().cpu().clone(), linear.bias.detach().cpu().clone()
    if enc.head.kind == "tanh_linear":
        module = TanhLinear(enc.dim)
        module.linear.load_state_dict({"weight": weight, "bias": bias})
        return module
    act: nn.Module = nn.Tanh() if enc.head.kind == "linear_tanh" else nn.Identity()
    return Dense(enc.dim, enc.dim, bias=True, activation_function=act, init_weight=weight, init_bias=bias)


def _has_pooling_layer_switch(backbone: Any) -> bool:
    return "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters


def _write_backbone(enc: Encoder, folder: Path) -> None:
    """The backbone (with the base checkpoint's unused pooling layer) and the tokenizer, as transformers saves them."""
    backbone: Any = enc.backbone
    old = getattr(backbone.config, "output_hidden_states", False)
    # LayerAveragePooling reads every layer's states, which sentence-transformers returns when the config asks
    backbone.config.output_hidden_states = enc.pooler in ("first_last_avg", "last2_avg")
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
        state.update({k: v.contiguous().cpu() for k, v in enc.unused_backbone_state.items()})
        with _quiet_transformers():
            backbone.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
    finally:
        backbone.config.output_hidden_states = old
    enc.tokenizer.save_pretrained(str(folder))


def _st_model(enc: Encoder, stage: Path) -> tuple[Any, str | None]:
    """The encoder as a SentenceTransformer of sentence-transformers' modules (the Transformer read from
    ``stage``), and the name of csrl's head module in it (None when the head is training-only)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    model_kwargs = {}
    if _has_pooling_layer_switch(enc.backbone) and not enc.unused_backbone_state:
        model_kwargs["add_pooling_layer"] = False
    transformer = Transformer(str(stage), max_seq_length=enc.max_length(), model_kwargs=model_kwargs)
    modules: list[nn.Module] = [transformer, _pooling_module(enc)]
    head, head_name = _head_module(enc), None
    if head is not None:
        head_name = str(len(modules))
        modules.append(head)
    modules += [copy.deepcopy(m).cpu() for m in enc.tail]
    st = SentenceTransformer(
        modules=modules,
        device="cpu",
        prompts=dict(enc.prompts),
        default_prompt_name=enc.default_prompt_name,
        similarity_fn_name=enc.similarity_fn_name or "cosine",  # type: ignore[arg-type]
    )
    return st, head_name


def _csrl_config(enc: Encoder, head_name: str | None, base_model: str | None) -> dict[str, Any]:
    cfg = asdict(enc.config)
    cfg["first_last_layers"] = list(cfg["first_last_layers"])
    cfg["inference_head_module"] = head_name
    cfg["base_model"] = base_model
    return cfg


def card_facts(enc: Encoder, modules: list[str]) -> CardFacts:
    return CardFacts(
        modules=modules,
        pooler=enc.pooler,
        head=enc.head.kind,
        head_at_inference=enc.pooler in HEAD_POOLERS and not enc.config.mlp_only_train and enc.head.linear is not None,
        embedding_dim=enc.embedding_dim,
        max_seq_length=enc.max_length(),
        prompt=enc.prompt,
        needs_csrl=any(name in ("LayerAveragePooling", "TanhLinear", "PromptMaskPooling") for name in modules),
        csrl_only="PromptMaskPooling" in modules,
        prompt_template=enc.config.prompt_template if enc.pooler == "prompt" else "",
    )


def save_encoder(
    enc: Encoder,
    path: Path | str,
    *,
    train_config: Mapping[str, Any] | None = None,
    results_md: str | None = None,
    results: Mapping[str, float] | None = None,
) -> Path:
    """Write ``enc`` to ``path`` in the sentence-transformers format (replacing it atomically).

    train_config: the run's resolved config (the card's base model, loss, hyper-parameters, datasets).
    results_md / results: the STS table and the scores by task (``STS12`` ... ``SICK-R``, Spearman x 100;
    read from the table's last row when not given) for the card's text and ``model-index``.
    """
    path = Path(path)
    source = str((train_config or {}).get("model", {}).get("model") or enc.config.model)
    base_model = hub_base_model(source)
    with atomic_dir(path) as tmp, _quiet_sentence_transformers():
        stage = tmp / _STAGE
        _write_backbone(enc, stage)
        st, head_name = _st_model(enc, stage)
        st.save(str(tmp), create_model_card=False, safe_serialization=True)
        del st
        shutil.rmtree(stage)
        _complete_transformer_config(enc, tmp)
        head_state = {k: v.detach().contiguous().cpu() for k, v in enc.head.state_dict().items()}
        (tmp / CSRL_CONFIG).write_text(json.dumps(_csrl_config(enc, head_name, base_model), indent=2))
        if head_state:
            save_file(head_state, str(tmp / HEAD_WEIGHTS))
        modules = [str(m["type"]).rpartition(".")[2] for m in json.loads((tmp / "modules.json").read_text())]
        card = model_card(
            card_facts(enc, modules),
            base_model=base_model,
            train_config=train_config,
            results=results,
            results_md=results_md,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return path


def _complete_transformer_config(enc: Encoder, folder: Path) -> None:
    """Two settings sentence-transformers 6's save leaves out of ``sentence_bert_config.json`` and its
    ``Transformer.load`` still reads there: ``model_kwargs: {add_pooling_layer: false}`` when the checkpoint
    has no pooling layer (nothing then loads as "newly initialised"), and ``do_lower_case`` (its save keeps
    the Lowercase normalizer in tokenizer.json, which transformers rebuilds from the tokenizer config on load)."""
    no_pooling_layer = _has_pooling_layer_switch(enc.backbone) and not enc.unused_backbone_state
    if not (no_pooling_layer or enc.lowercase_inputs):
        return
    file = folder / "sentence_bert_config.json"
    cfg = json.loads(file.read_text(encoding="utf-8"))
    if no_pooling_layer:
        cfg.setdefault("model_kwargs", {})["add_pooling_layer"] = False
    if enc.lowercase_inputs:
        cfg["do_lower_case"] = True
    file.write_text(json.dumps(cfg, indent=4), encoding="utf-8")


def load_head_into(enc: Encoder, state: dict[str, torch.Tensor]) -> None:
    enc.head.load_state_dict(state)


__all__ = ["card_facts", "load_head_into", "save_encoder"]
