"""``csrl analyze`` as a library function: a model's embedding geometry on a sentence set, end to end.

Load the sentences (a list, a text file, or STS-B test ``sentence1``, paper A's analysis set), the
encoder's token states on every layer, the positive pairs for alignment (STS-B test pairs with gold above
the threshold; skipped when STS-B is absent), then every registered metric
(:func:`csrl.analysis.suite.analyze_token_states`); optionally write ``analysis.json`` and the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from csrl.analysis.function_words import tokenizer_vocab
from csrl.analysis.registry import metrics
from csrl.analysis.suite import AnalysisResult, analyze_sentence_embeddings, analyze_token_states, encode_pairs
from csrl.data.corpora import read_lines
from csrl.data.sts import POSITIVE_THRESHOLD, load_analysis_sentences, load_positive_pairs
from csrl.errors import CsrlError
from csrl.models.encoder import Encoder, load_encoder, pooler_override
from csrl.utils.io import atomic_write_text
from csrl.utils.precision import autocast_dtype, resolve_precision

STSB_SOURCE = "STS-B test sentence1 (sts/stsb/raw/sts-test.csv, cased)"


def read_sentence_file(path: Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file, split on ``\\n`` only (:func:`csrl.data.corpora.read_lines`:
    other line breaks inside a line are an error); blank lines are skipped."""
    return [s for s in read_lines(path, what="sentence file") if s.strip()]


def analysis_sentences(
    sentences: Sequence[str] | Path | None, data_dir: Path | None, limit: int | None
) -> tuple[list[str], str]:
    """(sentences, where they came from): a list as given, a file's non-blank lines, or STS-B test sentence1."""
    if sentences is None:
        texts, source = load_analysis_sentences(data_dir), STSB_SOURCE
    elif isinstance(sentences, Path):
        texts, source = read_sentence_file(sentences), str(sentences)
    else:
        texts, source = list(sentences), f"{len(sentences)} sentences given"
    if limit:
        texts = texts[:limit]
    if len(texts) < 2:
        raise CsrlError(f"need at least 2 sentences to analyze, got {len(texts)}")
    return texts, source


def _positive_pairs(
    enc: Encoder,
    data_dir: Path | None,
    threshold: float,
    batch_size: int,
    dtype: torch.dtype | None = None,
    *,
    tail: bool = True,
) -> tuple[Tensor, Tensor] | None:
    """STS-B test positives encoded as :meth:`Encoder.encode` does (``tail``), or as the pooled vector before
    the folder's post-pooling modules (``tail=False``: what ``token_states``'s ``pooled`` is)."""
    try:
        xs, ys = load_positive_pairs(data_dir, threshold)
    except CsrlError:
        return None  # no STS-B: alignment is skipped
    saved = enc.tail
    if not tail:
        enc.tail = nn.ModuleList()
    try:
        return encode_pairs(lambda s: enc.encode(s, batch_size=batch_size, autocast_dtype=dtype), xs, ys)
    finally:
        enc.tail = saved


def _after_tail(enc: Encoder, pooled: Tensor, pairs: tuple[Tensor, Tensor] | None) -> dict[str, Any] | None:
    """The sentence-level metrics after the folder's post-pooling modules (``Dense``, ``Normalize``, a fitted
    whitening or all-but-the-top: ``csrl posthoc fit``), or None for a folder without any."""
    if not len(enc.tail) or pooled.shape[0] < 2:
        return None
    with torch.inference_mode():
        after = enc.apply_tail(pooled.to(enc.device)).float().cpu()
    res = analyze_sentence_embeddings(after, positive_pairs=pairs)
    return {"modules": [type(m).__name__ for m in enc.tail], "dim": res.dim, **res.values}


