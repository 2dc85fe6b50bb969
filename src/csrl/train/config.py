"""Typed, frozen run configuration with checked ``key=value`` overrides.

A run is described by :class:`RunConfig`: ``model`` (the encoder), ``data`` (training corpus), ``loss``
(a registered objective and its hyper-parameters) and ``train`` (optimisation and evaluation). YAML
recipes in ``configs/`` and ``--set section.key=value`` overrides are checked against these types;
unknown keys and wrong types raise :class:`~csrl.errors.CsrlError`. The resolved config is saved as
JSON next to every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from csrl.errors import CsrlError
from csrl.models.encoder import EncoderConfig
from csrl.utils.precision import PRECISIONS


@dataclass(frozen=True)
class DataConfig:
    """The training corpus. Relative paths are resolved against the data directory."""

    train_files: tuple[str, ...] = ("train/wiki/wiki1m_for_simcse.head.txt",)  # corpus files, concatenated
    format: str = "auto"  # auto | text | csv | tsv | jsonl
    columns: tuple[str, ...] | None = None  # CSV/JSONL fields: (sentence,) or (sent0, sent1, hard_neg)
    max_length: int = 32  # training truncation (SimCSE: 32)
    max_sentences: int | None = None  # use only the first N records (CPU-sized runs)
    no_duplicates: bool = False  # defer records whose text is already in the batch (false negatives)
    group_by_length: int = 0  # k > 1: batches of similar length, from windows of k batches (0 = off)


@dataclass(frozen=True)
class LossConfig:
    """A registered loss (``csrl.losses.loss_names()``) or preset, and its hyper-parameters."""

    name: str = "infonce"
    params: Mapping[str, Any] = field(default_factory=dict)  # e.g. {temperature: 0.05}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation and checkpointing."""

    batch_size: int = 64  # sentences (anchors) per step, over all ranks
    lr: float = 3e-5  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay (SimCSE/HF default 0)
    epochs: int = 1  # passes over the corpus
    max_steps: int | None = None  # stop after this many optimizer steps
    warmup_steps: int = 0  # linear warm-up, then linear decay to 0 (SimCSE: none)
    seed: int = 42  # python, numpy, torch and data order
    precision: str = "fp32"  # fp32 | bf16 (CPU and GPU autocast) | fp16 (GPU, loss scaling)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    eval_every: int = 125  # STS-B dev every N steps, best checkpoint kept (SimCSE protocol); 0 = off
    eval_batch_size: int = 128  # encoding batch at evaluation
    final_eval: bool = True  # 7-task STS test table of the best model at the end
    final_eval_pooler: str | None = None  # pooler for evaluation (default: cls -> cls_before_pooler)
    checkpoint_every: int = 125  # resumable checkpoint every N steps (and at every evaluation)
    keep_checkpoints: int = 2  # keep the last k resumable checkpoints (the best model is kept apart)
    log_every: int = 1  # metrics log every N steps
    paradigm_every: int = 1  # gradient-paradigm statistics (GD, W, R) every N steps; 0 = off
    dynamics_every: int = 0  # geometry probe every N steps on a fixed probe set; 0 = off
    dynamics_probe_size: int = 1000  # probe sentences (STS-B test sentence1)
    cache_chunk_size: int | None = None  # GradCache: embed the batch in chunks of this size
    max_grad_norm: float | None = None  # gradient clipping (None: off)
    on_nonfinite: str = "stop"  # stop | skip: what to do with a NaN/Inf loss or gradient
    compile: bool = False  # torch.compile the backbone
    progress: bool = True  # progress bar


