"""Training data from Parquet files and Hugging Face ``datasets``, behind the corpus interface.

:class:`DatasetCorpus` gives the records of a table the interface of :class:`~csrl.data.corpora.Corpus`
(``fields``, ``len``, ``get(i)``, ``get_many(indices)``, ``record_bytes()``: see
:class:`~csrl.data.corpora.CorpusLike`), so the sampler and the trainer read it like indexed text files.

Sources (entries of ``data.train_files``; :func:`open_training_corpus` sends each list to its reader):

* ``*.parquet`` / ``*.pq``: read with pyarrow, memory-mapped, only the selected columns; no cache written.
* A local folder written by ``Dataset.save_to_disk`` (``state.json``, ``dataset_info.json``): read in
  place with ``datasets.load_from_disk``. A ``DatasetDict`` folder (``dataset_dict.json``) gives its
  ``train`` split; for another split list the split's subfolder (``folder/validation``).
* Any other local folder: a Hub-style dataset repository (data files such as ``data/train-*.parquet`` or
  ``*.jsonl``, optionally a ``README.md`` declaring ``configs``), read by
  ``datasets.load_dataset(folder, split="train")``.
* ``hf://ID``, ``hf://ID:SPLIT`` or ``hf://ID:CONFIG:SPLIT`` (e.g. ``hf://sentence-transformers/all-nli:triplet:train``):
  a Hub dataset, ``datasets.load_dataset(ID, CONFIG, split=SPLIT)``, split ``train`` by default. Offline
  (``HF_HUB_OFFLINE=1``) only a dataset already in the ``datasets`` cache loads; otherwise the error says
  what to do.
* In Python, a ``datasets.Dataset`` object: :func:`corpus_from_dataset`.

Plain text, CSV, TSV and JSONL files stay with :func:`~csrl.data.corpora.open_corpus` (a byte index, no
conversion); one ``train_files`` list holds either those or the sources above, not both.

Columns: ``columns`` (``data.columns``) selects and orders the fields; by default every column, in
order. A missing column is an error listing the available ones with their types; a selected column that
does not hold strings is an error too (pick the text columns: a score or label column is never dropped
silently). Every cell is checked when the corpus is opened (vectorised): a null or empty
(whitespace-only) cell is an error naming the source, the row (0-based, ``dataset[row]``), the column
and how many rows have the problem. Cells longer than ``max_chars`` characters are cut by ``get`` and
reported once as a :class:`~csrl.data.corpora.CorpusWarning`, as for text files. Several sources
concatenate in the order given; they must yield the same number of fields (the first one's names are
used).

Caches: ``datasets.load_dataset`` (``hf://`` ids and data-file folders) converts the data to Arrow in the
``datasets`` cache (``HF_DATASETS_CACHE``, by default ``~/.cache/huggingface/datasets``; ``cache_dir=``
overrides it); Parquet files and ``save_to_disk`` folders are read where they are.

pyarrow and ``datasets`` are imported only when such a source is opened (``pip install datasets``).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from csrl.data.corpora import CorpusLike, CorpusWarning, open_corpus
from csrl.errors import CsrlError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "HUB_PREFIX",
    "DatasetCorpus",
    "corpus_from_dataset",
    "is_dataset_folder",
    "is_dataset_source",
    "is_hub_id",
    "open_dataset_corpus",
    "open_training_corpus",
    "parse_hub_id",
    "source_files",
]

HUB_PREFIX = "hf://"
PARQUET_SUFFIXES = (".parquet", ".pq")
_INSTALL_HINT = "install the Hugging Face datasets package (it brings pyarrow): pip install datasets"
_MAX_ROWS_LISTED = 10
_ITER_BLOCK = 4096
_DATA_SUFFIXES = {*PARQUET_SUFFIXES, ".arrow", ".csv", ".tsv", ".json", ".jsonl", ".txt"}  # datasets' readers


# --------------------------------------------------------------------------------------------------
# what a source is


def is_hub_id(entry: object) -> bool:
    """Whether ``entry`` names a Hub dataset (``hf://...``)."""
    return isinstance(entry, str) and entry.startswith(HUB_PREFIX)


def parse_hub_id(entry: str) -> tuple[str, str | None, str]:
    """``hf://ID[:SPLIT]`` or ``hf://ID:CONFIG:SPLIT`` -> ``(ID, CONFIG or None, SPLIT)``; the split defaults to
    ``train``."""
    parts = entry.removeprefix(HUB_PREFIX).split(":")
    if not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise CsrlError(
            f"{entry!r} is not a Hub dataset reference",
            hint="write hf://USER/NAME, hf://USER/NAME:SPLIT or hf://USER/NAME:CONFIG:SPLIT",
        )
    if len(parts) == 1:
        return parts[0], None, "train"
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def is_dataset_source(entry: object) -> bool:
    """Whether ``entry`` is read by this module: a ``hf://`` id, a Parquet file, a folder, or a dataset object
    (anything but a path string). Text, CSV, TSV and JSONL files are not (see :func:`open_corpus`)."""
    if not isinstance(entry, str | Path):
        return True
    if is_hub_id(entry):
        return True
    path = Path(entry).expanduser()
    return path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir()


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is a folder ``datasets`` can read: written by ``save_to_disk``, or holding data files."""
    if not path.is_dir():
        return False
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    return any(f.suffix.lower() in _DATA_SUFFIXES for f in source_files(path))


def source_files(path: Path) -> list[Path]:
    """The files a local source is read from, in a fixed order: the file itself, or every file under a
    folder (hidden ones such as ``.git`` excepted). For fingerprinting a run's data."""
    if not path.is_dir():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


# --------------------------------------------------------------------------------------------------
# loading


def _imports() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        raise CsrlError(
            "reading Parquet files or datasets needs pyarrow, which is not installed", hint=_INSTALL_HINT
        ) from None
    return pa, pc


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise CsrlError(
            "reading dataset folders or Hub datasets needs the datasets package", hint=_INSTALL_HINT
        ) from None
    return datasets


def _load_hub(entry: str, cache_dir: Path | str | None) -> Any:
    repo, config, split = parse_hub_id(entry)
    datasets = _datasets()
    try:
        return datasets.load_dataset(repo, config, split=split, cache_dir=None if cache_dir is None else str(cache_dir))
    except ConnectionError as e:
        raise CsrlError(
            f"{entry}: cannot load the Hub dataset {repo!r}: {e}",
            hint="the Hub is unreachable (no network, or HF_HUB_OFFLINE=1) and the dataset is not in the local "
            "datasets cache: load it once with network access, or save it to a folder "
            "(datasets.load_dataset(...).save_to_disk(DIR)) and list that folder in data.train_files",
        ) from None
    except (OSError, ValueError, KeyError) as e:  # unknown dataset, config or split
        raise CsrlError(
            f"{entry}: cannot load the Hub dataset {repo!r}: {e}",
            hint="check the dataset id, config and split: hf://USER/NAME[:CONFIG]:SPLIT",
        ) from None


def _load_folder(path: Path, cache_dir: Path | str | None) -> Any:
    datasets = _datasets()
    try:
        if (path / "dataset_dict.json").is_file():
            splits = datasets.load_from_disk(str(path))
            if "train" not in splits:
                names = ", ".join(map(repr, splits))
                raise CsrlError(
                    f"{path}: a saved DatasetDict without a 'train' split (splits: {names})",
                    hint=f"list the split's folder instead, e.g. {path / next(iter(splits))}",
                )
            return splits["train"]
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path), split="train", cache_dir=None if cache_dir is None else str(cache_dir))
    except (OSError, ValueError, KeyError) as e:
        raise CsrlError(
            f"{path}: cannot read this folder as a dataset ({e})",
            hint="a dataset folder is one written by Dataset.save_to_disk, or a Hub-style repository of data files "
            "(Parquet, JSON Lines, CSV, Arrow) with a 'train' split",
        ) from None


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pa.Table:
    pa, _ = _imports()
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(str(path))
        names = _choose_columns(str(path), {f.name: str(f.type) for f in schema}, columns)
        table = pq.read_table(str(path), columns=list(dict.fromkeys(names)), memory_map=True)
    except (pa.ArrowException, OSError) as e:
        raise CsrlError(
            f"{path}: not a readable Parquet file ({e})",
            hint="check that the file was written completely (e.g. by DataFrame.to_parquet or Dataset.to_parquet)",
        ) from None
    return table.select(names)


