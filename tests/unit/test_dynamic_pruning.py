"""Dynamic pruning: each period trains on the hardest rows by the live model's EL2N, for fixed steps.

Known answers on a small synthetic problem: the periods' lengths and the
number of rescorings follow from the pool, the batch size and ``every``;
each pruned period's rows are the top rows by EL2N recomputed here, in
numpy, from the model's weights at the step of the rescoring; every run
trains for exactly the configured steps; the first period is the
whole-pool model of the same seed; 1 and 2 torch threads keep the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from thresher.config import parse_config
from thresher.errors import ConfigError
from thresher.models.classifier import Classifier, SGDSettings, train_classifier
from thresher.models.dynamic_pruning import (
    DynamicSchedule,
    dynamic_params,
    hardest,
    period_steps,
    train_dynamic,
)

N, DIM, CLASSES = 400, 8, 3
SETTINGS = SGDSettings(steps=30, batch_size=40, lr=0.2, momentum=0.9)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small steps: threads cost more than they save
    yield
    torch.set_num_threads(before)


def _blobs(n: int, dim: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Three overlapping Gaussian classes, a tenth of the labels flipped."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, CLASSES, n)
    x = rng.normal(scale=1.5, size=(CLASSES, dim))[targets] + rng.normal(size=(n, dim))
    flipped = rng.random(n) < 0.1
    targets[flipped] = (targets[flipped] + 1) % CLASSES
    return x.astype(np.float32), targets.astype(np.int64)


def _numpy_el2n(
    weights: dict[str, NDArray[np.float64]], x: NDArray[np.float32], y: NDArray[np.int64]
) -> NDArray[np.float64]:
    """||softmax(f(x)) - onehot(y)||_2 of the one-hidden-layer model, directly in float64."""
    h = np.maximum(x.astype(np.float64) @ weights["hidden.weight"].T + weights["hidden.bias"], 0)
    logits = h @ weights["out.weight"].T + weights["out.bias"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(y.size), y] -= 1.0
    return np.linalg.norm(p, axis=1)


def _snapshots(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    schedule: DynamicSchedule | None,
    seed: int,
    batches: list[NDArray[np.int64]] | None = None,
) -> dict[int, dict[str, NDArray[np.float64]]]:
    """Train (dynamically with ``schedule``); the weights after every step, ``batches`` trained."""
    seen: dict[int, dict[str, NDArray[np.float64]]] = {}

    def keep(step: int, model: Classifier) -> None:
        seen[step] = {k: v.detach().double().numpy().copy() for k, v in model.weights.items()}

    def recorded(model: Classifier) -> Iterator[NDArray[np.int64]]:
        assert schedule is not None and batches is not None
        for rows in schedule(model):
            batches.append(rows)
            yield rows

    train_classifier(
        x,
        y,
        CLASSES,
        16,
        SETTINGS,
        seed,
        every=1,
        on_checkpoint=keep,
        batches=None if schedule is None else recorded,
    )
    return seen


def test_each_period_trains_on_the_hardest_rows_of_the_model_at_that_step() -> None:
    x, y = _blobs(N, DIM, seed=0)
    keep = 120  # prune rate 0.7
    schedule = DynamicSchedule(x, y, keep, every=1, batch_size=40, steps=30, seed=5)
    batches: list[NDArray[np.int64]] = []
    seen = _snapshots(x, y, schedule, seed=5, batches=batches)

    # one epoch of the pool (400 // 40 = 10 steps), then epochs of 120 // 40 = 3 steps
    assert [p.steps for p in schedule.periods] == [10, 3, 3, 3, 3, 3, 3, 2]
    assert [p.start for p in schedule.periods] == [0, 10, 13, 16, 19, 22, 25, 28]
    assert schedule.rescorings == 7 and len(seen) == SETTINGS.steps
    assert schedule.periods[0].rows.tolist() == list(range(N))
    changed = 0
    for before, period in zip(schedule.periods, schedule.periods[1:], strict=False):
        exact = _numpy_el2n(seen[period.start], x, y)
        rounded = exact.astype(np.float32).astype(np.float64)
        expected = np.sort(np.lexsort((np.arange(N), -rounded))[:keep])
        assert period.rows.tolist() == expected.tolist()
        dropped = np.setdiff1d(np.arange(N), period.rows)
        assert exact[period.rows].min() >= exact[dropped].max() - 1e-6
        changed += int(not np.array_equal(before.rows, period.rows))
    assert changed >= 3  # the subset follows the model, not one static choice
    # each step trains on batch_size distinct rows of its period's subset
    assert len(batches) == SETTINGS.steps
    for period in schedule.periods:
        for rows in batches[period.start : period.start + period.steps]:
            assert rows.size == 40 == np.unique(rows).size and np.isin(rows, period.rows).all()
    trained = np.unique(np.concatenate(batches))
    assert np.flatnonzero(schedule.trained).tolist() == trained.tolist()

    # until its first rescoring, the model is the whole-pool model of the same seed
    whole = _snapshots(x, y, None, seed=5)
    for name, value in whole[10].items():
        np.testing.assert_array_equal(seen[10][name], value)
    assert not np.array_equal(seen[13]["out.weight"], whole[13]["out.weight"])


@pytest.mark.parametrize(("keep", "every"), [(400, 1), (120, 2), (12, 0.5)])
def test_every_rate_trains_the_configured_steps(keep: int, every: float) -> None:
    x, y = _blobs(N, DIM, seed=1)
    steps: list[int] = []
    schedule = DynamicSchedule(x, y, keep, every, batch_size=40, steps=30, seed=2)
    train_classifier(
        x, y, CLASSES, 0, SETTINGS, 2, every=1, on_checkpoint=lambda k, _: steps.append(k),
        batches=schedule,
    )  # fmt: skip
    assert steps == list(range(1, SETTINGS.steps + 1))
    assert sum(p.steps for p in schedule.periods) == SETTINGS.steps
    first = period_steps(N, 40, every)
    assert schedule.periods[0].steps == first
    assert all(p.rows.size == keep for p in schedule.periods[1:])
    assert schedule.rescorings == len(schedule.periods) - 1 >= 1


def test_same_rows_and_model_at_one_and_two_threads() -> None:
    import torch

    x, y = _blobs(3000, 64, seed=2)
    settings = SGDSettings(steps=40, batch_size=128, lr=0.1)
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model, schedule = train_dynamic(x, y, CLASSES, 64, settings, 9, keep=600, every=1)
        runs.append((model, schedule))
    (one, first), (two, second) = runs
    assert first.rescorings == second.rescorings == 5
    for a, b in zip(first.periods, second.periods, strict=True):
        assert a.rows.tolist() == b.rows.tolist()
    for name in one.weights:
        assert torch.equal(one.weights[name], two.weights[name])
    assert one.accuracy(x, y) == two.accuracy(x, y)


def test_ties_go_to_the_earlier_row_and_nan_is_never_hard() -> None:
    scores = np.array([0.5, 0.9, 0.5, np.nan, 0.9, 0.1, 0.5])
    assert hardest(scores, 3).tolist() == [0, 1, 4]
    assert hardest(scores, 4).tolist() == [0, 1, 2, 4]
    assert hardest(scores, 7).tolist() == list(range(7))
    with pytest.raises(ValueError, match="keep"):
        DynamicSchedule(np.zeros((5, 2), np.float32), np.zeros(5, np.int64), 6, 1, 2, 10, 0)


def test_parameters_and_a_curate_run_are_refused_clearly(tmp_path: Path) -> None:
    assert dynamic_params({}).every == 1.0 and dynamic_params({"every": 0.5}).every == 0.5
    for bad, message in [
        ({"every": 0}, "every: Input should be greater than 0"),
        ({"every": True}, "every: Input should be a valid number"),
        ({"epochs": 2}, "epochs: Extra inputs are not permitted"),
    ]:
        with pytest.raises(ValueError, match=message):
            dynamic_params(bad)
    base = {"run_dir": "run", "input": {"paths": ["data/*.parquet"]}}
    with pytest.raises(ConfigError, match=r"selector\.name: 'dynamic_el2n' prunes while the eval"):
        parse_config({**base, "selector": {"name": "dynamic_el2n"}}, base_dir=tmp_path)
