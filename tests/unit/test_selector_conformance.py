"""Every registered selector meets the selector contract (hypothesis property tests).

A new selector must add a factory below: it returns the selector configured
to read the columns of ``_table`` (``score``, ``label``) and the embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.params import bad_value, invalid_values
from thresher._params import constructor_params
from thresher.selectors import SELECTORS, Selector, make_selector

SELECTOR_FACTORIES: dict[str, Callable[[], Selector]] = {
    "random": lambda: make_selector("random"),
    "threshold": lambda: make_selector("threshold", {"score": "score", "min": 0.0}),
    "quantile_band": lambda: make_selector("quantile_band", {"score": "score", "band": "medium"}),
    "topk": lambda: make_selector("topk", {"score": "score", "by_label": True}),
    "bottomk": lambda: make_selector("bottomk", {"score": "score"}),
    "ccs": lambda: make_selector(
        "ccs", {"score": "score", "beta": 0.2, "n_strata": 5, "by_label": True}
    ),
    "dpp": lambda: make_selector("dpp", {"score": "score", "alpha": 0.5, "device": "cpu"}),
    "kmeans_sensitivity": lambda: make_selector("kmeans_sensitivity", {"n_clusters": 4}),
    "prototypes": lambda: make_selector("prototypes", {"n_clusters": 4, "keep": "hard"}),
    "semdedup": lambda: make_selector("semdedup", {"eps": 0.05, "n_clusters": 3}),
    "semdedup_rank": lambda: make_selector("semdedup_rank", {"n_clusters": 3}),
    # the label codes stand for language codes (compared as text)
    "language_filter": lambda: make_selector(
        "language_filter",
        {
            "languages": ["0", "2"],
            "language": "label",
            "probability": "score",
            "min_probability": -0.5,
        },
    ),
    "dsir": lambda: make_selector("dsir", {"score": "score", "by_label": True}),
    "d2": lambda: make_selector(
        "d2", {"score": "score", "n_neighbors": 4, "beta": 0.1, "gamma_reverse": 2.0}
    ),
    "ideal": lambda: make_selector("ideal", {"n_neighbors": 4, "n_simulations": 5}),
    "bucket_repeat": lambda: make_selector(
        "bucket_repeat", {"score": "score", "buckets": 3, "repeats": [0, 1, 2]}
    ),
    "rules": lambda: make_selector(
        "rules",
        {
            "rules": [
                {"name": "high", "score": "score", "min": -1.0},
                {"name": "low", "score": "score", "max": 1.5},
            ],
            "preset": "toy",
        },
    ),
}


def _table(n: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "score": rng.normal(size=n),
            "label": rng.integers(0, 3, size=n),
        }
    )
    centres = rng.normal(scale=4.0, size=(4, 8))
    embeddings = centres[rng.integers(0, 4, size=n)] + rng.normal(size=(n, 8))
    return scores, embeddings.astype(np.float32)


def test_every_registered_selector_has_a_conformance_factory() -> None:
    assert set(SELECTOR_FACTORIES) == set(SELECTORS)


budgets = st.one_of(
    st.integers(min_value=0, max_value=80),
    st.floats(min_value=0.01, max_value=1.0, allow_nan=False),
)


@pytest.mark.parametrize("name", sorted(SELECTORS))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(min_value=1, max_value=60), budget=budgets, seed=st.integers(0, 2**16))
def test_selection_contract(name: str, n: int, budget: int | float, seed: int) -> None:
    selector = SELECTOR_FACTORIES[name]()
    scores, embeddings = _table(n, seed)
    takes_budget = selector.requires_budget or selector.optional_budget
    use_budget = budget if takes_budget else None
    selection = selector.select(scores, embeddings, use_budget, random_state=seed)
    indices = selection.indices
    assert indices.dtype == np.int64
    assert np.all(np.diff(indices) > 0), "sorted and unique"
    assert indices.size == 0 or (indices[0] >= 0 and indices[-1] < n)
    assert selection.weights.shape == indices.shape
    assert np.all(np.isfinite(selection.weights)) and np.all(selection.weights > 0)
    assert selection.groups.shape == indices.shape
    if selector.requires_budget:
        expected = (
            min(budget, n) if isinstance(budget, int) else min(n, int(np.floor(budget * n + 0.5)))
        )
        assert len(selection) == expected, "exactly the budget"
    if selection.repeats is not None:  # an upsampling selector: every kept row used >= once
        assert selection.repeats.shape == indices.shape and np.all(selection.repeats >= 1)
    if selector.optional_budget:  # its budget counts copies, never exceeded
        copies = len(selection) if selection.repeats is None else int(selection.repeats.sum())
        limit = budget if isinstance(budget, int) else int(np.floor(budget * n + 0.5))
        assert copies <= limit, "never over the budget"
    again = selector.select(scores, embeddings, use_budget, random_state=seed)
    np.testing.assert_array_equal(again.indices, indices)
    np.testing.assert_array_equal(again.weights, selection.weights)


@pytest.mark.parametrize("name", sorted(n for n, c in SELECTORS.items() if c.requires_budget))
def test_budget_larger_than_rows_keeps_all(name: str) -> None:
    scores, embeddings = _table(17, 0)
    selector = SELECTOR_FACTORIES[name]()
    np.testing.assert_array_equal(
        selector.select(scores, embeddings, 1000, random_state=0).indices, np.arange(17)
    )
    np.testing.assert_array_equal(
        selector.select(scores, embeddings, 1.0, random_state=0).indices, np.arange(17)
    )


@pytest.mark.parametrize("name", sorted(n for n, c in SELECTORS.items() if c.requires_budget))
def test_input_is_not_mutated(name: str) -> None:
    scores, embeddings = _table(30, 1)
    before_scores, before_embeddings = scores.to_pydict(), embeddings.copy()
    SELECTOR_FACTORIES[name]().select(scores, embeddings, 10, random_state=0)
    assert scores.to_pydict() == before_scores
    np.testing.assert_array_equal(embeddings, before_embeddings)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_nan_scores_are_refused_with_a_message(name: str) -> None:
    selector = SELECTOR_FACTORIES[name]()
    if not selector.score_columns():
        pytest.skip("selector reads no score column")
    scores, embeddings = _table(10, 2)
    values = scores.column("score").to_numpy().copy()
    values[3] = np.nan
    scores = scores.set_column(1, "score", pa.array(values))
    budget = 5 if selector.requires_budget else None
    with pytest.raises(ValueError, match="NaN"):
        selector.select(scores, embeddings, budget, random_state=0)


def _checked_config(make_config: Callable[..., object], name: str, params: dict) -> object:
    selector = SELECTORS[name]
    budget = 10 if selector.requires_budget else None
    return make_config(
        scorers=[
            {"name": "word_count", "column": "score"},
            {"name": "embedding", "params": {"dim": 8}},
        ],
        schema={"id": "id", "text": "text", "label": "topic"},
        filters=[],
        selector={"name": name, "params": params, "budget": budget},
    )


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_a_bad_value_of_each_parameter_is_refused_when_the_config_is_loaded(
    name: str, make_config: Callable[..., object]
) -> None:
    from thresher.errors import ConfigError

    valid = SELECTOR_FACTORIES[name]().get_params()
    declared = SELECTORS[name].parameter_constraints()
    _checked_config(make_config, name, valid)  # the factory's parameters are accepted
    for param, value in valid.items():
        assert param in declared, f"{name}.{param} declares no constraints"
        generated = invalid_values(declared[param])
        assert generated, f"{name}.{param}: its declaration refuses nothing"
        for bad in [bad_value(value), *generated]:
            with pytest.raises(ConfigError) as refused:
                _checked_config(make_config, name, {**valid, param: bad})
            message = str(refused.value)
            assert "selector.params" in message and param in message, (param, bad, message)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_constructor_parameter_declares_its_constraints(name: str) -> None:
    """A parameter without a declaration would go unchecked; a stale one names no parameter."""
    cls = SELECTORS[name]
    assert set(constructor_params(cls)) == set(cls.parameter_constraints())


@pytest.mark.parametrize("name", sorted(n for n, c in SELECTORS.items() if c.requires_budget))
@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=1, max_value=50), seed=st.integers(0, 2**16), data=st.data())
def test_sum_budget_contract(name: str, n: int, seed: int, data: st.DataObject) -> None:
    """Every budgeted selector takes a sum budget: never over the total, all rows when it covers them."""
    from thresher.selectors.base import SumBudget

    scores, embeddings = _table(n, seed)
    sizes = np.random.default_rng(seed).integers(0, 40, n)
    scores = scores.append_column("token_count", pa.array(sizes, pa.int64()))
    total = data.draw(st.integers(min_value=1, max_value=int(sizes.sum()) + 10))
    selector = SELECTOR_FACTORIES[name]()
    selection = selector.select(
        scores, embeddings, SumBudget("token_count", total), random_state=seed
    )
    assert np.all(np.diff(selection.indices) > 0), "sorted and unique"
    assert int(sizes[selection.indices].sum()) <= total, "never over the total"
    assert np.all(np.isfinite(selection.weights)) and np.all(selection.weights > 0)
    again = selector.select(scores, embeddings, SumBudget("token_count", total), random_state=seed)
    np.testing.assert_array_equal(again.indices, selection.indices)
    everything = selector.select(
        scores, embeddings, SumBudget("token_count", int(sizes.sum()) + 1), random_state=seed
    )
    np.testing.assert_array_equal(everything.indices, np.arange(n))


@pytest.mark.parametrize(
    "name",
    sorted(n for n, c in SELECTORS.items() if not (c.requires_budget or c.optional_budget)),
)
def test_selectors_with_their_own_size_refuse_a_sum_budget(name: str) -> None:
    from thresher.selectors.base import SumBudget

    scores, embeddings = _table(10, 0)
    scores = scores.append_column("token_count", pa.array(np.ones(10, np.int64)))
    with pytest.raises(ValueError, match="budget"):
        SELECTOR_FACTORIES[name]().select(
            scores, embeddings, SumBudget("token_count", 5), random_state=0
        )
