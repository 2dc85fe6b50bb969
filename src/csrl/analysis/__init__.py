"""csrl.analysis: embedding geometry (paper A's token metrics, sentence-level isotropy and uniformity).

Pure metric functions live in ``token_metrics`` (per layer, packed token vectors) and ``sentence_metrics``
(pooled embeddings). ``registry`` declares what the suite reports and ``catalogue`` registers each
metric once (key, label, symbol, unit, table column, figure panel, probe); ``suite`` runs them over
packed token states, ``tables`` prints them and ``plots`` draws them. ``plots`` is not imported here, so
importing the package does not load matplotlib. Nothing here imports ``csrl.models``, ``csrl.train`` or
``csrl.cli``: an encoder enters as a function (``encode_pairs``) or as its token states.
"""

from __future__ import annotations

from csrl.analysis.function_words import classify_token, load_functional_words, token_kinds
from csrl.analysis.registry import Metric, get_metric, metrics, panels, probe_panels, register_metric
from csrl.analysis.sentence_metrics import (
    alignment,
    average_cosine,
    effective_rank,
    isoscore,
    partition_isotropy,
    singular_spectrum,
    uniformity,
)
from csrl.analysis.suite import (
    AnalysisResult,
    EncodeFn,
    SentenceAnalysis,
    analyze_sentence_embeddings,
    analyze_token_states,
    dynamics_probe,
    encode_pairs,
)
from csrl.analysis.tables import layer_table_markdown, sentence_summary
from csrl.analysis.token_metrics import (
    PackedTokenStates,
    anisotropy_baseline,
    intra_sentence_similarity,
    mean_pairwise_cosine,
    occurrence_index,
    rogue_dimension_shares,
    sample_one_token_per_sentence,
    self_similarity,
    token_norms,
)

__all__ = [
    "AnalysisResult",
    "EncodeFn",
    "Metric",
    "PackedTokenStates",
    "SentenceAnalysis",
    "alignment",
    "analyze_sentence_embeddings",
    "analyze_token_states",
    "anisotropy_baseline",
    "average_cosine",
    "classify_token",
    "dynamics_probe",
    "effective_rank",
    "encode_pairs",
    "get_metric",
    "intra_sentence_similarity",
    "isoscore",
    "layer_table_markdown",
    "load_functional_words",
    "mean_pairwise_cosine",
    "metrics",
    "occurrence_index",
    "panels",
    "partition_isotropy",
    "probe_panels",
    "register_metric",
    "rogue_dimension_shares",
    "sample_one_token_per_sentence",
    "self_similarity",
    "sentence_summary",
    "singular_spectrum",
    "token_kinds",
    "token_norms",
    "uniformity",
]
