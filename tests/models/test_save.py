"""csrl's saved folders: written by sentence-transformers' own save, loaded by it with no warning, and keeping
what the base model had (Normalize, max_seq_length, the pooling layer's weights, prompts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from st_folders import SENTENCES, build_st_folder, capture_all, edit_json, quiet_st_load
from transformers import AutoModel

from csrl.models.encoder import Encoder, default_model_path
from csrl.models.save import save_encoder


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
        ("max", "auto", True, False),
        ("weightedmean", "auto", True, False),
    ],
)
def test_sentence_transformers_loads_saved_folder_without_warnings(
    tiny_model_dir: Path, tmp_path: Path, pooler: str, head: str, mlp_only_train: bool, needs_csrl: bool
) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler=pooler, head=head, mlp_only_train=mlp_only_train)
    if enc.head.linear is not None:
        torch.nn.init.normal_(enc.head.linear.weight)
    out = save_encoder(enc, tmp_path / "model", results_md="| x |")
    st, captured = quiet_st_load(out, trust_remote_code=needs_csrl)
    assert captured.everything() == []
    ours = enc.encode(SENTENCES)
    np.testing.assert_allclose(st.encode(SENTENCES), ours, atol=1e-5)
    # csrl reloads its own folder with pooler and head intact, the head applied once
    back = Encoder.from_pretrained(model=str(out))
    assert (back.pooler, back.head.kind, back.config.mlp_only_train) == (enc.pooler, enc.head.kind, mlp_only_train)
    assert len(back.tail) == 0
    np.testing.assert_allclose(back.encode(SENTENCES), ours, atol=1e-6)
    AutoModel.from_pretrained(str(out))  # the backbone loads on its own
    assert "| x |" in (out / "README.md").read_text()
    assert (out / "config_sentence_transformers.json").is_file()
    types = [m["type"] for m in json.loads((out / "modules.json").read_text())]
    assert any(t.startswith("csrl.") for t in types) == needs_csrl


def test_capture_sees_a_newly_initialised_warning(tiny_model_dir: Path) -> None:
    """The capture used above is not blind: the tiny BERT has no pooling-layer weights, and plain
    sentence-transformers loading of it reports them as newly initialised."""
    _, captured = quiet_st_load(tiny_model_dir)
    assert any("MISSING" in x or "newly initialized" in x for x in captured.everything())


def test_embedded_model_saved_keeps_what_the_base_had(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2: Normalize, max_seq_length 256 and BERT's pooler weights survive a csrl save."""
    base = default_model_path()
    enc = Encoder.from_pretrained(pooler="mean")
    out = save_encoder(enc, tmp_path / "m", train_config={"model": {"model": "embedded:all-MiniLM-L6-v2"}})
    types = [m["type"].rpartition(".")[2] for m in json.loads((out / "modules.json").read_text())]
    assert types == ["Transformer", "Pooling", "Normalize"]
    with (
        safe_open(str(Path(base) / "model.safetensors"), "pt") as a,
        safe_open(str(out / "model.safetensors"), "pt") as b,
    ):
        for key in ("pooler.dense.weight", "pooler.dense.bias"):
            torch.testing.assert_close(b.get_tensor(key), a.get_tensor(key), rtol=0, atol=0)
    st, captured = quiet_st_load(out)
    assert captured.everything() == []
    assert st.max_seq_length == 256
    reference, _ = quiet_st_load(base)
    np.testing.assert_allclose(st.encode(SENTENCES), reference.encode(SENTENCES), atol=1e-6)
    back = Encoder.from_pretrained(model=str(out))
    assert back.max_length() == 256 and [type(m).__name__ for m in back.tail] == ["Normalize"]
    assert json.loads((out / "csrl_encoder.json").read_text())["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_base_without_pooling_layer_loads_cleanly(tiny_model_dir: Path, tmp_path: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    assert enc.unused_backbone_state == {}
    out = save_encoder(enc, tmp_path / "m")
    cfg = json.loads((out / "sentence_bert_config.json").read_text())
    assert cfg["model_kwargs"] == {"add_pooling_layer": False}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("pooler.") for k in f.keys())


def test_st_folder_round_trip_keeps_tail_prompts_and_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A sentence-transformers folder (Dense 32->16, Normalize, a default prompt left out of pooling, lower
    casing, max_seq_length 12) read by csrl and saved again encodes as before, in both libraries."""
    folder = build_st_folder(
        tmp_path / "st",
        tiny_model_dir,
        mode="mean",
        dense=True,
        normalize=True,
        include_prompt=False,
        prompts={"query": "query: ", "document": ""},
        default_prompt_name="query",
        max_seq_length=12,
    )
    edit_json(folder / "sentence_bert_config.json", do_lower_case=True)  # as 2.x-5.x wrote it
    reference, _ = quiet_st_load(folder)
    enc = Encoder.from_pretrained(model=str(folder))
    out = save_encoder(enc, tmp_path / "csrl")
    st, captured = quiet_st_load(out)
    assert not [x for x in captured.everything() if "Default prompt name" not in x]  # ST's own notice
    np.testing.assert_allclose(st.encode(SENTENCES), reference.encode(SENTENCES), atol=1e-5)
    back = Encoder.from_pretrained(model=str(out))
    np.testing.assert_allclose(back.encode(SENTENCES), reference.encode(SENTENCES), atol=1e-5)
    assert (back.prompt, back.include_prompt, back.max_length()) == ("query: ", False, 12)
    assert [type(m).__name__ for m in back.tail] == ["Dense", "Normalize"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["do_lower_case"] is True
    assert back.lowercase_inputs


def test_trained_tail_is_frozen_and_saved_unchanged(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = build_st_folder(tmp_path / "st", tiny_model_dir, mode="mean", dense=True)
    enc = Encoder.from_pretrained(model=str(folder))
    before = enc.tail[0].linear.weight.detach().clone()
    enc.train()
    loss = enc(enc.tokenize(SENTENCES)).pow(2).sum()  # training reads the pooled vector: no tail
    loss.backward()
    assert enc.tail[0].linear.weight.grad is None
    back = Encoder.from_pretrained(model=str(save_encoder(enc, tmp_path / "m")))
    torch.testing.assert_close(back.tail[0].linear.weight, before)


def test_save_replaces_atomically(tiny_model_dir: Path, tmp_path: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    save_encoder(enc, tmp_path / "m")
    save_encoder(enc, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert not (tmp_path / "m" / ".backbone-stage").exists()


def test_capture_helper_records_warnings() -> None:
    import logging
    import warnings

    with capture_all() as cap:
        logging.getLogger("transformers.x").warning("a transformers warning")
        warnings.warn("a python warning", stacklevel=1)
    assert len(cap.everything()) == 2


def test_layer_average_pooling_leaves_the_prompt_out_in_both_libraries(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = build_st_folder(
        tmp_path / "st",
        tiny_model_dir,
        mode="mean",
        include_prompt=False,
        prompts={"query": "query: ", "document": ""},
        default_prompt_name="query",
    )
    enc = Encoder.from_pretrained(model=str(folder), pooler="first_last_avg")
    assert enc.excluded_prompt_tokens() == 3  # [CLS] query :
    out = save_encoder(enc, tmp_path / "csrl")
    st, _ = quiet_st_load(out, trust_remote_code=True)
    np.testing.assert_allclose(st.encode(SENTENCES), enc.encode(SENTENCES), atol=1e-5)
    back = Encoder.from_pretrained(model=str(out))
    assert (back.pooler, back.include_prompt) == ("first_last_avg", False)
