"""The config schema, generated from the dataclasses: a field added tomorrow is covered by these tests today.

For every numeric field of :class:`~csrl.train.config.RunConfig` (sections included, tuples of numbers too)
and every numeric parameter of every registered loss, a set of hostile values goes through
``load_config`` and through ``csrl train CONFIG --dry-run --set``: each is either accepted, and then lies in
the range the field's metadata declares (0 only where it declares ``allow_zero_as_off``), or refused with a
:class:`CsrlError` naming the key (exit code 2, no traceback). The expectation is computed here from the
declared metadata, independently of :func:`csrl.utils.checks.value_problem`. Config paths (``output_dir``,
``data.train_files``, ``model.model``) get a missing path, the wrong kind, and an unusable location.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.train.config import RunConfig, load_config


def _numeric_kind(tp: Any) -> tuple[type, bool] | None:
    """(int or float, is_tuple) for ``int``, ``float``, ``X | None`` and ``tuple[X, ...]``; None otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _numeric_kind(args[0]) if len(args) == 1 else None
    if typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = _numeric_kind(args[0]) if args else None
        return (inner[0], True) if inner is not None and len(set(args)) == 1 else None
    return (tp, False) if tp in (int, float) else None


def _walk(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if dataclasses.is_dataclass(hints[f.name]):
            out += _walk(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f, hints[f.name]))
    return out


FIELDS = _walk(RunConfig)
NUMERIC = [(key, f, _numeric_kind(tp)) for key, f, tp in FIELDS if _numeric_kind(tp) is not None]
HOSTILE = ["0", "-1", ".nan", ".inf", "-.inf", "1000000000000", "1e12", "abc", "[1]", "true"]


def _expected_ok(parsed: Any, kind: type, meta: Any) -> bool:
    """Whether the declared schema admits ``parsed`` (a YAML value) for a field of type ``kind``."""
    if isinstance(parsed, bool) or not isinstance(parsed, int | float | str):
        return False
    if isinstance(parsed, str):  # the config reads a number in a string for floats only (YAML 1.1 reads 1e12 so)
        try:
            parsed = float(parsed) if kind is float else None
        except ValueError:
            return False
        if parsed is None:
            return False
    if kind is int and isinstance(parsed, float) and not parsed.is_integer():
        return False
    if not math.isfinite(parsed):
        return bool(meta.get("allow_nonfinite"))
    if parsed == 0 and meta.get("allow_zero_as_off"):
        return True
    return not (
        ("min" in meta and parsed < meta["min"])
        or ("max" in meta and parsed > meta["max"])
        or ("gt" in meta and parsed <= meta["gt"])
        or ("lt" in meta and parsed >= meta["lt"])
    )


def _override(key: str, f: dataclasses.Field[Any], is_tuple: bool, text: str) -> str:
    """``key=text``; for a tuple field, ``text`` replaces its first element (the others keep their default)."""
    if not is_tuple:
        return f"{key}={text}"
    rest = list(f.default or ())[1:]  # type: ignore[arg-type]  (a null default: the value alone)
    return f"{key}=[{', '.join([text, *map(str, rest)])}]"


CASES = [(key, f, kind, tup, text) for key, f, (kind, tup) in NUMERIC for text in HOSTILE]  # type: ignore[misc]
IDS = [f"{key}={text}" for key, _, _, _, text in CASES]


def test_every_numeric_field_declares_its_range() -> None:
    """A new numeric field must say what it accepts (a lower bound at least) and what it means (help)."""
    assert len(NUMERIC) >= 25, [k for k, *_ in NUMERIC]  # the walk finds the sections' fields
    for key, f, _ in NUMERIC:
        meta = f.metadata
        assert "min" in meta or "gt" in meta, f"{key} declares no lower bound"
        assert meta.get("help"), f"{key} has no help"
        if meta.get("allow_zero_as_off"):
            assert "0 = off" in meta["help"], f"{key}: the help must say that 0 = off"


@pytest.mark.parametrize("key,f,kind,is_tuple,text", CASES, ids=IDS)
def test_load_config_accepts_only_the_declared_range(
    key: str, f: dataclasses.Field[Any], kind: type, is_tuple: bool, text: str
) -> None:
    expected = _expected_ok(yaml.safe_load(text), kind, f.metadata)
    try:
        cfg = load_config(None, [_override(key, f, is_tuple, text)])
    except CsrlError as exc:
        assert not expected, f"{key}={text} is in the declared range but was refused: {exc}"
        assert key in str(exc), str(exc)
        return
    assert expected, f"{key}={text} is outside the declared range {dict(f.metadata)} but was accepted"
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    first = value[0] if is_tuple else value
    assert isinstance(first, kind) and not isinstance(first, bool)


