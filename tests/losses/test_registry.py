"""Registry: every loss registered with typed, validated parameters and declared traits; presets; user errors."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.losses import (
    PRESET_LR,
    PRESET_TRAINING,
    Loss,
    LossOutput,
    LossTraits,
    build_loss,
    loss_class,
    loss_names,
    loss_traits,
    preset_names,
    register_loss,
)
from csrl.losses.registry import _LOSSES, loss_params, resolve_preset

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


# ----------------------------------------------------------------------------- declared traits
# The trainer's former name list of losses with in-batch negatives, and paper B's closed forms.
IN_BATCH = ["infonce", "arccon", "mpt", "met", "mat", "surrogate", "mhe", "mhs", "barlowtwins", "vicreg"]
CLOSED_FORMS = {"infonce", "arccon", "mpt", "met", "mat", "surrogate", "sncse"}


def _builtin() -> list[str]:
    return [n for n in loss_names() if loss_class(n).__module__.startswith("csrl.losses.")]


def test_every_builtin_loss_declares_its_traits() -> None:
    assert set(LOSSES) | {"cosent"} <= set(_builtin())
    for name in _builtin():
        cls = loss_class(name)
        assert issubclass(cls, Loss), name
        traits = loss_traits(name)
        assert traits.name == name
        assert traits.has_closed_form == (name in CLOSED_FORMS), name
        if traits.has_closed_form:  # a closed form comes with its scale c
            assert callable(getattr(cls, "gd_scale", None)), name
        params = loss_params(name)
        assert set(traits.paper_defaults) <= set(params), name
        for key, value in traits.paper_defaults.items():  # constructors default to the paper's values
            assert params[key].default == value, f"{name}.{key}"
        assert torch.isfinite(build_loss(name, **traits.paper_defaults)(torch.randn(5, 7), torch.randn(5, 7)).total)
    for name in IN_BATCH:
        assert loss_traits(name).in_batch_negatives, name


def test_hard_negative_trait_matches_the_forward() -> None:
    z1, z2, hn = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 7)
    for name in _builtin():
        loss = build_loss(name)
        if loss_traits(name).hard_negatives:
            assert torch.isfinite(loss(z1, z2, hn).total), name
        else:
            with pytest.raises(ValueError, match="hard negatives are not supported"):
                loss(z1, z2, hn)


def test_in_batch_trait_means_other_rows_matter() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    other = torch.randn(5, 7, generator=g, dtype=torch.float64)
    other[0] = 0.0
    for name in _builtin():
        if not loss_traits(name).in_batch_negatives:
            continue
        loss = build_loss(name)
        grads = []
        for a, b in ((z1, z2), (z1 + other, z2 + other)):  # row 0 unchanged, every other row moved
            a = a.clone().requires_grad_(True)
            grads.append(torch.autograd.grad(loss(a, b).total, a)[0][0])
        assert not torch.allclose(grads[0], grads[1]), name


def test_traits_of_presets_and_errors() -> None:
    traits = loss_traits("barlowtwins-mod-bert")
    assert traits == loss_traits("barlowtwins") and traits.name == "barlowtwins"
    assert traits.presets == (
        "barlowtwins-mod-bert",
        "barlowtwins-mod-roberta",
        "barlowtwins-ori-bert",
        "barlowtwins-ori-roberta",
    )
    assert loss_traits("infonce").presets == () and dict(loss_traits("infonce").paper_defaults) == {"temperature": 0.05}
    with pytest.raises(TypeError):
        loss_traits("infonce").paper_defaults["temperature"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss_traits("infonce").hard_negatives = False  # type: ignore[misc]
    with pytest.raises(CsrlError, match="unknown loss 'simclr'"):
        loss_traits("simclr")


def test_undeclared_traits(monkeypatch: pytest.MonkeyPatch) -> None:
    class Forgetful(Loss):
        in_batch_negatives = True

    with pytest.raises(TypeError, match="must declare hard_negatives, paper_defaults"):
        register_loss("test-forgetful")(Forgetful)
    assert "test-forgetful" not in loss_names()

    class Plain(nn.Module):  # not a Loss: the conservative answers
        def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
            return LossOutput((z1 - z2).pow(2).sum())

    monkeypatch.setitem(_LOSSES, "test-plain", Plain)
    assert loss_traits("test-plain") == LossTraits("test-plain", True, False, False, {}, ())


def test_importing_the_package_registers_every_loss_module() -> None:
    """A loss file whose module is missing from csrl/losses/__init__.py would be unknown to the trainer."""
    import csrl.losses as pkg

    declared = set()
    for path in Path(pkg.__file__).parent.glob("*.py"):
        declared |= set(re.findall(r'@register_loss\("([^"]+)"\)', path.read_text()))
    code = "import json, csrl.losses as L; print(json.dumps(L.loss_names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert declared and declared <= set(json.loads(out.stdout))
