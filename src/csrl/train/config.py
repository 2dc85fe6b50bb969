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
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from csrl.data.corpora import Format
from csrl.data.scored_pairs import SCORED_FORMATS
from csrl.errors import CsrlError
from csrl.models.encoder import MAX_TOKENS, EncoderConfig
from csrl.utils.checks import DEVICES, check_probe_schedule, device_problem, setting, value_problem
from csrl.utils.dotted import flatten
from csrl.utils.precision import PRECISIONS

MAX_BATCH = 1 << 20  # sentences per step: the (B, 2B) similarity matrix alone would exceed any device beyond
MAX_CHUNK = 1 << 16  # rows encoded at once (evaluation, GradCache chunks): more exhausts memory in activations
COMPILE_MODES = ("off", "default", "reduce-overhead")  # train.compile; csrl.train.compile applies them
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def _device_problem(name: str) -> str | None:
    return None if name == "auto" else device_problem(name)


@dataclass(frozen=True)
class DataConfig:
    """The training corpus. Relative paths are resolved against the data directory."""

    train_files: tuple[str, ...] = setting(
        ("train/wiki/wiki1m_for_simcse.head.txt",), path="file", relative_to="data folder",
        help="corpus files, concatenated (relative paths: from the current folder, else the data folder)",
    )  # fmt: skip
    format: str = setting(
        "auto", choices=(*typing.get_args(Format), *SCORED_FORMATS),
        help="corpus format (auto: by the file suffix; stsb: SentEval's STS-B files as scored pairs)",
    )  # fmt: skip
    columns: tuple[str, ...] | None = None  # CSV/JSONL fields: (sentence,) or (sent0, sent1, hard_neg)
    scored_pairs: bool = False  # the fields are (sentence1, sentence2, gold score): cosent/angle (format=stsb: always)
    max_length: int = setting(32, min=2, max=MAX_TOKENS, help="training truncation in tokens (SimCSE: 32)")
    max_sentences: int | None = setting(None, min=1, help="use only the first N records (CPU-sized runs); null = all")
    no_duplicates: bool = False  # defer records whose text is already in the batch (false negatives)
    group_by_length: int = setting(
        0, min=0, help="0 or 1 = off; k > 1 groups batches by length within windows of k batches (try 8)"
    )


