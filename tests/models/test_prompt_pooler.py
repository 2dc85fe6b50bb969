"""The prompt pooler (PromptBERT): the vector is the [MASK] state of the template, by hand from the Hugging Face
model's output; template denoising by hand (the empty template, its tail at the sentence row's positions);
two templates for two views; truncation; the saved folder (csrl exactly, sentence-transformers refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder, load_encoder
from csrl.models.prompt import parse_template
from csrl.models.save import save_encoder
from tiny_bert import save_tiny_bert

T1 = 'This sentence : "[X]" means [MASK] .'
T2 = 'This sentence of "[X]" means [MASK] .'
SENTENCES = ["the cat sat on the mat", "a dog", "green trees grow fast near the big old house today", "x"]


@pytest.fixture(scope="module")
def still_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT without dropout: a training-mode forward is deterministic, so it can be rebuilt by hand."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-still"), dropout=0.0)


def _hf(model_dir: Path) -> tuple[torch.nn.Module, object]:
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    return model, AutoTokenizer.from_pretrained(str(model_dir))


def _by_hand(model_dir: Path, template: str, sentences: list[str], *, denoise: bool) -> Tensor:
    """Each sentence filled into the template as text, tokenised whole, run one at a time through the plain HF
    model; the [MASK] state, minus (denoise) the [MASK] state of the template with an empty slot whose tokens
    after the slot sit at the positions they have in the sentence's row."""
    model, tok = _hf(model_dir)
    prefix, suffix = template.split("[X]")
    out = []
    with torch.no_grad():
        for s in sentences:
            ids = tok(prefix + s + suffix, return_tensors="pt")["input_ids"]
            mask_pos = int((ids[0] == tok.mask_token_id).nonzero()[-1])
            h = model(input_ids=ids).last_hidden_state[0, mask_pos]
            if denoise:
                empty = tok(prefix + suffix, return_tensors="pt")["input_ids"]
                n = ids.shape[1] - empty.shape[1]  # the sentence's tokens
                head = len(tok(prefix)["input_ids"]) - 1  # [CLS] + the prefix's tokens ([SEP] dropped)
                pos = list(range(head)) + list(range(head + n, head + n + empty.shape[1] - head))
                e_mask = int((empty[0] == tok.mask_token_id).nonzero()[-1])
                bias = model(input_ids=empty, position_ids=torch.tensor([pos])).last_hidden_state[0, e_mask]
                h = h - bias
            out.append(h)
    return torch.stack(out)


def test_template_tokens_and_positions(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    t = parse_template(T1, tok)
    full = tok('This sentence : "a dog" means [MASK] .')["input_ids"]
    sentence = tok("a dog", add_special_tokens=False)["input_ids"]
    assert t.row(sentence) == full  # WordPiece: the pieces tokenised apart equal the filled-in text
    assert full[t.mask_position(len(sentence))] == tok.mask_token_id and t.mask_after_slot
    assert t.bias_positions(3) == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]  # [CLS] This sentence : " | " means [MASK] . [SEP]
    for bad in ("no slot [MASK]", "[X] and no mask", "[X] [X] [MASK]", "[X] [MASK] [MASK]"):
        with pytest.raises(CsrlError, match="prompt template"):
            parse_template(bad, tok)


@pytest.mark.parametrize("denoise", [False, True], ids=["mask-state", "denoised"])
def test_vector_is_the_mask_state_by_hand(tiny_model_dir: Path, denoise: bool) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="prompt", prompt_template=T1,
                                  prompt_denoise=denoise)  # fmt: skip
    assert enc.pooler == "prompt" and enc.head.kind == "linear_tanh"  # SimCSE's head, training only
    ours = torch.from_numpy(enc.encode(SENTENCES, batch_size=3))  # padded batches, sorted by length
    torch.testing.assert_close(ours, _by_hand(tiny_model_dir, T1, SENTENCES, denoise=denoise), atol=2e-5, rtol=1e-4)
    if denoise:  # denoising changes the vector
        plain = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mask", prompt_template=T1)
        assert not np.allclose(plain.encode(SENTENCES), ours.numpy(), atol=1e-3)


def test_denoise_at_inference_can_be_off(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="prompt", prompt_template=T2,
                                  prompt_denoise=True, prompt_denoise_at_inference=False)  # fmt: skip
    ours = torch.from_numpy(enc.encode(SENTENCES))
    torch.testing.assert_close(ours, _by_hand(tiny_model_dir, T2, SENTENCES, denoise=False), atol=2e-5, rtol=1e-4)


