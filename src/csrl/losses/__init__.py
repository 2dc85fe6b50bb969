"""Training objectives: small pure functions over embeddings, thin registered modules, and the
unified gradient paradigm (GD, W, R) of Li, Zhang & Nie (ACL 2024).

Registered losses: infonce, arccon, mpt, met, mat (contrastive, papers.md 1.2), surrogate (1.5),
mhe, mhs, barlowtwins, vicreg (1.6, ``variant="ori" | "mod"``), cosent (CoSENT ranking loss), matryoshka
(any of them on nested prefixes of the embedding), esimcse and simcsepp (papers.md 6; their training-side
inputs are declared through :mod:`csrl.losses.step_inputs`), sncse (InfoNCE + SNCSE's margin loss on each
sentence's negation, ``negation_view``), angle (AnglE: CoSENT + in-batch negatives + an angle term;
CoSENT and AnglE also train on gold-scored pairs, ``scored_pairs``); presets
of paper B's table in :mod:`csrl.losses.presets`. What each loss needs is declared on its class and read
by :func:`loss_traits`. Analysis: :mod:`csrl.losses.paradigm`, :mod:`csrl.losses.simulate`.
"""

from __future__ import annotations

from csrl.losses.registry import (
    Loss,
    LossOutput,
    LossTraits,
    build_loss,
    loss_class,
    loss_names,
    loss_traits,
    preset_names,
    register_loss,
    register_preset,
)

# Importing the loss modules registers them: a new loss file adds its module to this list.
from csrl.losses import infonce, arccon, triplet, surrogate, cosent  # noqa: E402,F401  isort: skip
from csrl.losses import alignment_uniformity, barlow, vicreg  # noqa: E402,F401  isort: skip
from csrl.losses import matryoshka  # noqa: E402,F401  isort: skip
from csrl.losses import sncse  # noqa: E402,F401  isort: skip
from csrl.losses import esimcse, simcsepp  # noqa: E402,F401  isort: skip
from csrl.losses import angle  # noqa: E402,F401  isort: skip
from csrl.losses import presets  # noqa: E402,F401  isort: skip
from csrl.losses.presets import PRESET_LR, PRESET_TRAINING  # noqa: E402  isort: skip
from csrl.losses._functional import cross_cosine, similarity  # noqa: E402  isort: skip

__all__ = [
    "PRESET_LR",
    "PRESET_TRAINING",
    "Loss",
    "LossOutput",
    "LossTraits",
    "build_loss",
    "cross_cosine",
    "loss_class",
    "loss_names",
    "loss_traits",
    "preset_names",
    "register_loss",
    "register_preset",
    "similarity",
]
