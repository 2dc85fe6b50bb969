"""The examples of docs/api.md run, in order, in a fresh folder (as a reader would paste them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import csrl
from csrl import _EXPORTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_export_resolves() -> None:
    assert set(csrl.__all__) == {"__version__", *_EXPORTS}
    for name in _EXPORTS:
        assert getattr(csrl, name) is not None, name
    with pytest.raises(AttributeError):
        csrl.no_such_name  # noqa: B018


@pytest.mark.slow
def test_api_examples_run(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CSRL_DATA_DIR", str(data_dir))
    namespace: dict[str, object] = {"__name__": "docs_api"}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name}[block {k}]", "exec"), namespace)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"docs/api.md python block {k} failed: {exc!r}\n{block}") from exc
    assert (tmp_path / "runs" / "api-dcl" / "config.json").exists()
