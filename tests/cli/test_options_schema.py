"""Every numeric and path option of every ``csrl`` subcommand, generated from ``build_parser()``.

A new option is covered by these tests without editing them: its ``type=`` (a :mod:`csrl.cli.options`
type) says what it accepts, and the cases are derived from it. Out-of-range numbers, non-numbers, NaN,
infinities and huge values; for paths, a missing path, a file where a folder is expected (and the reverse),
a path under a plain file, and a read-only location (for root, which ignores permissions, the checker is
told what an ordinary user would be told: see :func:`locked`). Each must exit with code 2 and a message
that names the option, with no traceback; the range's own bounds must parse.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from csrl.cli import options as opt
from csrl.cli.main import build_parser, main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every leaf subcommand (``("paradigm", "simulate")``, ...) with its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from subcommands(child, (*path, name))


def options_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def flag(action: argparse.Action) -> str | None:
    """The option string (``--batch-size``), or None for a positional argument."""
    return max(action.option_strings, key=len) if action.option_strings else None


def valid_value(action: argparse.Action, tmp: Path) -> str:
    """A value the option's type accepts (files and folders are created under ``tmp``)."""
    t = action.type
    if isinstance(t, opt.PathOption):
        target = tmp / f"valid-{action.dest}"
        if t.kind == "file" and not target.exists():
            target.write_text("a sentence\nanother sentence\n")
        if t.kind == "dir":
            target.mkdir(exist_ok=True)
        return str(target)
    if isinstance(t, opt.IntOption):
        return str(max(t.lo, min(t.hi, 2)))
    if isinstance(t, opt.FloatOption):
        return str(t.lo + 1 if t.lo is not None else 1.0)
    if action.choices:
        return str(next(iter(action.choices)))
    return "x"


def argv_with(
    path: tuple[str, ...], parser: argparse.ArgumentParser, tmp: Path, tested: argparse.Action | None, value: str
) -> list[str]:
    """``csrl <path> ...``: the required arguments filled with valid values, ``tested`` given ``value``."""
    positionals, flags = [], []
    for a in options_of(parser):
        if a is tested:
            (flags.extend([flag(a), value]) if flag(a) else positionals.append(value))  # type: ignore[list-item]
        elif a.required or (not a.option_strings and a.nargs is None):
            (flags.extend([flag(a), valid_value(a, tmp)]) if flag(a) else positionals.append(valid_value(a, tmp)))  # type: ignore[list-item]
    return [*path, *flags, *positionals]


LEAVES = {" ".join(p): parser for p, parser in subcommands(build_parser())}  # one parser: actions compare by identity


def typed(kind: type) -> list[tuple[str, argparse.Action]]:
    """``(command, action)`` for every option of every subcommand whose type is a ``kind`` instance."""
    return [(cmd, a) for cmd, parser in LEAVES.items() for a in options_of(parser) if isinstance(a.type, kind)]


RAN = 99  # what a command "returns" here when its arguments were accepted


def parser_that_runs_nothing() -> argparse.ArgumentParser:
    """``build_parser()`` whose commands do nothing but return :data:`RAN`: a check that lets a bad value
    through fails its test at once, instead of starting an evaluation, a download or a simulation."""
    parser = build_parser()
    for _, leaf in subcommands(parser):
        leaf.set_defaults(func=lambda args: RAN)
    return parser


@pytest.fixture(autouse=True)
def _no_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("csrl.cli.main.build_parser", parser_that_runs_nothing)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)  # argparse's usage errors come back as exit code 2 too
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return code, err


