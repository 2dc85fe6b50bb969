"""``csrl encode``: row k of the output is line k of the input (lines split on ``\\n`` only), and the
default precision is ``auto``; ``csrl analyze --sentences`` reads under the same line rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csrl.cli.main import build_parser
from csrl.errors import CsrlError
from csrl.pipelines.analyze import read_sentence_file
from csrl.pipelines.encode import encode_file, read_sentences
from csrl.utils import precision as prec


def test_rows_are_lines_and_crlf_is_read_like_lf(tmp_path: Path) -> None:
    lf, crlf = tmp_path / "lf.txt", tmp_path / "crlf.txt"
    lines = ["first sentence", "deuxième phrase", "third\tone"]
    lf.write_bytes(("\n".join(lines) + "\n").encode())
    crlf.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    assert read_sentences(lf) == read_sentences(crlf) == lines


@pytest.mark.parametrize("char", ["\u2028", "\x85", "\x0c", "\r"])
def test_a_line_break_inside_a_line_is_refused_not_split(tmp_path: Path, char: str) -> None:
    p = tmp_path / "in.txt"
    p.write_text(f"one\ntwo{char}halves\nthree\n", encoding="utf-8", newline="")
    assert len(p.read_text(encoding="utf-8").splitlines()) == 4  # what the old reader would have made of it
    with pytest.raises(CsrlError, match=rf"in\.txt:2: contains U\+{ord(char):04X} .* at column 4"):
        read_sentences(p)
    with pytest.raises(CsrlError, match=r"in\.txt:2: contains"):
        read_sentence_file(p)


def test_empty_lines_error_for_encode_and_are_skipped_by_analyze(tmp_path: Path) -> None:
    p = tmp_path / "in.txt"
    p.write_text("a\n\nb\n")
    with pytest.raises(CsrlError, match=r"in\.txt:2: empty line"):
        read_sentences(p)
    assert read_sentence_file(p) == ["a", "b"]


def test_encode_default_precision_is_auto(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("the cat sat on the mat\na blue dog runs fast\nsmall green house\n")
    monkeypatch.setattr(prec, "_warned", set())

    def run(name: str, **kwargs: str) -> np.ndarray:
        return encode_file(str(tiny_model_dir), src, tmp_path / f"{name}.npy", device="cpu", **kwargs)

    fp32, bf16 = run("fp32", precision="fp32"), run("bf16", precision="bf16")
    assert not np.array_equal(fp32, bf16) and np.allclose(fp32, bf16, atol=0.1)
    monkeypatch.setattr(prec, "_torch_cpu_bf16", lambda: False)  # an AVX2-only CPU: auto is fp32
    assert np.array_equal(run("auto-avx2"), fp32)
    monkeypatch.setattr(prec, "_torch_cpu_bf16", lambda: True)  # native bf16 units: auto is bf16
    assert np.array_equal(run("auto-bf16"), bf16)
    assert np.array_equal(np.load(tmp_path / "auto-bf16.npy"), bf16) and bf16.shape[0] == 3


def test_cli_precision_defaults() -> None:
    parser = build_parser()
    assert parser.parse_args(["encode", "m", "-i", __file__, "-o", "o.npy"]).precision == "auto"
    assert parser.parse_args(["eval"]).precision == "fp32"
    assert parser.parse_args(["eval", "--precision", "auto", "--strict"]).strict is True
    assert parser.parse_args(["analyze"]).precision == "fp32"
    assert parser.parse_args(["analyze", "--precision", "auto"]).precision == "auto"


def test_analyze_precision_is_recorded_and_metrics_stay_close(tiny_model_dir: Path) -> None:
    from csrl.pipelines.analyze import analyze_model

    sents = ["the cat sat on the mat", "a dog runs fast", "green trees grow tall", "small houses are red"] * 3
    fp32 = analyze_model(str(tiny_model_dir), sentences=sents, precision="fp32")
    bf16 = analyze_model(str(tiny_model_dir), sentences=sents, precision="bf16")
    assert (fp32.extra["precision"], bf16.extra["precision"]) == ("fp32", "bf16")
    a, b = fp32.to_dict(), bf16.to_dict()
    assert a["n_tokens"] == b["n_tokens"]
    # the forward pass ran in bf16 (the last layers' norms move), the metrics themselves in fp32
    assert a["norm_mean"] != b["norm_mean"] and np.allclose(a["norm_mean"], b["norm_mean"], rtol=0.05)
