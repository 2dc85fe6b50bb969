"""ESimCSE's momentum encoder and queue (csrl.train.momentum): the EMA by hand, FIFO order, no dropout, state."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from torch import nn

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.train.momentum import MomentumQueue

SENTENCES = ["a man plays a guitar", "the cat sleeps on the sofa", "stock prices fell", "two dogs play in snow"]


@pytest.fixture()
def encoder(tiny_model_dir: Path) -> Encoder:
    torch.manual_seed(0)
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    enc.train()
    return enc


def test_the_update_is_the_ema_formula(encoder: Encoder) -> None:
    mq = MomentumQueue(encoder, momentum=0.9, size=4)
    frozen = encoder.head.linear.bias  # type: ignore[union-attr]
    frozen.requires_grad_(False)  # frozen parameters (a sentence-transformers tail) are not averaged
    encoder.add_module("mlm_head", nn.Linear(32, 5))  # attached after the copy: not in the momentum encoder
    momentum = {n: p.detach().double().clone() for n, p in mq.encoder.named_parameters()}
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # the online weights move; the momentum weights follow by hand
        with torch.no_grad():
            for p in encoder.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        online = {n: p.detach().double() for n, p in encoder.named_parameters()}
        for n in momentum:
            if n != "head.linear.bias":
                momentum[n] = 0.9 * momentum[n] + (1 - 0.9) * online[n]
        mq.update(encoder)
        for n, p in mq.encoder.named_parameters():
            torch.testing.assert_close(p.double(), momentum[n], rtol=1e-6, atol=1e-6, msg=n)
    assert not any(p.requires_grad for p in mq.encoder.parameters())
    assert "mlm_head.weight" not in dict(mq.encoder.named_parameters())


def test_momentum_one_freezes_and_zero_copies(encoder: Encoder) -> None:
    frozen, copied = MomentumQueue(encoder, momentum=1.0, size=2), MomentumQueue(encoder, momentum=0.0, size=2)
    before = {n: p.clone() for n, p in frozen.encoder.named_parameters()}
    with torch.no_grad():
        for p in encoder.parameters():
            p.mul_(1.5)
    frozen.update(encoder)
    copied.update(encoder)
    online = dict(encoder.named_parameters())
    for n, p in frozen.encoder.named_parameters():
        assert torch.equal(p, before[n]), n
    for n, p in copied.encoder.named_parameters():
        assert torch.equal(p, online[n]), n


def test_the_queue_is_first_in_first_out(encoder: Encoder) -> None:
    mq = MomentumQueue(encoder, momentum=0.9, size=7)
    assert mq.negatives() is None
    rows = torch.arange(9 * 32, dtype=torch.float32).reshape(9, 32)
    mq.enqueue(rows[:3])
    assert torch.equal(mq.negatives(), rows[:3])  # type: ignore[arg-type]
    mq.enqueue(rows[3:6])
    mq.enqueue(rows[6:9])  # 9 rows in, 7 kept: the two oldest dropped, newest last
    assert torch.equal(mq.queue, rows[2:9])
    mq.enqueue(rows[:1].double())
    assert mq.queue.dtype == torch.float32 and torch.equal(mq.queue, torch.cat([rows[3:9], rows[:1]]))
    with pytest.raises(ValueError, match="at least one row"):
        MomentumQueue(encoder, momentum=0.9, size=0)


def test_keys_have_no_dropout_and_the_training_head(encoder: Encoder) -> None:
    mq = MomentumQueue(encoder, momentum=0.995, size=8)
    features = encoder.tokenize(SENTENCES, max_length=16)
    a, b = mq.encoder(features), mq.encoder(features)
    assert torch.equal(a, b) and not a.requires_grad  # no dropout, no graph
    encoder.backbone.eval()
    with torch.no_grad():
        online = encoder(features)  # the online encoder, dropout off, head on (encoder in training mode)
        encoder.eval()
        no_head = encoder(features)
    torch.testing.assert_close(a, online, rtol=0, atol=0)
    assert not torch.allclose(a, no_head)


def test_step_updates_then_enqueues_and_the_state_round_trips(encoder: Encoder) -> None:
    mq = MomentumQueue(encoder, momentum=0.5, size=6)
    features = encoder.tokenize(SENTENCES, max_length=16)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01)
    expected = {n: 0.5 * p + 0.5 * dict(encoder.named_parameters())[n] for n, p in mq.encoder.named_parameters()}
    mq.step(encoder, features, autocast=contextlib.nullcontext)
    for n, p in mq.encoder.named_parameters():
        torch.testing.assert_close(p, expected[n].detach(), msg=n)
    with torch.no_grad():
        torch.testing.assert_close(mq.queue, mq.encoder(features))  # keys of the updated momentum encoder
    mq.step(encoder, features, autocast=contextlib.nullcontext)
    assert mq.queue.shape == (6, 32)
    state = mq.state_dict()
    other = MomentumQueue(encoder, momentum=0.5, size=6)
    other.load_state_dict(state)
    assert torch.equal(other.queue, mq.queue)
    for (n, p), (_, q) in zip(other.encoder.state_dict().items(), mq.encoder.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    with pytest.raises(CsrlError, match="no momentum encoder"):
        other.load_state_dict(None)
