"""Paper B's hyper-parameter table (papers.md 1.6) as named loss presets.

Names are ``<objective>-<ori|mod>-<bert|roberta>``, e.g. ``barlowtwins-mod-bert``; ``build_loss(name)``
returns the loss with the table's parameters (explicit parameters override them). ``mod`` always means
all of paper B's switches (``variant="mod"``). The learning rate, batch size and seed are training
settings, not loss parameters: they are in :data:`PRESET_TRAINING` (and :data:`PRESET_LR`), which the
trainer may read to reproduce a row.
"""

from __future__ import annotations

from typing import Any

from csrl.losses.registry import register_preset

# backbone -> batch size of paper B's application runs (papers.md 1.6).
_BATCH = {"bert": 128, "roberta": 512}

# (objective, backbone) -> (ori: lr, lambda), (mod: lr, lambda, gd_margin, temperature or None, ratio).
_TABLE: dict[tuple[str, str], tuple[tuple[float, float], tuple[float, float, float, float | None, float]]] = {
    ("barlowtwins", "bert"): ((1e-5, 30.0), (1e-5, 1.0, 0.30, 0.05, 1.50)),
    ("vicreg", "bert"): ((1e-5, 30.0), (1e-5, 1.0, 0.30, 0.05, 1.50)),
    ("mhe", "bert"): ((1e-5, 10.0), (1e-5, 1.0, 0.30, 0.05, 1.75)),
    ("mhs", "bert"): ((5e-6, 1.0), (1e-5, 1.0, 0.30, None, 1.75)),
    ("barlowtwins", "roberta"): ((1e-6, 30.0), (1e-5, 1.0, 0.37, 0.05, 1.25)),
    ("vicreg", "roberta"): ((1e-6, 30.0), (1e-5, 1.0, 0.37, 0.05, 1.25)),
    ("mhe", "roberta"): ((1e-6, 10.0), (1e-5, 1.0, 0.30, 0.05, 1.25)),
    ("mhs", "roberta"): ((1e-6, 1.0), (1e-5, 1.0, 0.27, None, 1.00)),
}

PRESET_TRAINING: dict[str, dict[str, float | int]] = {}
"""Preset name -> training settings of its table row: ``lr``, ``batch_size``, ``seed`` (42; the MHS
RoBERTa ori row used seed 4)."""

PRESET_LR: dict[str, float] = {}
"""Preset name -> learning rate of paper B's row (a training setting; the trainer reads it, the loss does not)."""


def _register_all() -> None:
    for (objective, backbone), ((lr_ori, lam_ori), (lr_mod, lam, margin, tau, ratio)) in _TABLE.items():
        ori = f"{objective}-ori-{backbone}"
        register_preset(ori, objective, variant="ori", lam=lam_ori)
        seed = 4 if (objective, backbone) == ("mhs", "roberta") else 42
        PRESET_TRAINING[ori] = {"lr": lr_ori, "batch_size": _BATCH[backbone], "seed": seed}

        mod = f"{objective}-mod-{backbone}"
        params: dict[str, Any] = {"variant": "mod", "lam": lam, "gd_margin": margin, "ratio": ratio}
        if tau is not None:
            params["temperature"] = tau
        register_preset(mod, objective, **params)
        PRESET_TRAINING[mod] = {"lr": lr_mod, "batch_size": _BATCH[backbone], "seed": 42}
    PRESET_LR.update({name: float(row["lr"]) for name, row in PRESET_TRAINING.items()})


_register_all()