@dataclass(frozen=True)
class LossConfig:
    """A registered loss (``csrl.losses.loss_names()``) or preset, and its hyper-parameters."""

    name: str = "infonce"
    params: Mapping[str, Any] = field(default_factory=dict)  # e.g. {temperature: 0.05}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation and checkpointing."""

    batch_size: int = setting(64, min=1, max=MAX_BATCH, help="sentences (anchors) per step, over all ranks")
    lr: float = setting(3e-5, gt=0, max=1.0, help="AdamW peak learning rate (SimCSE: 3e-5 to 5e-5)")
    weight_decay: float = setting(0.0, min=0, max=1.0, help="AdamW weight decay (SimCSE/HF default 0)")
    epochs: int = setting(1, min=1, max=100_000, help="passes over the corpus")
    max_steps: int | None = setting(None, min=1, help="stop after this many optimizer steps; null = the epochs")
    warmup_steps: int = setting(0, min=0, help="linear warm-up, then linear decay to 0 (SimCSE: none)")
    seed: int = setting(42, min=0, max=2**32 - 1, help="python, numpy, torch and data order")
    precision: str = setting(
        "auto", choices=PRECISIONS, help="auto (bf16 where native, else fp32), fp32, bf16 (CPU/GPU), fp16 (GPU)"
    )
    device: str = setting("auto", check=_device_problem, help=f"auto, or a torch device: {DEVICES}")
    num_threads: int | None = setting(None, min=1, max=4096, help="torch CPU threads (null: torch's default)")
    eval_every: int = setting(
        125, min=1, allow_zero_as_off=True, help="STS-B dev every N steps, best checkpoint kept (SimCSE); 0 = off"
    )
    eval_batch_size: int = setting(128, min=1, max=MAX_CHUNK, help="encoding batch at evaluation")
    final_eval: bool = True  # 7-task STS test table of the best model at the end
    final_eval_pooler: str | None = None  # pooler for evaluation (default: cls -> cls_before_pooler)
    checkpoint_every: int = setting(
        125, min=1, allow_zero_as_off=True, help="resumable checkpoint every N steps (and at every evaluation); 0 = off"
    )
    keep_checkpoints: int = setting(2, min=1, help="keep the last k resumable checkpoints (the best model apart)")
    log_every: int = setting(1, min=1, help="metrics log every N steps")
    paradigm_every: int = setting(
        1, min=1, allow_zero_as_off=True, help="gradient-paradigm statistics (GD, W, R) every N steps; 0 = off"
    )
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
    cache_chunk_size: int | None = setting(
        None, min=1, max=MAX_CHUNK, help="GradCache: embed the batch in chunks of this size; null = off"
    )
    max_grad_norm: float | None = setting(None, gt=0, help="gradient clipping norm; null = off")
    fused_adamw: bool = True  # fused AdamW kernel where the device has it (CPU, CUDA); false = torch's default loop
    mlm_weight: float = setting(
        0.0, min=0, max=100.0, help="SimCSE's MLM auxiliary loss weight (SimCSE: 0.1), needs an MLM head; 0 = off"
    )  # csrl.train.mlm_aux
    diffcse_weight: float = setting(
        0.0,
        min=0,
        max=100.0,
        help="DiffCSE's conditional replaced-token-detection loss weight lambda (paper, BERT: 0.005), needs "
        "train.diffcse_generator; 0 = off",
    )  # csrl.train.diffcse
    diffcse_generator: str | None = None  # DiffCSE's frozen MLM generator (folder or Hub id), same vocabulary
    diffcse_mask_ratio: float = setting(
        0.3, gt=0, max=1.0, help="DiffCSE: fraction of the tokens masked for the generator (paper, BERT: 0.3)"
    )
    on_nonfinite: str = setting("stop", choices=("stop", "skip"), help="what a NaN/Inf loss or gradient does")
    max_nonfinite_skips: int = setting(
        20, min=1, help="skip mode: stop after this many consecutive non-finite steps (default 20)"
    )
    compile: str = setting(
        "off",
        choices=COMPILE_MODES,
        help="torch.compile the backbone: off, default, or reduce-overhead (length buckets + CUDA graphs on GPU, "
        "csrl.train.compile); true/false (older configs) read as default/off",
    )
    compile_backend: str = setting(
        "inductor",
        choices=COMPILE_BACKENDS,
        help="torch.compile backend (aot_eager/eager: fast to compile, for tests; CUDA graphs need inductor)",
    )
    length_buckets: tuple[int, ...] | None = setting(
        None,
        min=1,
        max=MAX_TOKENS,
        help="pad training batches to the smallest of these lengths (increasing, data.max_length added last); "
        "null: under compile=reduce-overhead multiples of 8*ceil(max_length/64), else no buckets",
    )
    progress: bool = True  # progress bar
    report_to: tuple[str, ...] = ("tensorboard",)  # trackers: tensorboard, wandb, mlflow (csrl.train.trackers)
    tracking_project: str = "csrl"  # W&B project / MLflow experiment name


@dataclass(frozen=True)
class RunConfig:
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = setting(
        "runs/simcse", path="output_dir", help="run folder (config, metrics, checkpoints, best model, results)"
    )

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
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis and len(value) != len(args):  # tuple[int, int]: a fixed length
            raise CsrlError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        inner = args[0] if args else Any
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

