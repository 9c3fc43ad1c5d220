"""Confident learning: known answers on planted label flips, the cleanlab rule step by step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.proxy_data import batch_of, fit_context
from thresher.io import schema as S
from thresher.models.confident_learning import (
    class_thresholds,
    confident_joint,
    find_label_issues,
    flag_by_cutoffs,
    prune_counts,
    round_preserving_sum,
)
from thresher.scorers import make_scorer
from thresher.scorers.label_issues import assign_folds

# A linear proxy on standardised features: separable blobs, learnt in a few epochs.
PROXY = {
    "features": {"source": "features"},
    "hidden": 0,
    "epochs": 6,
    "n_seeds": 2,
    "batch_size": 32,
    "lr": 0.1,
    "weight_decay": 1e-4,
}


def blobs(n: int = 600, n_classes: int = 3, flip: float = 0.1, seed: int = 0) -> pa.Table:
    """Well separated Gaussian blobs, a ``flip`` fraction of labels moved to another class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n)
    centres = rng.standard_normal((n_classes, 8)) * 4.0
    x = centres[truth] + rng.standard_normal((n, 8))
    flipped = rng.random(n) < flip
    given = np.where(flipped, (truth + rng.integers(1, n_classes, n)) % n_classes, truth)
    return pa.table(
        {
            S.ID: [f"r{i}" for i in range(n)],
            S.FEATURES: pa.array(x.tolist(), pa.list_(pa.float32())),
            S.LABEL: [f"c{g}" for g in given],
            S.SHARD: pa.array(np.zeros(n, dtype=np.int32)),
            S.ROW: pa.array(np.arange(n, dtype=np.int64)),
            "flipped": flipped,
        }
    )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch's CPU work on ``threads`` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_and_score(table: pa.Table, directory: Path, threads: int) -> tuple[np.ndarray, np.ndarray]:
    scorer = make_scorer("label_issues", {"proxy": PROXY, "n_folds": 4, "device": "cpu"})
    with torch_threads(threads):
        scorer.fit(fit_context(table, directory))
        result = scorer.score(batch_of(table, scorer.input_columns))
    return result.field(0).to_numpy(), result.field(1).to_numpy()


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    table = blobs()
    confidence, flagged = _fit_and_score(table, tmp_path_factory.mktemp("one") / "models", 1)
    return table, confidence, flagged


def test_planted_flips_are_flagged_and_clean_rows_rarely(
    scored: tuple[pa.Table, np.ndarray, np.ndarray],
) -> None:
    table, confidence, flagged = scored
    flipped = table.column("flipped").to_numpy()
    assert set(np.unique(flagged)) <= {0.0, 1.0}
    assert flagged[flipped].mean() > 0.9  # recall
    assert flagged[~flipped].mean() < 0.03
    assert confidence[flipped].mean() < 0.2 < 0.8 < confidence[~flipped].mean()


def test_one_and_two_threads_give_the_same_scores(
    scored: tuple[pa.Table, np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> None:
    table, confidence, flagged = scored
    again = _fit_and_score(table, tmp_path_factory.mktemp("two") / "models", 2)
    np.testing.assert_array_equal(again[0], confidence)
    np.testing.assert_array_equal(again[1], flagged)


def test_rows_outside_the_fitted_set_use_their_fold_model(
    scored: tuple[pa.Table, np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> None:
    table, _, _ = scored
    scorer = make_scorer("label_issues", {"proxy": PROXY, "n_folds": 4, "device": "cpu"})
    scorer.fit(fit_context(table, tmp_path_factory.mktemp("one") / "models"))
    # New ids: the same points, scored by the fold models as unseen rows.
    fresh = table.set_column(0, S.ID, pa.array([f"new{i}" for i in range(table.num_rows)]))
    result = scorer.score(batch_of(fresh, scorer.input_columns))
    flipped = table.column("flipped").to_numpy()
    flagged = result.field(1).to_numpy()
    assert flagged[flipped].mean() > 0.85 and flagged[~flipped].mean() < 0.05


def test_missing_unseen_and_rare_labels_score_nan(tmp_path_factory: pytest.TempPathFactory) -> None:
    table = blobs(n=300)
    labels = table.column(S.LABEL).to_pylist()
    labels[0], labels[1] = None, "rare"  # one row of label "rare": too few to score
    table = table.set_column(2, S.LABEL, pa.array(labels))
    scorer = make_scorer("label_issues", {"proxy": PROXY, "n_folds": 3, "device": "cpu"})
    scorer.fit(fit_context(table, tmp_path_factory.mktemp("rare") / "models"))
    batch = batch_of(table.slice(0, 4), scorer.input_columns)
    batch = batch.set_column(1, S.LABEL, pa.array([None, "rare", "unknown", labels[3]]))
    result = scorer.score(batch)
    for field in range(2):
        values = result.field(field).to_numpy(zero_copy_only=False)
        assert np.isnan(values[:3]).all() and np.isfinite(values[3])


def test_outputs_are_named_after_the_column() -> None:
    scorer = make_scorer("label_issues")
    assert [f.name for f in scorer.output_fields("cl")] == ["cl", "cl_flagged"]


def test_folds_depend_on_the_id_and_seed_only() -> None:
    ids = pa.array([f"x{i}" for i in range(1000)])
    folds = assign_folds(ids, 5, seed=3)
    np.testing.assert_array_equal(assign_folds(ids[::-1], 5, seed=3), folds[::-1])
    assert np.bincount(folds).min() > 150
    assert not np.array_equal(assign_folds(ids, 5, seed=4), folds)


# -- the confident-learning rule on hand-made probabilities ------------------------------


def test_thresholds_joint_and_prune_counts_known_answer() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.95, 0.05]])
    thresholds = class_thresholds(labels, probs)
    np.testing.assert_allclose(thresholds, [(0.9 + 0.8 + 0.2) / 3, (0.9 + 0.7 + 0.05) / 3])
    joint = confident_joint(labels, probs, thresholds)
    np.testing.assert_array_equal(joint, [[2, 1], [1, 2]])
    np.testing.assert_array_equal(prune_counts(joint), [[2, 1], [1, 2]])
    issues = find_label_issues(labels, probs)
    np.testing.assert_array_equal(issues.flagged, [False, False, True, False, False, True])
    np.testing.assert_allclose(issues.cutoffs, [[np.nan, 0.6], [0.9, np.nan]])
    # The same cutoffs flag new rows past them, and never a row whose label is the argmax.
    new = np.array([[0.25, 0.75], [0.45, 0.55], [0.6, 0.4]])
    np.testing.assert_array_equal(
        flag_by_cutoffs(np.array([0, 0, 0]), new, issues.cutoffs), [False, False, False]
    )
    np.testing.assert_array_equal(
        flag_by_cutoffs(np.array([0, 1]), np.array([[0.1, 0.9], [0.99, 0.01]]), issues.cutoffs),
        [True, True],
    )


def test_round_preserving_sum_keeps_the_total() -> None:
    values = np.array([0.4, 0.4, 0.4, 1.8])
    rounded = round_preserving_sum(values)
    assert rounded.sum() == 3 and np.all(np.abs(rounded - values) < 1)
