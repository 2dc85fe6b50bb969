"""Logistic-regression probes on frozen embeddings, trained and selected as SentEval does.

Two trainers share one interface, :func:`train_probes`: ``x`` (n, dim) float32, integer labels ``y``
(n,), one probe per L2 penalty in ``l2regs``, each a :class:`LinearProbe` (logits = x W^T + b).

``backend="torch"`` re-implements SentEval's ``PyTorchClassifier``/``MLP`` with ``nhid=0``:

* every probe starts from the state SentEval gets after seeding: ``np.random.seed(seed)`` for the
  batch order (a local ``RandomState(seed)`` here) and ``torch.manual_seed(seed)`` before building
  ``nn.Linear`` (reproduced bit for bit with a local generator, see :func:`init_linear`);
* with no validation set, a ``validation_split`` fraction (0.05) of the training set, the first
  ``int(0.05 n)`` indices of one permutation, is held out for early stopping;
* one *epoch* is ``epoch_size`` passes over the shuffled training set in batches of ``batch_size``,
  minimising the batch-mean cross-entropy with Adam (lr 1e-3) or RMSprop (lr 1e-2), torch defaults,
  and the L2 penalty as the optimizer's ``weight_decay`` (on weight and bias, grad += l2 * param);
* after each epoch the validation accuracy is computed; a strictly better one keeps a copy of the
  model, otherwise a counter of failures grows and training stops once it has reached ``tenacity``
  before the increment (SentEval never resets the counter, so training stops at the
  ``tenacity + 1``-th epoch without improvement, consecutive or not), or after ``max_epoch``;
* the probe returned is the best copy; its ``val_accuracy`` is the best validation accuracy.

The probes of one call see the same data and the same seed, so SentEval would shuffle identically
for each of them; they are therefore trained together as one (len(l2regs) * n_classes, dim) matrix,
which is exact (the loss is a sum of per-probe terms, Adam and RMSprop act elementwise) and about
len(l2regs) times cheaper in Python overhead.

``backend="sklearn"`` (the fast mode) fits ``LogisticRegression(C=1 / (l2 * n), lbfgs)`` on the whole
training set, with no early stopping. The torch objective is mean cross-entropy + (l2 / 2) ||W||^2;
dividing scikit-learn's C * sum(cross-entropy) + 1/2 ||w||^2 by C n gives the same form with
l2 = 1 / (C n), hence C = 1 / (l2 n) for n training examples (scikit-learn does not penalise the
intercept). SentEval's own scikit-learn path uses fixed C grids instead; we map the torch grid so the
two backends search the same regularisation strengths.

Validation schemes (``senteval/tools/validation.py``): :func:`nested_kfold` (InnerKFoldClassifier;
MR, CR, SUBJ, MPQA), :func:`kfold_then_fit` (KFoldClassifier; TREC, MRPC) and :func:`dev_selection`
(SplitClassifier; SST-2). All select the penalty from :data:`L2_GRID` by the best rounded mean
validation accuracy, the first (smallest) one on ties, and report percentages rounded to 2 decimals
at the same points SentEval does.

Known differences from SentEval: rounding uses Python's ``round`` throughout (SentEval mixes
``round`` on Python and numpy floats, which can differ on exact ties); ``dev_selection`` reuses the
probe trained for the chosen penalty instead of training an identical one again; floating-point
sums may differ in the last bits because the probes are trained as one matrix; the folds come from
the installed scikit-learn's ``StratifiedKFold``, whose shuffling changed in scikit-learn 0.22.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

L2_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)  # SentEval: [10**t for t in range(-5, -1)]


@dataclass(frozen=True)
class ProbeConfig:
    """How to train and select probes. Defaults are SentEval's ``MLP`` defaults (SimCSE ``test``)."""

    backend: Literal["torch", "sklearn"] = "torch"  # SentEval's PyTorch classifier, or the fast mode
    optim: Literal["adam", "rmsprop"] = "adam"  # torch default hyper-parameters, as SentEval
    batch_size: int = 64  # training and scoring batch size
    tenacity: int = 5  # epochs without improvement tolerated (counter never resets)
    epoch_size: int = 4  # passes over the training set per epoch
    max_epoch: int = 200  # training stops once more than max_epoch passes were made
    kfold: int = 10  # folds of the outer and inner cross-validation
    validation_split: float = 0.05  # held-out fraction for early stopping when no dev set is given
    seed: int = 1111  # numpy/torch seed of every probe and random_state of the folds
    l2_grid: tuple[float, ...] = L2_GRID  # penalties searched (weight_decay; C = 1 / (l2 n) for sklearn)
    sklearn_max_iter: int = 1000  # lbfgs iterations of the sklearn backend