def refused(code: int, err: str, action: argparse.Action, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("csrl: error:"), err
    name = flag(action) or action.dest
    assert name in err, (name, err)
    for w in words:
        assert w in err, (w, err)


# ----------------------------------------------------------------------------- the declarations
PATHY = ("dir", "out", "input", "output", "sentences", "resume", "config", "path", "dest")


def test_every_numeric_option_declares_a_checked_range() -> None:
    for path, parser in subcommands(build_parser()):
        for a in options_of(parser):
            assert a.type not in (int, float), f"csrl {' '.join(path)} {flag(a)}: use a csrl.cli.options type"


def test_every_path_option_declares_its_kind() -> None:
    for path, parser in subcommands(build_parser()):
        for a in options_of(parser):
            if a.nargs == 0 or a.dest in ("model", "base_url", "splits", "tasks"):  # flags; Hub ids and names
                continue
            if any(w in a.dest for w in PATHY):
                assert isinstance(a.type, opt.PathOption), f"csrl {' '.join(path)} {flag(a) or a.dest}: a path type"


# ----------------------------------------------------------------------------- numbers
def _number_cases() -> list[tuple[str, argparse.Action, str]]:
    cases = []
    for cmd, a in typed(opt.IntOption):
        t = a.type
        assert isinstance(t, opt.IntOption)
        bad = [str(t.lo - 1), str(t.hi + 1), "x", "1.5", "nan", "1e12", "", "0x10"]
        cases += [(cmd, a, v) for v in bad]
    for cmd, a in typed(opt.FloatOption):
        t = a.type
        assert isinstance(t, opt.FloatOption)
        bad = ["x", "nan", "inf", "-inf", ""]
        bad += [str(t.lo)] if t.lo is not None and t.lo_open else [str(t.lo - 1)] if t.lo is not None else []
        bad += [str(t.hi)] if t.hi is not None and t.hi_open else [str(t.hi + 1)] if t.hi is not None else []
        cases += [(cmd, a, v) for v in bad]
    return cases


NUMBER_CASES = _number_cases()


@pytest.mark.parametrize(
    "cmd,action,value", NUMBER_CASES, ids=[f"{c}:{flag(a)}={v or 'empty'}" for c, a, v in NUMBER_CASES]
)
def test_bad_numbers_exit_2(
    cmd: str, action: argparse.Action, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = argv_with(tuple(cmd.split()), LEAVES[cmd], tmp_path, action, value)
    code, err = run(argv, capsys)
    refused(code, err, action)


NUMBER_OPTIONS = typed(opt.IntOption) + typed(opt.FloatOption)


@pytest.mark.parametrize("cmd,action", NUMBER_OPTIONS, ids=[f"{c}:{flag(a)}" for c, a in NUMBER_OPTIONS])
def test_the_bounds_of_a_range_parse(cmd: str, action: argparse.Action, tmp_path: Path) -> None:
    t = action.type
    if isinstance(t, opt.IntOption):
        good = [t.lo, t.hi]
    else:
        assert isinstance(t, opt.FloatOption)
        good = [b for b, open_ in ((t.lo, t.lo_open), (t.hi, t.hi_open)) if b is not None and not open_] or [1.0]
    for v in good:
        args = LEAVES[cmd].parse_args(argv_with((), LEAVES[cmd], tmp_path, action, str(v)))
        assert getattr(args, action.dest) == v


LIST_OPTIONS = typed(opt.IntListOption)


@pytest.mark.parametrize("cmd,action", LIST_OPTIONS, ids=[f"{c}:{flag(a)}" for c, a in LIST_OPTIONS])
def test_integer_lists_check_every_item(
    cmd: str, action: argparse.Action, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = action.type
    assert isinstance(t, opt.IntListOption)
    for value in ["", ",", "x", f"{t.lo},x", str(t.lo - 1), f"{t.lo},{t.hi + 1}", "1.5", "nan", "1e12"]:
        code, err = run(argv_with(tuple(cmd.split()), LEAVES[cmd], tmp_path, action, value), capsys)
        refused(code, err, action)
    args = LEAVES[cmd].parse_args(argv_with((), LEAVES[cmd], tmp_path, action, f"{t.hi},{t.lo},{t.hi}"))
    assert getattr(args, action.dest) == (t.lo, t.hi)  # the bounds parse; sorted, each once


# ----------------------------------------------------------------------------- paths
def locked(path: Path, mode: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Take permissions away from ``path``. Root ignores permissions (``os.access`` says yes, writes succeed), so
    for root the checker's ``os.access`` is told what it would answer an ordinary user: the test then shows
    that the permission is consulted and reported, though not the kernel's own refusal."""
    path.chmod(mode)
    if IS_ROOT:
        real = os.access
        denied = {os.R_OK: not mode & 0o400, os.W_OK: not mode & 0o200, os.X_OK: not mode & 0o100}

        def access(p: object, m: int, *args: object, **kwargs: object) -> bool:
            if Path(str(p)) == path and any(denied[bit] for bit in denied if m & bit):
                return False
            return real(p, m, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr("csrl.utils.checks.os.access", access)


def path_case(kind: str, case: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(the value, a word of the expected message) for a path option of ``kind``."""
    folder = tmp / "a-folder"
    folder.mkdir(exist_ok=True)
    a_file = tmp / "a-file.txt"
    a_file.write_text("one line\n")
    if case == "missing":
        return str(tmp / "does-not-exist"), "not found"
    if case == "wrong kind":
        return (str(folder), "is a folder, not a file") if "file" in kind else (str(a_file), "is a file, not a folder")
    if case == "under a file":  # e.g. a typo'd parent: no one can create it, root included
        return str(a_file / "sub"), "is a file"
    assert case == "read-only"
    if kind in ("file", "dir"):  # an input nobody may read
        target = tmp / "unreadable"
        target.mkdir() if kind == "dir" else target.write_text("x")
        locked(target, 0o000, monkeypatch)
        return str(target), "not readable"
    ro = tmp / "read-only"
    ro.mkdir()
    locked(ro, 0o500, monkeypatch)
    return str(ro / "out"), "not writable"


def _path_cases() -> list[tuple[str, argparse.Action, str]]:
    out = []
    for cmd, a in typed(opt.PathOption):
        assert isinstance(a.type, opt.PathOption)
        kinds = ["wrong kind", "under a file", "read-only"]
        out += [(cmd, a, c) for c in (["missing", *kinds] if a.type.kind in ("file", "dir") else kinds)]
    return out


PATH_CASES = _path_cases()


@pytest.mark.parametrize("cmd,action,case", PATH_CASES, ids=[f"{c}:{flag(a) or a.dest}:{k}" for c, a, k in PATH_CASES])
def test_bad_paths_exit_2(
    cmd: str,
    action: argparse.Action,
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(action.type, opt.PathOption)
    value, words = path_case(action.type.kind, case, tmp_path, monkeypatch)
    code, err = run(argv_with(tuple(cmd.split()), LEAVES[cmd], tmp_path, action, value), capsys)
    refused(code, err, action, words)


PATH_OPTIONS = typed(opt.PathOption)


@pytest.mark.parametrize("cmd,action", PATH_OPTIONS, ids=[f"{c}:{flag(a) or a.dest}" for c, a in PATH_OPTIONS])
def test_a_good_path_parses(cmd: str, action: argparse.Action, tmp_path: Path) -> None:
    assert isinstance(action.type, opt.PathOption)
    value = str(tmp_path / "new" / "out") if action.type.kind.startswith("output") else valid_value(action, tmp_path)
    args = LEAVES[cmd].parse_args(argv_with((), LEAVES[cmd], tmp_path, action, value))
    parsed = getattr(args, action.dest)
    assert parsed == ([value] if action.nargs in ("+", "*") else value)  # a list for a repeated positional


def test_the_data_dir_error_keeps_its_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["eval", "--data-dir", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "data folder not found" in err and "CSRL_DATA_DIR" in err and "csrl data fetch" in err
