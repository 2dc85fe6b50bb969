"""Every metric of the geometry suite, declared once (see :mod:`csrl.analysis.registry`).

To add a metric, register a function here: its key becomes a field of the analysis JSON (one value per
layer, or one per sentence set), a table column if ``column`` is set, a figure panel if ``panel`` is
set, and a ``geometry/<key>`` series of the training probe if ``probe=True``. The math belongs in
:mod:`~csrl.analysis.token_metrics` or :mod:`~csrl.analysis.sentence_metrics` (pure functions, tested
against references); a function here only picks its inputs from the context.

Definitions follow paper A (papers.md 2.2); b is the anisotropy baseline of the same layer, and
"functional" tokens are function words, punctuation and special tokens (:mod:`csrl.analysis.function_words`).
"""

from __future__ import annotations

from torch import Tensor

from csrl.analysis import sentence_metrics as sm
from csrl.analysis import token_metrics as tm
from csrl.analysis.registry import LayerContext, SentenceContext, register_metric

COS = "mean cosine"
SELF_SIM = "self-similarity"
INTRA_SIM = "intra-sentence similarity"


def _floats(t: Tensor) -> list[float]:
    return [float(v) for v in t.tolist()]


def _top(shares: list[float]) -> float:
    return shares[0] if shares else float("nan")


# ---------------------------------------------------------------- per layer (index 0 = embedding output)
@register_metric(
    "anisotropy", label="anisotropy baseline", symbol=r"$b$", unit=COS, column="anisotropy",
    panel="anisotropy baseline (lower = more isotropic)", probe=True,
)  # fmt: skip
def anisotropy(ctx: LayerContext) -> float:
    """Mean off-diagonal cosine of one random token from each of min(n_samples, n) sentences; mean over seeds."""
    return ctx.anisotropy


@register_metric("anisotropy_std", label="anisotropy baseline, std over seeds", symbol=r"$\sigma_b$", unit=COS)
def anisotropy_std(ctx: LayerContext) -> float:
    """Population std of the anisotropy baseline over the seeds (0 with one seed)."""
    return float(ctx.shared.anisotropy.std(unbiased=False))


@register_metric(
    "self_similarity", label=SELF_SIM, symbol=r"$\mathrm{SelfSim}$", unit=COS, column="self-sim",
    panel=SELF_SIM, legend="all tokens", probe=True,
)  # fmt: skip
def self_similarity(ctx: LayerContext) -> float:
    """Mean over qualifying tokens of the mean cosine between a token's occurrences in different sentences."""
    return ctx.self_similarity


@register_metric(
    "adjusted_self_similarity", label=f"{SELF_SIM}, adjusted", symbol=r"$\mathrm{SelfSim} - b$", unit=COS,
    column="adj. self-sim", panel=SELF_SIM, legend=r"all tokens, minus $b$",
)  # fmt: skip
def adjusted_self_similarity(ctx: LayerContext) -> float:
    """Self-similarity minus the anisotropy baseline b."""
    return ctx.self_similarity - ctx.anisotropy


@register_metric(
    "intra_similarity", label=INTRA_SIM, symbol=r"$\mathrm{IntraSim}$", unit=COS, column="intra-sim",
    panel=INTRA_SIM, legend="raw", probe=True,
)  # fmt: skip
def intra_similarity(ctx: LayerContext) -> float:
    """Mean over sentences of the mean cosine between each token and the sentence's mean vector."""
    return ctx.intra_similarity


@register_metric(
    "adjusted_intra_similarity", label=f"{INTRA_SIM}, adjusted", symbol=r"$\mathrm{IntraSim} - b$", unit=COS,
    column="adj. intra-sim", panel=INTRA_SIM, legend=r"minus $b$", probe=True,
)  # fmt: skip
def adjusted_intra_similarity(ctx: LayerContext) -> float:
    """Intra-sentence similarity minus the anisotropy baseline b."""
    return ctx.intra_similarity - ctx.anisotropy


@register_metric(
    "norm_mean", label="mean token L2 norm", symbol=r"$\overline{\Vert h \Vert}_2$", column="norm", fmt=".2f",
    panel="token norm (distance to the origin)", probe=True,
)  # fmt: skip
def norm_mean(ctx: LayerContext) -> float:
    """Mean L2 norm of the token vectors (special tokens included)."""
    return float(ctx.shared.norms.mean())