def _choose_columns(name: str, available: dict[str, str], columns: Sequence[str] | None) -> list[str]:
    """The selected column names (all, in order, by default); an error lists what is there."""
    if columns is None:
        if not available:
            raise CsrlError(f"{name}: the dataset has no columns", hint="check the source")
        return list(available)
    missing = [c for c in columns if c not in available]
    if missing:
        listing = ", ".join(f"{k!r} ({t})" for k, t in available.items())
        raise CsrlError(
            f"{name}: no column named {', '.join(map(repr, missing))}; the columns are: {listing}",
            hint="set data.columns (columns=) to names from this list",
        )
    return list(columns)


def _dataset_table(ds: Any, columns: Sequence[str] | None, name: str) -> pa.Table:
    """The selected columns of a ``datasets.Dataset`` as an Arrow table (zero-copy unless it was shuffled or
    had rows selected)."""
    datasets = _datasets()
    if isinstance(ds, datasets.DatasetDict):
        raise CsrlError(
            f"{name}: a DatasetDict (splits {', '.join(map(repr, ds))}), not one dataset",
            hint="pass one split, e.g. ds['train']",
        )
    if isinstance(ds, datasets.IterableDataset | datasets.IterableDatasetDict):
        raise CsrlError(
            f"{name}: a streaming IterableDataset cannot be indexed",
            hint="load it without streaming=True, or materialise part of it: Dataset.from_list(list(ds.take(n)))",
        )
    if not isinstance(ds, datasets.Dataset):
        raise CsrlError(
            f"expected a datasets.Dataset, got a {type(ds).__name__}",
            hint="pass a datasets.Dataset, a Parquet file, a dataset folder or an hf:// id",
        )
    names = _choose_columns(name, {k: str(v) for k, v in ds.features.items()}, columns)
    table = ds.select_columns(list(dict.fromkeys(names))).with_format("arrow")[:]
    return table.select(names)


