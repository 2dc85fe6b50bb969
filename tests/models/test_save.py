from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from csrl.models.encoder import Encoder
from csrl.models.save import save_encoder

SENTS = ["a cat sat on the mat .", "dogs", "the quick brown fox jumps over the lazy dog"]


@pytest.mark.parametrize(
    "pooler,head,mlp_only_train,needs_csrl",
    [
        ("mean", "auto", True, False),
        ("cls_before_pooler", "auto", True, False),
        ("cls", "linear_tanh", True, False),
        ("cls", "linear_tanh", False, False),
        ("cls", "linear", False, False),
        ("cls", "tanh_linear", False, True),
        ("first_last_avg", "auto", True, True),
        ("last2_avg", "auto", True, True),
    ],
)
def test_sentence_transformers_loads_saved_folder(
    tiny_model_dir: Path, tmp_path: Path, pooler: str, head: str, mlp_only_train: bool, needs_csrl: bool
) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler=pooler, head=head, mlp_only_train=mlp_only_train)
    if enc.head.linear is not None:
        torch.nn.init.normal_(enc.head.linear.weight)
    out = save_encoder(enc, tmp_path / "model", results_md="| x |")
    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=needs_csrl)
    ours = enc.encode(SENTS)
    np.testing.assert_allclose(st.encode(SENTS), ours, atol=1e-5)
    # csrl reloads its own folder with pooler and head intact
    back = Encoder.from_pretrained(model=str(out))
    assert (back.pooler, back.head.kind, back.config.mlp_only_train) == (enc.pooler, enc.head.kind, mlp_only_train)
    np.testing.assert_allclose(back.encode(SENTS), ours, atol=1e-6)
    AutoModel.from_pretrained(str(out))  # the backbone loads on its own
    card = (out / "README.md").read_text()
    assert "| x |" in card and pooler in card
    if not needs_csrl:
        assert "csrl." not in (out / "modules.json").read_text()


def test_save_replaces_atomically(tiny_model_dir: Path, tmp_path: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    save_encoder(enc, tmp_path / "m")
    save_encoder(enc, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
