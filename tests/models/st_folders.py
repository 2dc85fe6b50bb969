"""Model folders for the sentence-transformers format tests (imported by name, as tests/sweep/sweep_files.py).

- :func:`build_st_folder`: a folder written by the installed sentence-transformers (its own modules and save).
- :func:`assemble_legacy`: a folder in the layout an older sentence-transformers wrote: the committed JSON
  files of ``fixtures/<name>/`` around the tiny random BERT (weights generated at test time, Dense weights
  drawn from a fixed seed).
- :func:`cache_as_hub_repo`: a local folder placed in a Hugging Face cache as the Hub repository
  ``repo_id``, so that loading the id offline reads it through the Hub code path.
- :func:`quiet_st_load`: ``SentenceTransformer(dir)`` with every log record, warning and byte of output caught.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

FIXTURES = Path(__file__).parent / "fixtures"
_PROGRESS_BAR = re.compile(r"^[\w ]+:\s+\d+%\|.*\|\s*\d+/\d+")
LEGACY = sorted(p.name for p in FIXTURES.iterdir() if (p / "modules.json").is_file())
SENTENCES = [
    "A cat sat on the mat.",
    "dogs",
    "The quick brown fox jumps over the lazy dog again and again, and then it rests for a while.",
    "Hello World!",
    "two words",
]


def build_st_folder(
    path: Path,
    model_dir: Path,
    *,
    mode: str | tuple[str, ...] = "mean",
    dense: bool = False,
    dense_activation: torch.nn.Module | None = None,
    normalize: bool = False,
    include_prompt: bool = True,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    max_seq_length: int | None = None,
    do_lower_case: bool = False,
    extra: list[torch.nn.Module] | None = None,
    transformer: Any = None,
) -> Path:
    """Save Transformer + Pooling (+ Dense 32->16) (+ Normalize) with the installed sentence-transformers.
    transformer: a ``Transformer`` module of ``model_dir`` to reuse (loading it is most of the time)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    if transformer is None:
        transformer = Transformer(
            str(model_dir),
            max_seq_length=max_seq_length,
            do_lower_case=do_lower_case,
            model_kwargs={"add_pooling_layer": False},
        )
    dim = transformer.get_embedding_dimension()
    modules: list[torch.nn.Module] = [transformer, Pooling(dim, pooling_mode=mode, include_prompt=include_prompt)]  # type: ignore[arg-type]
    if dense:
        torch.manual_seed(1)
        act = dense_activation if dense_activation is not None else torch.nn.Tanh()
        modules.append(Dense(dim * (len(mode) if isinstance(mode, tuple) else 1), 16, activation_function=act))
    if normalize:
        modules.append(Normalize())
    modules += extra or []
    st = SentenceTransformer(modules=modules, device="cpu", prompts=prompts, default_prompt_name=default_prompt_name)
    st.save(str(path))
    return path


def copy_model(model_dir: Path, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file():
            shutil.copy(f, path / f.name)
    return path


def assemble_legacy(path: Path, name: str, model_dir: Path) -> Path:
    """fixtures/<name>/ (JSON files only) around a copy of ``model_dir``; Dense weights from seed 2."""
    copy_model(model_dir, path)
    for f in (FIXTURES / name).rglob("*"):
        if f.is_file() and f.name != "NOTE.md":
            dest = path / f.relative_to(FIXTURES / name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    for entry in json.loads((path / "modules.json").read_text()):
        folder = path / entry["path"]
        folder.mkdir(exist_ok=True)  # Normalize wrote an empty folder, which git does not keep
        if entry["type"].endswith("Dense"):
            cfg = json.loads((folder / "config.json").read_text())
            gen = torch.Generator().manual_seed(2)
            weight = torch.randn(cfg["out_features"], cfg["in_features"], generator=gen) * 0.2
            bias = torch.randn(cfg["out_features"], generator=gen) * 0.1
            save_file({"linear.weight": weight, "linear.bias": bias}, str(folder / "model.safetensors"))
    return path


def edit_json(path: Path, **changes: object) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def cache_as_hub_repo(cache: Path, repo_id: str, folder: Path) -> None:
    """``folder`` as the cached snapshot of Hub model ``repo_id`` (the huggingface_hub cache layout)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@dataclass
class Captured:
    output: str = ""
    records: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def everything(self) -> list[str]:
        """Everything caught but progress bars (``Loading weights: 100%|...| 37/37``): they warn of nothing."""
        printed = [seg.strip() for seg in re.split(r"[\r\n]+", self.output) if seg.strip()]
        printed = [seg for seg in printed if not _PROGRESS_BAR.match(seg)]
        return [*printed, *self.records, *self.warnings]


class _Collect(logging.Handler):
    """Attached to several loggers of one hierarchy: a record that propagates through two of them (whether
    ``transformers`` propagates to the root depends on what configured its logging first) counts once."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into
        self.seen: dict[int, logging.LogRecord] = {}  # the records themselves are kept, so ids stay unique

    def emit(self, record: logging.LogRecord) -> None:
        if self.seen.get(id(record)) is record:
            return
        self.seen[id(record)] = record
        self.into.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def capture_all() -> Iterator[Captured]:
    """Log records at WARNING and above from every logger (transformers' own handler included), Python
    warnings of every category, and stdout/stderr."""
    from transformers.utils import logging as hf_logging

    cap = Captured()
    handler = _Collect(cap.records)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # what a user sees by default
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("sentence_transformers")]
    for lg in loggers:
        lg.addHandler(handler)
    buf = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
        ):
            warnings.simplefilter("always")
            yield cap
        cap.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
        cap.output = buf.getvalue()


def quiet_st_load(path: Path | str, **kwargs: Any) -> tuple[Any, Captured]:
    from sentence_transformers import SentenceTransformer

    with capture_all() as cap:
        st = SentenceTransformer(str(path), device="cpu", **kwargs)
    return st, cap
