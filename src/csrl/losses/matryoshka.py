"""Matryoshka representation learning: any registered loss applied to nested prefixes of the embedding.

Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022: train one embedding so that its first
m coordinates are a usable embedding on their own, for every m of a nested set M, by summing the loss of
each prefix::

    L = sum_{m in M} c_m L_inner(z1[:, :m], z2[:, :m], hard_neg[:, :m])

Each prefix goes through the inner loss unchanged, so a loss that works on cosines normalises the
*prefix* (truncate, then normalise: exactly what ``csrl eval --dims`` scores). The paper nests
M = {8, 16, ..., d} by halvings of d = 2048 with c_m = 1; ``dims=None`` applies that rule to any width
(d, d/2, d/4, ... while the half is a whole number >= 8; 768 -> 12, 24, ..., 768), ``weights=None`` is c_m = 1.

Relations: with ``dims=[d]`` it is the inner loss itself; it changes no similarity function (unlike
ArcCon's margin or CoSENT's pooling), only *which* coordinates each term sees, so it composes with every
registered loss (``inner``). sentence-transformers' ``MatryoshkaLoss`` is the same construction around its
own losses.

Gradient paradigm (paper B's GD/W/R, :mod:`csrl.losses.paradigm`). Each prefix m has its own anchors
h^m_i = z1_i[:m] / ||z1_i[:m]|| and candidates, so dL/dz1_i = sum_m c_m (gradient of L_inner at m, zero-padded
to d): a sum of per-prefix paradigm terms along *different* directions, not one paradigm term. Read off
autograd (:func:`~csrl.losses.paradigm.effective_decomposition`, which the trainer logs), every prefix's
cosine matrix is recorded and their dL/dS add up per (anchor, candidate), which gives, with
gd_raw^m, W^m, R^m the inner loss's decomposition at prefix m (:meth:`MatryoshkaLoss.per_dim_decompositions`):

- GD_i = sum_m c_m gd_raw^m_i / (sum_m c_m * c_i): with an inner loss whose scale c_i does not depend on the
  cosines (infonce, arccon: 1/tau; mpt, surrogate, cosent and losses without a scale: constant) this is
  exactly the c-weighted mean of the per-prefix GD^m, in [0, 1] where those are. For met and mat (c_i from
  the hardest negative's cosine, which differs per prefix) the full-dim c_i is used: an approximation.
- W_ij = sum_m c_m gd_raw^m_i W^m_ij / sum_m c_m gd_raw^m_i: the per-prefix weights mixed in proportion to
  each prefix's gradient strength (still a distribution when every W^m is one);
- R_i: the per-prefix R^m mixed with the same proportions;
- ``other_share`` stays ~0: all the gradient passes through recorded cosines.

What the aggregate cannot do is rebuild the gradient (``paradigm_gradient`` with full-dim directions):
the per-prefix decompositions can, summed with their weights (the tests check both statements).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses._functional import check_pair
from csrl.losses.paradigm import Decomposition, effective_decomposition
from csrl.losses.paradigm import gd_scale as paradigm_gd_scale
from csrl.losses.registry import Loss, LossOutput, LossTraits, build_loss, loss_traits, register_loss, resolve_preset

SMALLEST_HALVING = 8
"""``dims=None`` halves the embedding while the half is a whole number >= this (the paper's smallest m)."""


def halvings(dim: int) -> tuple[int, ...]:
    """The paper's nesting for a ``dim``-dimensional embedding, increasing: 768 -> (12, 24, ..., 384, 768)."""
    out = [dim]
    while out[-1] % 2 == 0 and out[-1] // 2 >= SMALLEST_HALVING:
        out.append(out[-1] // 2)
    return tuple(reversed(out))


def _check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    if isinstance(dims, str) or not isinstance(dims, Sequence) or not dims:
        raise ValueError(f"dims must be a non-empty list of increasing positive integers, got {dims!r}")
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in dims):
        raise ValueError(f"dims must be positive integers, got {list(dims)}")
    if any(b <= a for a, b in zip(dims, dims[1:], strict=False)):
        raise ValueError(f"dims must be strictly increasing (nested prefixes, each once), got {list(dims)}")
    return tuple(dims)


def _check_weights(weights: Sequence[float], n: int | None) -> tuple[float, ...]:
    if n is None:
        raise ValueError("weights need explicit dims (one weight per dim); with dims=None every weight is 1")
    if len(weights) != n:
        raise ValueError(f"weights must have one value per dim ({n}), got {len(weights)}: {list(weights)}")
    if any(isinstance(w, bool) or not isinstance(w, int | float) or not (math.isfinite(w) and w > 0) for w in weights):
        raise ValueError(f"weights must be finite numbers > 0, got {list(weights)}")
    return tuple(float(w) for w in weights)


@register_loss("matryoshka")
class MatryoshkaLoss(Loss):
    """The ``inner`` loss (built with ``inner_params``) summed over the prefixes ``dims`` with ``weights``.

    Config: ``loss: {name: matryoshka, params: {inner: infonce, inner_params: {temperature: 0.05},
    dims: [64, 128, 256, 384], weights: null}}``. ``dims`` must be strictly increasing; a dim larger than the
    embedding is refused at the first forward (the loss does not know the model). Terms: ``dim<m>`` (the
    inner loss at prefix m, unweighted) for each m, then the inner loss's own terms at the largest prefix.

    Traits: the class declares the conservative ``in_batch_negatives = hard_negatives = True`` (registry
    traits are read by name, before any parameter is known); ``inner_traits`` holds the inner loss's, and the
    inner loss itself refuses a hard-negative view it does not support at the first forward.
    """

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"dims": None, "weights": None}

    def __init__(
        self,
        inner: str = "infonce",
        inner_params: dict[str, Any] | None = None,
        dims: tuple[int, ...] | None = None,
        weights: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        if resolve_preset(inner, {})[0] == "matryoshka":
            raise ValueError("inner must be another loss: a Matryoshka loss of a Matryoshka loss nests nothing new")
        if inner_params is not None and not isinstance(inner_params, Mapping):
            raise ValueError(f"inner_params must be a mapping of the inner loss's parameters, got {inner_params!r}")
        self.inner = inner
        self.inner_params = None if inner_params is None else dict(inner_params)
        self.dims = None if dims is None else _check_dims(dims)
        self.weights = None if weights is None else _check_weights(weights, None if dims is None else len(dims))
        try:
            self.inner_loss = build_loss(inner, **(self.inner_params or {}))
        except CsrlError as exc:
            raise CsrlError(f"matryoshka inner loss: {exc.message}", hint=exc.hint) from None
        self.inner_traits: LossTraits = loss_traits(inner)
        self._last: tuple[tuple[int, ...], tuple[float, ...]] | None = None  # what the last forward used

    def resolved(self, dim: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """(dims, weights) for a ``dim``-dimensional embedding; CsrlError when a dim does not fit."""
        dims = halvings(dim) if self.dims is None else self.dims
        if dims[-1] > dim:
            raise CsrlError(
                f"matryoshka: dims {list(dims)} go beyond the {dim}-dimensional embedding",
                hint=f"use dims up to {dim} (e.g. loss.dims=[{', '.join(str(m) for m in halvings(dim)[-3:])}]) "
                "or dims: null for the paper's halvings",
            )
        weights = self.weights if self.weights is not None else (1.0,) * len(dims)
        return dims, weights

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        check_pair(z1, z2, hard_neg, name="matryoshka")
        dims, weights = self.resolved(z1.shape[1])
        self._last = (dims, weights)
        total: Tensor | None = None
        terms: dict[str, Tensor] = {}
        out = None
        for m, c in zip(dims, weights, strict=True):
            out = self.inner_loss(z1[:, :m], z2[:, :m], None if hard_neg is None else hard_neg[:, :m])
            total = out.total * c if total is None else total + out.total * c
            terms[f"dim{m}"] = out.total.detach()
        assert total is not None and out is not None  # dims is never empty
        for key, value in out.terms.items():  # the inner loss's own terms at the largest prefix
            terms.setdefault(key, value)
        return LossOutput(total, terms)

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c_i = (sum_m c_m) times the inner loss's scale on the full-dim cosines: divides the summed
        per-prefix gd_raw into the weighted mean of the per-prefix GD (module docstring). Needs a forward
        first when ``dims`` is None (the embedding width decides the prefixes)."""
        if self._last is not None:
            weights = self._last[1]
        elif self.dims is not None:
            weights = self.resolved(self.dims[-1])[1]
        else:
            raise RuntimeError("matryoshka.gd_scale: run the loss once first (dims=None depends on the embedding)")
        return paradigm_gd_scale(self.inner_loss, cos) * sum(weights)

    def per_dim_decompositions(
        self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None
    ) -> dict[int, Decomposition]:
        """The inner loss's :func:`~csrl.losses.paradigm.effective_decomposition` at each prefix m: the exact
        per-prefix reading (its ``paradigm_gradient`` on the prefix, times c_m, is that prefix's share of dL/dz1)."""
        dims, _ = self.resolved(z1.shape[1])
        return {
            m: effective_decomposition(
                self.inner_loss, z1[:, :m], z2[:, :m], None if hard_neg is None else hard_neg[:, :m]
            )
            for m in dims
        }


__all__ = ["SMALLEST_HALVING", "MatryoshkaLoss", "halvings"]
