"""Training corpora read through a byte-offset index, so a 1M-sentence file is never held as Python objects.

Formats (``fmt="auto"`` picks by suffix: ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/``.json``, anything
else is plain text):

* ``text``: one sentence per line (wiki1m, ``*.sent.txt``). One field, named ``"text"``.
* ``csv``: header row plus RFC 4180 rows (quoted fields may contain commas, quotes and newlines), e.g.
  SimCSE's ``sent0,sent1,hard_neg`` NLI triplets.
* ``tsv``: header row plus tab-separated rows; quotes are ordinary characters (``QUOTE_NONE``).
* ``jsonl``: one JSON object per line; ``columns`` names the string fields to return.

``columns`` selects and orders the returned fields; by default all header columns (CSV/TSV) or the keys
of the first object (JSONL). Several files concatenate in the order given; they must yield the same
number of fields.

Index: per file, two ``int64`` arrays (byte start, byte length) of every record, excluding the line
terminator (``\\n`` or ``\\r\\n``) and a UTF-8 byte-order mark. ``Corpus.get(i)`` reads one record with
``os.pread`` on a file handle kept open; handles are reopened after ``fork`` or unpickling, so a corpus
can go to DataLoader workers. The index costs 16 bytes per record.

What is checked, and when: everything at ``open_corpus``, so a bad corpus fails before training starts.
One vectorised binary pass (numpy newline search, ~4M lines/s for plain text) finds record boundaries
and checks UTF-8; CSV/TSV/JSONL records are then parsed once, in blocks, by the C ``csv``/``json``
parsers (bounded by them: about 250k rows/s for 3-column CSV, 700k rows/s for JSONL). ``get`` only
re-checks that the file did not change.

* UTF-8 validity of every byte: error naming the byte offset and line (suggests ``iconv``).
* One record per ``\\n`` line, exactly: a ``\\r`` before the ``\\n`` (CRLF files) is dropped silently, but any
  other line break inside a line (a lone ``\\r``, ``\\v``, ``\\f``, U+001C-U+001E, U+0085, U+2028, U+2029,
  all of which ``str.splitlines`` splits on) is an error naming file, line, column and character, so a
  record never means two different things to csrl and to other tools. This holds in every format (CSV
  quoted fields may still hold ``\\n`` and ``\\r\\n``; a JSON escape such as ``\\u2028`` is content, not a
  break). The same rule reads ``csrl encode``/``csrl analyze`` sentence files (:func:`read_lines`).
* Blank or whitespace-only (ASCII) lines are skipped, and reported as a ``"blank"`` issue. A final
  newline is normal and not a blank line; a last line without a newline is a normal record.
* A file without records: error ("corpus is empty").
* CSV/TSV/JSONL: unknown column names (lists the header), wrong field count, unclosed quotes, invalid
  JSON, non-object lines, missing keys (lists the keys found), non-string or empty selected fields.
* Fields longer than ``max_chars`` characters: kept, truncated to ``max_chars`` by ``get``, reported
  as a ``"truncated"`` issue.
* Each file's size and mtime are recorded; if the file changes afterwards, reading raises an error.

Issues (blank lines, truncations) do not fail: each becomes one :class:`CorpusIssue` in
``Corpus.issues`` (count plus the first line numbers, for the trainer's report) and one
:class:`CorpusWarning` via ``warnings.warn``.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import mmap
import operator
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from csrl.errors import CsrlError

__all__ = ["Corpus", "CorpusIssue", "CorpusLike", "CorpusWarning", "Format", "open_corpus", "read_lines"]

Format = Literal["auto", "text", "csv", "tsv", "jsonl"]

_CHUNK = 1 << 24  # bytes per read in the index pass
_BOM = b"\xef\xbb\xbf"
_NEWLINE, _QUOTE, _CR = 10, 34, 13
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True
_MAX_LINES_LISTED = 10
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zip", ".tgz", ".7z"}
_ICONV_HINT = (
    "the corpus must be UTF-8: convert it, e.g. `iconv -f latin1 -t utf-8 IN > OUT` (use the real source "
    "encoding), or drop the bad bytes with `iconv -c -f utf-8 -t utf-8 IN > OUT`"
)


# Line breaks of ``str.splitlines`` other than "\n"; refused inside a line (a CRLF's "\r" excepted).
_ODD_BREAKS = {
    "\r": "CARRIAGE RETURN", "\x0b": "LINE TABULATION", "\x0c": "FORM FEED", "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR", "\x1e": "RECORD SEPARATOR", "\x85": "NEXT LINE", "\u2028": "LINE SEPARATOR",
    "\u2029": "PARAGRAPH SEPARATOR",
}  # fmt: skip


def _odd_break(hay: str | bytes, end: int, *, eof: bool) -> int | None:
    """Index of the first line break in ``hay[:end]`` other than ``\\n`` and the ``\\r`` of a ``\\r\\n`` (or a
    ``\\r`` ending the file, with ``eof``); None when there is none. ``hay``: decoded text, or ASCII bytes.

    ``find``/``count`` scan in C (a few ms per 16 MB chunk); the lone-``\\r`` search only runs when the
    numbers of ``\\r`` and ``\\r\\n`` differ."""
    h: Any = hay
    text = isinstance(hay, str)
    needles = [c if text else c.encode("ascii") for c in _ODD_BREAKS if c != "\r" and (text or c.isascii())]
    found = [k for k in (h.find(c, 0, end) for c in needles) if k >= 0]
    cr, lf, crlf = ("\r", "\n", "\r\n") if text else (b"\r", b"\n", b"\r\n")
    n_cr = h.count(cr, 0, end)
    if n_cr and n_cr != h.count(crlf, 0, end) + (eof and end > 0 and h[end - 1 : end] == cr):
        k = h.find(cr, 0, end)
        while k >= 0 and (h[k + 1 : k + 2] == lf or (eof and k == end - 1)):
            k = h.find(cr, k + 1, end)
        if k >= 0:
            found.append(k)
    return min(found) if found else None


def _odd_break_error(path: Path, line: int, column: int, char: str) -> CsrlError:
    name = _ODD_BREAKS[char]
    if char == "\r":
        hint = "a \\r without \\n (old Mac line ends?): convert them, e.g. `tr '\\r' '\\n' < IN > OUT`, or remove it"
    else:
        escaped = "".join(f"\\x{b:02x}" for b in char.encode("utf-8"))
        hint = f"replace it with a space, e.g. `sed -i 's/{escaped}/ /g' {path}` (GNU sed)"
    return CsrlError(
        f"{path}:{line}: contains U+{ord(char):04X} ({name}) at column {column}; csrl reads one record per "
        "\\n-terminated line, and tools that split lines like Python's str.splitlines would cut this one there",
        hint=hint,
    )


class CorpusWarning(UserWarning):
    """A corpus problem that was worked around (skipped blank lines, truncated fields)."""


@dataclass(frozen=True)
class CorpusIssue:
    """A non-fatal problem found while indexing one file: ``count`` occurrences, first ``lines`` (1-based)."""

    path: Path
    kind: Literal["blank", "truncated"]
    count: int
    lines: tuple[int, ...]
    max_chars: int = 0

    @property
    def message(self) -> str:
        where = ", ".join(str(n) for n in self.lines) + (", ..." if self.count > len(self.lines) else "")
        if self.kind == "blank":
            return f"{self.path}: skipped {self.count} blank or whitespace-only line(s) (lines {where})"
        return (
            f"{self.path}: {self.count} record(s) have a field longer than {self.max_chars} characters "
            f"(lines {where}); truncated to {self.max_chars}, raise max_chars to keep them whole"
        )


class _RecordError(Exception):
    """A malformed record; the caller adds file and line."""

    def __init__(self, what: str, hint: str) -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint


@dataclass
class _IndexedFile:
    path: Path
    fmt: str  # "text" | "csv" | "tsv" | "jsonl"
    starts: np.ndarray  # int64 byte offset of each record
    lengths: np.ndarray  # int64 byte length, terminator excluded
    n_fields: int  # CSV/TSV: columns in the header
    select: tuple[Any, ...]  # CSV/TSV: column positions; JSONL: keys; text: ()
    names: tuple[str, ...]  # names of the selected fields
    size: int
    mtime_ns: int


# --------------------------------------------------------------------------------------------------
# the index pass


def _line_at(newlines: np.ndarray, offset: int) -> int:
    """1-based line number of a byte offset, given the sorted positions of every newline."""
    return int(np.searchsorted(newlines, offset, side="left")) + 1


def _scan(path: Path, *, quoted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One binary pass: validate UTF-8, find newlines and record boundaries.

    Returns ``(starts, ends, newlines)``; ``ends`` exclude the ``\\n``. With ``quoted`` (CSV) a newline
    ends a record only where the number of ``"`` before it is even, so quoted fields may span lines
    (RFC 4180 escapes ``"`` as ``""``, which keeps the parity).
    """
    size = path.stat().st_size
    newline_parts: list[np.ndarray] = []
    end_parts: list[np.ndarray] = []
    parity = lines_before = 0
    with open(path, "rb", buffering=0) as f:
        begin = 3 if f.read(3) == _BOM else 0
        f.seek(begin)
        pos, pending = begin, b""  # pos: file offset of buf[0]
        while True:
            data = f.read(_CHUNK)
            eof = not data
            buf = pending + data if pending else data
            if not buf:
                break
            arr = np.frombuffer(buf, dtype=np.uint8)
            nl = np.flatnonzero(arr == _NEWLINE)
            if not eof and len(nl) == 0:  # a line longer than the chunk: read more
                pending = buf
                continue
            cut = len(buf) if eof else int(nl[-1]) + 1  # never split a UTF-8 sequence
            text = None  # fast path: pure ASCII needs no decoding
            if not buf.isascii():
                try:
                    text = codecs.utf_8_decode(memoryview(buf)[:cut], "strict", True)[0]
                except UnicodeDecodeError as e:
                    line = lines_before + int(np.searchsorted(nl, e.start)) + 1
                    raise CsrlError(
                        f"{path}, line {line}: byte offset {pos + e.start} (byte 0x{buf[e.start]:02x}) "
                        f"is not valid UTF-8 ({e.reason})",
                        hint=_ICONV_HINT,
                    ) from None
            odd = _odd_break(buf, cut, eof=eof) if text is None else _odd_break(text, len(text), eof=eof)
            if odd is not None:
                text = buf[:cut].decode("ascii") if text is None else text
                line = lines_before + int(np.searchsorted(nl, len(text[:odd].encode("utf-8")))) + 1
                raise _odd_break_error(path, line, odd - text.rfind("\n", 0, odd), text[odd])
            nl = nl.astype(np.int64) + pos
            if quoted:
                quotes = np.flatnonzero(arr[:cut] == _QUOTE) + pos
                before = parity + np.searchsorted(quotes, nl)
                end_parts.append(nl[(before & 1) == 0])
                parity = (parity + len(quotes)) & 1
            newline_parts.append(nl)
            lines_before += len(nl)
            pending, pos = buf[cut:], pos + cut
            if eof:
                break
    newlines = np.concatenate(newline_parts) if newline_parts else np.zeros(0, dtype=np.int64)
    rec_ends = np.concatenate(end_parts) if quoted and end_parts else newlines
    starts = np.empty(len(rec_ends) + 1, dtype=np.int64)
    starts[0], starts[1:] = begin, rec_ends + 1
    ends = np.empty_like(starts)
    ends[:-1], ends[-1] = rec_ends, size
    if ends[-1] <= starts[-1]:  # nothing after the last newline: not a record
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends, newlines


