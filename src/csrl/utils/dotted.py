"""Dotted keys of raw (YAML-shaped) run configs: ``"train.lr"`` is ``raw["train"]["lr"]``.

The one place that turns a dotted key into a path and sets it, shared by ``--set`` overrides
(:func:`csrl.train.config.apply_overrides`) and sweep grids (:mod:`csrl.sweep.grid`), so both read keys
the same way. As a shorthand, ``loss.<p>`` means ``loss.params.<p>`` (a loss hyper-parameter), except for
the section's own fields ``loss.name`` and ``loss.params``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from csrl.errors import CsrlError

__all__ = ["MISSING", "dotted_path", "flatten", "get_dotted", "set_dotted"]

MISSING: Any = object()
"""Returned by :func:`get_dotted` for a key that is not set."""


def dotted_path(key: str | Sequence[str]) -> list[str]:
    """``"a.b.c"`` (or ``["a", "b", "c"]``) as a path, with the ``loss.<p>`` shorthand expanded.

    An empty key or an empty part (``"a..b"``) raises :class:`~csrl.errors.CsrlError`.
    """
    path = key.split(".") if isinstance(key, str) else [str(k) for k in key]
    if not path or not all(path):
        shown = key if isinstance(key, str) else ".".join(path)
        raise CsrlError(f"{shown!r} is not a dotted config key", hint="e.g. train.lr, loss.temperature, model.pooler")
    if path[0] == "loss" and len(path) == 2 and path[1] not in ("name", "params"):
        return ["loss", "params", path[1]]
    return path


def set_dotted(raw: dict[str, Any], key: str | Sequence[str], value: Any) -> None:
    """``raw[a][b] = value`` for ``key = "a.b"``, creating missing sections; ``value`` is deep-copied.

    Raises :class:`~csrl.errors.CsrlError` when a part before the last holds a value that is not a
    section (e.g. ``train.lr.x`` while ``train.lr`` is a number).
    """
    path = dotted_path(key)
    node = raw
    for depth, part in enumerate(path[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(path[: depth + 1])
            raise CsrlError(f"{'.'.join(path)}: {where!r} is not a section (it holds {node!r})")
    node[path[-1]] = copy.deepcopy(value)


def get_dotted(raw: Mapping[str, Any], key: str | Sequence[str]) -> Any:
    """The value at ``key`` in ``raw``, or :data:`MISSING` when a part of the path is absent."""
    node: Any = raw
    for part in dotted_path(key):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: ``{"train": {"lr": 1e-5}}`` -> ``{"train.lr": 1e-5}`` (the inverse of
    :func:`set_dotted` over a whole config; the ``loss.<p>`` shorthand is not applied)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
