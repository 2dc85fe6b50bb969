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
  and the L2 penalty as the optimizer's ``weight_decay`` (on weight and bias: grad += l2 * param);
* after each epoch the validation accuracy is computed; a strictly better one keeps a copy of the
  model, otherwise a failure counter is checked against ``tenacity`` and then incremented; SentEval
  never resets it, so training stops at the ``tenacity + 1``-th epoch without improvement,
  consecutive or not, or once more than ``max_epoch`` passes were made;
* the probe returned is the best copy; its ``val_accuracy`` is the best validation accuracy, which is
  what SentEval's ``clf.score`` on the validation set returns after ``fit``.

Implementation choices that keep that logic: the probes of one call see the same data and seed, so
SentEval would shuffle identically for each; they are trained together as one
(len(l2regs) * n_classes, dim + 1) matrix (bias as the last column, x gets a column of ones), which
is exact because the loss is a sum of per-probe terms and Adam and RMSprop act elementwise. The
gradient of the batch-mean cross-entropy is written out, (softmax - one_hot) / batch, instead of
going through autograd, and the updates are torch's own Adam/RMSprop. Training runs on one thread
(``ProbeConfig.threads``): these products are too small to share, and on a busy machine waiting
threads slowed training tenfold.

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
probe trained for the chosen penalty instead of training an identical one again; float sums differ
in the last bits (joint matrix, explicit gradient, CPU instead of CUDA); the folds come from the
installed scikit-learn's ``StratifiedKFold`` (its shuffling changed in 0.22) with ``config.seed``,
where InnerKFoldClassifier hard-codes 1111 (the same at the default seed). SentEval's
``loss_fn.size_average = False`` is set after construction and so, since torch 0.4.1, has no effect:
the loss is the batch mean there as here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

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
    threads: int | None = 1  # torch/BLAS threads while training (restored after); None leaves them


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


