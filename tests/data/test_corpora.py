from __future__ import annotations

import csv
import io
import json
import os
import pickle
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from csrl.data import corpora
from csrl.data.corpora import Corpus, CorpusWarning, open_corpus
from csrl.errors import CsrlError


def naive_lines(data: bytes) -> list[str]:
    """Reference reader: split on \\n, drop one \\r before it, skip blank lines, drop a leading BOM."""
    text = data.decode("utf-8").removeprefix("\ufeff")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return [line for line in lines if line.strip(" \t\r\n\v\f")]


def records(c: Corpus) -> list[tuple[str, ...]]:
    return [c.get(i) for i in range(len(c))]


def quiet_open(*args: object, **kwargs: object) -> Corpus:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        return open_corpus(*args, **kwargs)  # type: ignore[arg-type]


def random_text_bytes(rng: random.Random, n_lines: int) -> bytes:
    alphabet = "abc xyz éü€😀,\"'\t"
    out = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.05:
            line = ""
        elif kind < 0.08:
            line = " \t "
        else:
            line = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))).strip() or "x"
        out.append(line + ("\r\n" if rng.random() < 0.2 else "\n"))
    return "".join(out).encode("utf-8")


@pytest.mark.parametrize("chunk", [7, 64, 1 << 24])
def test_text_offsets_match_naive_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(corpora, "_CHUNK", chunk)  # tiny chunks exercise lines spanning reads
    rng = random.Random(0)
    data = random_text_bytes(rng, 500) + "last line, no newline ✓".encode()
    p = tmp_path / "c.txt"
    p.write_bytes(data)
    c = quiet_open([p])
    assert c.fields == ("text",)
    assert [r[0] for r in records(c)] == naive_lines(data)
    assert c.get(-1) == ("last line, no newline ✓",)
    # the index is exactly (start, length) into the raw bytes
    f = c._files[0]
    assert f.starts.dtype == np.int64 and f.lengths.dtype == np.int64
    for i in rng.sample(range(len(c)), 50):
        s, n = int(f.starts[i]), int(f.lengths[i])
        assert data[s : s + n].decode() == c.get(i)[0]


