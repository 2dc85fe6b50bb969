from __future__ import annotations

import pytest

from csrl.errors import CsrlError
from csrl.train.config import apply_overrides
from csrl.utils.dotted import MISSING, dotted_path, get_dotted, set_dotted


def test_set_dotted_creates_sections_and_copies_values() -> None:
    raw: dict = {"train": {"lr": 1e-5}}
    value = [1, 2]
    set_dotted(raw, "train.seed", 3)
    set_dotted(raw, ["model", "pooler"], "mean")
    set_dotted(raw, "data.train_files", value)
    value.append(3)
    assert raw == {"train": {"lr": 1e-5, "seed": 3}, "model": {"pooler": "mean"}, "data": {"train_files": [1, 2]}}


def test_loss_shorthand() -> None:
    assert dotted_path("loss.temperature") == ["loss", "params", "temperature"]
    assert dotted_path("loss.name") == ["loss", "name"] and dotted_path("loss.params.t") == ["loss", "params", "t"]
    raw: dict = {"loss": {"name": "infonce"}}
    set_dotted(raw, "loss.temperature", 0.1)
    assert raw == {"loss": {"name": "infonce", "params": {"temperature": 0.1}}}
    assert get_dotted(raw, "loss.temperature") == 0.1 and get_dotted(raw, "loss.margin") is MISSING
    assert get_dotted(raw, "train.lr") is MISSING and get_dotted(raw, "loss.name.x") is MISSING


@pytest.mark.parametrize("key", ["", "train.", ".lr", "train..lr"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(CsrlError, match="not a dotted config key"):
        set_dotted({}, key, 1)


def test_a_value_is_not_a_section() -> None:
    raw: dict = {"train": {"lr": 1e-5}}
    with pytest.raises(CsrlError, match=r"train.lr.x: 'train.lr' is not a section"):
        set_dotted(raw, "train.lr.x", 1)
    with pytest.raises(CsrlError, match=r"override 'train.lr.x=1': .*'train.lr' is not a section"):
        apply_overrides(raw, ["train.lr.x=1"])
    assert raw == {"train": {"lr": 1e-5}}


def test_apply_overrides_uses_the_same_keys() -> None:
    raw = {"loss": {"name": "infonce"}, "train": {"lr": 1e-5}}
    out = apply_overrides(raw, ["loss.temperature=0.1", "train.lr=0.001", "model.pooler=mean"])
    assert out == {"loss": {"name": "infonce", "params": {"temperature": 0.1}}, "train": {"lr": 0.001},
                   "model": {"pooler": "mean"}}  # fmt: skip
    assert raw == {"loss": {"name": "infonce"}, "train": {"lr": 1e-5}}  # the input is not changed