def _open_source(entry: Any, columns: Sequence[str] | None, cache_dir: Path | str | None) -> tuple[pa.Table, str]:
    """One source as an Arrow table of its selected columns, and its name for messages."""
    if not isinstance(entry, str | Path):
        return _dataset_table(entry, columns, type(entry).__name__), type(entry).__name__
    if is_hub_id(entry):
        return _dataset_table(_load_hub(str(entry), cache_dir), columns, str(entry)), str(entry)
    path = Path(entry).expanduser()
    if path.is_dir():
        return _dataset_table(_load_folder(path, cache_dir), columns, str(path)), str(path)
    if not path.is_file():
        raise CsrlError(
            f"{path}: not found", hint="check the path; relative paths are resolved from the current folder"
        )
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path, columns), str(path)
    raise CsrlError(
        f"{path}: not a Parquet file, a dataset folder or an hf:// id",
        hint="text, CSV, TSV and JSONL files are read by csrl.data.corpora.open_corpus",
    )


# --------------------------------------------------------------------------------------------------
# checking


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )


def _checked_column(col: Any, name: str, field: str, max_chars: int) -> Any:
    """The column as ``large_string``; raises on a non-text column or a null/empty cell, warns on long cells."""
    pa, pc = _imports()
    if pa.types.is_dictionary(col.type) and _is_text(col.type.value_type):
        col = col.cast(col.type.value_type)
    if not _is_text(col.type):
        raise CsrlError(
            f"{name}: column {field!r} holds {col.type}, not text",
            hint="select only text columns with data.columns (columns=), e.g. the sentence columns of a pair dataset",
        )
    col = col.cast(pa.large_string())
    bad = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)  # null or blank
    n_bad = int(pc.sum(bad).as_py() or 0)
    if n_bad:
        row = int(pc.index(bad, True).as_py())
        what = "null (missing)" if not col[row].is_valid else "empty"
        more = f"; {n_bad} rows have a null or empty {field!r}" if n_bad > 1 else ""
        raise CsrlError(
            f"{name}, row {row}: column {field!r} is {what}{more}",
            hint=f"drop those rows first, e.g. ds.filter(lambda r: bool(r[{field!r}] and r[{field!r}].strip())), "
            "or leave the column out of data.columns",
        )
    long = np.flatnonzero(pc.greater(pc.utf8_length(col), max_chars).to_numpy(zero_copy_only=False))
    if len(long):
        rows = ", ".join(str(r) for r in long[:_MAX_ROWS_LISTED]) + (", ..." if len(long) > _MAX_ROWS_LISTED else "")
        warnings.warn(
            f"{name}: {len(long)} row(s) have a {field!r} longer than {max_chars} characters (rows {rows}); "
            f"truncated to {max_chars}, raise max_chars to keep them whole",
            CorpusWarning,
            stacklevel=4,
        )
    return col