LEGACY_VALUES: dict[str, dict[bool, str]] = {"train.compile": {True: "default", False: "off"}}
"""Values of keys whose type changed, read as what they meant: ``train.compile`` was a boolean (true: plain
``torch.compile``), so older configs, ``--set train.compile=true`` and the ``config.json`` of older runs,
which a resume reads and compares, keep working."""


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
        if full in LEGACY_VALUES and isinstance(value, bool):
            value = LEGACY_VALUES[full][value]
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
        if isinstance(checked[k], float) and not math.isfinite(checked[k]):
            raise CsrlError(f"loss.{k} must be a finite number, got {checked[k]!r}", hint=f"parameters of {name!r}")
    from csrl.losses.registry import build_loss

    build_loss(cfg.name, **checked)  # value checks (ranges) live in the loss classes
    del params
    return LossConfig(cfg.name, checked)


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``cfg`` (nested sections too) against the schema in its metadata.

    The schema (:data:`csrl.utils.checks.SCHEMA_KEYS`) is declared once, beside the field, with
    :func:`~csrl.utils.checks.setting`; a float is refused when NaN or infinite unless it declares
    ``allow_nonfinite``, schema or not. The error names the key, the value and the allowed range, with the
    field's help as the hint.
    """
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
            continue
        problem = value_problem(value, f.metadata)
        if problem is None:
            continue
        help_text = f.metadata.get("help")
        hint = f"{key}: {help_text}" if help_text else None
        if "path" in f.metadata:
            raise CsrlError(f"{key}: {value} {problem}", hint=hint)
        raise CsrlError(f"{key} {problem}, got {value!r}", hint=hint)


def _validate(cfg: RunConfig) -> RunConfig:
    t = cfg.train
    from csrl.train.trackers import check_tracker_names

    check_tracker_names(t.report_to)
    check_ranges(cfg)  # every field against the range its metadata declares (csrl.utils.checks.SCHEMA_KEYS)
    check_probe_schedule(t.dynamics_every, t.dynamics_early_every, t.log_every)
    from csrl.models.pooling import canonical_pooler

    if cfg.model.pooler != "auto":
        canonical_pooler(cfg.model.pooler)
    cfg.model.resolved_head()
    if t.final_eval_pooler is not None:
        canonical_pooler(t.final_eval_pooler)
    if t.mlm_weight and t.cache_chunk_size is not None:
        raise CsrlError(
            "train.mlm_weight > 0 with train.cache_chunk_size: the MLM auxiliary loss is not cached yet",
            hint="use one of the two (train.cache_chunk_size=null, or train.mlm_weight=0)",
        )
    _check_diffcse(cfg)  # csrl.train.diffcse
    _check_compile(cfg)
    _check_prompt_pooler(cfg)
    return dataclasses.replace(cfg, loss=_check_loss(cfg.loss))


def _check_diffcse(cfg: RunConfig) -> None:
    """DiffCSE's settings: a generator when the weight is on, and no GradCache (the RTD term is not cached)."""
    t = cfg.train
    if not t.diffcse_weight:
        return
    if not t.diffcse_generator:
        raise CsrlError(
            "train.diffcse_weight > 0 needs train.diffcse_generator: the frozen masked LM that fills the masks",
            hint="make one with csrl pretrain configs/pretrain-mlm-cpu.yaml and set "
            "train.diffcse_generator=runs/pretrain-mlm-cpu/model (any *ForMaskedLM sharing the encoder's vocabulary)",
        )
    if t.cache_chunk_size is not None:
        raise CsrlError(
            "train.diffcse_weight > 0 with train.cache_chunk_size: DiffCSE's RTD loss is not cached",
            hint="use one of the two (train.cache_chunk_size=null, or train.diffcse_weight=0)",
        )


def _check_prompt_pooler(cfg: RunConfig) -> None:
    """PromptBERT's settings without its pooler (they would do nothing), and the prompt pooler with length
    buckets (its rows are the template's tokens plus a sentence of up to data.max_length, longer than any bucket)."""
    m, t = cfg.model, cfg.train
    from csrl.models.pooling import canonical_pooler

    prompt = m.pooler != "auto" and canonical_pooler(m.pooler) == "prompt"
    if m.pooler != "auto" and not prompt:
        for key in ("prompt_denoise", "prompt_template_view2", "prompt_denoise_at_inference"):
            if getattr(m, key) not in (None, False):
                raise CsrlError(
                    f"model.{key} is set but model.pooler is {m.pooler!r}: it only applies to the prompt pooler",
                    hint="set model.pooler=prompt (PromptBERT), or leave model.prompt_* at their defaults",
                )
    if prompt and (t.length_buckets is not None or t.compile == "reduce-overhead"):
        raise CsrlError(
            "model.pooler=prompt with length buckets (train.length_buckets or train.compile=reduce-overhead): a "
            "prompt row holds the template's tokens on top of up to data.max_length sentence tokens",
            hint="use train.compile=off or default, and train.length_buckets=null",
        )


def _check_compile(cfg: RunConfig) -> None:
    """Length buckets that are not a few increasing lengths up to ``data.max_length``, and GradCache under
    CUDA graphs (:mod:`csrl.train.compile`)."""
    t, longest = cfg.train, cfg.data.max_length
    buckets = t.length_buckets
    if buckets is not None and (
        not buckets or any(a >= b for a, b in zip(buckets, buckets[1:], strict=False)) or buckets[-1] > longest
    ):
        raise CsrlError(
            f"train.length_buckets={list(buckets)} must be increasing lengths up to data.max_length={longest} "
            "(no row is longer, so a longer bucket would never be used; data.max_length is added last)",
            hint=f"e.g. train.length_buckets=[{', '.join(str(b) for b in range(8, longest + 1, 8)) or longest}], "
            "or null for the default",
        )
    if t.compile == "reduce-overhead" and t.cache_chunk_size is not None:
        raise CsrlError(
            "train.compile=reduce-overhead with train.cache_chunk_size: GradCache's chunks (a shorter last one, "
            "forwards without and with a graph, replayed dropout RNG) do not fit fixed-shape CUDA graphs",
            hint="use train.compile=default with GradCache, or train.cache_chunk_size=null",
        )


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