@dataclass(frozen=True)
class RunConfig:
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/simcse"  # run directory (config, metrics, checkpoints, best model, results)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- type checking
def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except CsrlError as exc:
                errors.append(exc.message)
        raise CsrlError(errors[0] if errors else f"{key}: bad value {value!r}")
    if tp is Any:
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise CsrlError(f"{key}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return tuple(_coerce(v, inner, key) for v in value)
    if origin in (Mapping, dict) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise CsrlError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise CsrlError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise CsrlError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise CsrlError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise CsrlError(f"{key}: expected a string, got {value!r}")
    return value


RETIRED_KEYS = {
    "train.grad_accum_steps": (
        "train.grad_accum_steps was removed: every csrl loss uses in-batch negatives, and gradient accumulation "
        "silently shrinks the in-batch negatives to one micro-batch",
        "use train.cache_chunk_size=N (cached large batches: exact full-batch negatives, small memory)",
    ),
}
"""Keys that existed once, with the reason they are gone and what to use instead."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if full in RETIRED_KEYS:
            message, hint = RETIRED_KEYS[full]
            raise CsrlError(message, hint=hint)
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=3)
            raise CsrlError(
                f"unknown config key {full!r}",
                hint=(f"did you mean {', '.join(prefix + c for c in close)}? " if close else "")
                + f"valid keys under {prefix.rstrip('.') or 'the top level'}: {', '.join(hints)}",
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise CsrlError(f"{full}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(tp, value, f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def _check_loss(cfg: LossConfig) -> LossConfig:
    """Unknown loss names and parameters, and parameter types, are checked against the registry."""
    from csrl.losses.registry import loss_class, loss_params, resolve_preset

    name, params = resolve_preset(cfg.name, dict(cfg.params))
    allowed = loss_params(name)  # raises for unknown names, listing the valid ones
    checked: dict[str, Any] = {}
    hints = typing.get_type_hints(loss_class(name).__init__)
    for k, v in dict(cfg.params).items():
        if k not in allowed:
            raise CsrlError(
                f"loss {name!r} has no parameter {k!r}",
                hint=f"parameters of {name!r}: {', '.join(allowed) or 'none'}",
            )
        checked[k] = _coerce(v, hints.get(k, Any), f"loss.{k}")
    from csrl.losses.registry import build_loss

    build_loss(cfg.name, **checked)  # value checks (ranges) live in the loss classes
    del params
    return LossConfig(cfg.name, checked)


def _validate(cfg: RunConfig) -> RunConfig:
    t = cfg.train
    if t.precision not in PRECISIONS:
        raise CsrlError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if t.on_nonfinite not in ("stop", "skip"):
        raise CsrlError(f"train.on_nonfinite must be stop or skip, got {t.on_nonfinite!r}")
    for key in ("batch_size", "epochs", "eval_batch_size"):
        if getattr(t, key) < 1:
            raise CsrlError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if not t.lr > 0:
        raise CsrlError(f"train.lr must be > 0, got {t.lr}")
    if cfg.data.max_length < 2:
        raise CsrlError(f"data.max_length must be >= 2, got {cfg.data.max_length}")
    if cfg.data.group_by_length < 0:
        raise CsrlError(
            f"data.group_by_length must be >= 0, got {cfg.data.group_by_length}",
            hint="0 or 1 = off; k > 1 groups batches by length within windows of k batches (try 8)",
        )
    if t.cache_chunk_size is not None and t.cache_chunk_size < 1:
        raise CsrlError(f"train.cache_chunk_size must be >= 1, got {t.cache_chunk_size}")
    from csrl.models.pooling import canonical_pooler

    if cfg.model.pooler != "auto":
        canonical_pooler(cfg.model.pooler)
    cfg.model.resolved_head()
    if t.final_eval_pooler is not None:
        canonical_pooler(t.final_eval_pooler)
    return dataclasses.replace(cfg, loss=_check_loss(cfg.loss))


# --------------------------------------------------------------------------- loading
def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise CsrlError(f"override {text!r} is not key=value", hint="e.g. --set train.lr=1e-5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw (nested dict) config. ``loss.<p>`` goes to ``loss.params.<p>``."""
    from csrl.utils.dotted import set_dotted

    out = json.loads(json.dumps(raw))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        try:
            set_dotted(out, path, value)
        except CsrlError as exc:
            raise CsrlError(f"override {text!r}: {exc.message}", hint=exc.hint) from None
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CsrlError(f"config file {path} does not exist", hint="see configs/ for ready recipes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise CsrlError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise CsrlError(f"{path}: a config must be a mapping of sections (model, data, loss, train)")
    return data


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from nested plain data."""
    raw = dict(raw)
    if "model" in raw and isinstance(raw["model"], Mapping) and "first_last_layers" in raw["model"]:
        raw["model"] = {**raw["model"], "first_last_layers": tuple(raw["model"]["first_last_layers"])}
    cfg = _build(RunConfig, raw, "")
    return _validate(cfg)


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    raw = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(raw, overrides))


_T = typing.TypeVar("_T")


def build_section(cls: type[_T], raw: Mapping[str, Any], prefix: str = "") -> _T:
    """The dataclass ``cls`` built from ``raw`` with the checks of a config section: unknown keys (with
    suggestions) and value types raise :class:`~csrl.errors.CsrlError`; ``prefix`` names the section in
    messages (e.g. ``"sweep."``). Used for settings sections outside :class:`RunConfig`."""
    return _build(cls, raw, prefix)