def _checked_table(table: pa.Table, name: str, fields: tuple[str, ...], max_chars: int) -> pa.Table:
    pa, _ = _imports()
    if table.num_rows == 0:
        raise CsrlError(f"{name}: the dataset is empty", hint="check the source and the split")
    cols = [_checked_column(c, name, f, max_chars) for c, f in zip(table.columns, table.column_names, strict=True)]
    return pa.table(cols, names=list(fields))


# --------------------------------------------------------------------------------------------------
# the corpus


class DatasetCorpus:
    """Records of one or more Arrow tables (Parquet files, ``datasets.Dataset`` objects, dataset folders,
    Hub datasets); ``get(i)`` returns a tuple of ``len(fields)`` strings, each cut to ``max_chars``.

    Build it with :func:`corpus_from_dataset` or :func:`open_dataset_corpus`, which check every cell.
    Memory-mapped sources stay memory-mapped; picklable (the table travels with it).
    """

    def __init__(self, table: pa.Table, *, fields: tuple[str, ...], sources: tuple[str, ...], max_chars: int) -> None:
        self._table = table
        self.fields = fields
        self.sources = sources
        self.max_chars = max_chars

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __repr__(self) -> str:
        return f"DatasetCorpus({len(self)} records, fields={self.fields}, sources={list(self.sources)})"

    def record_bytes(self) -> np.ndarray:
        """UTF-8 byte length of every record (all its fields, plus one separator between fields), as for
        :meth:`Corpus.record_bytes <csrl.data.corpora.Corpus.record_bytes>`: a proxy for its token count."""
        _, pc = _imports()
        total = np.full(len(self), len(self.fields) - 1, dtype=np.int64)
        for col in self._table.columns:
            total += pc.binary_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
        return total

    def _index(self, i: int) -> int:
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for a corpus of {n}")
        return i

    def _cut(self, row: Sequence[str]) -> tuple[str, ...]:
        m = self.max_chars
        return tuple(v if len(v) <= m else v[:m] for v in row)

    def get(self, i: int) -> tuple[str, ...]:
        """Record ``i`` as a tuple of strings (one per field), each cut to ``max_chars`` characters."""
        i = self._index(i)
        return self._cut([col[i].as_py() for col in self._table.columns])

    __getitem__ = get

    def get_many(self, indices: Sequence[int] | np.ndarray) -> list[tuple[str, ...]]:
        """Records for a batch of indices, in the given order (one Arrow ``take``)."""
        idx = [self._index(int(i)) for i in indices]
        if not idx:
            return []
        taken = self._table.take(idx)
        return [self._cut(row) for row in zip(*(c.to_pylist() for c in taken.columns), strict=True)]

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for start in range(0, len(self), _ITER_BLOCK):
            block = self._table.slice(start, _ITER_BLOCK)
            yield from (self._cut(row) for row in zip(*(c.to_pylist() for c in block.columns), strict=True))

    def close(self) -> None:
        """Nothing to release (for symmetry with :class:`~csrl.data.corpora.Corpus`)."""

    def __enter__(self) -> DatasetCorpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset_corpus(
    sources: Sequence[Any] | Any,
    *,
    columns: Sequence[str] | None = None,
    max_chars: int = 2000,
    cache_dir: Path | str | None = None,
) -> DatasetCorpus:
    """Open one or more sources (Parquet files, dataset folders, ``hf://`` ids, ``datasets.Dataset`` objects),
    concatenated in order, as a checked :class:`DatasetCorpus` (see the module docstring).

    ``cache_dir``: the ``datasets`` cache for ``hf://`` ids and data-file folders (default: ``HF_DATASETS_CACHE``).
    """
    if isinstance(sources, str | Path) or not isinstance(sources, Sequence):
        sources = [sources]
    if not sources:
        raise CsrlError("no dataset sources given", hint="pass at least one Parquet file, folder, hf:// id or Dataset")
    if max_chars < 1:
        raise CsrlError(f"max_chars must be positive, got {max_chars}", hint="use e.g. max_chars=2000")
    if isinstance(columns, str):
        columns = [columns]
    pyarrow, _ = _imports()
    tables = []
    names: list[str] = []
    fields: tuple[str, ...] | None = None
    for entry in sources:
        table, name = _open_source(entry, columns, cache_dir)
        if fields is None:
            fields = tuple(table.column_names)
        elif table.num_columns != len(fields):
            raise CsrlError(
                f"{name}: yields {table.num_columns} field(s) {tuple(table.column_names)} but {names[0]} yields "
                f"{len(fields)} {fields}",
                hint="concatenate only sources of the same shape, or select matching columns with data.columns",
            )
        tables.append(_checked_table(table, name, fields, max_chars))
        names.append(name)
    assert fields is not None
    table = tables[0] if len(tables) == 1 else pyarrow.concat_tables(tables)
    return DatasetCorpus(table, fields=fields, sources=tuple(names), max_chars=max_chars)