def merge_recipes(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, mapping by mapping (a section keeps the base's keys ``over`` does not set);
    a ``loss`` of another name replaces the base's loss section (its parameters belong to the other loss)."""
    out = json.loads(json.dumps(dict(base)))  # deep copy of plain data
    for key, value in over.items():
        old = out.get(key)
        other_loss = key == "loss" and isinstance(old, Mapping) and isinstance(value, Mapping) and (
            value.get("name", old.get("name")) != old.get("name"))  # fmt: skip
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not other_loss:
            out[key] = merge_recipes(old, value)
        else:
            out[key] = json.loads(json.dumps(value))
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


def read_recipe(path: Path, *, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A training recipe as plain data. ``base: other.yaml`` (relative to this file) starts from another
    recipe: this file's keys are merged on top of it (:func:`merge_recipes`); bases may chain, not loop."""
    data = read_yaml(path)
    if "base" not in data:
        return data
    ref = data.pop("base")
    if not isinstance(ref, str) or not ref.strip():
        raise CsrlError(f"{path}: base must be the path of another recipe, got {ref!r}")
    target = Path(ref).expanduser()
    target = target if target.is_absolute() else path.parent / target
    seen = (*_seen, path.resolve())
    if target.resolve() in seen:
        raise CsrlError(f"{path}: base {ref} leads back to {target}: the recipes' bases form a loop")
    if not target.is_file():
        raise CsrlError(f"{path}: base recipe {target} does not exist", hint="base paths are relative to the recipe")
    return merge_recipes(read_recipe(target, _seen=seen), data)


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from nested plain data."""
    raw = dict(raw)
    if "model" in raw and isinstance(raw["model"], Mapping) and "first_last_layers" in raw["model"]:
        raw["model"] = {**raw["model"], "first_last_layers": tuple(raw["model"]["first_last_layers"])}
    cfg = _build(RunConfig, raw, "")
    return _validate(cfg)


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    raw = read_recipe(path) if path is not None else {}
    return build_config(apply_overrides(raw, overrides))


_T = typing.TypeVar("_T")


def build_section(cls: type[_T], raw: Mapping[str, Any], prefix: str = "") -> _T:
    """The dataclass ``cls`` built from ``raw`` with the checks of a config section: unknown keys (with
    suggestions) and value types raise :class:`~csrl.errors.CsrlError`; ``prefix`` names the section in
    messages (e.g. ``"sweep."``). Used for settings sections outside :class:`RunConfig`. Fields declared with
    :func:`~csrl.utils.checks.setting` are range-checked (:func:`check_ranges`)."""
    section = _build(cls, raw, prefix)
    check_ranges(section, prefix)
    return section


# --------------------------------------------------------------------------- resuming
RESUME_CADENCE_KEYS = frozenset({
    "train.log_every", "train.eval_every", "train.eval_batch_size", "train.final_eval", "train.final_eval_pooler",
    "train.checkpoint_every", "train.keep_checkpoints", "train.paradigm_every", "train.dynamics_every",
    "train.dynamics_probe_size", "train.dynamics_early_every", "train.dynamics_early_until", "train.progress",
    "train.num_threads", "train.compile", "train.compile_backend",
    "train.length_buckets", "train.on_nonfinite",
    "train.max_nonfinite_skips", "train.report_to", "train.tracking_project",
})  # fmt: skip
"""Keys a resumed run may change: when it logs, evaluates, checkpoints and reports, its threads and
compilation, and what it does on a non-finite step. They change no finite update, so the resumed run
follows the trajectory it started on; the change is recorded in ``RUN_DIR/resume_log.jsonl``. (Compilation
and its length buckets change the bits, not the objective: inductor draws its dropout masks from its own
generator, and padding changes the shapes dropout draws for, so masks differ but are equally distributed.)

Every other key (model, loss and its parameters, data, batch size, lr, warm-up, schedule length, precision,
seed, device, clipping, and ``train.cache_chunk_size``, whose chunks draw different dropout masks) would
change the trajectory, and a resume that changes it is refused. A key added later is refused by default."""

RESUME_CONTENT_KEYS = frozenset({"output_dir", "data.train_files"})
"""Compared by what they point to, not by their text: the run folder is the run; the training files are
compared by their sha256 (``RUN_DIR/data_fingerprint.json``)."""


def resume_changes(
    saved: Mapping[str, Any], new: Mapping[str, Any], *, absent: Any = None
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """The differences between a run's saved config and the config it is resumed with (both as
    :meth:`RunConfig.to_dict`), split into ``(refused, allowed)``; each maps a dotted key to ``(old, new)``,
    with ``absent`` for a key only one side has. Allowed: :data:`RESUME_CADENCE_KEYS`."""
    a, b = flatten(saved), flatten(new)
    refused: dict[str, tuple[Any, Any]] = {}
    allowed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        old, now = a.get(key, absent), b.get(key, absent)
        if key in RESUME_CONTENT_KEYS or (key in a and key in b and old == now):
            continue
        (allowed if key in RESUME_CADENCE_KEYS else refused)[key] = (old, now)
    return refused, allowed
