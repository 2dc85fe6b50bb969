"""Text views of an :class:`~csrl.analysis.suite.AnalysisResult`, built from the metric registry.

``layer_table_markdown`` has one row per layer and one column per metric registered with a ``column``;
``sentence_summary`` holds the sentence-level metrics with a float value. ``csrl analyze`` prints both.
"""

from __future__ import annotations

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


def sentence_summary(result: AnalysisResult) -> dict[str, float]:
    """Sentence-level metrics with a float value (lists and missing ones left out); empty without pooling."""
    if result.sentence is None:
        return {}
    values = result.sentence.values
    return {m.key: values[m.key] for m in metrics("sentence") if isinstance(values.get(m.key), float)}


__all__ = ["layer_table_markdown", "sentence_summary"]