def analyze_model(
    model: str | Encoder,
    *,
    sentences: Sequence[str] | Path | None = None,
    data_dir: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    positive_threshold: float = POSITIVE_THRESHOLD,
    batch_size: int = 64,
    pooler: str | None = None,
    out_dir: Path | str | None = None,
    precision: str = "fp32",
) -> AnalysisResult:
    """The geometry suite of ``model`` (a folder, Hub id, ``embedded:...``, or a loaded :class:`Encoder`).

    sentences: a list, a text file (one per line, blank lines skipped), or None for STS-B test sentence1
    from ``data_dir`` (None: the default data folder). limit: only the first N (None or 0: all).
    seed: the anisotropy token draw. positive_threshold: alignment positives are STS-B test pairs with
    gold above it. batch_size: sentences per forward pass. pooler: override the model's pooler (for a
    loaded encoder only during the call). out_dir: write the figures, then ``analysis.json``. precision: of
    the forward passes (fp32; ``auto``, bf16, fp16: autocast; the metrics are computed in fp32).
    ``result.extra`` records the model, pooler, sentence source, the seconds of the forward pass, the
    positive pairs and the metrics, and the figure files.
    """
    texts, source = analysis_sentences(sentences, data_dir, limit)
    if isinstance(model, str):
        enc, name, override = load_encoder(model, pooler=pooler), model, None
    else:
        enc, name, override = model, model.config.model, pooler
    precision = resolve_precision(precision, enc.device, setting="--precision")
    dtype = autocast_dtype(precision, enc.device.type, setting="--precision")
    with pooler_override(enc, override):
        t0 = time.perf_counter()
        with torch.autocast(enc.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            states = enc.token_states(texts, batch_size=batch_size)
        t1 = time.perf_counter()
        # the sentence-level metrics of the pooled vector (before the tail), with positives encoded the same way
        pairs = _positive_pairs(enc, data_dir, positive_threshold, batch_size, dtype, tail=False)
        after_pairs = _positive_pairs(enc, data_dir, positive_threshold, batch_size, dtype) if len(enc.tail) else None
        t2 = time.perf_counter()
        vocab, special_tokens = tokenizer_vocab(enc.tokenizer)
        result = analyze_token_states(
            states, vocab=vocab, special_tokens=special_tokens, seed=seed, positive_pairs=pairs
        )
        after = _after_tail(enc, states.pooled, after_pairs) if states.pooled is not None else None
        if after is not None:
            result.extra["sentence_after_tail"] = after
        t3 = time.perf_counter()
        result.extra.update(
            {
                "model": name,
                "pooler": enc.pooler,
                "precision": precision,
                "sentences": source,
                "seconds_forward": t1 - t0,
                "seconds_positive_pairs": t2 - t1,
                "seconds_metrics": t3 - t2,
            }
        )
    if out_dir is not None:
        from csrl.analysis.plots import save_all_plots  # matplotlib only when figures are written

        out = Path(out_dir)
        result.extra["figures"] = [p.name for p in save_all_plots(result, out)]
        atomic_write_text(out / "analysis.json", result.to_json(indent=2))
    return result


def compare_analyses(named: Mapping[str, Path | str], out_dir: Path | str | None = None) -> str:
    """Several saved analyses (``csrl analyze --out DIR`` folders or their ``analysis.json``) side by side:
    per-metric Markdown tables (a column per name) and, with ``out_dir``, ``layer_metrics_compare.png`` (every
    model on the same per-layer panels). Models of different depths share the layer axis from 0."""
    from csrl.analysis.tables import compare_tables_markdown

    if len(named) < 2:
        raise CsrlError("comparing analyses needs at least two NAME=PATH", hint="e.g. raw=runs/a mlm=runs/b")
    results = {}
    for name, where in named.items():
        path = Path(where)
        path = path / "analysis.json" if path.is_dir() else path
        if not path.is_file():
            raise CsrlError(f"{path}: no analysis.json", hint="run csrl analyze MODEL --out DIR first")
        try:
            result = AnalysisResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
            for m in metrics("layer"):
                if m.column is not None and len(result.layer_values(m.key)) != result.n_layers:
                    raise ValueError(f"{m.key} has {len(result.layer_values(m.key))} layers, not {result.n_layers}")
            results[name] = result
        except (ValueError, KeyError, TypeError) as exc:
            raise CsrlError(f"{path} is not a csrl analysis ({exc})", hint="pass the analysis.json of csrl analyze")
    if out_dir is not None:
        from csrl.analysis.plots import plot_layer_metrics

        plot_layer_metrics(results, Path(out_dir) / "layer_metrics_compare.png")
    return compare_tables_markdown(results)


__all__ = ["STSB_SOURCE", "analysis_sentences", "analyze_model", "compare_analyses", "read_sentence_file"]