def test_training_views_use_two_templates_and_denoise_on_the_fly(still_model_dir: Path) -> None:
    """In training each view gets its template and its own template bias, computed in training mode (with the
    head applied after the subtraction) and with gradient."""
    enc = Encoder.from_pretrained(model=str(still_model_dir), pooler="prompt", prompt_template=T1,
                                  prompt_template_view2=T2, prompt_denoise=True)  # fmt: skip
    enc.train()
    sents = SENTENCES[:3]
    features = enc.tokenize(sents + sents + sents, max_length=32, views=3)  # anchors, positives, negations
    assert features["prompt_template"].tolist() == [0] * 3 + [1] * 6
    biases: list[Tensor] = []
    own = enc._template_bias

    def spy(*args: object, **kwargs: object) -> Tensor:
        biases.append(own(*args, **kwargs))  # type: ignore[arg-type]
        return biases[-1]

    enc._template_bias = spy  # type: ignore[method-assign]
    z = enc(features)
    expected = torch.cat([_by_hand(still_model_dir, T1, sents, denoise=True),
                          _by_hand(still_model_dir, T2, sents, denoise=True).repeat(2, 1)])  # fmt: skip
    with torch.no_grad():
        expected = enc.head(expected)
    torch.testing.assert_close(z.detach(), expected, atol=2e-5, rtol=1e-4)
    assert len(biases) == 1 and biases[0].requires_grad  # computed once per forward, in the graph


def test_truncation_shortens_the_sentence_never_the_template(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="prompt", prompt_template=T1)
    tok = enc.tokenizer
    long = " ".join(["word"] * 100)
    rows, which = enc.prompt_input_ids([long, "a dog"], max_length=16)
    t = enc.prompt_templates()[0]
    assert which == [0, 0]
    assert len(rows[0]) == t.length + 16 - 2  # the sentence within max_length with its [CLS]/[SEP], then the template
    assert rows[0][: len(t.head)] == list(t.head) and rows[0][-len(t.tail) :] == list(t.tail)
    assert rows[0].count(tok.mask_token_id) == 1
    with pytest.raises(CsrlError, match="leaves no room"):
        enc.prompt_input_ids(["a"], max_length=2)
    # at inference the row is capped by the model's 128 positions
    rows, _ = enc.prompt_input_ids([" ".join(["word"] * 300)], max_length=enc.max_length())
    assert len(rows[0]) == 128 and rows[0][-len(t.tail) :] == list(t.tail)


def test_a_literal_mask_in_the_sentence_is_not_the_template_s(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="prompt", prompt_template=T1)
    sents = ["the [MASK] sat", "a dog"]
    ours = torch.from_numpy(enc.encode(sents))
    torch.testing.assert_close(ours, _by_hand(tiny_model_dir, T1, sents, denoise=False), atol=2e-5, rtol=1e-4)


def test_saved_folder_round_trips_in_csrl_and_is_refused_by_sentence_transformers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="prompt", prompt_template=T2,
                                  prompt_template_view2=T1, prompt_denoise=True)  # fmt: skip
    before = enc.encode(SENTENCES)
    folder = save_encoder(enc, tmp_path / "saved")
    back = load_encoder(str(folder))
    assert back.pooler == "prompt" and back.config.prompt_template == T2 and back.config.prompt_denoise
    assert back.config.prompt_template_view2 == T1
    np.testing.assert_array_equal(back.encode(SENTENCES), before)
    card = (folder / "README.md").read_text()
    assert "csrl.load_encoder" in card and "cannot" in card and T2 in card
    from sentence_transformers import SentenceTransformer

    with pytest.raises(Exception, match="prompt pooler"):
        SentenceTransformer(str(folder), trust_remote_code=True)
    with pytest.raises(Exception):  # noqa: B017 - sentence-transformers' own refusal of a foreign module class
        SentenceTransformer(str(folder))
    # another pooler can still be asked for explicitly, and the folder's own is read when none is
    assert load_encoder(str(folder), pooler="mean").pooler == "mean"
    # a head kept at inference (mlp_only_train off) round-trips too, after the [MASK] state
    kept = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="prompt", mlp_only_train=False)
    with torch.no_grad():
        kept.head.linear.bias.add_(0.5)  # type: ignore[union-attr]
    folder = save_encoder(kept, tmp_path / "kept")
    np.testing.assert_array_equal(load_encoder(str(folder)).encode(SENTENCES), kept.encode(SENTENCES))
    assert not np.allclose(kept.encode(SENTENCES), before, atol=1e-3)


def test_user_errors(tiny_model_dir: Path) -> None:
    from csrl.train.config import load_config

    with pytest.raises(CsrlError, match="prompt_template"):
        load_config(None, ["model.pooler=prompt", "model.prompt_template=no slot here"])
    with pytest.raises(CsrlError, match="only applies to the prompt pooler"):
        load_config(None, ["model.pooler=mean", "model.prompt_denoise=true"])
    with pytest.raises(CsrlError, match="length buckets"):
        load_config(None, ["model.pooler=prompt", "train.length_buckets=[8,16]"])
    assert load_config(None, ["model.pooler=mask"]).model.resolved_head() == "linear_tanh"
