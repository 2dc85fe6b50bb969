"""csrl.analysis: embedding geometry (paper A's token metrics, sentence-level isotropy and uniformity).

Pure metric functions live in ``token_metrics`` (per layer, packed token vectors) and ``sentence_metrics``
(pooled embeddings); ``suite`` runs them all over ``TokenStates``; ``plots`` draws the results.
``plots`` is not imported here, so importing the package does not load matplotlib.
"""

from __future__ import annotations

from csrl.analysis.function_words import classify_token, load_functional_words, token_kinds
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
    SentenceAnalysis,
    analyze_sentence_embeddings,
    analyze_token_states,
    dynamics_probe,
)
from csrl.analysis.token_metrics import (
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
    "SentenceAnalysis",
    "alignment",
    "analyze_sentence_embeddings",
    "analyze_token_states",
    "anisotropy_baseline",
    "average_cosine",
    "classify_token",
    "dynamics_probe",
    "effective_rank",
    "intra_sentence_similarity",
    "isoscore",
    "load_functional_words",
    "mean_pairwise_cosine",
    "occurrence_index",
    "partition_isotropy",
    "rogue_dimension_shares",
    "sample_one_token_per_sentence",
    "self_similarity",
    "singular_spectrum",
    "token_kinds",
    "token_norms",
    "uniformity",
]
