"""Typed, frozen configuration of ``csrl pretrain``, checked like a training recipe.

:class:`PretrainConfig` has three sections: ``model`` (a from-scratch BERT size, or ``init_from`` a
masked-LM checkpoint to continue), ``data`` (corpus files, held-out split, masking) and ``train``
(optimisation, evaluation, checkpoints). YAML recipes (``configs/pretrain-*.yaml``) and ``--set
section.key=value`` overrides go through the trainer's machinery (:func:`csrl.train.config.build_section`:
unknown keys with suggestions, types; :func:`~csrl.train.config.check_ranges`: the range each field
declares beside it), so a mistake reads the same as in ``csrl train``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.models.encoder import DEFAULT_MODEL
from csrl.train.config import MAX_BATCH, apply_overrides, build_section, check_ranges, read_yaml
from csrl.utils.checks import DEVICES, check_probe_schedule, device_problem, setting
from csrl.utils.precision import PRECISIONS

__all__ = [
    "PretrainConfig",
    "PretrainDataConfig",
    "PretrainModelConfig",
    "PretrainTrainConfig",
    "build_pretrain_config",
    "load_pretrain_config",
]

WIKI = "train/wiki/wiki1m_for_simcse.head.txt"
POOLERS = ("mean", "cls_before_pooler", "first_last_avg", "last2_avg")  # the probe's (no training head)


def _device_problem(name: str) -> str | None:
    return None if name == "auto" else device_problem(name)


@dataclass(frozen=True)
class PretrainModelConfig:
    """The encoder: a new BERT of this size (with ``tokenizer``'s vocabulary), or a checkpoint to continue
    (``init_from``: the checkpoint brings its own size and tokenizer, and the fields below are not used)."""

    init_from: str | None = setting(
        None, help="a local folder or Hub id of a masked-LM checkpoint to continue (null: a new model from scratch)"
    )
    tokenizer: str = setting(
        DEFAULT_MODEL, help="from scratch: the tokenizer and vocabulary (default: the embedded bert-base-uncased one)"
    )
    layers: int = setting(4, min=1, max=64, help="transformer layers (BERT-base: 12)")
    hidden: int = setting(256, min=8, max=8192, help="hidden size, a multiple of heads (BERT-base: 768)")
    heads: int = setting(4, min=1, max=128, help="attention heads (BERT-base: 12)")
    intermediate: int = setting(1024, min=8, max=65536, help="feed-forward size (BERT: 4 x hidden)")
    max_position: int = setting(512, min=8, max=8192, help="position embeddings (BERT: 512)")
    dropout: float = setting(0.1, min=0, lt=1, help="hidden dropout (BERT: 0.1)")
    attention_dropout: float = setting(0.1, min=0, lt=1, help="attention dropout (BERT: 0.1)")
    initializer_range: float = setting(0.02, gt=0, max=1, help="std of the initial weights (BERT: 0.02)")


@dataclass(frozen=True)
class PretrainDataConfig:
    """The corpus (one sentence or paragraph per line), its held-out slice, and the masking."""

    train_files: tuple[str, ...] = setting(
        (WIKI,), path="file", relative_to="data folder",
        help="text files, one sentence per line (relative paths: from the current folder, else the data folder)",
    )  # fmt: skip
    heldout_fraction: float = setting(
        0.01, min=0, lt=1, help="share of the lines held out for MLM accuracy (chosen by a hash of the text)"
    )
    heldout_files: tuple[str, ...] = setting(
        (), path="file", relative_to="data folder", help="extra held-out text files (besides the fraction)"
    )
    heldout_sequences: int = setting(512, min=1, help="held-out sequences scored at each evaluation")
    max_length: int = setting(128, min=4, max=8192, help="tokens per sequence, [CLS] and [SEP] included")
    max_sentences: int | None = setting(None, min=1, help="use only the first N lines of the training files")
    pack: bool = False  # pack consecutive lines into full max_length sequences (no padding) instead of one per line
    group_by_length: int = setting(8, min=0, help="one line per sequence: batches of similar length (0/1 = off)")
    whole_word_masking: bool = False  # mask whole WordPiece words (80/10/10 per token) instead of single tokens
    mlm_probability: float = setting(0.15, gt=0, lt=1, help="share of the tokens masked (BERT: 0.15)")
    drop_cut_last_line: bool = True  # a file not ending in a newline was cut (wiki1m's head): drop its last line
    allow_eval_text: bool = False  # let files under the data folder's sts/, transfer/ or nli/ in (they are refused)


@dataclass(frozen=True)
class PretrainTrainConfig:
    """Optimisation (AdamW, linear warm-up and decay), evaluation, checkpoints and logging."""

    batch_size: int = setting(64, min=1, max=MAX_BATCH, help="sequences per step, over all ranks")
    lr: float = setting(5e-4, gt=0, max=1.0, help="AdamW peak learning rate (small BERTs: 5e-4 to 1e-3)")
    weight_decay: float = setting(0.01, min=0, max=1.0, help="AdamW weight decay (BERT: 0.01)")
    adam_beta2: float = setting(0.999, gt=0, lt=1, help="AdamW beta2 (BERT: 0.999, RoBERTa: 0.98)")
    adam_eps: float = setting(1e-6, gt=0, max=1.0, help="AdamW epsilon (BERT: 1e-6)")
    warmup_steps: int = setting(0, min=0, help="linear warm-up steps")
    schedule: str = setting("linear", choices=("linear", "constant"), help="after warm-up: linear decay to 0, or flat")
    epochs: int = setting(1, min=1, max=100_000, help="passes over the corpus")
    max_steps: int | None = setting(None, min=1, help="stop after this many optimizer steps; null = the epochs")
    max_grad_norm: float | None = setting(1.0, gt=0, help="gradient clipping norm (BERT: 1.0); null = off")
    precision: str = setting(
        "auto", choices=PRECISIONS, help="auto (bf16 where native, else fp32), fp32, bf16 (CPU/GPU), fp16 (GPU)"
    )
    seed: int = setting(42, min=0, max=2**32 - 1, help="initial weights, data order, masks and dropout")
    device: str = setting("auto", check=_device_problem, help=f"auto, or a torch device: {DEVICES}")
    num_threads: int | None = setting(None, min=1, max=4096, help="torch CPU threads (null: torch's default)")
    eval_every: int = setting(
        100,
        min=1,
        allow_zero_as_off=True,
        help="held-out MLM loss and accuracy every N steps (and at the end); 0 = off",
    )
    eval_batch_size: int = setting(64, min=1, max=MAX_BATCH, help="sequences per held-out batch")
    checkpoint_every: int = setting(
        100, min=1, allow_zero_as_off=True, help="resumable checkpoint every N steps (and at the end); 0 = off"
    )
    keep_checkpoints: int = setting(2, min=1, help="keep the last k resumable checkpoints")
    log_every: int = setting(10, min=1, help="metrics log every N steps")
    dynamics_every: int = setting(
        0, min=1, allow_zero_as_off=True, help="geometry probe every N steps (a multiple of log_every); 0 = off"
    )
    dynamics_probe_size: int = setting(1000, min=2, help="probe sentences (STS-B test sentence1)")
    dynamics_early_every: int = setting(
        0,
        min=1,
        allow_zero_as_off=True,
        help="also probe every N steps up to dynamics_early_until (dense early); 0 = off",
    )
    dynamics_early_until: int = setting(0, min=0, help="last step of the dense early probing")
    dynamics_pooler: str = setting("mean", choices=POOLERS, help="sentence vectors of the geometry probe")
    progress: bool = True  # progress bar
    report_to: tuple[str, ...] = ("tensorboard",)  # trackers: tensorboard, wandb, mlflow (csrl.train.trackers)
    tracking_project: str = "csrl"  # W&B project / MLflow experiment name


@dataclass(frozen=True)
class PretrainConfig:
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    output_dir: str = setting(
        "runs/pretrain", path="output_dir", help="run folder (config, metrics, checkpoints, the model)"
    )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists: plain JSON data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _validate(cfg: PretrainConfig) -> PretrainConfig:
    from csrl.train.trackers import check_tracker_names

    check_ranges(cfg)
    m, d, t = cfg.model, cfg.data, cfg.train
    check_tracker_names(t.report_to)
    if m.init_from is None and m.hidden % m.heads:
        raise CsrlError(
            f"model.hidden={m.hidden} is not a multiple of model.heads={m.heads}",
            hint="each head gets hidden / heads dimensions (BERT-base: 768 / 12)",
        )
    if m.init_from is None and d.max_length > m.max_position:
        raise CsrlError(
            f"data.max_length={d.max_length} is more than model.max_position={m.max_position} positions",
            hint="raise model.max_position or lower data.max_length",
        )
    check_probe_schedule(t.dynamics_every, t.dynamics_early_every, t.log_every)
    if t.eval_every and d.heldout_fraction == 0 and not d.heldout_files:
        raise CsrlError(
            "train.eval_every > 0 but nothing is held out (data.heldout_fraction=0, no data.heldout_files)",
            hint="hold out a slice (data.heldout_fraction=0.01) or set train.eval_every=0",
        )
    return cfg


def build_pretrain_config(raw: Mapping[str, Any]) -> PretrainConfig:
    """Build and validate a :class:`PretrainConfig` from nested plain data (a recipe, or a run's ``config.json``)."""
    return _validate(build_section(PretrainConfig, raw))


def load_pretrain_config(path: Path | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """A recipe (or the defaults) with ``--set`` overrides applied, checked."""
    raw = read_yaml(path) if path is not None else {}
    return build_pretrain_config(apply_overrides(raw, overrides))
