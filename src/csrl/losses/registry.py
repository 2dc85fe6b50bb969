"""Loss registry: names -> thin ``nn.Module`` classes holding typed hyper-parameters.

Every loss module has the call signature ``loss(z1, z2, hard_neg=None) -> LossOutput`` where

- ``z1``: (batch, dim) anchors (view 0), raw outputs of the training head (not normalised);
- ``z2``: (batch, dim) positives (view 1), row i pairs with ``z1[i]``;
- ``hard_neg``: optional (batch, dim) hard negatives (supervised NLI triplets), row i belongs to anchor i.

Losses normalise internally where their formula asks for cosines. The encoder is never inside a loss.
Hyper-parameters are the keyword arguments of the class ``__init__`` with type annotations; the
config layer checks ``--set loss.<param>=value`` against them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn

from csrl.errors import CsrlError


@dataclass
class LossOutput:
    """A scalar ``total`` to back-propagate and its named ``terms`` (each a scalar tensor) for logging."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


_LOSSES: dict[str, type[nn.Module]] = {}
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}

T = TypeVar("T", bound=type[nn.Module])


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_loss("infonce")``."""

    def deco(cls: T) -> T:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        _LOSSES[name] = cls
        return cls

    return deco


def register_preset(name: str, loss: str, **params: Any) -> None:
    """A named preset: a registered loss with fixed hyper-parameters (e.g. paper B's table)."""
    _PRESETS[name] = (loss, dict(params))


def _ensure_loaded() -> None:
    # Importing the package registers every built-in loss.
    import csrl.losses  # noqa: F401


def loss_names() -> list[str]:
    _ensure_loaded()
    return sorted(_LOSSES)


def preset_names() -> list[str]:
    _ensure_loaded()
    return sorted(_PRESETS)


def loss_class(name: str) -> type[nn.Module]:
    _ensure_loaded()
    if name not in _LOSSES:
        raise CsrlError(
            f"unknown loss {name!r}",
            hint=f"valid losses: {', '.join(sorted(_LOSSES))}; presets: {', '.join(sorted(_PRESETS)) or 'none'}",
        )
    return _LOSSES[name]


def loss_params(name: str) -> dict[str, inspect.Parameter]:
    """The typed hyper-parameters of a registered loss (from its ``__init__`` signature)."""
    sig = inspect.signature(loss_class(name).__init__)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {k: p for k, p in sig.parameters.items() if k != "self" and p.kind in kinds}


def resolve_preset(name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Map a preset name to (loss name, params); explicit params override the preset's."""
    _ensure_loaded()
    if name in _PRESETS:
        base, preset = _PRESETS[name]
        return base, {**preset, **params}
    return name, dict(params)


def build_loss(name: str, **params: Any) -> nn.Module:
    """Instantiate a registered loss (or preset) with checked hyper-parameters."""
    name, params = resolve_preset(name, params)
    cls = loss_class(name)
    allowed = loss_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise CsrlError(
            f"loss {name!r} has no parameter(s) {', '.join(unknown)}",
            hint=f"parameters of {name!r}: {', '.join(allowed) or 'none'}",
        )
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise CsrlError(f"bad parameter for loss {name!r}: {exc}") from None