def _strip_and_find_blanks(mm: mmap.mmap, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop a ``\\r`` before each ``\\n``; return ``(lengths, blank_mask)`` (blank: ASCII whitespace only)."""
    data = np.frombuffer(mm, dtype=np.uint8)
    try:
        lengths = ends - starts
        has = lengths > 0
        cr = np.zeros(len(starts), dtype=bool)
        cr[has] = data[ends[has] - 1] == _CR
        lengths -= cr
        has = lengths > 0
        maybe_blank = ~has
        maybe_blank[has] = _ASCII_SPACE[data[starts[has]]]  # only lines starting with a space can be blank
    finally:
        del data  # release the buffer so the mmap can close
    blank = maybe_blank.copy()
    for k in np.flatnonzero(maybe_blank & has):
        s = int(starts[k])
        blank[k] = not mm[s : s + int(lengths[k])].strip()
    return lengths, blank


# --------------------------------------------------------------------------------------------------
# record parsing (shared by validation and get)


def _csv_row(text: str) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        raise _RecordError(
            f"malformed CSV ({e})",
            "quote fields that contain commas, quotes or newlines and double inner quotes (RFC 4180)",
        ) from None
    if len(rows) != 1:
        raise _RecordError("malformed CSV record", "check the quoting of this row")
    return rows[0]


def _fields(f: _IndexedFile, text: str) -> list[str]:
    """Selected fields of one record, unchecked for emptiness; raises ``_RecordError``."""
    if f.fmt == "text":
        return [text]
    if f.fmt == "jsonl":
        return _json_fields(text, f.select)
    if f.fmt == "tsv":
        row = text.split("\t")
    else:  # without quotes, RFC 4180 fields are exactly the comma-separated pieces
        row = text.split(",") if '"' not in text else _csv_row(text)
    if len(row) != f.n_fields:
        sep = "tab" if f.fmt == "tsv" else "comma"
        raise _RecordError(
            f"expected {f.n_fields} fields like the header but found {len(row)}",
            f"fix this row; a {sep} inside a field must be quoted (CSV) or removed (TSV)",
        )
    return [row[c] for c in f.select]


def _json_fields(text: str, keys: Sequence[str]) -> list[str]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _RecordError(
            f"invalid JSON: {e.msg} at column {e.colno}",
            "each line must hold one complete JSON object (JSON Lines); fix or remove this line",
        ) from None
    if not isinstance(obj, dict):
        raise _RecordError(f"expected a JSON object, found {type(obj).__name__}", "write one {...} object per line")
    out = []
    for key in keys:
        if key not in obj:
            found = ", ".join(map(repr, obj)) or "none"
            raise _RecordError(f"field {key!r} is missing; fields found: {found}", "fix the line or columns=")
        value = obj[key]
        if not isinstance(value, str):
            raise _RecordError(
                f"field {key!r} is a {type(value).__name__}, expected a string", "select text fields only"
            )
        out.append(value)
    return out


# --------------------------------------------------------------------------------------------------
# opening


def _detect_format(path: Path, fmt: Format) -> str:
    suffix = path.suffix.lower()
    if suffix in _COMPRESSED:
        raise CsrlError(
            f"{path}: compressed files are not read directly",
            hint=f"decompress it first (e.g. `gunzip -k {path}`) and pass the uncompressed file",
        )
    if fmt != "auto":
        return fmt
    return _SUFFIX_FORMATS.get(suffix, "text")


def _header(
    path: Path, line: int, fmt: str, text: str, columns: Sequence[str] | None
) -> tuple[int, tuple[int, ...], tuple[str, ...]]:
    """(number of columns, positions of the selected ones, their names) from the header row."""
    try:
        names = text.split("\t") if fmt == "tsv" else _csv_row(text)
    except _RecordError as e:
        raise CsrlError(f"{path}, line {line}: header row: {e.what}", hint=e.hint) from None
    if columns is None:
        return len(names), tuple(range(len(names))), tuple(names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise CsrlError(
            f"{path}, line {line}: no column named {', '.join(map(repr, missing))}; the header has: "
            + ", ".join(map(repr, names)),
            hint="pass columns= with names from this header row (the first non-blank line)",
        )
    return len(names), tuple(names.index(c) for c in columns), tuple(columns)


def _index_file(
    path: Path, fmt: Format, columns: Sequence[str] | None, max_chars: int
) -> tuple[_IndexedFile, tuple[str, ...], list[CorpusIssue]]:
    kind = _detect_format(path, fmt)
    if kind == "text" and columns is not None:
        raise CsrlError(
            f"{path}: columns= only applies to CSV, TSV and JSONL; this file is read as plain text",
            hint="drop columns=, or pass fmt='csv'/'tsv'/'jsonl' if that is what the file holds",
        )
    stat = path.stat()
    starts, ends, newlines = _scan(path, quoted=kind == "csv")
    issues: list[CorpusIssue] = []
    if len(starts) == 0:
        raise _empty(path)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        lengths, blank = _strip_and_find_blanks(mm, starts, ends)
        if blank.any():
            lines = tuple(_line_at(newlines, int(s)) for s in starts[blank][:_MAX_LINES_LISTED])
            issues.append(CorpusIssue(path, "blank", int(blank.sum()), lines))
        keep = ~blank
        starts, lengths = starts[keep], lengths[keep]
        f = _IndexedFile(path, kind, starts, lengths, 1, (), ("text",), stat.st_size, stat.st_mtime_ns)
        if kind in ("csv", "tsv"):
            if len(starts) == 0:
                raise _empty(path)
            header = mm[int(starts[0]) : int(starts[0] + lengths[0])].decode("utf-8")
            line = _line_at(newlines, int(starts[0]))
            f.n_fields, f.select, f.names = _header(path, line, kind, header, columns)
            f.starts, f.lengths = starts[1:], lengths[1:]
        elif kind == "jsonl" and len(starts):
            first = mm[int(starts[0]) : int(starts[0] + lengths[0])].decode("utf-8")
            try:
                keys = list(columns) if columns is not None else list(json.loads(first))
            except (json.JSONDecodeError, TypeError):
                keys = []  # reported with its line number by the validation below
            f.select = f.names = tuple(keys)
            if not keys:
                raise CsrlError(
                    f"{path}, line {_line_at(newlines, int(starts[0]))}: no fields to read",
                    hint="pass columns= naming the JSON fields that hold text",
                )
        if len(f.starts) == 0:
            raise _empty(path)
        long_lines = _validate(f, mm, newlines, max_chars)
    if long_lines:
        issues.append(CorpusIssue(path, "truncated", len(long_lines), tuple(long_lines[:_MAX_LINES_LISTED]), max_chars))
    return f, f.names, issues


def _empty(path: Path) -> CsrlError:
    return CsrlError(
        f"{path}: corpus is empty (no non-blank records)",
        hint="check that this is the intended file; remove it from the list of corpus files",
    )


def _parse_block(f: _IndexedFile, text: str, count: int) -> list[list[str]] | None:
    """Columns (one list per selected field) of the ``count`` consecutive records in ``text``, parsed
    and checked with C-level loops; ``None`` when anything is off (a parse error, a wrong field count,
    a missing, non-string or empty field, a whitespace-only line) so that the caller redoes the block
    record by record and reports the exact line."""
    try:
        if f.fmt == "jsonl":
            lines = [line for line in text.split("\n") if line.strip()]
            if len(lines) != count:
                return None
            objs = json.loads("[" + ",".join(lines) + "]")
            if len(objs) != count or not all(map(isinstance, objs, itertools.repeat(dict))):
                return None
            columns = [list(map(operator.methodcaller("get", k), objs)) for k in f.select]
            if not all(all(map(isinstance, col, itertools.repeat(str))) for col in columns):
                return None
        else:
            if f.fmt == "tsv":
                rows = [line.removesuffix("\r").split("\t") for line in text.split("\n")]
            else:
                rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
            rows = [r for r in rows if r != [] and r != [""]]  # blank lines
            if len(rows) != count or set(map(len, rows)) != {f.n_fields}:
                return None
            columns = [list(map(operator.itemgetter(c), rows)) for c in f.select]
    except (csv.Error, json.JSONDecodeError):
        return None
    if any(0 in map(len, map(str.strip, col)) for col in columns):
        return None  # an empty field: the slow path names it
    return columns


_BLOCK_RECORDS = 1 << 15


def _validate(f: _IndexedFile, mm: mmap.mmap, newlines: np.ndarray, max_chars: int) -> list[int]:
    """Parse every record once (CSV/TSV/JSONL); return the lines of records with over-long fields.

    Blocks of records are parsed with one ``csv``/``json`` call each; a block that is not clean is redone
    record by record, which finds the first bad record and its line.
    """
    long_lines: list[int] = []
    if f.fmt == "text":  # UTF-8 is already checked; only the length needs decoding, of long lines only
        for k in np.flatnonzero(f.lengths > max_chars).tolist():
            s = int(f.starts[k])
            if len(mm[s : s + int(f.lengths[k])].decode("utf-8")) > max_chars:
                long_lines.append(_line_at(newlines, s))
        return long_lines
    starts, lengths = f.starts.tolist(), f.lengths.tolist()
    for k0 in range(0, len(starts), _BLOCK_RECORDS):
        k1 = min(len(starts), k0 + _BLOCK_RECORDS)
        text = mm[starts[k0] : starts[k1 - 1] + lengths[k1 - 1]].decode("utf-8")
        columns = _parse_block(f, text, k1 - k0)
        if columns is None:
            columns = _validate_slowly(f, mm, newlines, starts[k0:k1], lengths[k0:k1])
        long: set[int] = set()
        for col in columns:
            if max(map(len, col)) > max_chars:
                long.update(k for k, v in enumerate(col, start=k0) if len(v) > max_chars)
        long_lines += [_line_at(newlines, starts[k]) for k in sorted(long)]
    return long_lines


def _validate_slowly(
    f: _IndexedFile, mm: mmap.mmap, newlines: np.ndarray, starts: list[int], lengths: list[int]
) -> list[list[str]]:
    """Record-by-record parse of a block; raises :class:`CsrlError` at the first bad record."""
    rows = []
    for s, n in zip(starts, lengths, strict=True):
        try:
            fields = _fields(f, mm[s : s + n].decode("utf-8"))
        except _RecordError as e:
            raise CsrlError(f"{f.path}, line {_line_at(newlines, s)}: {e.what}", hint=e.hint) from None
        for name, value in zip(f.names, fields, strict=True):
            if not value.strip():
                raise CsrlError(
                    f"{f.path}, line {_line_at(newlines, s)}: field {name!r} is empty",
                    hint="fill or remove this row, or leave the column out of columns=",
                )
        rows.append(fields)
    return [list(col) for col in zip(*rows, strict=True)]


def open_corpus(
    paths: Sequence[Path | str] | Path | str,
    *,
    fmt: Format = "auto",
    columns: Sequence[str] | None = None,
    max_chars: int = 2000,
) -> Corpus:
    """Index one or more corpus files (concatenated in order) and return a random-access :class:`Corpus`.

    Raises :class:`CsrlError` for problems the user must fix (see the module docstring for the list);
    blank lines and over-long fields are reported in ``Corpus.issues`` and as :class:`CorpusWarning`.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise CsrlError("no corpus files given", hint="pass at least one file to open_corpus()")
    if max_chars < 1:
        raise CsrlError(f"max_chars must be positive, got {max_chars}", hint="use e.g. max_chars=2000")
    if isinstance(columns, str):
        columns = [columns]
    files: list[_IndexedFile] = []
    issues: list[CorpusIssue] = []
    fields: tuple[str, ...] | None = None
    for p in map(Path, paths):
        if not p.is_file():
            raise CsrlError(
                f"{p}: corpus file not found" if not p.exists() else f"{p}: not a regular file",
                hint="check the path; relative paths are resolved from the current directory",
            )
        f, names, file_issues = _index_file(p, fmt, columns, max_chars)
        if fields is None:
            fields = names
        elif len(names) != len(fields):
            raise CsrlError(
                f"{p}: yields {len(names)} field(s) {names} but {files[0].path} yields {len(fields)} {fields}",
                hint="concatenate only files of the same shape, or select matching columns=",
            )
        files.append(f)
        issues.extend(file_issues)
    for issue in issues:
        warnings.warn(issue.message, CorpusWarning, stacklevel=2)
    assert fields is not None
    return Corpus(files, fields=fields, max_chars=max_chars, issues=tuple(issues))


def read_lines(path: Path | str, *, what: str = "text file") -> list[str]:
    """The lines of a small UTF-8 text file under the corpus rule: split on ``\\n`` only, a CRLF's ``\\r`` and
    a leading byte-order mark dropped, a final newline ending the last line (not starting an empty one).

    Blank lines are kept (callers decide); other line breaks inside a line, a file that is missing or not
    UTF-8 raise :class:`CsrlError` naming the file and line. ``what`` names the file in messages.
    """
    path = Path(path)
    if not path.is_file():
        raise CsrlError(f"{what} {path} not found", hint="pass a UTF-8 text file with one sentence per line")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CsrlError(
            f"{path}:{line}: byte offset {e.start} (byte 0x{data[e.start]:02x}) is not UTF-8 ({e.reason})",
            hint=_ICONV_HINT.replace("the corpus", "the file"),
        ) from None
    odd = _odd_break(text, len(text), eof=True)
    if odd is not None:
        raise _odd_break_error(path, text.count("\n", 0, odd) + 1, odd - text.rfind("\n", 0, odd), text[odd])
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline (or an empty file)
    return [line.removesuffix("\r") for line in lines]


# --------------------------------------------------------------------------------------------------
# the corpus


class CorpusLike(Protocol):
    """What training reads from a corpus: :class:`Corpus` (indexed text, CSV, TSV, JSONL files) and
    :class:`csrl.data.hf.DatasetCorpus` (Parquet files, Hugging Face datasets) both provide it."""

    fields: tuple[str, ...]  # the names of the fields of each record

    def __len__(self) -> int: ...

    def get(self, i: int) -> tuple[str, ...]: ...

    def get_many(self, indices: Sequence[int] | np.ndarray) -> list[tuple[str, ...]]: ...

    def record_bytes(self) -> np.ndarray: ...


class Corpus:
    """Records of one or more indexed files; ``get(i)`` returns a tuple of ``len(fields)`` strings.

    Picklable (handles are dropped and reopened lazily) and fork-safe (reopened when the process id
    changes). Use as a context manager or call :meth:`close` to release the handles early.
    """

    def __init__(
        self,
        files: Sequence[_IndexedFile],
        *,
        fields: tuple[str, ...],
        max_chars: int,
        issues: tuple[CorpusIssue, ...] = (),
    ) -> None:
        self._files = list(files)
        self.fields = fields
        self.max_chars = max_chars
        self.issues = issues
        self._bounds = np.cumsum([0] + [len(f.starts) for f in self._files]).astype(np.int64)
        self._fds: list[int] | None = None
        self._pid = -1

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(f.path for f in self._files)

    def __len__(self) -> int:
        return int(self._bounds[-1])

    def record_bytes(self) -> np.ndarray:
        """Byte length of every record (all its fields, separators included), from the index: a free
        proxy for its token count, for length-grouped batching."""
        return np.concatenate([f.lengths for f in self._files]).astype(np.int64, copy=False)

    def __repr__(self) -> str:
        return f"Corpus({len(self)} records, fields={self.fields}, files={[str(p) for p in self.paths]})"

    def _locate(self, i: int) -> tuple[_IndexedFile, int, int]:
        """(file, record index within it, file number) of global record ``i``."""
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for a corpus of {n}")
        k = 0 if len(self._files) == 1 else int(np.searchsorted(self._bounds, i, side="right")) - 1
        return self._files[k], i - int(self._bounds[k]), k

    def _handles(self) -> list[int]:
        if self._fds is None or self._pid != os.getpid():
            self._fds = None  # after fork: the parent's descriptors stay the parent's business
            fds: list[int] = []
            for f in self._files:
                fd = os.open(f.path, os.O_RDONLY)
                st = os.fstat(fd)
                if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                    os.close(fd)
                    for other in fds:
                        os.close(other)
                    raise CsrlError(
                        f"{f.path}: file changed since it was indexed (size {f.size} -> {st.st_size})",
                        hint="re-open the corpus with open_corpus(); do not edit corpus files while training",
                    )
                fds.append(fd)
            self._fds, self._pid = fds, os.getpid()
        return self._fds

    def get(self, i: int) -> tuple[str, ...]:
        """Record ``i`` as a tuple of strings (one per field), each cut to ``max_chars`` characters."""
        f, j, k = self._locate(i)
        start, length = int(f.starts[j]), int(f.lengths[j])
        data = os.pread(self._handles()[k], length, start)
        if len(data) != length:
            raise CsrlError(f"{f.path}: file is shorter than when it was indexed", hint="re-open the corpus")
        try:
            fields = _fields(f, data.decode("utf-8"))
        except (_RecordError, UnicodeDecodeError) as e:  # only if the file changed under us
            raise CsrlError(
                f"{f.path}, byte offset {start}: record no longer parses ({e})", hint="re-open the corpus"
            ) from None
        m = self.max_chars
        return tuple(v if len(v) <= m else v[:m] for v in fields)

    __getitem__ = get

    def get_many(self, indices: Sequence[int] | np.ndarray) -> list[tuple[str, ...]]:
        """Records for a batch of indices, in the given order."""
        return [self.get(int(i)) for i in indices]

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for i in range(len(self)):
            yield self.get(i)

    def location(self, i: int) -> tuple[Path, int]:
        """(file, 1-based line) of record ``i``, for messages; counts newlines, so O(file size)."""
        f, j, _ = self._locate(i)
        start = int(f.starts[j])
        count = 0
        with open(f.path, "rb") as fh:
            while fh.tell() < start:
                chunk = fh.read(min(_CHUNK, start - fh.tell()))
                if not chunk:
                    break
                count += chunk.count(b"\n")
        return f.path, count + 1

    def close(self) -> None:
        if self._fds is not None and self._pid == os.getpid():
            for fd in self._fds:
                os.close(fd)
        self._fds = None

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = None, -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
