"""One record per ``\\n`` line, exactly: CRLF is fine, every other line break inside a line is refused with
file, line, column and character (training corpora, and the sentence files of encode/analyze)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from csrl.data import corpora
from csrl.data.corpora import open_corpus, read_lines
from csrl.errors import CsrlError

ODD = {
    "\r": "CARRIAGE RETURN", "\x0b": "LINE TABULATION", "\x0c": "FORM FEED", "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR", "\x1e": "RECORD SEPARATOR", "\x85": "NEXT LINE", "\u2028": "LINE SEPARATOR",
    "\u2029": "PARAGRAPH SEPARATOR",
}  # fmt: skip


def test_the_refused_characters_are_exactly_the_extra_breaks_of_splitlines() -> None:
    extra = {chr(c) for c in range(0x3000) if len(f"a{chr(c)}b".splitlines()) == 2} - {"\n"}
    assert extra == set(ODD) == set(corpora._ODD_BREAKS)


@pytest.mark.parametrize("char", list(ODD), ids=[f"U+{ord(c):04X}" for c in ODD])
@pytest.mark.parametrize("prefix", ["ascii only ", "café é "], ids=["ascii", "utf8"])
def test_corpus_refuses_a_line_break_inside_a_line(tmp_path: Path, char: str, prefix: str) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes(f"first\nsecond line\n{prefix}{char}rest\nlast\n".encode())
    code = re.escape(f"U+{ord(char):04X}")
    column = len(prefix) + 1  # characters, not bytes
    with pytest.raises(CsrlError, match=rf"c\.txt:3: contains {code} \({ODD[char]}\) at column {column};") as err:
        open_corpus(p)
    assert "str.splitlines" in err.value.message and err.value.hint


@pytest.mark.parametrize("chunk", [5, 64])
def test_line_and_column_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(corpora, "_CHUNK", chunk)  # lines span several reads
    p = tmp_path / "c.txt"
    lines = [f"line {k} é" for k in range(1, 40)]
    lines[29] = "line 30 é, then\u2029here"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CsrlError, match=r"c\.txt:30: contains U\+2029 \(PARAGRAPH SEPARATOR\) at column 16"):
        open_corpus(p)


def test_crlf_and_a_final_cr_are_read_silently(tmp_path: Path) -> None:
    lf, crlf = tmp_path / "lf.txt", tmp_path / "crlf.txt"
    lf.write_bytes("un\ndeux é\ntrois\n".encode())
    crlf.write_bytes("un\r\ndeux é\r\ntrois\r".encode())  # a \r ending the file counts as a CRLF's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = open_corpus(lf), open_corpus(crlf)
    assert list(a) == list(b) == [("un",), ("deux é",), ("trois",)]
    assert read_lines(lf) == read_lines(crlf) == ["un", "deux é", "trois"]


def test_old_mac_line_ends_are_refused_with_a_conversion_hint(tmp_path: Path) -> None:
    p = tmp_path / "mac.txt"
    p.write_bytes(b"one\rtwo\rthree\r")
    with pytest.raises(CsrlError, match=r"mac\.txt:1: contains U\+000D \(CARRIAGE RETURN\) at column 4") as err:
        open_corpus(p)
    assert "tr '\\r' '\\n'" in (err.value.hint or "")


def test_csv_quoted_newlines_pass_but_a_line_separator_in_a_field_does_not(tmp_path: Path) -> None:
    ok = tmp_path / "ok.csv"
    ok.write_bytes(b'sent0,sent1\r\n"multi\r\nline",b\r\nc,d\r\n')
    assert list(open_corpus(ok)) == [("multi\r\nline", "b"), ("c", "d")]
    bad = tmp_path / "bad.csv"
    bad.write_text("sent0,sent1\na,b\nc\u2028c,d\n", encoding="utf-8")
    with pytest.raises(CsrlError, match=r"bad\.csv:3: contains U\+2028 \(LINE SEPARATOR\) at column 2"):
        open_corpus(bad)


def test_jsonl_refuses_a_raw_separator_but_not_an_escaped_one(tmp_path: Path) -> None:
    escaped = tmp_path / "e.jsonl"
    escaped.write_text('{"text": "a\\u2028b"}\n', encoding="utf-8")  # JSON escape: the line itself is clean
    assert list(open_corpus(escaped)) == [("a\u2028b",)]
    raw = tmp_path / "r.jsonl"
    raw.write_text('{"text": "a\u2028b"}\n', encoding="utf-8")
    with pytest.raises(CsrlError, match=r"r\.jsonl:1: contains U\+2028"):
        open_corpus(raw)


def test_read_lines_rules(tmp_path: Path) -> None:
    p = tmp_path / "s.txt"
    p.write_bytes("\ufeffa\r\n\r\n  b \nc".encode())
    assert read_lines(p) == ["a", "", "  b ", "c"]  # BOM dropped, blank kept, no final newline needed
    p.write_bytes(b"a\n\n")
    assert read_lines(p) == ["a", ""]  # like str.splitlines: a final newline adds no line
    p.write_bytes(b"")
    assert read_lines(p) == []
    p.write_bytes("ok\nnot ok\x85 here\n".encode())
    with pytest.raises(CsrlError, match=r"s\.txt:2: contains U\+0085 \(NEXT LINE\) at column 7") as err:
        read_lines(p)
    assert "sed -i 's/\\xc2\\x85/ /g'" in (err.value.hint or "")
    p.write_bytes(b"ok\n\xff\n")
    with pytest.raises(CsrlError, match=r"s\.txt:2: byte offset 3 \(byte 0xff\) is not UTF-8"):
        read_lines(p)
    with pytest.raises(CsrlError, match="sentence file .* not found"):
        read_lines(tmp_path / "missing.txt", what="sentence file")


def test_real_file_with_a_next_line_character(data_dir: Path) -> None:
    """The NLTK ABC 'rural' source text holds one U+0085 (a cp1252 ellipsis decoded as latin-1)."""
    p = data_dir / "train" / "nltk" / "abc" / "original" / "rural.txt"
    if not p.is_file():
        pytest.skip("train/nltk/abc/original/rural.txt is not in this data folder")
    text = p.read_text(encoding="utf-8")
    k = text.index("\x85")
    line, column = text.count("\n", 0, k) + 1, k - text.rfind("\n", 0, k)
    with pytest.raises(CsrlError, match=rf"rural\.txt:{line}: contains U\+0085 \(NEXT LINE\) at column {column}"):
        open_corpus(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("wiki/wiki1m_for_simcse.head.txt", "nltk/abc/abc.sent.txt"):  # the shipped corpora are clean
            assert len(open_corpus(data_dir / "train" / name)) > 1000
