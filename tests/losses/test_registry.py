"""Registry: every loss registered with typed, validated parameters; paper B's presets; user errors."""

from __future__ import annotations

import typing

import pytest
import torch

from csrl.errors import CsrlError
from csrl.losses import PRESET_LR, PRESET_TRAINING, build_loss, loss_class, loss_names, preset_names
from csrl.losses.registry import loss_params, resolve_preset

LOSSES = ["arccon", "barlowtwins", "infonce", "mat", "met", "mhe", "mhs", "mpt", "surrogate", "vicreg"]


def test_all_losses_registered_with_typed_params() -> None:
    assert set(LOSSES) <= set(loss_names())  # other test modules may register test-only losses
    for name in LOSSES:
        hints = typing.get_type_hints(loss_class(name).__init__)
        for param in loss_params(name):
            assert param in hints, f"{name}.{param} has no type annotation"
        z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
        out = build_loss(name)(z1, z2)
        assert out.total.ndim == 0 and torch.isfinite(out.total) and out.terms
        with pytest.raises(ValueError, match="batch size"):
            build_loss(name)(z1[:1], z2[:1])


def test_presets_follow_paper_b_table() -> None:
    names = preset_names()
    assert len(names) == 16 and set(names) == set(PRESET_LR) == set(PRESET_TRAINING)
    assert resolve_preset("barlowtwins-mod-bert", {}) == (
        "barlowtwins",
        {"variant": "mod", "lam": 1.0, "gd_margin": 0.30, "ratio": 1.50, "temperature": 0.05},
    )
    assert resolve_preset("mhs-mod-roberta", {}) == (
        "mhs",
        {"variant": "mod", "lam": 1.0, "gd_margin": 0.27, "ratio": 1.0},
    )
    assert resolve_preset("vicreg-ori-roberta", {"lam": 5.0}) == ("vicreg", {"variant": "ori", "lam": 5.0})
    assert PRESET_LR["mhs-ori-bert"] == 5e-6 and PRESET_LR["barlowtwins-ori-roberta"] == 1e-6
    assert PRESET_TRAINING["mhs-ori-roberta"]["seed"] == 4 and PRESET_TRAINING["mhe-mod-roberta"]["batch_size"] == 512
    for name in names:
        loss = build_loss(name)
        assert torch.isfinite(loss(torch.randn(6, 4), torch.randn(6, 4)).total)


def test_user_errors() -> None:
    with pytest.raises(CsrlError) as err:
        build_loss("simclr")
    assert (
        "unknown loss 'simclr'" in str(err.value) and "infonce" in str(err.value) and "mhe-mod-bert" in str(err.value)
    )
    with pytest.raises(CsrlError, match="no parameter"):
        build_loss("infonce", tau=0.1)
    with pytest.raises(CsrlError, match="temperature"):
        build_loss("infonce", temperature=-1.0)