@dataclass(frozen=True)
class LinearProbe:
    """A trained linear classifier: logits = x @ weight.T + bias."""

    weight: FloatArray  # (n_classes, dim)
    bias: FloatArray  # (n_classes,)
    l2reg: float
    val_accuracy: float | None  # best validation accuracy in [0, 1]; None when none was measured
    epochs: int  # passes over the training set (0 for sklearn)

    def predict(self, x: FloatArray) -> IntArray:
        """Class index per row of x (n, dim); ties go to the lowest index."""
        return np.asarray(np.argmax(x @ self.weight.T + self.bias, axis=1), dtype=np.int64)

    def accuracy(self, x: FloatArray, y: IntArray) -> float:
        return int(np.sum(self.predict(x) == y)) / len(y)


@dataclass(frozen=True)
class ProbeResult:
    """One task's probe outcome, in percent rounded to 2 decimals as SentEval reports it."""

    dev_accuracy: float  # SentEval's ``devacc``: validation accuracy of the selected penalty
    test_accuracy: float  # SentEval's ``acc``
    l2regs: tuple[float, ...]  # selected penalty, one per outer fold for nested k-fold
    predictions: IntArray | None = None  # test predictions (kfold_then_fit, dev_selection)


def _val_accuracy(probe: LinearProbe) -> float:
    if probe.val_accuracy is None:
        raise ValueError("probe was trained without a validation set")
    return probe.val_accuracy


def _percent(value: float) -> float:
    return round(100.0 * float(value), 2)


def init_linear(dim: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (weight, bias) of ``nn.Linear(dim, n_classes)`` built right after ``torch.manual_seed(seed)``.

    nn.Linear draws weight ~ U(-a, a) with a = sqrt(3) * sqrt(2 / (1 + 5)) / sqrt(dim) (kaiming_uniform_
    with a=sqrt(5)), then bias ~ U(-1/sqrt(dim), 1/sqrt(dim)); a local generator leaves global state alone.
    """
    generator = torch.Generator().manual_seed(seed)
    weight_bound = math.sqrt(3.0) * (math.sqrt(2.0 / (1 + 5)) / math.sqrt(dim))
    bias_bound = 1 / math.sqrt(dim)
    weight = torch.empty(n_classes, dim).uniform_(-weight_bound, weight_bound, generator=generator)
    bias = torch.empty(n_classes).uniform_(-bias_bound, bias_bound, generator=generator)
    return weight, bias


def train_torch_probes(
    x: FloatArray,
    y: IntArray,
    *,
    n_classes: int,
    l2regs: Sequence[float],
    config: ProbeConfig,
    validation: tuple[FloatArray, IntArray] | None = None,
) -> list[LinearProbe]:
    """SentEval's ``MLP(nhid=0).fit``, once per penalty in l2regs, trained jointly (see module doc)."""
    rng = np.random.RandomState(config.seed)
    if validation is None:
        permutation = rng.permutation(len(x))
        n_dev = int(config.validation_split * len(x))
        x_val, y_val = x[permutation[:n_dev]], y[permutation[:n_dev]]
        x, y = x[permutation[n_dev:]], y[permutation[n_dev:]]
    else:
        x_val, y_val = validation
    n_probes, dim = len(l2regs), x.shape[1]
    x_train = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_train = torch.from_numpy(np.asarray(y, dtype=np.int64))
    x_dev = torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32))
    y_dev = torch.from_numpy(np.asarray(y_val, dtype=np.int64))

    weight0, bias0 = init_linear(dim, n_classes, config.seed)
    # Probe r owns rows r * n_classes ... (r + 1) * n_classes - 1.
    weight = weight0.repeat(n_probes, 1).requires_grad_()
    bias = bias0.repeat(n_probes).requires_grad_()
    decay = torch.tensor(list(l2regs), dtype=torch.float32).repeat_interleave(n_classes)
    optimizer: torch.optim.Optimizer
    if config.optim == "adam":
        optimizer = torch.optim.Adam([weight, bias])
    else:
        optimizer = torch.optim.RMSprop([weight, bias])

    best = [-1.0] * n_probes
    best_weight = weight.detach().clone()
    best_bias = bias.detach().clone()
    failures = [0] * n_probes
    active = [True] * n_probes
    best_epochs = [0] * n_probes
    n_epoch = 0
    while any(active) and n_epoch <= config.max_epoch:
        for _ in range(config.epoch_size):
            _train_pass(weight, bias, decay, optimizer, x_train, y_train, rng, config.batch_size, n_classes)
        n_epoch += config.epoch_size
        with torch.no_grad():
            predicted = torch.addmm(bias, x_dev, weight.T).view(len(x_dev), n_probes, n_classes).argmax(-1)
            correct = (predicted == y_dev[:, None]).sum(0).tolist()
        for r in range(n_probes):
            if not active[r]:
                continue
            accuracy = 1.0 * correct[r] / len(x_dev)
            rows = slice(r * n_classes, (r + 1) * n_classes)
            if accuracy > best[r]:
                best[r], best_epochs[r] = accuracy, n_epoch
                best_weight[rows] = weight.detach()[rows]
                best_bias[rows] = bias.detach()[rows]
            else:
                if failures[r] >= config.tenacity:
                    active[r] = False
                failures[r] += 1

    return [
        LinearProbe(
            weight=best_weight[r * n_classes : (r + 1) * n_classes].numpy().copy(),
            bias=best_bias[r * n_classes : (r + 1) * n_classes].numpy().copy(),
            l2reg=float(l2regs[r]),
            val_accuracy=best[r],
            epochs=best_epochs[r],
        )
        for r in range(n_probes)
    ]


