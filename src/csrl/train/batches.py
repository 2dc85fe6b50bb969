"""The training data of a run: the corpus, its sampler, and the texts of each step.

A step's position is ``(epoch, position)``; both are part of :class:`~csrl.train.state.RunState`, so a
resumed run reads exactly the batches an uninterrupted run would have read.

Every batch holds ``batch_size / world_size`` records (the samplers drop an epoch's incomplete last batch),
so a step's features have a fixed row count; under ``train.compile=reduce-overhead`` (or with
``train.length_buckets``) their length is padded to one of a few buckets (:func:`pad_to_bucket`,
:mod:`csrl.train.compile`), so compiled graphs and CUDA graphs see a few shapes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from csrl.data.augment import repeat_rows
from csrl.data.corpora import CorpusLike
from csrl.data.hf import is_dataset_folder, is_hub_id, open_training_corpus, source_files
from csrl.data.negation import negate
from csrl.data.sampler import EpochSampler, NoDuplicatesSampler, find_duplicates_in_batch, record_keys
from csrl.data.scored_pairs import SCORED_FORMATS, open_scored_pairs, record_score
from csrl.data.sts import default_data_dir
from csrl.errors import CsrlError
from csrl.losses.registry import loss_traits
from csrl.models.encoder import Encoder
from csrl.train.compile import length_buckets
from csrl.train.config import RunConfig


def resolve_train_files(cfg: RunConfig, data_dir: Path | None) -> list[Path]:
    """The local files the training data is read from, in order: each file of ``data.train_files``, every file
    of a dataset folder (:func:`csrl.data.hf.source_files`); none for a Hub dataset (its id is in the config)."""
    return [f for s in resolve_train_sources(cfg, data_dir) if isinstance(s, Path) for f in source_files(s)]


def resolve_train_sources(cfg: RunConfig, data_dir: Path | None) -> list[Path | str]:
    """``data.train_files`` as paths (as given when they exist, else relative to the data folder); Hub datasets
    (``hf://...``, :mod:`csrl.data.hf`) as given."""
    root = data_dir if data_dir is not None else default_data_dir()
    out: list[Path | str] = []
    for f in cfg.data.train_files:
        if is_hub_id(f):
            out.append(f)
            continue
        p = Path(f).expanduser()
        if not p.is_absolute() and not p.exists():
            p = root / p
        if not p.exists():
            raise CsrlError(
                f"training file {f} not found (looked in the current folder and in {root})",
                hint="set CSRL_DATA_DIR (or --data-dir) to the data folder, or give data.train_files as paths",
            )
        if not p.is_file() and not is_dataset_folder(p):  # a dataset folder is read by csrl.data.hf
            raise CsrlError(
                f"training file {p} is a folder, not a file, and holds no dataset (no data files, not written by "
                "Dataset.save_to_disk)"
                if p.is_dir()
                else f"training file {p} is not a file",
                hint="data.train_files lists corpus files (text, CSV, TSV, JSONL, Parquet), dataset folders "
                "or hf:// Hub datasets",
            )
        out.append(p)
    return out


def is_scored(cfg: RunConfig) -> bool:
    """The corpus is gold-scored pairs (sentence1, sentence2, score): ``data.scored_pairs`` or ``data.format=stsb``."""
    return cfg.data.scored_pairs or cfg.data.format in SCORED_FORMATS


def check_scored_loss(cfg: RunConfig) -> None:
    """Scored pairs need a loss that takes their scores (``loss_traits(name).scored_pairs``: cosent, angle)."""
    if is_scored(cfg) and not loss_traits(cfg.loss.name).scored_pairs:
        raise CsrlError(
            f"loss {cfg.loss.name!r} does not train on scored pairs (sentence1, sentence2, gold score): it would "
            "read the score column as a sentence or ignore the scores",
            hint="use loss.name=cosent or loss.name=angle (they rank the pairs by their gold scores), or train on "
            "unscored data (data.scored_pairs=false and data.format other than stsb)",
        )


def check_batch_semantics(cfg: RunConfig, corpus: CorpusLike) -> None:
    """Refuse settings that would silently change what the loss computes."""
    check_scored_loss(cfg)
    if cfg.train.batch_size < 2 and loss_traits(cfg.loss.name).in_batch_negatives:
        raise CsrlError(
            f"train.batch_size=1 with loss {cfg.loss.name!r}: an in-batch-negative loss needs at least 2 sentences",
            hint="use train.batch_size >= 2 (SimCSE: 64)",
        )
    if len(corpus.fields) not in (1, 2, 3):
        raise CsrlError(
            f"the corpus yields {len(corpus.fields)} fields {corpus.fields}; expected 1 (sentence), "
            "2 (anchor, positive) or 3 (anchor, positive, hard negative)",
            hint="choose columns with data.columns=[sent0,sent1,hard_neg]",
        )
    if loss_traits(cfg.loss.name).negation_view and len(corpus.fields) != 1:
        raise CsrlError(
            f"loss {cfg.loss.name!r} makes its third view by negating each sentence (SNCSE's soft negatives), so it "
            f"trains on single sentences; the corpus yields {len(corpus.fields)} fields {corpus.fields}",
            hint="train on a one-sentence-per-line corpus (unsupervised), or choose data.columns=[sent0]",
        )


class _Prefix:
    """The first ``n`` records of a corpus (for ``data.max_sentences``), each cut to its first ``texts`` fields (the
    sentences: a scored pair's score is no text to keep apart; None: every field)."""

    def __init__(self, corpus: CorpusLike, n: int, texts: int | None = None) -> None:
        self.corpus, self.n, self.texts = corpus, n, texts

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> tuple[str, ...]:
        record = self.corpus.get(i)
        return record if self.texts is None else record[: self.texts]


def pad_to_bucket(features: dict[str, Tensor], buckets: tuple[int, ...], *, pad_id: int) -> dict[str, Tensor]:
    """``features`` widened to the smallest of the increasing ``buckets`` that holds the longest row.

    The new columns are appended on the right whatever the tokenizer's padding side: ``input_ids`` get
    ``pad_id``, ``attention_mask`` and ``token_type_ids`` 0. Real tokens keep their positions (also under left
    padding, where a decoder numbers positions from the left edge) and no pooler reads a masked column, so the
    embeddings do not change. Other keys are refused rather than padded with a guess.
    """
    width = int(features["input_ids"].shape[1])
    target = next((b for b in buckets if b >= width), None)
    if target is None:
        raise ValueError(f"a batch of {width} tokens is longer than the largest length bucket {buckets[-1]}")
    fills = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
    unknown = set(features) - set(fills)
    if unknown:
        raise ValueError(f"cannot pad the features {sorted(unknown)} to a length bucket (no known padding value)")
    if target == width:
        return features
    extra = target - width
    return {k: torch.nn.functional.pad(v, (0, extra), value=fills[k]) for k, v in features.items()}


@dataclass
class TrainingData:
    """The corpus and this rank's sampler. ``n_views``: views per record in the forward (2 for single sentences:
    two dropout views of each). ``length_buckets``: the lengths a batch is padded to (None: its longest row).
    ``dup_rate``: ESimCSE's word repetition of view 1 (:mod:`csrl.data.augment`; 0 = off), whose rows stay within
    ``repeat_limit`` tokens (the backbone's position embeddings; None: no limit). ``negation_view``: a third view,
    each sentence's negation (:func:`csrl.data.negation.negate`; SNCSE's soft negatives, passed as ``hard_neg``).
    ``scored``: records are (sentence1, sentence2, gold score) (:mod:`csrl.data.scored_pairs`): two views, the
    sentences, and the scores passed to the loss as ``scores=`` (:meth:`gold`)."""

    corpus: CorpusLike
    sampler: EpochSampler
    n_records: int
    warned_duplicates: bool = False
    length_buckets: tuple[int, ...] | None = None
    dup_rate: float = 0.0
    repeat_limit: int | None = None
    negation_view: bool = False
    scored: bool = False

    @property
    def n_fields(self) -> int:
        return len(self.corpus.fields)

    @property
    def n_views(self) -> int:
        if self.scored:
            return 2
        return 3 if self.negation_view else max(self.n_fields, 2)

    def steps_in_epoch(self, epoch: int) -> int:
        if isinstance(self.sampler, NoDuplicatesSampler):
            return self.sampler.steps_in_epoch(epoch)
        return self.sampler.steps_per_epoch

    def records(self, epoch: int, position: int, *, step: int) -> list[tuple[str, ...]]:
        """This rank's records of batch ``position`` of ``epoch``; warns once about duplicate sentences."""
        records = self.corpus.get_many(self.sampler.batch(epoch, position))
        if self.n_fields == 1 and not self.warned_duplicates and find_duplicates_in_batch([r[0] for r in records]):
            self.warned_duplicates = True
            warnings.warn(
                f"step {step}: the batch holds duplicate sentences; each duplicate is a false negative "
                "for in-batch-negative losses (set data.no_duplicates=true to keep them apart)",
                stacklevel=1,
            )
        return records

    def features(self, records: list[tuple[str, ...]], encoder: Encoder, max_length: int) -> dict[str, Tensor]:
        """Tokenised views, view-major: all anchors, then all positives (then hard negatives, or the negations
        of the ``negation_view``), each view in its template under the prompt pooler (``Encoder.tokenize``); the
        positives word-repeated with ``dup_rate`` > 0 (:func:`csrl.data.augment.repeat_rows`: they may then exceed
        ``max_length``, up to the model's limit); padded to a length bucket when there are buckets
        (:func:`pad_to_bucket`)."""
        if self.n_fields == 1:
            texts = [r[0] for r in records]
            flat = texts + texts  # two dropout views of each sentence, one forward
            if self.negation_view:
                flat += [negate(t) for t in texts]  # SNCSE: the soft negatives, the hard_neg view
        elif self.scored:
            flat = [r[0] for r in records] + [r[1] for r in records]  # the score field is no view
        else:
            flat = [r[v] for v in range(self.n_fields) for r in records]
        if encoder.pooler == "prompt" and (self.dup_rate > 0 or self.length_buckets is not None):
            raise CsrlError(
                "model.pooler=prompt with word repetition (dup_rate: it would repeat the template's tokens) or length "
                "buckets (a prompt row holds the template on top of up to data.max_length sentence tokens)",
                hint="use another pooler, or dup_rate=0, train.length_buckets=null and train.compile=off or default",
            )
        features = encoder.tokenize(flat, max_length=max_length, views=self.n_views)
        if self.dup_rate > 0:
            tok = encoder.tokenizer
            features = repeat_rows(
                features, range(len(records), 2 * len(records)), dup_rate=self.dup_rate,
                special_ids=tok.all_special_ids, pad_id=tok.pad_token_id or 0,
                left_padding=getattr(tok, "padding_side", "right") == "left", max_tokens=self.repeat_limit,
            )  # fmt: skip
        if self.length_buckets is not None:
            features = pad_to_bucket(features, self.length_buckets, pad_id=encoder.tokenizer.pad_token_id or 0)
        return {k: v.to(encoder.device) for k, v in features.items()}

    def gold(self, records: list[tuple[str, ...]], device: torch.device) -> dict[str, Tensor]:
        """The loss inputs the records carry besides their texts: ``{"scores": (B,) float32}`` for scored pairs (the
        loss's ``scores=``, via :meth:`csrl.train.step.Views.extras`); empty otherwise."""
        if not self.scored:
            return {}
        return {"scores": torch.tensor([record_score(r) for r in records], dtype=torch.float32, device=device)}


def open_training_data(cfg: RunConfig, data_dir: Path | None, *, rank: int, world_size: int) -> TrainingData:
    """Open the corpus and build this rank's sampler (checks the input before any model is loaded)."""
    sources = resolve_train_sources(cfg, data_dir)
    corpus: CorpusLike
    if is_scored(cfg):  # (sentence1, sentence2, score), every score checked (csrl.data.scored_pairs)
        check_scored_loss(cfg)  # before reading the files
        paths = [s for s in sources if isinstance(s, Path)]
        if len(paths) != len(sources):
            raise CsrlError("scored pairs are read from files, not from Hub datasets", hint="convert them to CSV")
        corpus = open_scored_pairs(paths, fmt=cfg.data.format, columns=cfg.data.columns)
    else:
        corpus = open_training_corpus(sources, fmt=cfg.data.format, columns=cfg.data.columns)
    n_records = min(len(corpus), cfg.data.max_sentences or len(corpus))
    check_batch_semantics(cfg, corpus)
    t = cfg.train
    if t.batch_size % world_size:
        raise CsrlError(f"train.batch_size={t.batch_size} is not divisible by the {world_size} processes")
    local_bs = t.batch_size // world_size
    grouping: dict[str, Any] = {}
    if cfg.data.group_by_length > 1:
        grouping = {"lengths": corpus.record_bytes()[:n_records], "group_batches": cfg.data.group_by_length}
    sampler: EpochSampler
    if cfg.data.no_duplicates:
        keys = record_keys(_Prefix(corpus, n_records, texts=2 if is_scored(cfg) else None))
        sampler = NoDuplicatesSampler(keys, local_bs, t.seed, rank=rank, world_size=world_size, **grouping)
    else:
        sampler = EpochSampler(n_records, local_bs, t.seed, rank=rank, world_size=world_size, **grouping)
    negation = loss_traits(cfg.loss.name).negation_view
    return TrainingData(corpus, sampler, n_records, length_buckets=length_buckets(cfg), negation_view=negation,
                        scored=is_scored(cfg))  # fmt: skip


__all__ = [
    "TrainingData",
    "check_batch_semantics",
    "check_scored_loss",
    "is_scored",
    "open_training_data",
    "pad_to_bucket",
    "resolve_train_files",
    "resolve_train_sources",
]
