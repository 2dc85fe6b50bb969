from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.models.pooling import canonical_pooler, masked_mean, pool

SENTS = ["a cat sat on the mat .", "dogs", "the quick brown fox jumps over the lazy dog again and again"]


def test_pooler_names_and_aliases() -> None:
    assert canonical_pooler("avg") == "mean"
    assert canonical_pooler("avg_first_last") == "first_last_avg"
    assert canonical_pooler("avg_top2") == "last2_avg"
    with pytest.raises(CsrlError, match="valid poolers"):
        canonical_pooler("median")


def test_poolers_against_brute_force() -> None:
    torch.manual_seed(0)
    hs = [torch.randn(2, 5, 4) for _ in range(4)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])

    def avg(h: torch.Tensor, b: int) -> torch.Tensor:
        n = int(mask[b].sum())
        return h[b, :n].mean(0)

    for b in range(2):
        torch.testing.assert_close(pool("mean", hs, mask)[b], avg(hs[-1], b))
        torch.testing.assert_close(pool("cls", hs, mask)[b], hs[-1][b, 0])
        torch.testing.assert_close(pool("first_last_avg", hs, mask)[b], (avg(hs[1], b) + avg(hs[-1], b)) / 2)
        torch.testing.assert_close(pool("last2_avg", hs, mask)[b], (avg(hs[-2], b) + avg(hs[-1], b)) / 2)
    torch.testing.assert_close(masked_mean(hs[0], mask)[0], hs[0][0, :3].mean(0))


def test_head_only_in_training_under_mlp_only_train(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="cls")
    feats = enc.tokenize(SENTS)
    enc.eval()
    with torch.no_grad():
        raw = enc(feats)
        cls = enc.backbone(**feats).last_hidden_state[:, 0]
    torch.testing.assert_close(raw, cls)
    enc2 = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="cls", mlp_only_train=False)
    enc2.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc2(feats), torch.tanh(enc2.head.linear(cls)))  # type: ignore[misc]


def test_encode_is_order_and_batch_independent(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    a = enc.encode(SENTS, batch_size=1)
    b = enc.encode(SENTS[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert enc.training  # restored


def test_token_states_pack_without_padding(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    ts = enc.token_states(SENTS, batch_size=2)
    ids = [enc.tokenizer(s)["input_ids"] for s in SENTS]
    assert ts.offsets.tolist() == list(np.cumsum([0] + [len(i) for i in ids]))
    assert ts.token_ids.tolist() == [t for i in ids for t in i]
    assert len(ts.layers) == 3
    enc.eval()
    one = enc.backbone(**enc.tokenize([SENTS[1]]), output_hidden_states=True).hidden_states
    a, b = int(ts.offsets[1]), int(ts.offsets[2])
    torch.testing.assert_close(ts.layers[2][a:b], one[2][0].detach(), atol=1e-5, rtol=1e-5)


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="does not exist"):
        Encoder.from_pretrained(model=str(tmp_path / "no-such-model"))


def test_sentence_transformers_poolers_against_brute_force() -> None:
    """max, mean_sqrt_len, weightedmean, lasttoken and the prompt exclusion, from their definitions, with
    right and left padding."""
    from csrl.models.pooling import exclude_prefix

    torch.manual_seed(0)
    hs = [torch.randn(3, 6, 4)]
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    left = right.flip(1)
    for mask in (right, left):
        kept = [torch.nonzero(mask[b]).flatten() for b in range(3)]
        for b, idx in enumerate(kept):
            h = hs[-1][b]
            torch.testing.assert_close(pool("max", hs, mask)[b], h[idx].max(0).values)
            torch.testing.assert_close(pool("mean_sqrt_len", hs, mask)[b], h[idx].sum(0) / len(idx) ** 0.5)
            w = torch.arange(1, len(idx) + 1, dtype=torch.float32)[:, None]  # positions from the first real token
            torch.testing.assert_close(pool("weightedmean", hs, mask)[b], (h[idx] * w).sum(0) / w.sum())
            torch.testing.assert_close(pool("lasttoken", hs, mask)[b], h[idx[-1]])
            torch.testing.assert_close(pool("cls", hs, mask)[b], h[idx[0]])
        # a 2-token prompt left out: pooled over the rest, weightedmean keeps the original positions
        cut = exclude_prefix(mask, 2)
        for b, idx in enumerate(kept):
            h, rest = hs[-1][b], idx[2:]
            assert torch.nonzero(cut[b]).flatten().tolist() == rest.tolist()
            torch.testing.assert_close(pool("mean", hs, cut)[b], h[rest].mean(0) if len(rest) else torch.zeros(4))
            w = torch.arange(3, len(idx) + 1, dtype=torch.float32)[:, None]
            if len(rest):
                got = pool("weightedmean", hs, cut, padding_mask=mask)[b]
                torch.testing.assert_close(got, (h[rest] * w).sum(0) / w.sum())
                torch.testing.assert_close(pool("cls", hs, cut)[b], h[rest[0]])


def test_left_padding_is_padded_and_packed_right(tiny_model_dir: Path) -> None:
    """A tokenizer that pads on the left (decoders) is padded on the left, and token_states packs each
    sentence's own rows of that batch."""
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="lasttoken")
    enc.tokenizer.padding_side = "left"
    enc.eval()
    ids = [enc.tokenizer(s)["input_ids"] for s in SENTS]
    feats = enc._pad(ids)
    width = max(map(len, ids))
    for row, r in zip(feats["input_ids"].tolist(), ids, strict=True):
        assert row[width - len(r) :] == r and set(row[: width - len(r)]) <= {enc.tokenizer.pad_token_id}
    states = enc.token_states(SENTS, batch_size=3)
    with torch.no_grad():
        hs = enc.hidden_states(feats, all_layers=True)
    mask = feats["attention_mask"].bool()
    for s in range(len(SENTS)):
        a, b = int(states.offsets[s]), int(states.offsets[s + 1])
        torch.testing.assert_close(states.layers[-1][a:b], hs[-1][s][mask[s]], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(states.pooled[s], hs[-1][s, -1], atol=1e-5, rtol=1e-5)  # type: ignore[index]