def _fit_torch(
    x: FloatArray,
    y: IntArray,
    *,
    n_classes: int,
    l2regs: Sequence[float],
    config: ProbeConfig,
    validation: tuple[FloatArray, IntArray] | None = None,
) -> list[LinearProbe]:
    rng = np.random.RandomState(config.seed)
    if validation is None:
        permutation = rng.permutation(len(x))
        n_dev = int(config.validation_split * len(x))
        x_val, y_val = x[permutation[:n_dev]], y[permutation[:n_dev]]
        x, y = x[permutation[n_dev:]], y[permutation[n_dev:]]
    else:
        x_val, y_val = validation
    if len(x_val) == 0:
        raise ValueError(f"empty validation set: {len(x)} training examples are too few for early stopping")
    n_probes, dim = len(l2regs), x.shape[1]
    x_train, y_train = _with_ones(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
    x_dev, y_dev = _with_ones(x_val), torch.from_numpy(np.asarray(y_val, dtype=np.int64))

    # One (n_probes * n_classes, dim + 1) matrix: probe r owns rows r * n_classes ... (r + 1) * n_classes - 1,
    # the last column is its bias (x gets a column of ones). All probes start from the same nn.Linear.
    weight0, bias0 = init_linear(dim, n_classes, config.seed)
    params = torch.cat([weight0, bias0[:, None]], dim=1).repeat(n_probes, 1)
    params.grad = torch.zeros_like(params)
    decay = torch.tensor(list(l2regs), dtype=torch.float32).repeat_interleave(n_classes)[:, None]
    optimizer: torch.optim.Optimizer
    optimizer = torch.optim.Adam([params]) if config.optim == "adam" else torch.optim.RMSprop([params])

    best = [-1.0] * n_probes
    best_params = params.clone()
    best_epochs = [0] * n_probes
    failures = [0] * n_probes
    active = [True] * n_probes
    n_epoch = 0
    while any(active) and n_epoch <= config.max_epoch:
        for _ in range(config.epoch_size):
            _train_pass(params, decay, optimizer, x_train, y_train, rng, config.batch_size, n_classes)
        n_epoch += config.epoch_size
        predicted = (x_dev @ params.T).view(len(x_dev), n_probes, n_classes).argmax(-1)
        correct = (predicted == y_dev[:, None]).sum(0).tolist()
        for r in range(n_probes):
            if not active[r]:
                continue
            accuracy = 1.0 * correct[r] / len(x_dev)
            if accuracy > best[r]:
                best[r], best_epochs[r] = accuracy, n_epoch
                rows = slice(r * n_classes, (r + 1) * n_classes)
                best_params[rows] = params[rows]
            else:
                if failures[r] >= config.tenacity:
                    active[r] = False
                failures[r] += 1

    probes = []
    for r in range(n_probes):
        block = best_params[r * n_classes : (r + 1) * n_classes].numpy()
        probe = LinearProbe(
            weight=block[:, :dim].copy(),
            bias=block[:, dim].copy(),
            l2reg=float(l2regs[r]),
            val_accuracy=best[r],
            epochs=best_epochs[r],
        )
        probes.append(probe)
    return probes


def _with_ones(x: FloatArray) -> torch.Tensor:
    """(n, dim) -> (n, dim + 1) float32 tensor whose last column is 1, for the bias."""
    out = np.ones((len(x), x.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = x
    return torch.from_numpy(out)


def _train_pass(
    params: torch.Tensor,
    decay: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    rng: np.random.RandomState,
    batch_size: int,
    n_classes: int,
) -> None:
    """One pass over (x, y) in a fresh random order: SentEval's ``trainepoch`` inner loop.

    The gradient is written out instead of using autograd (about twice as fast for such small
    products): for batch-mean cross-entropy, d loss / d logits = (softmax(logits) - one_hot(y)) / batch,
    then d loss / d params = that^T @ x; weight_decay adds l2 * params, as torch's optimizers do.
    """
    permutation = torch.from_numpy(rng.permutation(len(x)))
    one_hot = torch.eye(n_classes)
    n_rows = params.shape[0]
    assert params.grad is not None
    for start in range(0, len(x), batch_size):
        index = permutation[start : start + batch_size]
        x_batch, y_batch = x.index_select(0, index), y.index_select(0, index)
        probs = torch.softmax((x_batch @ params.T).view(len(index), -1, n_classes), dim=-1)
        d_logits = (probs - one_hot[y_batch][:, None, :]).view(len(index), n_rows) / len(index)
        torch.addmm(params * decay, d_logits.T, x_batch, out=params.grad)
        optimizer.step()


def _fit_sklearn(
    x: FloatArray,
    y: IntArray,
    *,
    n_classes: int,
    l2regs: Sequence[float],
    config: ProbeConfig,
    validation: tuple[FloatArray, IntArray] | None = None,
) -> list[LinearProbe]:
    probes = []
    for l2 in l2regs:
        model = LogisticRegression(C=1.0 / (l2 * len(x)), max_iter=config.sklearn_max_iter, random_state=config.seed)
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
    with limited_threads(config.threads):
        return _train(x, y, n_classes=n_classes, l2regs=l2regs, config=config, validation=validation)


def _train(
    x: FloatArray,
    y: IntArray,
    *,
    n_classes: int,
    l2regs: Sequence[float],
    config: ProbeConfig,
    validation: tuple[FloatArray, IntArray] | None = None,
) -> list[LinearProbe]:
    fit = _fit_torch if config.backend == "torch" else _fit_sklearn
    return fit(x, y, n_classes=n_classes, l2regs=l2regs, config=config, validation=validation)


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
    torch_config = replace(config, backend="torch")
    return train_probes(x, y, n_classes=n_classes, l2regs=l2regs, config=torch_config, validation=validation)


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
    sk_config = replace(config, backend="sklearn")
    return train_probes(x, y, n_classes=n_classes, l2regs=l2regs, config=sk_config, validation=validation)


@contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Run with at most ``threads`` torch intra-op and BLAS/OpenMP threads, restoring them after.

    The probes multiply (batch, dim) by (dim, a few) matrices: thread start-up costs more than it
    saves, and on a busy machine spinning threads slow training several-fold. Entering costs a few
    milliseconds (threadpoolctl inspects the loaded libraries), so the validation schemes enter once.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(previous)


def stratified_folds(y: IntArray, k: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    """(train_idx, test_idx) of ``StratifiedKFold(k, shuffle=True, random_state=seed)``, as SentEval."""
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def grid_scores(x: FloatArray, y: IntArray, *, n_classes: int, config: ProbeConfig) -> list[float]:
    """Mean validation accuracy (%, 2 decimals) of each penalty of the grid over k stratified folds."""
    with limited_threads(config.threads):
        return _grid_scores(x, y, n_classes=n_classes, config=config)


def _grid_scores(x: FloatArray, y: IntArray, *, n_classes: int, config: ProbeConfig) -> list[float]:
    accuracies = np.zeros((config.kfold, len(config.l2_grid)))
    for fold, (train, val) in enumerate(stratified_folds(y, config.kfold, config.seed)):
        probes = _train(
            x[train],
            y[train],
            n_classes=n_classes,
            l2regs=config.l2_grid,
            config=config,
            validation=(x[val], y[val]),
        )
        accuracies[fold] = [_val_accuracy(probe) for probe in probes]
    return [_percent(float(np.mean(accuracies[:, r]))) for r in range(len(config.l2_grid))]


def _fit_selected(x: FloatArray, y: IntArray, l2: float, n_classes: int, config: ProbeConfig) -> LinearProbe:
    [probe] = _train(x, y, n_classes=n_classes, l2regs=[l2], config=config)
    return probe


def nested_kfold(x: FloatArray, y: IntArray, *, n_classes: int, config: ProbeConfig) -> ProbeResult:
    """SentEval's InnerKFoldClassifier: outer k folds; on each, inner k-fold CV picks the penalty,
    a probe trained on the outer train part (early stopping on a 5% split) is tested on the held-out
    fold. dev = mean over outer folds of the best inner score; test = mean of the fold accuracies.
    """
    dev_scores: list[float] = []
    test_scores: list[float] = []
    chosen: list[float] = []
    with limited_threads(config.threads):
        for train, test in stratified_folds(y, config.kfold, config.seed):
            scores = _grid_scores(x[train], y[train], n_classes=n_classes, config=config)
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
    with limited_threads(config.threads):
        scores = _grid_scores(x_train, y_train, n_classes=n_classes, config=config)
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
    with limited_threads(config.threads):
        probes = _train(*train, n_classes=n_classes, l2regs=config.l2_grid, config=config, validation=dev)
    scores = [_percent(_val_accuracy(probe)) for probe in probes]
    best = int(np.argmax(scores))
    return ProbeResult(
        dev_accuracy=scores[best],
        test_accuracy=_percent(probes[best].accuracy(*test)),
        l2regs=(config.l2_grid[best],),
        predictions=probes[best].predict(test[0]),
    )