@register_metric("norm_std", label="std of token L2 norms", symbol=r"$\sigma_{\Vert h \Vert}$")
def norm_std(ctx: LayerContext) -> float:
    """Population std of the token L2 norms."""
    return float(ctx.shared.norms.std(unbiased=False))


@register_metric(
    "functional_self_similarity", label=f"{SELF_SIM} of functional tokens", symbol=r"$\mathrm{SelfSim}_{func}$",
    unit=COS, column="funct. ss", panel=SELF_SIM, legend="functional tokens", probe=True,
)  # fmt: skip
def functional_self_similarity(ctx: LayerContext) -> float | None:
    """Mean self-similarity of the functional tokens (function words, punctuation, special tokens)."""
    return None if ctx.functional is None else tm.masked_mean(ctx.shared.self_similarity, ctx.functional)


@register_metric(
    "content_self_similarity", label=f"{SELF_SIM} of content tokens", symbol=r"$\mathrm{SelfSim}_{content}$",
    unit=COS, column="content ss", panel=SELF_SIM, legend="content tokens", probe=True,
)  # fmt: skip
def content_self_similarity(ctx: LayerContext) -> float | None:
    """Mean self-similarity of the content tokens (other alphabetic whole words)."""
    return None if ctx.content is None else tm.masked_mean(ctx.shared.self_similarity, ctx.content)


@register_metric("frequency_self_similarity", label=f"{SELF_SIM} by token frequency", unit=COS)
def frequency_self_similarity(ctx: LayerContext) -> list[float]:
    """Mean self-similarity per frequency bucket (NaN for an empty bucket)."""
    s, bucket = ctx.shared.self_similarity, ctx.frequency_bucket
    return [tm.masked_mean(s, bucket == b) for b in range(ctx.n_buckets)]


@register_metric("rogue_dims", label="top rogue dimensions of the anisotropy sample")
def rogue_dims(ctx: LayerContext) -> list[int]:
    """Dimensions with the largest shares of the anisotropy sample's summed cosine (pairs a != b), descending."""
    return tm.top_dimensions(ctx.shared.rogue_shares, ctx.rogue_top_k)[0]


@register_metric(
    "rogue_shares", label="share of the top rogue dimension", symbol=r"$r_{\mathrm{top}}$",
    unit="share of the summed cosine", column="top rogue", panel="top rogue dimension", scalar=_top, probe=True,
)  # fmt: skip
def rogue_shares(ctx: LayerContext) -> list[float]:
    """The shares of :func:`rogue_dims`, descending (they sum to 1 over all dimensions)."""
    return tm.top_dimensions(ctx.shared.rogue_shares, ctx.rogue_top_k)[1]


@register_metric("token_rogue_dims", label="top rogue dimensions of the per-token shares")
def token_rogue_dims(ctx: LayerContext) -> list[int]:
    """Dimensions with the largest mean per-token share (self pairs included, as paper A's code)."""
    return tm.top_dimensions(ctx.shared.token_rogue_shares, ctx.rogue_top_k)[0]


@register_metric("token_rogue_shares", label="mean per-token share of the top rogue dimensions")
def token_rogue_shares(ctx: LayerContext) -> list[float]:
    """The shares of :func:`token_rogue_dims`, descending."""
    return tm.top_dimensions(ctx.shared.token_rogue_shares, ctx.rogue_top_k)[1]


@register_metric("token_self_similarity", label=f"{SELF_SIM} of each qualifying token", unit=COS)
def token_self_similarity(ctx: LayerContext) -> list[float]:
    """Self-similarity of every qualifying token, in the order of ``token_ids``."""
    return _floats(ctx.shared.self_similarity)


# ---------------------------------------------------------------- sentence level (pooled embeddings)
@register_metric(
    "average_cosine", level="sentence", label="average cosine of sentence embeddings", symbol=r"$\overline{\cos}$",
    unit=COS, panel="average cosine of sentence embeddings", probe=True,
)  # fmt: skip
def average_cosine(ctx: SentenceContext) -> float | None:
    """Mean cosine between distinct sentence embeddings."""
    return None if ctx.embeddings is None else sm.average_cosine(ctx.embeddings)


