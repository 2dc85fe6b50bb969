"""Save an :class:`Encoder` in the sentence-transformers folder format.

Layout written (atomically: a temporary folder beside the target, then a rename)::

    model.safetensors, config.json, tokenizer files   the backbone (AutoModel.from_pretrained(dir) works)
    modules.json, sentence_bert_config.json            sentence-transformers pipeline
    1_Pooling/config.json                              ST Pooling (cls / mean) or csrl LayerAveragePooling
    2_Dense/ (only if the head is used at inference)   ST Dense (linear, linear_tanh) or csrl TanhLinear
    csrl_encoder.json, csrl_head.safetensors           csrl's full encoder config and the training head
    README.md                                          model card: training config and STS results
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from csrl.models.encoder import CSRL_CONFIG, HEAD_WEIGHTS, Encoder, _quiet_transformers
from csrl.utils.io import atomic_dir


def _pipeline(enc: Encoder) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """modules.json entries, pooling config, and extra module folders (name, config)."""
    dim = enc.dim
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    pooling: dict[str, Any]
    if enc.pooler in ("cls", "cls_before_pooler", "mean"):
        pooling = {
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": enc.pooler != "mean",
            "pooling_mode_mean_tokens": enc.pooler == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    else:
        layers = list(enc.config.first_last_layers) if enc.pooler == "first_last_avg" else [-2, -1]
        pooling = {"embedding_dimension": dim, "layers": layers}
        modules.append(
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "csrl.models.st_modules.LayerAveragePooling"}
        )
    extra: list[tuple[str, dict[str, Any]]] = []
    if enc.pooler == "cls" and not enc.config.mlp_only_train and enc.head.linear is not None:
        if enc.head.kind == "tanh_linear":
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "csrl.models.st_modules.TanhLinear"})
            extra.append(("2_Dense", {"dim": dim}))
        else:
            act = (
                "torch.nn.modules.activation.Tanh"
                if enc.head.kind == "linear_tanh"
                else ("torch.nn.modules.linear.Identity")
            )
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
            extra.append(
                (
                    "2_Dense",
                    {"in_features": dim, "out_features": dim, "bias": True, "activation_function": act},
                )
            )
    return modules, pooling, extra


def model_card(enc: Encoder, train_config: dict[str, Any] | None, results_md: str | None) -> str:
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [csrl, sentence-similarity, contrastive-learning]",
        "---",
        "",
        "# csrl sentence encoder",
        "",
        f"Backbone: `{enc.config.model}`; pooler: `{enc.pooler}`; training head: `{enc.head.kind}` "
        f"({'training only' if enc.config.mlp_only_train else 'kept at inference'}).",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('PATH')  # csrl needed only for first_last_avg/last2_avg/tanh_linear",
        "emb = model.encode(['A sentence.'])",
        "```",
    ]
    if results_md:
        lines += ["", "## STS results (SentEval protocol, Spearman x 100)", "", results_md]
    if train_config:
        lines += ["", "## Training config", "", "```json", json.dumps(train_config, indent=2), "```"]
    return "\n".join(lines) + "\n"


def save_encoder(
    enc: Encoder,
    path: Path | str,
    *,
    train_config: dict[str, Any] | None = None,
    results_md: str | None = None,
) -> Path:
    """Write ``enc`` to ``path`` in the sentence-transformers format (replacing it atomically)."""
    path = Path(path)
    modules, pooling, extra = _pipeline(enc)
    needs_hidden = enc.pooler in ("first_last_avg", "last2_avg")
    with atomic_dir(path) as tmp:
        backbone: Any = enc.backbone
        old = getattr(backbone.config, "output_hidden_states", False)
        backbone.config.output_hidden_states = needs_hidden
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
            with _quiet_transformers():
                backbone.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
        finally:
            backbone.config.output_hidden_states = old
        enc.tokenizer.save_pretrained(str(tmp))
        (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
        (tmp / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": enc.max_length(), "do_lower_case": False}, indent=2)
        )
        (tmp / "1_Pooling").mkdir()
        (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
        head_state = {k: v.detach().contiguous().cpu() for k, v in enc.head.state_dict().items()}
        for folder, cfg in extra:
            (tmp / folder).mkdir()
            (tmp / folder / "config.json").write_text(json.dumps(cfg, indent=2))
            save_file(head_state, str(tmp / folder / "model.safetensors"))
        cfg_dict = asdict(enc.config)
        cfg_dict["first_last_layers"] = list(cfg_dict["first_last_layers"])
        (tmp / CSRL_CONFIG).write_text(json.dumps(cfg_dict, indent=2))
        if head_state:
            save_file(head_state, str(tmp / HEAD_WEIGHTS))
        (tmp / "README.md").write_text(model_card(enc, train_config, results_md))
    return path


def load_head_into(enc: Encoder, state: dict[str, torch.Tensor]) -> None:
    enc.head.load_state_dict(state)
