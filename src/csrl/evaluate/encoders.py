"""Any encoder as the one thing csrl's evaluations call: ``encode(sentences) -> (n, dim)`` float32 array.

:func:`as_encode_fn` accepts (checked in this order, by duck typing: this package imports no model code):

* **an object with an ``encode`` method**:

  - a ``sentence_transformers.SentenceTransformer`` (recognised by ``encode(..., convert_to_numpy=...)``):
    ``model.encode(sentences, batch_size=..., convert_to_numpy=True)``, one call; the model's own modules
    (pooling, ``Normalize``, ``Dense``) apply, and no prompt (the default ``prompt=None``);
  - a csrl :class:`~csrl.models.encoder.Encoder`, or anything else with ``encode(sentences, batch_size=...)``:
    one call with every sentence (csrl's encoder sorts by length and batches itself); when the method takes
    ``progress=`` (csrl's does), it drives the progress bar;

* **a function** ``f(sentences: list[str]) -> array`` of shape ``(n, dim)`` (numpy, torch, nested lists),
  the SentEval batcher contract: called on consecutive chunks of ``batch_size`` sentences, in the given
  order;
* **SentEval's two-argument batcher** ``batcher(params, batch)``: a function with exactly two required
  positional parameters is called as SentEval calls it, with ``params`` a dict that also reads as attributes
  (``params.batch_size``, ``params.seed`` = 1111) and ``batch`` a list of token lists. The tokens are
  ``sentence.split()``: csrl's STS and transfer sentences are SentEval's ``' '.join(tokens)``, so a batcher
  that re-joins them (SimCSE's does) sees exactly SentEval's strings. SentEval's ``prepare`` step is not run.

Every call's output is checked: one finite row per sentence, else a :class:`~csrl.errors.CsrlError` that
says what came back. ``normalize=True`` scales rows to unit length (zero rows stay zero); cosine-based
scores (STS) do not change.

A model name (``str``) is not loaded here: use :func:`csrl.pipelines.evaluate.evaluate_model`, or load it
first (``csrl.models.encoder.load_encoder``, ``SentenceTransformer(...)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csrl.errors import CsrlError
from csrl.evaluate.sts import EncodeFn
from csrl.utils.progress import progress, progress_counter, progress_enabled

__all__ = ["SENTEVAL_SEED", "as_encode_fn", "describe_encoder", "encoder_kind"]

SENTEVAL_SEED = 1111  # SentEval's default params.seed
_WHAT_WORKS = (
    "pass a csrl Encoder (csrl.models.encoder.load_encoder), a sentence_transformers.SentenceTransformer, "
    "a function list[str] -> array (n, dim), or SentEval's batcher(params, batch)"
)


class _Params(dict[str, Any]):
    """SentEval's ``params``: a dict whose keys also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _method_parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return set()


