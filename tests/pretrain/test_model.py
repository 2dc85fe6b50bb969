"""The MLM loss on masked positions only equals the cross-entropy computed independently from the full
``BertForMaskedLM`` logits at the masked positions, in value and in gradient."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from csrl.pretrain.config import PretrainModelConfig
from csrl.pretrain.masking import Masker
from csrl.pretrain.model import MaskedLM, load_tokenizer, new_mlm
from csrl.train.mlm_aux import IGNORE


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("embedded:all-MiniLM-L6-v2")


def _model(tokenizer: Any) -> Any:
    torch.manual_seed(0)
    cfg = PretrainModelConfig(layers=2, hidden=32, heads=2, intermediate=64, max_position=64)
    return new_mlm(cfg, tokenizer).eval()  # no dropout: the two forwards see the same network


def _batch(tokenizer: Any) -> Any:
    import numpy as np

    texts = ["the cat sat on the mat", "a contrastive objective shapes the geometry of embeddings", "paris"]
    seqs = [np.asarray(x) for x in tokenizer(texts)["input_ids"]]
    torch.manual_seed(5)
    return Masker(tokenizer, probability=0.3, whole_word=False)(seqs)


def test_loss_on_masked_positions_equals_cross_entropy_of_the_full_logits(tokenizer: Any) -> None:
    mlm = _model(tokenizer)
    b = _batch(tokenizer)
    selected = b.labels != IGNORE
    assert 0 < int(selected.sum()) < int(b.attention_mask.sum())  # some positions masked, not all

    out = MaskedLM(mlm)(b.input_ids, b.attention_mask, b.labels)
    grads = [p.grad.clone() if p.grad is not None else None for p in _backward(mlm, out.loss)]

    full = mlm(input_ids=b.input_ids, attention_mask=b.attention_mask).logits  # (B, T, V): every position
    reference = F.cross_entropy(full[selected], b.labels[selected])
    torch.testing.assert_close(out.loss, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.logits, full[selected], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.targets, b.labels[selected])
    # transformers' own loss (labels -100 ignored) is the same number
    torch.testing.assert_close(out.loss, mlm(**{"input_ids": b.input_ids, "attention_mask": b.attention_mask,
                                               "labels": b.labels}).loss, rtol=1e-6, atol=1e-6)  # fmt: skip
    ref_grads = [p.grad for p in _backward(mlm, reference)]
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g is None) == (r is None)
        if g is not None and r is not None:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)  # float sums in another order


def _backward(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.nn.Parameter]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return list(model.parameters())


def test_a_batch_without_masked_tokens_gives_a_zero_loss_that_backpropagates(tokenizer: Any) -> None:
    mlm = _model(tokenizer)
    b = _batch(tokenizer)
    out = MaskedLM(mlm)(b.input_ids, b.attention_mask, torch.full_like(b.labels, IGNORE))
    assert float(out.loss.detach()) == 0.0 and out.logits.shape[0] == 0
    out.loss.backward()  # no error, and no NaN gradient
    assert all(bool(torch.isfinite(p.grad).all()) for p in mlm.parameters() if p.grad is not None)
