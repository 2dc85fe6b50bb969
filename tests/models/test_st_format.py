"""Folders written by sentence-transformers load in csrl with the embeddings ``SentenceTransformer(dir).encode`` gives.

The matrix: every pooling mode of the installed sentence-transformers, with and without Dense and
Normalize; then prompts (``include_prompt``), ``max_seq_length`` and ``do_lower_case``; the 3.x-5.x
layouts (committed fixtures); a Hub id (read from a local Hugging Face cache, offline); and what csrl
refuses instead of guessing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from st_folders import (
    LEGACY,
    SENTENCES,
    assemble_legacy,
    build_st_folder,
    cache_as_hub_repo,
    copy_model,
    edit_json,
    quiet_st_load,
)

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.models.st_format import ST_POOLING_MODES, read_st_pipeline

TOL = 1e-5
MODES = list(ST_POOLING_MODES)  # cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken
TAILS = {"none": (False, False), "dense": (True, False), "normalize": (False, True), "dense+normalize": (True, True)}


def max_abs_difference(folder: Path | str, **st_kwargs: object) -> tuple[float, Encoder]:
    """max |SentenceTransformer(folder).encode - csrl encode| over SENTENCES (different batchings, so padding differs)."""
    st, _ = quiet_st_load(folder, **st_kwargs)
    reference = st.encode(SENTENCES, batch_size=2)
    enc = Encoder.from_pretrained(model=str(folder))
    ours = enc.encode(SENTENCES, batch_size=3)
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max()), enc


@pytest.fixture(scope="module")
def cased_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with a tokenizer that keeps case (over its uncased vocabulary: capitals become [UNK]
    unless the input is lower-cased, so do_lower_case changes the embeddings)."""
    from transformers import AutoTokenizer

    path = copy_model(tiny_model_dir, tmp_path_factory.mktemp("cased"))
    AutoTokenizer.from_pretrained(str(tiny_model_dir), do_lower_case=False).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_transformer(tiny_model_dir: Path) -> object:
    """sentence-transformers' Transformer module of the tiny BERT, shared by the matrix (built once)."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    return Transformer(str(tiny_model_dir), model_kwargs={"add_pooling_layer": False})


@pytest.mark.parametrize("tail", list(TAILS))
@pytest.mark.parametrize("mode", MODES)
def test_installed_st_folder_matrix(
    tiny_model_dir: Path, tiny_transformer: object, tmp_path: Path, mode: str, tail: str
) -> None:
    dense, normalize = TAILS[tail]
    folder = build_st_folder(
        tmp_path / "st", tiny_model_dir, mode=mode, dense=dense, normalize=normalize, transformer=tiny_transformer
    )
    diff, enc = max_abs_difference(folder)
    assert diff <= TOL, (mode, tail, diff)
    assert enc.pooler == ST_POOLING_MODES[mode]
    assert [type(m).__name__ for m in enc.tail] == [n for n, on in (("Dense", dense), ("Normalize", normalize)) if on]
    out = enc.encode(SENTENCES)
    assert out.shape[1] == (16 if dense else 32)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert not any(p.requires_grad for p in enc.tail.parameters())  # the tail is kept, not trained


@pytest.mark.parametrize("mode", ["cls", "mean", "weightedmean", "lasttoken"])
def test_default_prompt_and_include_prompt(tiny_model_dir: Path, tmp_path: Path, mode: str) -> None:
    prompts = {"query": "query: a search for ", "document": ""}
    for include in (True, False):
        folder = build_st_folder(
            tmp_path / f"st-{include}",
            tiny_model_dir,
            mode=mode,
            normalize=True,
            include_prompt=include,
            prompts=prompts,
            default_prompt_name="query",
        )
        diff, enc = max_abs_difference(folder)
        assert diff <= TOL, (mode, include, diff)
        assert enc.prompt == "query: a search for " and enc.include_prompt is include
        assert enc.excluded_prompt_tokens() == (0 if include else 6)  # [CLS] query : a search for
    # the prompt changes the embedding (a prompt ignored would still pass a test with only one folder)
    plain = Encoder.from_pretrained(model=str(build_st_folder(tmp_path / "plain", tiny_model_dir, mode=mode)))
    assert np.abs(plain.encode(SENTENCES) - enc.encode(SENTENCES)).max() > 1e-3


def test_max_seq_length_and_do_lower_case(cased_model_dir: Path, tmp_path: Path) -> None:
    folder = build_st_folder(tmp_path / "st", cased_model_dir, mode="mean", max_seq_length=8)
    # sentence-transformers 6 keeps max_seq_length in the tokenizer (model_max_length) and does not write
    # do_lower_case; its Transformer still reads both from sentence_bert_config.json, where 2.x-5.x wrote them
    edit_json(folder / "sentence_bert_config.json", do_lower_case=True)
    diff, enc = max_abs_difference(folder)
    assert diff <= TOL
    assert enc.max_length() == 8
    a, b = enc.encode(["Hello World!", "hello world!"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # lower-cased before the (cased) tokenizer
    cased = build_st_folder(tmp_path / "cased", cased_model_dir, mode="mean")
    a, b = Encoder.from_pretrained(model=str(cased)).encode(["Hello World!", "hello world!"])
    assert np.abs(a - b).max() > 1e-4  # without do_lower_case the case matters: the test above can fail


def test_dense_activation_is_the_folders(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = build_st_folder(tmp_path / "st", tiny_model_dir, mode="max", dense=True, dense_activation=torch.nn.ReLU())
    diff, enc = max_abs_difference(folder)
    assert diff <= TOL and isinstance(enc.tail[0].activation_function, torch.nn.ReLU)


@pytest.mark.parametrize("name", LEGACY)
def test_older_release_layouts(cased_model_dir: Path, tmp_path: Path, name: str) -> None:
    folder = assemble_legacy(tmp_path / name, name, cased_model_dir)
    diff, enc = max_abs_difference(folder)
    assert diff <= TOL, (name, diff)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    expected = "cls_before_pooler" if pooling["pooling_mode_cls_token"] else None
    expected = expected or ("mean" if pooling["pooling_mode_mean_tokens"] else "weightedmean")
    assert enc.pooler == expected
    assert enc.max_length() == json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]


def test_embedded_model_matches_sentence_transformers() -> None:
    """all-MiniLM-L6-v2 (a 2.0.0 folder: Transformer, mean Pooling, Normalize): unit vectors, as ST gives."""
    from csrl.models.encoder import default_model_path

    diff, enc = max_abs_difference(default_model_path())
    assert diff <= TOL
    assert enc.pooler == "mean" and enc.max_length() == 256 and [type(m).__name__ for m in enc.tail] == ["Normalize"]


def test_hub_id_resolves_like_the_local_folder(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hub id reads modules.json and the module configs through the Hub code path (here a local cache, offline)."""
    from huggingface_hub import constants

    folder = build_st_folder(tmp_path / "st", tiny_model_dir, mode="lasttoken", dense=True, normalize=True)
    cache_as_hub_repo(tmp_path / "cache", "csrl-test/tiny-st", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pipe = read_st_pipeline("csrl-test/tiny-st")
    assert pipe is not None and pipe.pooler == "lasttoken" and len(pipe.tail) == 2
    hub = Encoder.from_pretrained(model="csrl-test/tiny-st")
    local = Encoder.from_pretrained(model=str(folder))
    np.testing.assert_array_equal(hub.encode(SENTENCES), local.encode(SENTENCES))


def _refusal_cases(folder: Path, case: str) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    if case == "custom code":
        modules[1]["type"] = "my_pooling.MyPooling"
    elif case == "module csrl cannot run":
        modules.append({"idx": 3, "name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    elif case == "untrusted activation":
        edit_json(folder / "2_Dense" / "config.json", activation_function="my_code.Swish")
    elif case == "not a SentenceTransformer":
        edit_json(folder / "config_sentence_transformers.json", model_type="SparseEncoder")
    elif case == "another task":
        edit_json(folder / "sentence_bert_config.json", transformer_task="sequence-classification")
    elif case == "unknown default prompt":
        edit_json(folder / "config_sentence_transformers.json", default_prompt_name="nope")
    elif case == "no pooling":
        modules = modules[:1]
    (folder / "modules.json").write_text(json.dumps(modules))


REFUSALS = {
    "custom code": "custom code",
    "module csrl cannot run": "LayerNorm",
    "untrusted activation": "activation 'my_code.Swish'",
    "not a SentenceTransformer": "SparseEncoder",
    "another task": "sequence-classification",
    "unknown default prompt": "default prompt 'nope'",
    "no pooling": "no pooling",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_csrl_cannot_reproduce_is_refused(tiny_model_dir: Path, tmp_path: Path, case: str) -> None:
    folder = build_st_folder(tmp_path / "st", tiny_model_dir, mode="mean", dense=True)
    _refusal_cases(folder, case)
    with pytest.raises(CsrlError, match=REFUSALS[case]) as err:
        Encoder.from_pretrained(model=str(folder))
    assert str(folder) in err.value.message


def test_concatenated_pooling_modes_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = build_st_folder(tmp_path / "st", tiny_model_dir, mode=("cls", "mean"))
    with pytest.raises(CsrlError, match=r"concatenates the modes cls\+mean"):
        Encoder.from_pretrained(model=str(folder))


def test_transformer_in_a_subfolder(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Old layouts kept the backbone in ``0_Transformer/``: csrl reads it there, as sentence-transformers does."""
    folder = build_st_folder(tmp_path / "st", tiny_model_dir, mode="mean")
    sub = folder / "0_Transformer"
    sub.mkdir()
    for f in list(folder.iterdir()):
        if f.is_file() and f.name not in ("modules.json", "config_sentence_transformers.json"):
            shutil.move(str(f), sub / f.name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    diff, _ = max_abs_difference(folder)
    assert diff <= TOL
