"""The logistic head fits deterministically (needs the train extra)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from rtserver.routing.training.head import choose_c, fit, macro_accuracy


def _blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 8)) * 1.5  # overlapping: the optimum is finite
    y = np.repeat(np.arange(3), 30)
    x = (centers[y] + rng.normal(size=(90, 8))).astype(np.float32)
    return x, y.astype(np.int64)


def test_clustered_data_is_learned() -> None:
    x, y = _blobs(1)
    head = fit(x, y, 3, c=10.0)
    assert head.weight.shape == (8, 3) and head.bias.shape == (3,)
    assert macro_accuracy(y, head.predict(x), 3) >= 0.9


def test_fit_and_choice_are_deterministic() -> None:
    x, y = _blobs(2)
    a, b = fit(x, y, 3, 3.0), fit(x, y, 3, 3.0)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert choose_c(x, y, 3, seed=7, folds=3, grid=(1.0, 10.0)) == choose_c(x, y, 3, seed=7, folds=3, grid=(1.0, 10.0))


def test_macro_accuracy_averages_over_classes() -> None:
    y = np.array([0, 0, 0, 1], dtype=np.int64)
    assert macro_accuracy(y, np.array([0, 0, 0, 0], dtype=np.int64), 2) == 0.5
