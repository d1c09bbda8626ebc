"""Multinomial logistic regression over sentence embeddings, fitted with torch L-BFGS.

Deterministic: float64, full batch, zero initialisation, and a seeded fold split
for choosing the L2 strength, so the same data always gives the same head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

DEFAULT_C_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass(frozen=True, slots=True)
class LinearHead:
    """``softmax(x @ weight + bias)``: ``weight`` is ``[dim, classes]``, ``bias`` is ``[classes]``."""

    weight: FloatArray
    bias: FloatArray
    c: float

    def predict(self, x: FloatArray) -> IntArray:
        return np.asarray(np.argmax(x @ self.weight + self.bias, axis=1), dtype=np.int64)


def fit(x: FloatArray, y: IntArray, n_classes: int, c: float) -> LinearHead:
    """Minimise mean cross-entropy + ``||W||^2 / (2 C n)`` (scikit-learn's C convention).

    Runs torch on one thread (restored afterwards): the problem is tiny, and
    extra threads only spin, 30x slower on a busy machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(x, y, n_classes, c)
    finally:
        torch.set_num_threads(threads)


def _fit(x: FloatArray, y: IntArray, n_classes: int, c: float) -> LinearHead:
    xt = torch.from_numpy(x.astype(np.float64))
    yt = torch.from_numpy(y.astype(np.int64))
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    lam = 1.0 / (c * len(y))
    opt = torch.optim.LBFGS(
        [w, b], max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt) + 0.5 * lam * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return LinearHead(
        weight=w.detach().numpy().astype(np.float32),
        bias=b.detach().numpy().astype(np.float32),
        c=c,
    )


def macro_accuracy(y_true: IntArray, y_pred: IntArray, n_classes: int) -> float:
    """Mean over classes of per-class accuracy (recall); classes absent from ``y_true`` are skipped."""
    per = [float(np.mean(y_pred[y_true == k] == k)) for k in range(n_classes) if np.any(y_true == k)]
    return float(np.mean(per))


def choose_c(
    x: FloatArray, y: IntArray, n_classes: int, *, seed: int, folds: int = 5, grid: Sequence[float] = DEFAULT_C_GRID
) -> tuple[float, dict[float, float]]:
    """Pick C by ``folds``-fold cross-validated macro accuracy on the training set; ties go to the smaller C."""
    order = np.random.default_rng(seed).permutation(len(y))
    parts = np.array_split(order, folds)
    scores: dict[float, float] = {}
    for c in grid:
        accs = []
        for i in range(folds):
            held = parts[i]
            rest = np.concatenate([parts[j] for j in range(folds) if j != i])
            head = fit(x[rest], y[rest], n_classes, c)
            accs.append(macro_accuracy(y[held], head.predict(x[held]), n_classes))
        scores[c] = round(float(np.mean(accs)), 6)
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, scores
