"""Models are read strictly: a folder that cannot give a working tokenizer or whose weights cannot be read is a
clear error naming the folder, never a run on unknown tokens or random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from st_folders import copy_model

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.models.encoder import MAX_UNKNOWN_SHARE, PROBE_SENTENCE, Encoder


def _damage(folder: Path, case: str) -> None:
    if case == "no tokenizer files":
        for f in folder.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
                f.unlink()
    elif case == "corrupt tokenizer.json":
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    elif case == "foreign vocabulary":
        (folder / "tokenizer.json").unlink()
        (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfox\n")
    elif case == "vocabulary larger than the embeddings":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["vocab_size"] = 1000
        (folder / "config.json").write_text(json.dumps(cfg))
        from transformers import BertConfig, BertModel

        BertModel(BertConfig(**cfg), add_pooling_layer=False).save_pretrained(str(folder))
    elif case == "truncated weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "no weights":
        (folder / "model.safetensors").unlink()
    elif case == "weights of another architecture":
        from safetensors.torch import load_file, save_file

        state = load_file(str(folder / "model.safetensors"))
        save_file({k: v for k, v in state.items() if "encoder.layer.1." not in k}, str(folder / "model.safetensors"))


CASES = {
    "no tokenizer files": "unknown token",
    "corrupt tokenizer.json": "its tokenizer cannot be read",
    "foreign vocabulary": "unknown token",
    "vocabulary larger than the embeddings": "embeds only 1000",
    "truncated weights": "its weights cannot be read",
    "no weights": "its weights cannot be read",
    "weights of another architecture": "lacks or misshapes .* weights",
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_model_folder_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path, case: str) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    _damage(folder, case)
    with pytest.raises(CsrlError, match=CASES[case]) as err:
        Encoder.from_pretrained(model=str(folder), pooler="mean")
    assert str(folder) in err.value.message and err.value.hint


def test_cli_reports_it_without_traceback(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    _damage(folder, "no tokenizer files")
    sentences = tmp_path / "s.txt"
    sentences.write_text("a sentence\n")
    assert main(["encode", str(folder), "-i", str(sentences), "-o", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "unknown token" in err and "Traceback" not in err


def test_the_probe_rule_accepts_real_tokenizers(tiny_model_dir: Path) -> None:
    """The rule (at most a quarter of the probe's tokens unknown) passes the real vocabulary with none unknown."""
    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="mean")
    ids = enc.tokenizer(PROBE_SENTENCE)["input_ids"]
    assert enc.tokenizer.unk_token_id not in ids and 0 < MAX_UNKNOWN_SHARE < 1


def test_missing_head_weights_of_an_inference_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    from csrl.models.save import save_encoder

    enc = Encoder.from_pretrained(model=str(tiny_model_dir), pooler="cls", head="linear", mlp_only_train=False)
    torch.nn.init.normal_(enc.head.linear.weight)  # type: ignore[union-attr]
    out = save_encoder(enc, tmp_path / "m")
    (out / "csrl_head.safetensors").unlink()
    with pytest.raises(CsrlError, match="csrl_head.safetensors is missing"):
        Encoder.from_pretrained(model=str(out))