def corpus_from_dataset(dataset: Any, columns: Sequence[str] | None = None, *, max_chars: int = 2000) -> DatasetCorpus:
    """A checked :class:`DatasetCorpus` over an in-memory ``datasets.Dataset`` (or any source of
    :func:`open_dataset_corpus`): ``columns`` selects and orders the text fields, all columns by default."""
    return open_dataset_corpus([dataset], columns=columns, max_chars=max_chars)


def open_training_corpus(
    sources: Sequence[Any],
    *,
    fmt: str = "auto",
    columns: Sequence[str] | None = None,
    max_chars: int = 2000,
    cache_dir: Path | str | None = None,
) -> CorpusLike:
    """The training corpus of ``data.train_files``: :func:`open_corpus` for text, CSV, TSV and JSONL files,
    :func:`open_dataset_corpus` for Parquet files, dataset folders, ``hf://`` ids and ``Dataset`` objects.

    One list holds one kind (convert the others, e.g. ``Dataset.to_parquet``); ``fmt`` applies to text-like
    files only and must stay ``auto`` for datasets.
    """
    kinds = [is_dataset_source(s) for s in sources]
    if not any(kinds):
        return open_corpus(list(sources), fmt=fmt, columns=columns, max_chars=max_chars)  # type: ignore[arg-type]
    if not all(kinds):
        text_like = [str(s) for s, k in zip(sources, kinds, strict=True) if not k]
        others = [
            str(s) if isinstance(s, str | Path) else type(s).__name__ for s, k in zip(sources, kinds, strict=True) if k
        ]
        raise CsrlError(
            f"the training data mixes text-like files ({', '.join(text_like)}) with datasets ({', '.join(others)})",
            hint="use one kind: convert the files, e.g. "
            "datasets.load_dataset('csv', data_files=F)['train'].to_parquet(OUT)",
        )
    if fmt != "auto":
        raise CsrlError(
            f"data.format={fmt!r} applies to text, CSV, TSV and JSONL files, not to Parquet files or datasets",
            hint="leave data.format=auto",
        )
    return open_dataset_corpus(list(sources), columns=columns, max_chars=max_chars, cache_dir=cache_dir)
