"""Loss registry: names -> thin ``nn.Module`` classes holding typed hyper-parameters.

Every loss module has the call signature ``loss(z1, z2, hard_neg=None) -> LossOutput`` where

- ``z1``: (batch, dim) anchors (view 0), raw outputs of the training head (not normalised);
- ``z2``: (batch, dim) positives (view 1), row i pairs with ``z1[i]``;
- ``hard_neg``: optional (batch, dim) hard negatives (supervised NLI triplets), row i belongs to anchor i.

Losses normalise internally where their formula asks for cosines. The encoder is never inside a loss.
Hyper-parameters are the keyword arguments of the class ``__init__`` with type annotations; the
config layer checks ``--set loss.<param>=value`` against them.

What a loss needs from the trainer and the analysis is declared on its class (a :class:`Loss`
subclass) and read by :func:`loss_traits`:

- ``in_batch_negatives``: other rows of the batch are its negatives (batch >= 2, no plain gradient
  accumulation, gather across processes);
- ``hard_negatives``: it accepts the optional ``hard_neg`` view;
- ``paper_defaults``: the hyper-parameters of its paper;
- ``negation_view`` (optional, default False): its ``hard_neg`` view is each sentence's rule-based
  negation (:func:`csrl.data.negation.negate`), which the trainer makes from single-sentence corpora
  (SNCSE's soft negatives);
- ``scored_pairs`` (optional, default False): its forward also takes ``scores=`` (B,), the gold similarity of
  each pair (z1_i, z2_i) of a scored-pair corpus (STS-B train; ``data.scored_pairs``), and ranks the pairs by it
  (CoSENT, AnglE); the trainer refuses a scored-pair corpus for other losses;
- ``paradigm_applies`` (optional, default True): paper B's GD/W/R describe its gradient; False (AnglE) and on
  scored pairs, the trainer logs no ``paradigm/*`` values (:class:`csrl.train.methods.Method`);
- a closed form of paper B's GD/W/R, when it has one: a method ``paradigm_closed_form(s)`` and the
  scale ``gd_scale(cos)`` (see :mod:`csrl.losses.paradigm`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from csrl.errors import CsrlError


@dataclass
class LossOutput:
    """A scalar ``total`` to back-propagate and its named ``terms`` (each a scalar tensor) for logging."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Loss(nn.Module):
    """Base of the built-in losses: the class-level declarations that :func:`loss_traits` reads.

    A subclass registered with :func:`register_loss` must set all three (checked at registration)::

        in_batch_negatives = True            # rows j != i of the batch are negatives of anchor i
        hard_negatives = True                # forward accepts hard_neg (B, D)
        paper_defaults = {"temperature": 0.05}

    and may define ``paradigm_closed_form(s) -> ClosedForm`` and ``gd_scale(cos) -> Tensor``
    (:mod:`csrl.losses.paradigm`). Its ``forward(z1, z2, hard_neg=None)`` returns a :class:`LossOutput`.
    """

    in_batch_negatives: ClassVar[bool]
    hard_negatives: ClassVar[bool]
    paper_defaults: ClassVar[Mapping[str, Any]]
    negation_view: ClassVar[bool] = False  # hard_neg = the negated sentence, made by the trainer (SNCSE)
    scored_pairs: ClassVar[bool] = False  # forward(z1, z2, hard_neg, scores=None): ranks gold-scored pairs
    paradigm_applies: ClassVar[bool] = True  # paper B's GD/W/R describe its gradient (else no paradigm/* logged)


_DECLARED = ("in_batch_negatives", "hard_negatives", "paper_defaults")

_LOSSES: dict[str, type[nn.Module]] = {}
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}

