"""The pretraining corpus: lines read and checked, split into training and held-out lines, tokenised once,
served as sequences in a seeded, resumable order.

* **Reading**: text files, one sentence (or paragraph) per line, through :func:`csrl.data.corpora.open_corpus`
  (UTF-8 checked with the line of a bad byte, blank lines skipped and reported). A file whose last line has
  no newline was cut (``wiki1m_for_simcse.head.txt`` is the first 1.28 MB of a larger file): with
  ``data.drop_cut_last_line`` (default) that line is dropped, and said so.
* **Evaluation text stays out**: a file under the data folder's ``sts/``, ``transfer/`` or ``nli/`` is refused
  (``data.allow_eval_text`` lets it in), so the encoder never sees the sentences it is evaluated on.
* **Held out**: a line goes to the held-out side when the BLAKE2b hash of its normalised text (lower case,
  single spaces) falls in the first ``data.heldout_fraction`` of the hash range: the same split in every run
  and on every machine, whatever the file order, and a duplicated line never lands on both sides. Lines of
  ``data.heldout_files`` are held out too.
* **Sequences**: ``[CLS] line [SEP]`` cut to ``data.max_length`` tokens (one line per sequence, batches of
  similar length with ``data.group_by_length``), or with ``data.pack`` consecutive lines joined by ``[SEP]``
  and cut into full ``[CLS] ... [SEP]`` blocks of ``max_length`` tokens (no padding; BERT/RoBERTa-style
  long inputs). Tokens are stored flat (int32) with offsets: 4 bytes a token.
* **Order**: :class:`csrl.data.sampler.EpochSampler` (a permutation per ``(seed, epoch)``, sharded over
  ranks), so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csrl.data.corpora import open_corpus
from csrl.data.sampler import EpochSampler, text_key
from csrl.data.sts import default_data_dir
from csrl.errors import CsrlError
from csrl.pretrain.config import PretrainConfig

__all__ = [
    "EVAL_FOLDERS",
    "PretrainData",
    "Sequences",
    "heldout_lines",
    "open_pretrain_data",
    "read_lines",
    "resolve_files",
    "tokenize_lines",
]

EVAL_FOLDERS = ("sts", "transfer", "nli")  # evaluation text under the data folder
_TOKENIZE_CHUNK = 4096
_MAX_LINE_CHARS = 100_000


@dataclass
class Sequences:
    """Token-id sequences stored flat: sequence ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``."""

    tokens: np.ndarray  # (n_tokens,) int32
    offsets: np.ndarray  # (n + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> Sequences:
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        tokens = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32, count=int(offsets[-1]))
        return cls(tokens, offsets)


def resolve_files(names: Sequence[str], data_dir: Path | None, *, allow_eval_text: bool, setting: str) -> list[Path]:
    """Paths as given when they exist, else relative to the data folder; evaluation text is refused."""
    root = data_dir if data_dir is not None else default_data_dir()
    out = []
    for name in names:
        p = Path(name).expanduser()
        if not p.is_absolute() and not p.exists():
            p = root / p
        if not p.is_file():
            raise CsrlError(
                f"{setting}: {name} not found (looked in the current folder and in the data folder {root})",
                hint="set CSRL_DATA_DIR (or --data-dir) to the data folder, or give the files as paths",
            )
        inside = [f for f in EVAL_FOLDERS if p.resolve().is_relative_to((root / f).resolve())]
        if inside and not allow_eval_text:
            raise CsrlError(
                f"{setting}: {p} is evaluation text (under {root / inside[0]}); pretraining on it would let the "
                "encoder see the sentences it is evaluated on",
                hint="use the training corpora (train/), or set data.allow_eval_text=true if that is intended",
            )
        out.append(p)
    return out


def _ends_cut(path: Path) -> bool:
    """True when the file does not end with a newline (its last line was cut)."""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return False
        fh.seek(-1, 2)
        return fh.read(1) != b"\n"


def read_lines(files: Sequence[Path], *, drop_cut_last_line: bool, log: Callable[[str], None]) -> list[str]:
    """Every non-blank line of ``files``, in order (checked by :func:`csrl.data.corpora.open_corpus`)."""
    lines: list[str] = []
    for path in files:
        corpus = open_corpus([path], fmt="text", max_chars=_MAX_LINE_CHARS)
        with corpus:
            rows = [corpus.get(i)[0] for i in range(len(corpus))]
        if drop_cut_last_line and rows and _ends_cut(path):
            log(f"{path}: its last line has no newline (a cut copy): dropped ({rows[-1][:40]!r}...)")
            rows.pop()
        lines.extend(rows)
    return lines


def heldout_lines(lines: Sequence[str], fraction: float) -> np.ndarray:
    """(n,) bool: the lines held out (a hash of the normalised text below ``fraction`` of its range)."""
    if fraction <= 0:
        return np.zeros(len(lines), dtype=bool)
    cut = int(fraction * 2**63)
    return np.fromiter((text_key(" ".join(s.lower().split())) < cut for s in lines), dtype=bool, count=len(lines))


def tokenize_lines(tokenizer: Any, lines: Sequence[str], *, max_tokens: int | None) -> list[list[int]]:
    """Token ids of each line without special tokens, cut to ``max_tokens`` (None: whole lines)."""
    from csrl.models.encoder import _quiet_transformers

    out: list[list[int]] = []
    with _quiet_transformers():  # packing tokenises long lines whole: no "longer than the maximum" warning
        for start in range(0, len(lines), _TOKENIZE_CHUNK):
            chunk = list(lines[start : start + _TOKENIZE_CHUNK])
            enc = tokenizer(chunk, add_special_tokens=False, truncation=max_tokens is not None, max_length=max_tokens)
            out.extend(enc["input_ids"])
    return out


def line_sequences(token_lists: Sequence[list[int]], cls_id: int, sep_id: int) -> Sequences:
    """One ``[CLS] line [SEP]`` sequence per (non-empty) line."""
    return Sequences.from_lists([[cls_id, *toks, sep_id] for toks in token_lists if toks])


def packed_sequences(token_lists: Sequence[list[int]], cls_id: int, sep_id: int, length: int) -> Sequences:
    """Lines joined by ``[SEP]`` and cut into ``[CLS] ... [SEP]`` blocks of exactly ``length`` tokens (the
    last partial block is dropped)."""
    stream = np.fromiter(itertools.chain.from_iterable([*toks, sep_id] for toks in token_lists if toks), dtype=np.int32)
    body = length - 2
    n = len(stream) // body
    blocks = np.empty((n, length), dtype=np.int32)
    blocks[:, 0], blocks[:, -1] = cls_id, sep_id
    blocks[:, 1:-1] = stream[: n * body].reshape(n, body)
    return Sequences(blocks.reshape(-1), np.arange(n + 1, dtype=np.int64) * length)


@dataclass
class PretrainData:
    """Training and held-out sequences, this rank's sampler, and the files read (for the run's fingerprint)."""

    train: Sequences
    heldout: Sequences
    sampler: EpochSampler
    files: list[Path]
    n_lines: int
    n_heldout_lines: int

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def batch(self, epoch: int, position: int) -> list[np.ndarray]:
        """This rank's sequences of batch ``position`` of ``epoch``."""
        return [self.train.get(int(i)) for i in self.sampler.batch(epoch, position)]


