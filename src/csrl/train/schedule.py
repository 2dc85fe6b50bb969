"""Learning-rate schedule: a pure function of the step."""

from __future__ import annotations


def lr_at(step: int, *, peak: float, total: int, warmup: int = 0) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``total`` (SimCSE/HF).

    ``step`` counts optimizer steps already taken (0 for the first update).
    """
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    return peak * max(0.0, (total - step) / (total - warmup))
