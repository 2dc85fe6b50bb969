"""``csrl pretrain`` as a library function: resolve the config (a recipe, or a run folder to resume), pretrain."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from csrl.errors import CsrlError
from csrl.pretrain.config import PretrainConfig, build_pretrain_config, load_pretrain_config
from csrl.pretrain.loop import PretrainResult, pretrain
from csrl.pretrain.setup import StepCallback
from csrl.train.config import apply_overrides

__all__ = ["pretrain_init", "pretrain_run", "resolve_pretrain_config"]


def resolve_pretrain_config(
    config: Path | str | None,
    overrides: Sequence[str] = (),
    *,
    resume: Path | str | None = None,
    output_dir: Path | str | None = None,
) -> PretrainConfig:
    """The checked :class:`PretrainConfig` of a new run (``config``: a YAML recipe) or of a run to resume
    (``RUN_DIR/config.json`` with ``overrides`` on top; the run keeps its folder)."""
    extra = list(overrides)
    if output_dir is not None:
        extra.append(f"output_dir={output_dir}")
    if resume is not None:
        run = Path(resume)
        if not (run / "config.json").is_file():
            raise CsrlError(f"cannot resume: {run}/config.json not found", hint="pass the folder of a started run")
        raw = json.loads((run / "config.json").read_text(encoding="utf-8"))
        return build_pretrain_config(apply_overrides(raw, [*extra, f"output_dir={run}"]))
    if config is None:
        raise CsrlError(
            "csrl pretrain needs a CONFIG file (or --resume RUN_DIR)",
            hint="e.g. csrl pretrain configs/pretrain-mlm-cpu.yaml",
        )
    return load_pretrain_config(Path(config), extra)


def pretrain_run(
    config: Path | str | None,
    overrides: Sequence[str] = (),
    *,
    resume: Path | str | None = None,
    output_dir: Path | str | None = None,
    data_dir: Path | None = None,
    callbacks: Sequence[StepCallback] = (),
) -> PretrainResult:
    """Resolve the config and pretrain (or resume) the run; see :func:`csrl.pretrain.loop.pretrain`."""
    cfg = resolve_pretrain_config(config, overrides, resume=resume, output_dir=output_dir)
    return pretrain(cfg, data_dir=data_dir, resume=resume is not None, callbacks=callbacks)


def pretrain_init(
    config: Path | str | None,
    overrides: Sequence[str] = (),
    *,
    output_dir: Path | str | None = None,
) -> Path:
    """Save the recipe's initial model, untrained, to ``<output_dir>/model`` and return that folder.

    The weights are those :func:`pretrain` starts from (``train.seed``, the recipe's size; ``model.init_from``
    when continuing), so the folder is the random-init baseline of a run: its geometry is what pretraining
    starts from (a random transformer is itself anisotropic). No data is read; the folder loads with
    ``AutoModelForMaskedLM``/``AutoModel`` and is a model for ``csrl eval``/``analyze``/``train``.
    """
    from csrl.pretrain.model import build_tokenizer, save_mlm
    from csrl.pretrain.setup import initial_mlm

    cfg = resolve_pretrain_config(config, overrides, output_dir=output_dir)
    out = Path(cfg.output_dir) / "model"
    if out.exists():
        raise CsrlError(f"{out} exists", hint="choose another --output-dir; csrl never overwrites a model folder")
    tokenizer = build_tokenizer(cfg)
    mlm = initial_mlm(cfg, tokenizer)
    m = cfg.model
    card = (
        f"# Untrained masked LM (random initialisation, seed {cfg.train.seed})\n\n"
        f"Made by `csrl pretrain --init-only`: {m.layers} layers x {m.hidden} hidden ({m.heads} heads, feed-forward "
        f"{m.intermediate}), the initial weights of the recipe's pretraining run; no training step was taken.\n"
    )
    return save_mlm(mlm, tokenizer, out, card=card)