def test_crlf_bom_blank_lines_and_warning(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes(b"\xef\xbb\xbfone\r\n\r\n  \r\ntwo\n\n three \nfour\n")
    with pytest.warns(CorpusWarning, match=r"skipped 3 blank or whitespace-only line\(s\) \(lines 2, 3, 5\)"):
        c = open_corpus(p)
    assert records(c) == [("one",), ("two",), (" three ",), ("four",)]
    (issue,) = c.issues
    assert (issue.kind, issue.count, issue.lines, issue.path) == ("blank", 3, (2, 3, 5), p)


def test_trailing_newline_is_not_a_blank_line(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("a\nb\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = open_corpus(p)
    assert records(c) == [("a",), ("b",)] and c.issues == ()


def test_multi_file_concatenation(tmp_path: Path) -> None:
    a, b, d = tmp_path / "a.txt", tmp_path / "b.sent.txt", tmp_path / "d.txt"
    a.write_text("a1\na2\n")
    b.write_text("b1\n")
    d.write_text("d1\nd2\nd3")
    c = open_corpus([a, b, d])
    assert len(c) == 6
    assert records(c) == [("a1",), ("a2",), ("b1",), ("d1",), ("d2",), ("d3",)]
    assert c.get_many([5, 0, 2]) == [("d3",), ("a1",), ("b1",)]
    assert list(c) == records(c)
    assert c.location(4) == (d, 2)
    with pytest.raises(IndexError):
        c.get(6)


CSV_ROWS = [
    {"sent0": "plain", "sent1": "with, comma", "hard_neg": 'with "quotes"'},
    {"sent0": "multi\nline field", "sent1": "é ü 😀", "hard_neg": "x"},
    {"sent0": "crlf\r\ninside", "sent1": "'single'", "hard_neg": "last"},
]


def write_csv(path: Path, rows: list[dict[str, str]], lineterminator: str = "\r\n") -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["sent0", "sent1", "hard_neg"], lineterminator=lineterminator)
    w.writeheader()
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode())


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
def test_csv_matches_csv_module(tmp_path: Path, terminator: str) -> None:
    p = tmp_path / "nli.csv"
    write_csv(p, CSV_ROWS * 20, terminator)
    with open(p, newline="", encoding="utf-8") as fh:
        expected = [(r["sent0"], r["sent1"], r["hard_neg"]) for r in csv.DictReader(fh)]
    c = open_corpus(p)
    assert c.fields == ("sent0", "sent1", "hard_neg")
    assert records(c) == expected
    c2 = open_corpus(p, columns=["hard_neg", "sent0"])
    assert c2.fields == ("hard_neg", "sent0") and c2.get(1) == ("x", "multi\nline field")


def test_tsv_and_jsonl(tmp_path: Path) -> None:
    t = tmp_path / "pairs.tsv"
    t.write_text('text\tother\n"quoted" stays\tb\nsecond\tc\n')
    assert records(open_corpus(t, columns=["text"])) == [('"quoted" stays',), ("second",)]
    j = tmp_path / "d.jsonl"
    j.write_text(
        json.dumps({"text": "hé", "label": 1, "pos": "p"}) + "\n\n" + json.dumps({"pos": "q", "text": "x"}) + "\n"
    )
    c = quiet_open(j, columns=["text", "pos"])
    assert c.fields == ("text", "pos") and records(c) == [("hé", "p"), ("x", "q")]


def test_real_nli_sample_and_wiki_head() -> None:
    root = os.environ.get("CSRL_DATA_DIR")
    if not root:
        pytest.skip("CSRL_DATA_DIR not set")
    c = open_corpus(Path(root) / "nli" / "nli_for_simcse.sample.csv")
    assert len(c) == 9 and c.fields == ("sent0", "sent1", "hard_neg")
    wiki = Path(root) / "train" / "wiki" / "wiki1m_for_simcse.head.txt"
    w = open_corpus(wiki)
    assert len(w) == 11915  # 11,914 complete lines + the cut last line (kept)
    assert [r[0] for r in records(w)] == naive_lines(wiki.read_bytes())


# ---- errors --------------------------------------------------------------------------------------


def test_non_utf8_names_file_line_offset_and_iconv(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"fine\nalso fine\ncaf\xe9 au lait\n")
    with pytest.raises(CsrlError) as e:
        open_corpus(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "byte offset 18" in msg and "0xe9" in msg and "iconv" in msg


def test_non_utf8_in_later_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora, "_CHUNK", 16)
    p = tmp_path / "c.txt"
    p.write_bytes(b"".join(b"line %d\n" % i for i in range(20)) + b"\xff\n")
    with pytest.raises(CsrlError, match=r"line 21: byte offset 150"):
        open_corpus(p)


def test_empty_corpus(tmp_path: Path) -> None:
    p = tmp_path / "blank.txt"
    p.write_text("\n  \n\r\n")
    with pytest.raises(CsrlError, match="corpus is empty"), warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        open_corpus(p)
    (tmp_path / "zero.txt").write_bytes(b"")
    with pytest.raises(CsrlError, match="zero.txt: corpus is empty"):
        open_corpus(tmp_path / "zero.txt")
    (tmp_path / "header.csv").write_text("sent0,sent1\n")
    with pytest.raises(CsrlError, match="header.csv: corpus is empty"):
        open_corpus(tmp_path / "header.csv")


def test_bad_columns_lists_header(tmp_path: Path) -> None:
    p = tmp_path / "nli.csv"
    write_csv(p, CSV_ROWS)
    with pytest.raises(CsrlError) as e:
        open_corpus(p, columns=["sent0", "hard_negative"])
    msg = str(e.value)
    assert "nli.csv, line 1" in msg and "'hard_negative'" in msg
    assert "the header has: 'sent0', 'sent1', 'hard_neg'" in msg and "hint:" in msg


def test_wrong_field_count(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("sent0,sent1\na,b\nc,d,e\n")
    with pytest.raises(CsrlError, match=r"bad.csv, line 3: expected 2 fields like the header but found 3"):
        open_corpus(p)
    t = tmp_path / "bad.tsv"
    t.write_text("a\tb\nx\n")
    with pytest.raises(CsrlError, match=r"bad.tsv, line 2: expected 2 fields"):
        open_corpus(t)


def test_unclosed_quote(tmp_path: Path) -> None:
    p = tmp_path / "q.csv"
    p.write_text('text\nok\n"never closed\nmore\n')
    with pytest.raises(CsrlError, match=r"q.csv, line 3: malformed CSV"):
        open_corpus(p)


def test_empty_field(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text("sent0,sent1,hard_neg\na,b,c\nd,,f\n")
    with pytest.raises(CsrlError, match=r"e.csv, line 3: field 'sent1' is empty"):
        open_corpus(p)
    assert len(open_corpus(p, columns=["sent0", "hard_neg"])) == 2  # not selected: not checked


def test_bad_json_lines(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b",}\n')
    with pytest.raises(CsrlError, match=r"d.jsonl, line 2: invalid JSON: .* at column \d+"):
        open_corpus(p)
    p.write_text('{"text": "a"}\n["text"]\n')
    with pytest.raises(CsrlError, match=r"line 2: expected a JSON object, found list"):
        open_corpus(p)
    p.write_text('{"text": "a"}\n{"txt": "b", "id": 3}\n')
    with pytest.raises(CsrlError, match=r"line 2: field 'text' is missing; fields found: 'txt', 'id'"):
        open_corpus(p)
    p.write_text('{"text": 5}\n')
    with pytest.raises(CsrlError, match=r"line 1: field 'text' is a int, expected a string"):
        open_corpus(p)
    p.write_text('{"text": " "}\n')
    with pytest.raises(CsrlError, match=r"line 1: field 'text' is empty"):
        open_corpus(p)


def test_long_lines_truncated_with_issue(tmp_path: Path) -> None:
    p = tmp_path / "long.txt"
    p.write_text("short\n" + "é" * 30 + "\n" + "b" * 10 + "\n" + "c" * 11 + "\n")
    with pytest.warns(CorpusWarning, match=r"2 record\(s\) have a field longer than 10 characters \(lines 2, 4\)"):
        c = open_corpus(p, max_chars=10)
    assert records(c) == [("short",), ("é" * 10,), ("b" * 10,), ("c" * 10,)]
    (issue,) = c.issues
    assert issue.kind == "truncated" and issue.count == 2
    q = tmp_path / "long.csv"
    q.write_text("a,b\nxx," + "y" * 20 + "\n")
    with pytest.warns(CorpusWarning, match="truncated to 5"):
        assert open_corpus(q, max_chars=5).get(0) == ("xx", "yyyyy")


def test_other_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="corpus file not found"):
        open_corpus(tmp_path / "nope.txt")
    (tmp_path / "c.txt.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(CsrlError, match="compressed files are not read directly"):
        open_corpus(tmp_path / "c.txt.gz")
    (tmp_path / "c.txt").write_text("a\n")
    with pytest.raises(CsrlError, match="columns= only applies to CSV, TSV and JSONL"):
        open_corpus(tmp_path / "c.txt", columns=["text"])
    (tmp_path / "p.csv").write_text("x,y\n1,2\n")
    with pytest.raises(CsrlError, match=r"yields 2 field\(s\)"):
        open_corpus([tmp_path / "c.txt", tmp_path / "p.csv"])
    with pytest.raises(CsrlError, match="no corpus files given"):
        open_corpus([])


def test_file_changed_after_indexing(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("a\nb\n")
    c = open_corpus(p)
    p.write_text("a\nb\nc and more\n")
    with pytest.raises(CsrlError, match="file changed since it was indexed"):
        c.get(0)


def test_pickle_and_fork_reopen_handles(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("".join(f"sentence {i}\n" for i in range(100)))
    c = open_corpus(p)
    assert c.get(3) == ("sentence 3",)
    c2 = pickle.loads(pickle.dumps(c))
    assert c2._fds is None and c2.get(99) == ("sentence 99",)
    c2.close()
    if sys.platform == "win32" or not hasattr(os, "fork"):
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must open its own handles
        try:
            os.write(w, c.get(42)[0].encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"sentence 42"
    os.close(r)
    assert c.get(41) == ("sentence 41",)  # the parent's handles still work
    c.close()
