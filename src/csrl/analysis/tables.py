"""Text views of an :class:`~csrl.analysis.suite.AnalysisResult`, built from the metric registry.

``layer_table_markdown`` has one row per layer and one column per metric registered with a ``column``;
``sentence_summary`` holds the sentence-level metrics with a float value. ``csrl analyze`` prints both.
``compare_tables_markdown`` sets several models' analyses side by side (``csrl analyze-compare``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from csrl.analysis.registry import metrics
from csrl.analysis.suite import AnalysisResult


def layer_table_markdown(result: AnalysisResult) -> str:
    """Markdown table: ``| layer | <column> | ... |``, layer 0 = embedding output, cells in each metric's format."""
    cols = [m for m in metrics("layer") if m.column is not None]
    lines = [
        "| layer | " + " | ".join(str(m.column) for m in cols) + " |",
        "|---:|" + "---:|" * len(cols),
    ]
    for i in range(result.n_layers):
        cells = [format(m.plot_value(result.layer_values(m.key)[i]), m.fmt) for m in cols]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_tables_markdown(results: Mapping[str, AnalysisResult], keys: Sequence[str] | None = None) -> str:
    """One Markdown table per layer metric (``keys``: default every metric with a table column): a row per layer,
    a column per model (layers the models do not share are left empty)."""
    chosen = [m for m in metrics("layer") if m.column is not None and (keys is None or m.key in keys)]
    n = max(r.n_layers for r in results.values())
    out = []
    for m in chosen:
        lines = [f"{m.label} ({m.unit})" if m.unit else m.label, "",
                 "| layer | " + " | ".join(results) + " |", "|---:|" + "---:|" * len(results)]  # fmt: skip
        for i in range(n):
            cells = [format(m.plot_value(r.layer_values(m.key)[i]), m.fmt) if i < r.n_layers else ""
                     for r in results.values()]  # fmt: skip
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def sentence_summary(result: AnalysisResult) -> dict[str, float]:
    """Sentence-level metrics with a float value (lists and missing ones left out); empty without pooling."""
    if result.sentence is None:
        return {}
    values = result.sentence.values
    return {m.key: values[m.key] for m in metrics("sentence") if isinstance(values.get(m.key), float)}


__all__ = ["layer_table_markdown", "sentence_summary"]
