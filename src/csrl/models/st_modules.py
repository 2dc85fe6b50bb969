"""sentence-transformers modules for what its own modules cannot express.

Used in saved model folders (``modules.json`` types ``csrl.models.st_modules.LayerAveragePooling`` and
``csrl.models.st_modules.TanhLinear``) for the ``first_last_avg`` and ``last2_avg`` poolers and for the
``tanh_linear`` head kept at inference. They follow sentence-transformers 6's module API (``Module``:
``config_keys``, ``save``/``load``, ``get_embedding_dimension``), so ``SentenceTransformer(dir,
trust_remote_code=True)`` loads such a folder where csrl is installed (sentence-transformers 6 asks for
``trust_remote_code`` for every module class outside its own package). Every other csrl pooler and head
uses sentence-transformers' own ``Pooling`` and ``Dense``, so those folders load without csrl.

``PromptMaskPooling`` (the ``prompt`` pooler, PromptBERT) is different: the format cannot express it, so
the module only records the pooler's settings for csrl and refuses to run in sentence-transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules.module import Module
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.models.pooling import exclude_prefix, masked_mean

HUB_KWARGS = ("token", "cache_folder", "revision", "local_files_only")


def _hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The Hub arguments of sentence-transformers' ``Module.load`` that ``load_config``/``load_torch_weights`` take."""
    return {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}


class _SettingsOnlyModule(Module):
    """A module with no weights, whose saved form is its ``config.json`` (``config_keys``) alone, and which
    returns ``embedding_dimension``-wide sentence embeddings."""

    embedding_dimension: int

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)


class LayerAveragePooling(_SettingsOnlyModule):
    """Mean of the mask-aware token averages of two hidden-state layers (``first_last_avg``, ``last2_avg``);
    ``include_prompt=False`` leaves a prompt's tokens out, as sentence-transformers' ``Pooling`` does."""

    config_keys: list[str] = ["embedding_dimension", "layers", "include_prompt"]

    def __init__(self, embedding_dimension: int, layers: list[int], include_prompt: bool = True) -> None:
        super().__init__()
        self.embedding_dimension = embedding_dimension
        self.layers = list(layers)
        self.include_prompt = include_prompt

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hs = features["all_layer_embeddings"]
        mask = features["attention_mask"]
        if not self.include_prompt and "prompt_length" in features:
            n = features["prompt_length"]
            mask = exclude_prefix(mask, int(n[0].item()) if isinstance(n, Tensor) else int(n))
        vecs = [masked_mean(hs[i], mask) for i in self.layers]
        features["sentence_embedding"] = torch.stack(vecs).mean(0)
        return features

    @classmethod
    def load(  # type: ignore[override]
        cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any
    ) -> LayerAveragePooling:
        hub = _hub_kwargs(kwargs)
        config = cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder, **hub)
        return cls(**config)


class TanhLinear(Module):
    """Tanh then Linear on the sentence embedding (paper B's RoBERTa head)."""

    config_keys: list[str] = ["dim"]

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, dim)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        emb: Tensor = features["sentence_embedding"]
        features["sentence_embedding"] = self.linear(torch.tanh(emb))
        return features

    def get_embedding_dimension(self) -> int:
        return self.dim

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(  # type: ignore[override]
        cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any
    ) -> TanhLinear:
        hub = _hub_kwargs(kwargs)
        config = cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder, **hub)
        model = cls(**config)
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, subfolder=subfolder, model=model, **hub)


PROMPT_POOLER_REFUSED = (
    "this model uses csrl's prompt pooler (PromptBERT: the [MASK] state of a template around the sentence, "
    "optionally minus the template's own [MASK] state), which the sentence-transformers format cannot express: "
    "the sentence goes inside the template before tokenisation (sentence-transformers prompts are prefixes only) "
    "and template denoising runs the backbone a second time"
)


class PromptMaskPooling(_SettingsOnlyModule):
    """The record of csrl's ``prompt`` pooler in a saved folder; refused by sentence-transformers.

    It holds the pooler's settings (``config.json``) for csrl, which reads the folder exactly
    (``csrl.load_encoder``, :mod:`csrl.models.st_format`). Its ``load`` and ``forward`` raise
    :class:`~csrl.errors.CsrlError` saying why, so ``SentenceTransformer(folder, trust_remote_code=True)``
    stops instead of pooling something else (without ``trust_remote_code`` sentence-transformers refuses
    the module class itself).
    """

    config_keys: list[str] = [
        "embedding_dimension", "prompt_template", "prompt_template_view2", "prompt_denoise",
        "prompt_denoise_at_inference",
    ]  # fmt: skip

    def __init__(
        self,
        embedding_dimension: int,
        prompt_template: str,
        prompt_template_view2: str | None = None,
        prompt_denoise: bool = False,
        prompt_denoise_at_inference: bool | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dimension = embedding_dimension
        self.prompt_template = prompt_template
        self.prompt_template_view2 = prompt_template_view2
        self.prompt_denoise = prompt_denoise
        self.prompt_denoise_at_inference = prompt_denoise_at_inference

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        raise CsrlError(PROMPT_POOLER_REFUSED, hint="load it with csrl: csrl.load_encoder(folder)")

    @classmethod
    def load(  # type: ignore[override]
        cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any
    ) -> PromptMaskPooling:
        raise CsrlError(
            f"{model_name_or_path}: {PROMPT_POOLER_REFUSED}",
            hint="load it with csrl: csrl.load_encoder(folder), csrl eval / csrl encode FOLDER",
        )
