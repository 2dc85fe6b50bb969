"""Progress bars: shown on a terminal (with ETA), silent in pipes and when quiet."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator

import pytest

from csrl.utils import progress as p


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _loud() -> Iterator[None]:
    p.set_quiet(False)
    yield
    p.set_quiet(False)


def test_a_terminal_gets_a_bar_with_count_and_eta() -> None:
    out = _Terminal()
    assert list(p.progress(iter(range(3)), total=3, desc="encode", file=out)) == [0, 1, 2]
    text = out.getvalue()
    assert "encode" in text and "3/3" in text
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", text), text  # elapsed<remaining: the ETA


def test_a_pipe_gets_nothing() -> None:
    out = io.StringIO()  # not a terminal, like a pipe or a log file
    assert list(p.progress([1, 2, 3], desc="encode", file=out)) == [1, 2, 3]
    with p.progress_counter(3, "encode", file=out) as update:
        update(3)
    assert out.getvalue() == ""


def test_quiet_silences_a_terminal_but_not_an_explicit_request() -> None:
    out = _Terminal()
    p.set_quiet(True)
    assert p.is_quiet() and not p.progress_enabled(file=out)
    assert list(p.progress(range(2), file=out)) == [0, 1] and out.getvalue() == ""
    assert list(p.progress(range(2), enabled=True, file=out)) == [0, 1]
    assert "2/2" in out.getvalue()
    p.set_quiet(False)
    assert p.progress_enabled(file=out)


def test_explicit_off_wins_on_a_terminal() -> None:
    out = _Terminal()
    assert list(p.progress(range(4), enabled=False, file=out)) == [0, 1, 2, 3]
    assert out.getvalue() == ""


def test_default_stream_is_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert p.progress_enabled()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not p.progress_enabled()
    closed = io.StringIO()
    closed.close()
    assert not p.progress_enabled(file=closed)  # isatty on a closed stream raises: no bar, no crash


def test_counter_counts_items_done() -> None:
    out = _Terminal()
    with p.progress_counter(10, "sentences", unit="sent", file=out) as update:
        for n in (4, 4, 2):
            update(n)
    text = out.getvalue()
    assert "10/10" in text and "sent" in text