def _required_positional(fn: Callable[..., Any]) -> int:
    """How many positional parameters ``fn`` needs (1 when its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def encoder_kind(model: object) -> str:
    """``"sentence-transformers"``, ``"encode-method"``, ``"function"`` or ``"senteval-batcher"``; raises
    :class:`CsrlError` for anything else (see the module docstring)."""
    if isinstance(model, str | Path):
        raise CsrlError(
            f"got the model name {str(model)!r}, not a model object",
            hint="evaluate a name with csrl.pipelines.evaluate.evaluate_model, or load it first "
            "(csrl.models.encoder.load_encoder(name) or SentenceTransformer(name))",
        )
    method = getattr(model, "encode", None)
    if callable(method):
        return "sentence-transformers" if "convert_to_numpy" in _method_parameters(method) else "encode-method"
    if callable(model) and hasattr(model, "forward") and hasattr(model, "state_dict"):
        raise CsrlError(
            f"a {type(model).__name__} module has no encode method: its forward takes tensors, not sentences",
            hint="load the folder with csrl.models.encoder.load_encoder or SentenceTransformer, or wrap the module "
            "in a function that tokenises, runs and pools: encode(sentences) -> array (n, dim)",
        )
    if callable(model):
        n = _required_positional(model)
        if n <= 1:
            return "function"
        if n == 2:
            return "senteval-batcher"
        raise CsrlError(
            f"{describe_encoder(model, kind='function')} needs {n} positional arguments",
            hint="an encode function takes the sentences (f(sentences)), or SentEval's batcher(params, batch)",
        )
    raise CsrlError(f"cannot encode sentences with a {type(model).__name__}: it has no encode method", hint=_WHAT_WORKS)


def describe_encoder(model: object, *, kind: str | None = None) -> str:
    """A short label for results tables: ``SentenceTransformer``, ``Encoder (mean)``, ``function my_encode``."""
    kind = kind or encoder_kind(model)
    if kind in ("function", "senteval-batcher"):
        name = getattr(model, "__qualname__", None) or type(model).__name__
        return f"{'SentEval batcher' if kind == 'senteval-batcher' else 'function'} {name}"
    pooler = getattr(model, "pooler", None)
    return f"{type(model).__name__} ({pooler})" if isinstance(pooler, str) else type(model).__name__


def _to_numpy(out: Any) -> Any:
    if hasattr(out, "detach"):  # a torch tensor (any device, any dtype)
        return out.detach().float().cpu().numpy()
    if isinstance(out, list | tuple) and out and hasattr(out[0], "detach"):
        return [_to_numpy(row) for row in out]
    return out


def _checked(out: Any, n: int, what: str) -> np.ndarray:
    """``out`` as an (n, dim) float32 array of finite values, or a :class:`CsrlError` saying what came back."""
    try:
        arr = np.asarray(_to_numpy(out), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise CsrlError(
            f"{what} returned a {type(out).__name__}, not an array of numbers ({e})",
            hint="return a numpy array or torch tensor of shape (number of sentences, dim)",
        ) from None
    if arr.ndim != 2 or arr.shape[0] != n:
        raise CsrlError(
            f"{what} returned shape {arr.shape} for {n} sentence(s); expected ({n}, dim)",
            hint="return one embedding row per input sentence, in order",
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CsrlError(
            f"{what} returned NaN or infinite values for {len(rows)} of {n} sentence(s) (first: row {rows[0]})",
            hint="check the model (a diverged checkpoint?) and its precision; fp16 overflows easily",
        )
    return arr


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def as_encode_fn(
    model: Any, *, batch_size: int = 128, normalize: bool = False, show_progress: bool | None = None
) -> EncodeFn:
    """``encode(sentences) -> (n, dim)`` float32 for a csrl ``Encoder``, a ``SentenceTransformer``, a function
    or SentEval's batcher (see the module docstring); what :func:`csrl.evaluate.sts.evaluate_sts` and
    :func:`csrl.evaluate.transfer.evaluate_transfer` take.

    ``batch_size``: sentences per forward (per call, for functions). ``show_progress``: a bar with ETA
    (None: on a terminal only, see :mod:`csrl.utils.progress`). Raises :class:`CsrlError` for an object it
    cannot use, and when a call returns the wrong shape or non-finite values.
    """
    if batch_size < 1:
        raise CsrlError(f"batch_size must be positive, got {batch_size}", hint="use e.g. batch_size=128")
    kind = encoder_kind(model)
    what = describe_encoder(model, kind=kind)

    def encode_all(sentences: list[str]) -> np.ndarray:
        if kind == "sentence-transformers":
            shown = progress_enabled(show_progress)
            out = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=shown)
            return _checked(out, len(sentences), what)
        if kind == "encode-method":
            if "progress" not in _method_parameters(model.encode):
                return _checked(model.encode(sentences, batch_size=batch_size), len(sentences), what)
            with progress_counter(len(sentences), "encode", show_progress, unit="sent") as update:
                return _checked(model.encode(sentences, batch_size=batch_size, progress=update), len(sentences), what)
        starts = range(0, len(sentences), batch_size)
        chunks = []
        for start in progress(starts, len(starts), "encode", show_progress, unit="batch"):
            batch = sentences[start : start + batch_size]
            if kind == "senteval-batcher":
                params = _Params(batch_size=batch_size, seed=SENTEVAL_SEED)
                out = model(params, [s.split() for s in batch])
            else:
                out = model(batch)
            chunks.append(_checked(out, len(batch), what))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def encode(sentences: Sequence[str]) -> np.ndarray:
        out = encode_all(list(sentences))
        return _unit_rows(out) if normalize else out

    return encode
