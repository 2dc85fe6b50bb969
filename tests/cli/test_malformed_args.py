"""Every ``csrl`` subcommand, enumerated from ``build_parser()``, with malformed arguments: missing required
arguments, an unknown option, an option without its value, bad numbers (``-3``, ``x``) and nonexistent paths.
Each must exit with a non-zero code and print no traceback. A few cases run the real ``csrl`` entry point as
a subprocess, to show that it behaves like ``main()`` in-process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_options_schema import (  # the same folder: pytest puts it on sys.path
    LEAVES,
    RAN,
    argv_with,
    flag,
    options_of,
    parser_that_runs_nothing,
    subcommands,
)

from csrl.cli import options as opt
from csrl.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted arguments run nothing (see :func:`parser_that_runs_nothing`)."""
    monkeypatch.setattr("csrl.cli.main.build_parser", parser_that_runs_nothing)


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)  # argparse's usage errors come back as exit code 2 too
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return code, err


def _required(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in options_of(parser) if a.required or (not a.option_strings and a.nargs is None)]


def _groups(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Commands that only group subcommands (``paradigm``, ``data``), and the top level itself."""
    out = []
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        out.append(path)
        for name, child in sub.choices.items():
            out += _groups(child, (*path, name))
    return out


Build = Callable[[Path], list[str]]  # the argv of a case, given the test's tmp_path


def _with(cmd: str, action: argparse.Action | None, value: str | Callable[[Path], str], *extra: str) -> Build:
    """``csrl <cmd>`` with its required arguments filled in, ``action`` set to ``value``, then ``extra``."""

    def build(tmp: Path) -> list[str]:
        v = value(tmp) if callable(value) else value
        return [*argv_with(tuple(cmd.split()), LEAVES[cmd], tmp, action, v), *extra]

    return build


def _cases() -> list[tuple[str, Build, str]]:
    """(id, argv builder, a word of the message): from the parser, so a new command or option is covered."""
    cases: list[tuple[str, Build, str]] = []
    for path in _groups(build_parser()):
        name = " ".join(path) or "csrl"
        cases.append((f"{name}: no subcommand", lambda tmp, p=path: [*p], "required"))
        cases.append((f"{name}: unknown subcommand", lambda tmp, p=path: [*p, "no-such-command"], "invalid choice"))
    for cmd, parser in LEAVES.items():
        if _required(parser):
            cases.append((f"{cmd}: no arguments", lambda tmp, c=cmd: c.split(), "required"))
        cases.append((f"{cmd}: unknown option", _with(cmd, None, "", "--no-such-option=1"), "unrecognized"))
        for a in options_of(parser):
            name = flag(a) or a.dest
            if flag(a) and a.nargs != 0:
                cases.append((f"{cmd}: {name} without its value", _with(cmd, None, "", name), "expected one argument"))
            if isinstance(a.type, opt.IntOption | opt.FloatOption):
                cases += [(f"{cmd}: {name} {bad}", _with(cmd, a, bad), name) for bad in ("-3", "x")]
            if isinstance(a.type, opt.PathOption) and a.type.kind in ("file", "dir"):
                missing = _with(cmd, a, lambda tmp: str(tmp / "nope"))
                cases.append((f"{cmd}: {name} missing", missing, "not found"))
            if a.choices is not None:
                cases.append((f"{cmd}: {name} not a choice", _with(cmd, a, "no-such-choice"), name))
    return cases


CASES = _cases()


@pytest.mark.parametrize("build,word", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_arguments_exit_non_zero_without_traceback(
    build: Build, word: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = build(tmp_path)
    code, err = _exit(argv, capsys)
    assert code not in (0, RAN), (argv, err)
    assert code == 2 and err.startswith("csrl: error:"), err
    assert word in err, (word, err)


def test_the_cases_cover_every_subcommand() -> None:
    covered = {c[0].split(":")[0] for c in CASES}
    leaves = {" ".join(p) for p, _ in subcommands(build_parser())}
    assert leaves <= covered and len(leaves) >= 10, leaves - covered


# ----------------------------------------------------------------------------- the real entry point
def _csrl() -> list[str]:
    exe = Path(sys.executable).parent / "csrl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "csrl"]


@pytest.mark.parametrize(
    "args,word",
    [
        (["eval", "--batch-size", "-3"], "--batch-size"),  # refused by argparse
        (["train", "configs/quickstart-cpu.yaml", "--dry-run", "--set", "train.log_every=0"], "train.log_every"),
    ],
    ids=["bad number", "bad config value"],
)
def test_the_csrl_executable_behaves_the_same(args: list[str], word: str) -> None:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([*_csrl(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("csrl: error:") and word in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