def _train_pass(
    weight: torch.Tensor,
    bias: torch.Tensor,
    decay: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    rng: np.random.RandomState,
    batch_size: int,
    n_classes: int,
) -> None:
    """One pass over (x, y) in a fresh random order: SentEval's ``trainepoch`` inner loop."""
    permutation = torch.from_numpy(rng.permutation(len(x)))
    n_probes = weight.shape[0] // n_classes
    for start in range(0, len(x), batch_size):
        index = permutation[start : start + batch_size]
        x_batch, y_batch = x.index_select(0, index), y.index_select(0, index)
        logits = torch.addmm(bias, x_batch, weight.T).view(-1, n_classes)
        # Sum over probes of each probe's batch-mean cross-entropy.
        loss = F.cross_entropy(logits, y_batch.repeat_interleave(n_probes), reduction="sum") / len(index)
        optimizer.zero_grad()
        loss.backward()
        assert weight.grad is not None and bias.grad is not None
        with torch.no_grad():  # weight_decay as torch's Adam/RMSprop apply it: grad += l2 * param
            weight.grad.add_(weight * decay[:, None])
            bias.grad.add_(bias * decay)
        optimizer.step()


def train_sklearn_probes(
    x: FloatArray,
    y: IntArray,
    *,
    n_classes: int,
    l2regs: Sequence[float],
    config: ProbeConfig,
    validation: tuple[FloatArray, IntArray] | None = None,
) -> list[LinearProbe]:
    """Fast mode: ``LogisticRegression(C=1 / (l2 n))`` on all of (x, y); validation is only scored."""
    probes = []
    for l2 in l2regs:
        model = LogisticRegression(
            C=1.0 / (l2 * len(x)), max_iter=config.sklearn_max_iter, random_state=config.seed
        )
        model.fit(x, y)
        weight = np.zeros((n_classes, x.shape[1]), dtype=np.float32)
        bias = np.zeros(n_classes, dtype=np.float32)
        classes = model.classes_.astype(np.int64)
        if len(classes) == 2:  # one decision function: class 1 iff x w + b > 0
            weight[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
        else:
            weight[classes], bias[classes] = model.coef_, model.intercept_
        probe = LinearProbe(weight=weight, bias=bias, l2reg=float(l2), val_accuracy=None, epochs=0)
        if validation is not None:
            probe = LinearProbe(weight, bias, float(l2), probe.accuracy(*validation), 0)
        probes.append(probe)
    return probes


def train_probes(
    x: FloatArray,
    y: IntArray,
    *,
    n_classes: int,
    l2regs: Sequence[float],
    config: ProbeConfig,
    validation: tuple[FloatArray, IntArray] | None = None,
) -> list[LinearProbe]:
    """One probe per penalty in l2regs, with the backend named by ``config.backend``."""
    train = train_torch_probes if config.backend == "torch" else train_sklearn_probes
    return train(x, y, n_classes=n_classes, l2regs=l2regs, config=config, validation=validation)


def stratified_folds(y: IntArray, k: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    """(train_idx, test_idx) of ``StratifiedKFold(k, shuffle=True, random_state=seed)``, as SentEval."""
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def grid_scores(x: FloatArray, y: IntArray, *, n_classes: int, config: ProbeConfig) -> list[float]:
    """Mean validation accuracy (%, 2 decimals) of each penalty of the grid over k stratified folds."""
    accuracies = np.zeros((config.kfold, len(config.l2_grid)))
    for fold, (train, val) in enumerate(stratified_folds(y, config.kfold, config.seed)):
        probes = train_probes(
            x[train],
            y[train],
            n_classes=n_classes,
            l2regs=config.l2_grid,
            config=config,
            validation=(x[val], y[val]),
        )
        accuracies[fold] = [_val_accuracy(probe) for probe in probes]
    return [_percent(np.mean(accuracies[:, r])) for r in range(len(config.l2_grid))]


def _fit_selected(x: FloatArray, y: IntArray, l2: float, n_classes: int, config: ProbeConfig) -> LinearProbe:
    [probe] = train_probes(x, y, n_classes=n_classes, l2regs=[l2], config=config)
    return probe


def nested_kfold(x: FloatArray, y: IntArray, *, n_classes: int, config: ProbeConfig) -> ProbeResult:
    """SentEval's InnerKFoldClassifier: outer k folds; on each, inner k-fold CV picks the penalty,
    a probe trained on the outer train part (early stopping on a 5% split) is tested on the held-out
    fold. dev = mean over outer folds of the best inner score; test = mean of the fold accuracies.
    """
    dev_scores: list[float] = []
    test_scores: list[float] = []
    chosen: list[float] = []
    for train, test in stratified_folds(y, config.kfold, config.seed):
        scores = grid_scores(x[train], y[train], n_classes=n_classes, config=config)
        best = int(np.argmax(scores))
        probe = _fit_selected(x[train], y[train], config.l2_grid[best], n_classes, config)
        dev_scores.append(scores[best])
        test_scores.append(_percent(probe.accuracy(x[test], y[test])))
        chosen.append(config.l2_grid[best])
    return ProbeResult(
        dev_accuracy=round(float(np.mean(dev_scores)), 2),
        test_accuracy=round(float(np.mean(test_scores)), 2),
        l2regs=tuple(chosen),
    )


def kfold_then_fit(
    x_train: FloatArray,
    y_train: IntArray,
    x_test: FloatArray,
    y_test: IntArray,
    *,
    n_classes: int,
    config: ProbeConfig,
) -> ProbeResult:
    """SentEval's KFoldClassifier: k-fold CV on train picks the penalty (dev = its score), then a probe
    trained on all of train (early stopping on a 5% split) is tested once.
    """
    scores = grid_scores(x_train, y_train, n_classes=n_classes, config=config)
    best = int(np.argmax(scores))
    probe = _fit_selected(x_train, y_train, config.l2_grid[best], n_classes, config)
    return ProbeResult(
        dev_accuracy=scores[best],
        test_accuracy=_percent(probe.accuracy(x_test, y_test)),
        l2regs=(config.l2_grid[best],),
        predictions=probe.predict(x_test),
    )


def dev_selection(
    train: tuple[FloatArray, IntArray],
    dev: tuple[FloatArray, IntArray],
    test: tuple[FloatArray, IntArray],
    *,
    n_classes: int,
    config: ProbeConfig,
) -> ProbeResult:
    """SentEval's SplitClassifier: one probe per penalty on train, early-stopped and scored on dev;
    the best on dev is tested.
    """
    probes = train_probes(*train, n_classes=n_classes, l2regs=config.l2_grid, config=config, validation=dev)
    scores = [_percent(_val_accuracy(probe)) for probe in probes]
    best = int(np.argmax(scores))
    return ProbeResult(
        dev_accuracy=scores[best],
        test_accuracy=_percent(probes[best].accuracy(*test)),
        l2regs=(config.l2_grid[best],),
        predictions=probes[best].predict(test[0]),
    )
