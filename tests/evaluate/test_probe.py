from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csrl.evaluate.probe import (
    L2_GRID,
    ProbeConfig,
    dev_selection,
    grid_scores,
    init_linear,
    kfold_then_fit,
    limited_threads,
    nested_kfold,
    stratified_folds,
    train_probes,
    train_sklearn_probes,
    train_torch_probes,
)

FASTTEST = ProbeConfig(optim="rmsprop", batch_size=128, tenacity=3, epoch_size=2, kfold=5)
FAST = ProbeConfig(backend="sklearn", kfold=5)


def _blobs(n: int, dim: int, n_classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random centres; spread controls the overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = rng.integers(0, n_classes, size=n)
    x = centres[y] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32), y.astype(np.int64)


def reference_fit(
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    l2: float,
    n_classes: int,
    config: ProbeConfig,
) -> tuple[float, np.ndarray]:
    """SentEval's MLP(nhid=0).fit written from its description, with global seeding and nn.Linear."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(), limited_threads(1):
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        model = nn.Linear(x.shape[1], n_classes)
        optim = torch.optim.Adam if config.optim == "adam" else torch.optim.RMSprop
        optimizer = optim(model.parameters(), weight_decay=l2)
        if validation is None:
            perm = np.random.permutation(len(x))
            cut = int(config.validation_split * len(x))
            validation = (x[perm[:cut]], y[perm[:cut]])
            x, y = x[perm[cut:]], y[perm[cut:]]
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        xv, yv = torch.from_numpy(validation[0]), torch.from_numpy(validation[1])
        n_epoch, best, stop, count = 0, -1.0, False, 0
        best_model = model
        while not stop and n_epoch <= config.max_epoch:
            for _ in range(config.epoch_size):
                perm = np.random.permutation(len(xt))
                for i in range(0, len(xt), config.batch_size):
                    idx = torch.from_numpy(perm[i : i + config.batch_size])
                    loss = F.cross_entropy(model(xt[idx]), yt[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            n_epoch += config.epoch_size
            with torch.no_grad():
                accuracy = (model(xv).argmax(1) == yv).sum().item() / len(xv)
            if accuracy > best:
                best, best_model = accuracy, copy.deepcopy(model)
            else:
                if count >= config.tenacity:
                    stop = True
                count += 1
    np.random.set_state(np_state)
    return best, best_model.weight.detach().numpy()


def test_init_linear_matches_seeded_nn_linear() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(1111)
        expected = nn.Linear(384, 6)
    weight, bias = init_linear(384, 6, 1111)
    assert torch.equal(weight, expected.weight.data)
    assert torch.equal(bias, expected.bias.data)


@pytest.mark.parametrize("optim", ["rmsprop", "adam"])
@pytest.mark.parametrize("held_out", [True, False])
def test_torch_probes_match_senteval_reference(optim: Literal["adam", "rmsprop"], held_out: bool) -> None:
    x, y = _blobs(400, 8, 3, spread=1.5, seed=0)
    config = ProbeConfig(optim=optim, batch_size=32, tenacity=2, epoch_size=1, max_epoch=12)
    validation = (x[300:], y[300:]) if held_out else None
    train_x, train_y = (x[:300], y[:300]) if held_out else (x, y)
    l2regs = (1e-4, 1e-2)
    probes = train_torch_probes(train_x, train_y, n_classes=3, l2regs=l2regs, config=config, validation=validation)
    for probe, l2 in zip(probes, l2regs, strict=True):
        accuracy, weight = reference_fit(train_x, train_y, validation, l2, 3, config)
        assert probe.val_accuracy == accuracy
        np.testing.assert_allclose(probe.weight, weight, atol=1e-4)


def test_joint_training_equals_one_at_a_time() -> None:
    x, y = _blobs(400, 8, 2, spread=2.0, seed=1)
    joint = train_torch_probes(x, y, n_classes=2, l2regs=L2_GRID, config=FASTTEST)
    for probe, l2 in zip(joint, L2_GRID, strict=True):
        [alone] = train_torch_probes(x, y, n_classes=2, l2regs=[l2], config=FASTTEST)
        assert alone.val_accuracy == probe.val_accuracy and alone.epochs == probe.epochs
        np.testing.assert_allclose(alone.weight, probe.weight, atol=1e-5)


@pytest.mark.parametrize("config", [FASTTEST, FAST], ids=["torch", "sklearn"])
def test_separable_data_is_learned(config: ProbeConfig) -> None:
    x, y = _blobs(600, 16, 4, spread=0.2, seed=2)
    [probe] = train_probes(x[:400], y[:400], n_classes=4, l2regs=[1e-4], config=config)
    assert probe.accuracy(x[400:], y[400:]) >= 0.99


@pytest.mark.parametrize("config", [FASTTEST, FAST], ids=["torch", "sklearn"])
def test_random_labels_stay_at_chance(config: ProbeConfig) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1600, 16)).astype(np.float32)
    y = rng.integers(0, 2, size=1600).astype(np.int64)
    [probe] = train_probes(x[:1000], y[:1000], n_classes=2, l2regs=[1e-3], config=config)
    assert abs(probe.accuracy(x[1000:], y[1000:]) - 0.5) < 0.06


def test_stratified_folds() -> None:
    y = np.array([0] * 53 + [1] * 31 + [2] * 16, dtype=np.int64)
    folds = stratified_folds(y, 5, 1111)
    assert len(folds) == 5
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen.tolist()) == list(range(100))  # disjoint and covering
    for train, test in folds:
        assert set(train.tolist()).isdisjoint(test.tolist()) and len(train) + len(test) == 100
        assert abs(len(test) - 20) <= 1
        for label, total in ((0, 53), (1, 31), (2, 16)):
            assert abs(int(np.sum(y[test] == label)) - total / 5) <= 1  # stratified
    again = stratified_folds(y, 5, 1111)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = stratified_folds(y, 5, 1112)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_grid_scores_and_selection_rounding() -> None:
    x, y = _blobs(400, 8, 2, spread=1.5, seed=4)
    scores = grid_scores(x, y, n_classes=2, config=FAST)
    assert len(scores) == len(L2_GRID)
    assert all(round(s, 2) == s and 0 <= s <= 100 for s in scores)


def test_torch_and_sklearn_protocols_agree() -> None:
    x, y = _blobs(500, 8, 2, spread=2.0, seed=5)
    torch_result = nested_kfold(x, y, n_classes=2, config=FASTTEST)
    sklearn_result = nested_kfold(x, y, n_classes=2, config=FAST)
    assert len(torch_result.l2regs) == 5 and set(torch_result.l2regs) <= set(L2_GRID)
    assert abs(torch_result.test_accuracy - sklearn_result.test_accuracy) < 2.0
    assert abs(torch_result.dev_accuracy - sklearn_result.dev_accuracy) < 2.0

    x_test, y_test = _blobs(1000, 8, 2, spread=2.0, seed=5)  # same centres (same seed)
    x_test, y_test = x_test[500:], y_test[500:]  # unseen noise
    reference = nested_kfold(x, y, n_classes=2, config=FAST).test_accuracy
    for config in (FASTTEST, FAST):
        kfold = kfold_then_fit(x, y, x_test, y_test, n_classes=2, config=config)
        split = dev_selection((x[:400], y[:400]), (x[400:], y[400:]), (x_test, y_test), n_classes=2, config=config)
        assert kfold.predictions is not None and kfold.predictions.shape == (500,)
        assert abs(kfold.test_accuracy - reference) < 4.0
        assert abs(split.test_accuracy - reference) < 4.0


def test_protocols_are_deterministic() -> None:
    x, y = _blobs(300, 8, 3, spread=1.5, seed=6)
    for config in (FASTTEST, FAST):
        first = kfold_then_fit(x[:200], y[:200], x[200:], y[200:], n_classes=3, config=config)
        second = kfold_then_fit(x[:200], y[:200], x[200:], y[200:], n_classes=3, config=config)
        assert first.dev_accuracy == second.dev_accuracy and first.test_accuracy == second.test_accuracy
        assert first.predictions is not None and second.predictions is not None
        assert np.array_equal(first.predictions, second.predictions)


def test_sklearn_penalty_mapping() -> None:
    x, y = _blobs(300, 6, 2, spread=1.0, seed=7)
    strong, weak = train_sklearn_probes(x, y, n_classes=2, l2regs=[1e-1, 1e-5], config=FAST)
    assert np.linalg.norm(strong.weight) < np.linalg.norm(weak.weight)
    assert strong.val_accuracy is None and strong.weight[0].tolist() == [0.0] * 6