T = TypeVar("T", bound=type[nn.Module])


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_loss("infonce")``. A :class:`Loss` subclass must declare its traits."""

    def deco(cls: T) -> T:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        if issubclass(cls, Loss):
            missing = [attr for attr in _DECLARED if not hasattr(cls, attr)]
            if missing:
                raise TypeError(f"loss {name!r} ({cls.__name__}) must declare {', '.join(missing)}")
        _LOSSES[name] = cls
        return cls

    return deco


@dataclass(frozen=True)
class LossTraits:
    """What a registered loss declares about itself (:func:`loss_traits`)."""

    name: str  # the registered loss (a preset resolves to its base loss)
    in_batch_negatives: bool  # uses other rows as negatives: batch >= 2, no plain gradient accumulation
    hard_negatives: bool  # accepts the optional hard_neg view
    has_closed_form: bool  # paradigm.closed_form applies (the class defines paradigm_closed_form)
    paper_defaults: Mapping[str, Any]  # the paper's hyper-parameters (read-only)
    presets: tuple[str, ...] = ()  # presets built on this loss (paper B's per-backbone rows)
    negation_view: bool = False  # its hard_neg view is the negated sentence, made by the trainer (SNCSE)
    scored_pairs: bool = False  # accepts scores= (B,): trains on gold-scored pairs (CoSENT, AnglE)
    paradigm_applies: bool = True  # paper B's GD/W/R describe its gradient (the trainer logs paradigm/*)


def loss_traits(name: str) -> LossTraits:
    """The declared traits of a registered loss or preset (a preset reports its base loss).

    A class that is not a :class:`Loss` (test-only losses) gets conservative answers: in-batch
    negatives assumed, no hard negatives, no paper defaults.
    """
    base, _ = resolve_preset(name, {})
    cls = loss_class(base)
    return LossTraits(
        name=base,
        in_batch_negatives=bool(getattr(cls, "in_batch_negatives", True)),
        hard_negatives=bool(getattr(cls, "hard_negatives", False)),
        has_closed_form=callable(getattr(cls, "paradigm_closed_form", None)),
        paper_defaults=MappingProxyType(dict(getattr(cls, "paper_defaults", {}))),
        presets=tuple(sorted(p for p, (b, _) in _PRESETS.items() if b == base)),
        negation_view=bool(getattr(cls, "negation_view", False)),
        scored_pairs=bool(getattr(cls, "scored_pairs", False)),
        paradigm_applies=bool(getattr(cls, "paradigm_applies", True)),
    )


def register_preset(name: str, loss: str, **params: Any) -> None:
    """A named preset: a registered loss with fixed hyper-parameters (e.g. paper B's table)."""
    _PRESETS[name] = (loss, dict(params))


def _ensure_loaded() -> None:
    # Importing the package registers every built-in loss.
    import csrl.losses  # noqa: F401


ENTRY_POINT_GROUP = "csrl.losses"
"""Packages can offer losses under this entry-point group (``name = "pkg.module:LossClass"``)."""


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def loss_names() -> list[str]:
    """Built-in losses and those offered by installed packages (entry points ``csrl.losses``)."""
    _ensure_loaded()
    return sorted(set(_LOSSES) | set(_entry_points()))


def preset_names() -> list[str]:
    _ensure_loaded()
    return sorted(_PRESETS)


def _check_user_class(name: str, obj: Any) -> type[nn.Module]:
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise CsrlError(
            f"loss {name!r} is {obj!r}, not an nn.Module class",
            hint="point at a class whose forward(z1, z2, hard_neg=None) returns csrl.losses.LossOutput",
        )
    if issubclass(obj, Loss):
        missing = [attr for attr in _DECLARED if not hasattr(obj, attr)]
        if missing:
            raise CsrlError(f"loss {name!r} ({obj.__name__}) must declare {', '.join(missing)}")
    return obj


def _user_loss(name: str) -> type[nn.Module] | None:
    """A loss defined outside csrl: ``package.module:ClassName``, or an entry point of group ``csrl.losses``."""
    import importlib

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            raise CsrlError(
                f"loss {name!r}: cannot import module {exc.name!r}",
                hint="the module must be importable by csrl's Python (installed, or on PYTHONPATH; sweeps run "
                "their cells in subprocesses that inherit the environment)",
            ) from None
        except AttributeError:
            raise CsrlError(f"loss {name!r}: module {module!r} has no attribute {attr!r}") from None
        return _check_user_class(name, obj)
    ep = _entry_points().get(name)
    return None if ep is None else _check_user_class(name, ep.load())


def register_loss_class(cls: type[nn.Module]) -> str:
    """Make a user's loss class known under ``module:QualName`` in this process and return that name.

    For a loss object handed to :func:`csrl.api.train_encoder`: a config naming it then validates even
    when its module cannot be imported again (a notebook, ``__main__``); resuming such a run from the CLI
    or in a sweep's subprocess needs the class in an importable module.
    """
    name = f"{cls.__module__}:{cls.__qualname__}"
    _LOSSES.setdefault(name, _check_user_class(name, cls))
    return name


def loss_class(name: str) -> type[nn.Module]:
    """The class of a built-in loss, of ``package.module:ClassName``, or of an installed entry point."""
    _ensure_loaded()
    if name in _LOSSES:
        return _LOSSES[name]
    user = _user_loss(name)
    if user is None:
        raise CsrlError(
            f"unknown loss {name!r}",
            hint=f"valid losses: {', '.join(sorted(_LOSSES))}; presets: {', '.join(sorted(_PRESETS)) or 'none'}; "
            "or your own as package.module:ClassName",
        )
    return user


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