@register_metric(
    "uniformity", level="sentence", label="uniformity (t = 2)", symbol=r"$\mathcal{L}_{uniform}$",
    unit=r"$\log\ E\ e^{-2 \Vert x - y \Vert^2}$", panel="uniformity (lower = more uniform)", probe=True,
)  # fmt: skip
def uniformity(ctx: SentenceContext) -> float | None:
    """log E exp(-2 ||x - y||^2) over all distinct pairs of normalised embeddings (float64)."""
    return None if ctx.embeddings is None else float(sm.uniformity(ctx.embeddings.double()))


@register_metric(
    "alignment", level="sentence", label="alignment (alpha = 2)", symbol=r"$\mathcal{L}_{align}$",
    unit=r"$E\ \Vert x - x^+ \Vert^2$", panel="alignment (lower = closer positives)", probe=True,
)  # fmt: skip
def alignment(ctx: SentenceContext) -> float | None:
    """E ||x - y||^2 over the positive pairs, normalised; None without pairs."""
    if ctx.positive_pairs is None or ctx.positive_pairs[0].shape[0] == 0:
        return None
    x, y = ctx.positive_pairs
    return float(sm.alignment(x.detach().float(), y.detach().float()))


@register_metric("isoscore", level="sentence", label="IsoScore", symbol=r"$\mathrm{IsoScore}$")
def isoscore(ctx: SentenceContext) -> float | None:
    """IsoScore (Rudman et al. 2022) of the embeddings, in [0, 1]."""
    return None if ctx.embeddings is None else sm.isoscore(ctx.embeddings)


@register_metric("partition_isotropy", level="sentence", label="partition isotropy", symbol=r"$I(W)$")
def partition_isotropy(ctx: SentenceContext) -> float | None:
    """I(W) of the raw (uncentred) embeddings."""
    return None if ctx.embeddings is None else sm.partition_isotropy(ctx.embeddings)


@register_metric(
    "effective_rank", level="sentence", label="effective rank", symbol=r"$\mathrm{erank}$", unit="dimensions"
)
def effective_rank(ctx: SentenceContext) -> float | None:
    """exp(entropy) of the normalised singular values, uncentred."""
    return None if ctx.embeddings is None else sm.effective_rank(ctx.embeddings)


@register_metric(
    "effective_rank_centered", level="sentence", label="effective rank (centred)", symbol=r"$\mathrm{erank}_c$",
    unit="dimensions",
)  # fmt: skip
def effective_rank_centered(ctx: SentenceContext) -> float | None:
    """Effective rank of the column-centred embeddings."""
    return None if ctx.embeddings is None else sm.effective_rank(ctx.embeddings, center=True)


@register_metric("singular_values", level="sentence", label="singular values", symbol=r"$\sigma_k$")
def singular_values(ctx: SentenceContext) -> list[float] | None:
    """Singular values of the uncentred embeddings, descending."""
    return None if ctx.embeddings is None else _floats(sm.singular_spectrum(ctx.embeddings))


@register_metric("singular_values_centered", level="sentence", label="singular values (centred)", symbol=r"$\sigma_k$")
def singular_values_centered(ctx: SentenceContext) -> list[float] | None:
    """Singular values of the column-centred embeddings, descending."""
    if ctx.embeddings is None:
        return None
    return _floats(sm.singular_spectrum(ctx.embeddings, center=True))


@register_metric(
    "sentence_rogue_share", level="sentence", label="top rogue dimension of the sentence embeddings",
    symbol=r"$r_{\mathrm{top}}$", unit="share of the summed cosine",
)  # fmt: skip
def sentence_rogue_share(ctx: SentenceContext) -> float | None:
    """The largest dimension's share of the summed pairwise cosine of the sentence embeddings (pairs a != b;
    :func:`~csrl.analysis.token_metrics.rogue_dimension_shares`): the sentence-level rogue dimension, e.g. before
    and after a post-hoc whitening (which leaves the token-level geometry untouched)."""
    if ctx.embeddings is None or ctx.embeddings.shape[0] < 2:
        return None
    return float(tm.rogue_dimension_shares(ctx.embeddings.detach().double()).max())
