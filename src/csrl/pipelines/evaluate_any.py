"""Evaluate any encoder object the way ``csrl eval`` evaluates a model folder.

:func:`evaluate_encoder` takes what :func:`csrl.evaluate.encoders.as_encode_fn` takes (a csrl ``Encoder``, a
``sentence_transformers.SentenceTransformer``, a function ``list[str] -> array``, SentEval's
``batcher(params, batch)``) and runs the same data check, STS protocol and transfer probes as
:func:`csrl.pipelines.evaluate.evaluate_model`, returning the same :class:`~csrl.pipelines.evaluate.Evaluation`.
The object is used as it is: its device, dtype and train/eval mode are the caller's (csrl's ``Encoder``
switches itself to eval mode while encoding; put other torch models in ``eval()`` first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.evaluate.embed_cache import EmbeddingCache, cached_encode
from csrl.evaluate.encoders import as_encode_fn, describe_encoder, encoder_kind
from csrl.evaluate.sts import AGGREGATES
from csrl.pipelines.evaluate import Evaluation, checked_data, parse_task_groups, run_task_groups

__all__ = ["evaluate_encoder"]


def evaluate_encoder(
    model: Any,
    *,
    data_dir: Path | None,
    tasks: str = "sts",
    aggregate: str = "all",
    protocol: str = "fasttest",
    mrpc_features: str = "senteval",
    batch_size: int = 128,
    normalize: bool = False,
    label: str | None = None,
    output: Path | str | None = None,
    strict: bool = False,
    show_progress: bool | None = None,
    cache: bool | str | Path | EmbeddingCache | None = False,
    dims: Sequence[int] = (),
) -> Evaluation:
    """Evaluate an encoder object on the task groups in ``tasks`` (``sts``, ``transfer``); JSON to ``output``.

    ``label`` names the row of the results table (default: the object's type, e.g. ``SentenceTransformer``).
    ``Evaluation.pooler`` is a csrl encoder's pooler, else the kind of object (``sentence-transformers``,
    ``function``, ``senteval-batcher``, ``encode-method``); ``Evaluation.precision`` is ``native`` (whatever
    the object computes in). ``cache`` (a csrl ``Encoder`` or a ``SentenceTransformer`` only: a function's
    weights cannot be fingerprinted), ``dims`` (checked against the width of the first embeddings) and the
    other arguments as for
    :func:`~csrl.pipelines.evaluate.evaluate_model`.
    Raises :class:`CsrlError` for an object it cannot use (before any data is read) and for bad outputs.
    """
    groups = parse_task_groups(tasks)
    if aggregate not in AGGREGATES:
        raise CsrlError(f"unknown aggregate {aggregate!r}", hint=f"use one of {', '.join(AGGREGATES)}")
    kind = encoder_kind(model)
    plain = as_encode_fn(model, batch_size=batch_size, normalize=normalize, show_progress=show_progress)
    settings = {"call": "as_encode_fn", "kind": kind, "batch_size": batch_size, "normalize": normalize}
    encode = cached_encode(model, plain, settings, cache)
    root, check = checked_data(data_dir, groups, strict=strict)
    pooler = getattr(model, "pooler", None)
    result = Evaluation(
        label or describe_encoder(model, kind=kind),
        pooler if isinstance(pooler, str) else kind,
        "native",
        aggregate,
    )
    result.data_check = check
    result.embedding_cache = encode.stats
    return run_task_groups(
        result, encode, groups, root, protocol=protocol, mrpc_features=mrpc_features, output=output, dims=dims
    )
