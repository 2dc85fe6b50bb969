"""The Python API: the few functions most users need, each the library function behind a CLI command.

(``train_encoder``/``evaluate_encoder``/``pretrain_encoder``, not ``train``/``evaluate``/``pretrain``: those
names are csrl's subpackages, which Python binds as attributes of ``csrl`` once they are imported.)

``import csrl`` exposes them lazily (importing csrl stays cheap); see ``docs/api.md`` for examples,
which run in the test suite.

======================  =====================================================================
``load_encoder``        a model folder, Hub id or ``embedded:all-MiniLM-L6-v2`` -> :class:`Encoder`
``encode``              sentences -> ``(n, dim)`` array, from a name or any encoder object
``evaluate_encoder``    STS (SentEval protocol) and transfer tasks for a name, a csrl encoder, a
                        ``SentenceTransformer`` or any ``list[str] -> array`` callable
``train_encoder``       a run from a :class:`RunConfig`, a dict (``--set`` keys or sections) or a
                        YAML path; callbacks; a loss object
``analyze``             the geometry suite (``csrl analyze``)
``compare_analyses``    saved analyses side by side: tables and one figure (``csrl analyze-compare``)
``simulate_paradigm``   paper B's GD/W/R simulation (``csrl paradigm simulate``)
``pretrain_encoder``    masked-LM pretraining (``csrl pretrain``)
``pretrain_init``       a pretraining recipe's untrained initial weights (``csrl pretrain --init-only``)
``write_report``        one HTML page for run/sweep folders, in training order (``csrl report``)
``push_to_hub``         upload a run's best model (``csrl push``)
``fit_posthoc``         BERT-whitening / all-but-the-top fitted on a corpus, saved in a model folder
                        (``csrl posthoc fit``)
======================  =====================================================================
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from csrl.errors import CsrlError
from csrl.evaluate.encoders import as_encode_fn
from csrl.losses.registry import register_loss_class
from csrl.losses.simulate import simulate as simulate_paradigm
from csrl.models.encoder import Encoder, load_encoder
from csrl.models.posthoc import fit_posthoc
from csrl.pipelines.analyze import analyze_model as analyze
from csrl.pipelines.analyze import compare_analyses
from csrl.pipelines.evaluate import Evaluation, evaluate_model
from csrl.pipelines.evaluate_any import evaluate_encoder as _evaluate_object
from csrl.pipelines.pretrain import pretrain_init
from csrl.pipelines.pretrain import pretrain_run as pretrain_encoder
from csrl.pipelines.push import push_to_hub
from csrl.report.html import write_report
from csrl.train.callbacks import Callback
from csrl.train.config import LossConfig, RunConfig, apply_overrides, build_config, load_config
from csrl.train.loop import RunResult
from csrl.train.loop import train as _train_loop
from csrl.utils.dotted import set_dotted
from csrl.utils.precision import autocast_dtype, resolve_precision

__all__ = [
    "analyze",
    "as_config",
    "compare_analyses",
    "encode",
    "evaluate_encoder",
    "fit_posthoc",
    "load_encoder",
    "pretrain_init",
    "pretrain_encoder",
    "push_to_hub",
    "simulate_paradigm",
    "train_encoder",
    "write_report",
]


def encode(
    model: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 128,
    normalize: bool = False,
    pooler: str | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Embed ``sentences`` with ``model``: a name (loaded with :func:`load_encoder`), a csrl
    :class:`Encoder`, a ``SentenceTransformer`` or a ``list[str] -> array`` callable."""
    if isinstance(model, str | Path):
        model = load_encoder(str(model), pooler=pooler)
    if isinstance(model, Encoder):
        dtype = autocast_dtype(resolve_precision(precision, model.device), model.device.type)
        return model.encode(list(sentences), batch_size=batch_size, normalize=normalize, autocast_dtype=dtype)
    return as_encode_fn(model, batch_size=batch_size, normalize=normalize)(list(sentences))


