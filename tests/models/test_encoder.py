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
        canonical_pooler("max")


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