@pytest.mark.parametrize("key,f,kind,is_tuple,text", CASES, ids=IDS)
def test_cli_dry_run_refuses_with_exit_2_and_no_traceback(
    key: str,
    f: dataclasses.Field[Any],
    kind: type,
    is_tuple: bool,
    text: str,
    empty_recipe: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = _expected_ok(yaml.safe_load(text), kind, f.metadata)
    code = main(["train", str(empty_recipe), "--dry-run", "--set", _override(key, f, is_tuple, text)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    if expected:
        assert code == 0, err
    else:
        assert code == 2 and err.startswith("csrl: error:") and key in err, err


@pytest.fixture(scope="module")
def empty_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("recipe") / "empty.yaml"
    p.write_text("{}\n")
    return p


# ----------------------------------------------------------------------------- loss parameters
def _loss_cases() -> list[tuple[str, str, type, str]]:
    from csrl.losses.registry import loss_class, loss_names, loss_params

    out = []
    for name in loss_names():
        hints = typing.get_type_hints(loss_class(name).__init__)
        for p in loss_params(name):
            kind = _numeric_kind(hints.get(p))
            if kind is not None and not kind[1]:
                out += [(name, p, kind[0], text) for text in HOSTILE]
    return out


LOSS_CASES = _loss_cases()


@pytest.mark.parametrize("loss,param,kind,text", LOSS_CASES, ids=[f"{c[0]}.{c[1]}={c[3]}" for c in LOSS_CASES])
def test_loss_parameters_refuse_non_numbers_and_non_finite_values(loss: str, param: str, kind: type, text: str) -> None:
    """The ranges of loss parameters live in the loss classes; here: whatever they accept is a finite number of
    the right type, and whatever they refuse is a CsrlError naming the parameter."""
    parsed = yaml.safe_load(text)
    try:
        cfg = load_config(None, [f"loss.name={loss}", f"loss.{param}={text}"])
    except CsrlError as exc:
        assert param in str(exc), str(exc)
        return
    value = cfg.loss.params[param]
    assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), value
    assert not isinstance(parsed, list | bool) and (kind is float or isinstance(parsed, int)), (text, value)


# ----------------------------------------------------------------------------- paths
def _output_dir_cases(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, str]]:
    """(path, words of the error): an existing file, a path under a file (no one can create it, root included),
    and a folder in a read-only folder (0o500; root ignores permissions, so for root the checker is told what
    an ordinary user would be told; tests/cli/test_options_schema.py::locked does the same for the options)."""
    a_file = tmp / "file.txt"
    a_file.write_text("x")
    ro = tmp / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(
            "csrl.utils.checks.os.access", lambda p, m: False if Path(p) == ro and m & os.W_OK else real(p, m)
        )
    return [(a_file, "is a file, not a folder"), (a_file / "run", "is a file"), (ro / "run", "not writable")]


@pytest.mark.parametrize("case", range(3), ids=["existing file", "under a file", "read-only"])
def test_output_dir_is_checked_with_the_config(
    case: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, words = _output_dir_cases(tmp_path, monkeypatch)[case]
    with pytest.raises(CsrlError) as err:
        load_config(None, [f"output_dir={path}"])
    assert "output_dir" in err.value.message and str(path) in err.value.message and words in err.value.message
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output_dir: {path}\n")
    assert main(["train", str(recipe), "--dry-run"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("csrl: error: output_dir") and "Traceback" not in err_text, err_text


def test_a_new_output_dir_is_fine(tmp_path: Path) -> None:
    assert load_config(None, [f"output_dir={tmp_path / 'not' / 'yet'}"]).output_dir == str(tmp_path / "not" / "yet")


def _train_argv(model: Path, data: Path, tmp: Path, *sets: str) -> list[str]:
    argv = ["train", "configs/quickstart-cpu.yaml", "--no-before", "--output-dir", str(tmp / "run"), "--data-dir",
            str(data), "--set", f"model.model={model}", "--set", "train.final_eval=false", "--set",
            "train.eval_every=0", "--set", "train.batch_size=4", "--set", "train.max_steps=1", "--set",
            "data.max_sentences=null", "--set", "train.progress=false", "--threads", "1"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    return argv


def _input_path_cases(tmp: Path, model: Path) -> dict[str, tuple[str, str]]:
    """``case -> (override, words of the error)`` for the config's input paths."""
    a_file = tmp / "plain.txt"
    a_file.write_text("the only line\n")
    folder = tmp / "a-folder"
    folder.mkdir()
    return {
        "train_files missing": (f"data.train_files=[{tmp / 'nope.txt'}]", "not found"),
        "train_files a folder": (f"data.train_files=[{folder}]", "is a folder, not a file"),
        "train_files under a file": (f"data.train_files=[{a_file / 'x.txt'}]", "not found"),
        "model missing": (f"model.model={tmp / 'no-model'}", "does not exist"),
        "model a file": (f"model.model={a_file}", "is a file, not a model folder"),
        "model a folder without a model": (f"model.model={folder}", "could not load model"),
        "model under a file": (f"model.model={a_file / 'sub'}", "does not exist"),
    }


INPUT_CASES = ["train_files missing", "train_files a folder", "train_files under a file", "model missing",
               "model a file", "model a folder without a model", "model under a file"]  # fmt: skip


@pytest.mark.parametrize("case", INPUT_CASES)
def test_config_input_paths_fail_before_the_model_loads(
    case: str,
    tiny_model_dir: Path,
    fake_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from csrl.models.encoder import Encoder

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(Encoder, "from_pretrained", no_loading)
    override, words = _input_path_cases(tmp_path, tiny_model_dir)[case]
    code = main(_train_argv(tiny_model_dir, fake_data_dir, tmp_path, override))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("csrl: error:") and "Traceback" not in err, err
    assert words in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_same_run_with_good_paths_trains(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control for the cases above: their command line trains when the paths are right."""
    assert main(_train_argv(tiny_model_dir, fake_data_dir, tmp_path)) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "best").is_dir()