def evaluate_encoder(
    model: Any, *, data_dir: Path | str | None = None, tasks: str = "sts", **kwargs: Any
) -> Evaluation:
    """STS (and with ``tasks="sts,transfer"`` the transfer tasks) exactly as ``csrl eval`` computes them.

    ``model``: a name (``pooler``, ``precision``, ``device`` apply, see
    :func:`~csrl.pipelines.evaluate.evaluate_model`) or an encoder object (a csrl :class:`Encoder`, a
    ``SentenceTransformer``, a ``list[str] -> array`` callable or SentEval's ``batcher(params, batch)``; see
    :func:`~csrl.pipelines.evaluate_any.evaluate_encoder`). ``cache=True`` (the default folder, as for
    ``csrl eval``), a folder or an ``EmbeddingCache`` reuses the embeddings of an unchanged model and settings
    (:mod:`csrl.evaluate.embed_cache`); the default ``False`` encodes every time and writes nothing.
    ``dims=(64, 128)`` adds STS on the first m coordinates for each m (``result.sts_dims``, as ``csrl eval --dims``).
    """
    root = Path(data_dir) if data_dir is not None else None
    if isinstance(model, str | Path):
        return evaluate_model(str(model), data_dir=root, tasks=tasks, **kwargs)
    return _evaluate_object(model, data_dir=root, tasks=tasks, **kwargs)


def as_config(config: RunConfig | Mapping[str, Any] | str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """A checked :class:`RunConfig` from a config object, a YAML path, or a dict.

    A dict may hold sections (``{"train": {"lr": 1e-5}}``) or dotted keys as in ``--set``
    (``{"train.lr": 1e-5, "loss.temperature": 0.1}``), or both. ``overrides`` are ``--set`` strings applied last.
    """
    if config is None or isinstance(config, str | Path):
        return load_config(None if config is None else Path(config), overrides)
    raw: dict[str, Any]
    if isinstance(config, RunConfig):
        raw = config.to_dict()
    elif isinstance(config, Mapping):
        raw = {}
        for key, value in config.items():
            if "." in key:
                set_dotted(raw, key, value)
            elif isinstance(value, Mapping) and isinstance(raw.get(key), dict):
                raw[key].update(value)
            else:
                raw[key] = dict(value) if isinstance(value, Mapping) else value
    else:
        raise CsrlError(f"a config must be a RunConfig, a dict or a YAML path, got {type(config).__name__}")
    return build_config(apply_overrides(raw, overrides))


def _loss_config(loss: nn.Module) -> LossConfig:
    """Describe a loss object by its class (``module:QualName``) and the constructor arguments it keeps as
    attributes of the same name, so the run's ``config.json`` rebuilds the same loss (also on resume)."""
    cls = type(loss)
    name = register_loss_class(cls)
    params: dict[str, Any] = {}
    missing = []
    for key, p in inspect.signature(cls.__init__).parameters.items():
        if key == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if hasattr(loss, key):
            params[key] = getattr(loss, key)
        elif p.default is inspect.Parameter.empty:
            missing.append(key)
    if missing or "." in cls.__qualname__:
        raise CsrlError(
            f"the loss object {cls.__name__} cannot be recorded in the run's config "
            f"({'constructor arguments not kept as attributes: ' + ', '.join(missing) if missing else 'nested class'})",
            hint="keep every __init__ argument as an attribute of the same name (self.temperature = temperature), "
            "define the class at module level, or pass loss.name='package.module:Class' in the config instead",
        )
    return LossConfig(name, params)


def train_encoder(
    config: RunConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    loss: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
    data_dir: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    eval_before: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> RunResult:
    """Train a run (see :func:`as_config` for ``config``) and return its :class:`RunResult`.

    ``loss``: a loss object (an ``nn.Module`` whose ``forward(z1, z2, hard_neg=None)`` returns a
    :class:`~csrl.losses.LossOutput`); the run trains with it and records it in ``config.json`` as
    ``module:Class`` with its hyper-parameters (see :func:`_loss_config`). ``callbacks`` see every logged
    step (:class:`~csrl.train.callbacks.StepInfo`) and may return values to log.
    """
    cfg = as_config(config, overrides)
    if loss is not None:
        cfg = build_config(dataclasses.replace(cfg, loss=_loss_config(loss)).to_dict())
    root = Path(data_dir) if data_dir is not None else None
    return _train_loop(cfg, data_dir=root, resume=resume, overwrite=overwrite, callbacks=callbacks,
                       eval_before=eval_before, log=log, loss=loss)  # fmt: skip