def _sequences(cfg: PretrainConfig, tokenizer: Any, lines: Sequence[str]) -> Sequences:
    d = cfg.data
    cls_id, sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    token_lists = tokenize_lines(tokenizer, lines, max_tokens=None if d.pack else d.max_length - 2)
    if d.pack:
        return packed_sequences(token_lists, cls_id, sep_id, d.max_length)
    return line_sequences(token_lists, cls_id, sep_id)


def open_pretrain_data(
    cfg: PretrainConfig,
    tokenizer: Any,
    data_dir: Path | None,
    *,
    rank: int,
    world_size: int,
    log: Callable[[str], None],
) -> PretrainData:
    """Read, split and tokenise the corpus and build this rank's sampler (the input is checked here, before
    any model is built)."""
    d, t = cfg.data, cfg.train
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.mask_token_id is None:
        raise CsrlError(f"the tokenizer {type(tokenizer).__name__} lacks a [CLS], [SEP] or [MASK] token")
    train_files = resolve_files(d.train_files, data_dir, allow_eval_text=d.allow_eval_text, setting="data.train_files")
    extra = resolve_files(d.heldout_files, data_dir, allow_eval_text=d.allow_eval_text, setting="data.heldout_files")
    lines = read_lines(train_files, drop_cut_last_line=d.drop_cut_last_line, log=log)[: d.max_sentences]
    held = heldout_lines(lines, d.heldout_fraction)
    train_lines = [s for s, h in zip(lines, held, strict=True) if not h]
    held_lines = [s for s, h in zip(lines, held, strict=True) if h]
    held_lines += read_lines(extra, drop_cut_last_line=d.drop_cut_last_line, log=log)
    train, heldout = _sequences(cfg, tokenizer, train_lines), _sequences(cfg, tokenizer, held_lines)
    if t.batch_size % world_size:
        raise CsrlError(f"train.batch_size={t.batch_size} is not divisible by the {world_size} processes")
    if len(train) < t.batch_size:
        raise CsrlError(
            f"the training files give {len(train)} sequences, fewer than one batch of {t.batch_size}",
            hint="use a smaller train.batch_size, more text, or data.pack=false for short files",
        )
    if t.eval_every and len(heldout) == 0:
        raise CsrlError(
            f"nothing was held out: data.heldout_fraction={d.heldout_fraction} of {len(lines)} lines selects none",
            hint="raise data.heldout_fraction, add data.heldout_files, or set train.eval_every=0",
        )
    grouping: dict[str, Any] = {}
    if not d.pack and d.group_by_length > 1:
        grouping = {"lengths": train.lengths(), "group_batches": d.group_by_length}
    sampler = EpochSampler(len(train), t.batch_size // world_size, t.seed, rank=rank, world_size=world_size, **grouping)
    return PretrainData(train, heldout, sampler, [*train_files, *extra], len(train_lines), len(held_lines))
