"""Sum budgets (tokens): every budgeted selector stops before the first row that would exceed.

The rule under test (:class:`thresher.selectors.base.SumBudget`): rows are
taken in the selector's own order, and the selection stops before the
first row that would make the running sum exceed the total. Two facts
pin it down without re-implementing any selector:

* a selector's row budget ``k`` keeps the first ``k`` rows of its order
  (the conformance suite holds it to that), so the sum selection of ``m``
  rows must equal the row selection of ``m`` rows (it is a prefix), and
  the row selection of ``m + 1`` rows must be over the total (the next row
  does not fit);
* with classes (``by_label``) or strata (``ccs``), the same holds within
  each group against the group's share of the total.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.frame import TableFrame
from thresher.keys import id_priority
from thresher.selectors import make_selector
from thresher.selectors.allocation import class_sum_budgets
from thresher.selectors.base import (
    SumBudget,
    count_values,
    fitting_prefix,
    hash_seed,
    sum_limit,
    with_row_keys,
)
from thresher.selectors.labels import table_classes
from thresher.selectors.ranking import PriorityKey, ScoreKey, group_sums, sum_cuts

TOKENS = "token_count"
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def corpus(sizes: list[int], scores: list[float], labels: list[int]) -> pa.Table:
    n = len(sizes)
    return pa.table(
        {
            "id": [f"doc-{i}" for i in range(n)],
            "thresher_order": pa.array(np.arange(n, dtype=np.int64)),
            "score": pa.array(scores[:n], pa.float64()),
            "label": pa.array([str(x) for x in labels[:n]]),
            TOKENS: pa.array(sizes, pa.int64()),
        }
    )


@st.composite
def tables(draw: Any, min_rows: int = 1, max_rows: int = 40) -> tuple[pa.Table, int]:
    n = draw(st.integers(min_rows, max_rows))
    sizes = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    # few distinct scores: ties are where rank orders go wrong
    scores = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    total = draw(st.integers(1, max(1, sum(sizes) + 5)))
    return corpus(sizes, scores, labels), total


def kept_rows(name: str, params: dict[str, Any], table: pa.Table, budget: Any, **kw: Any) -> Any:
    return make_selector(name, params).select(table, kw.get("embeddings"), budget, random_state=7)


def assert_prefix_rule(
    name: str, params: dict[str, Any], table: pa.Table, total: int, embeddings: Any = None
) -> None:
    """The sum selection is the row selection of as many rows, and one row more would not fit."""
    sizes = table.column(TOKENS).to_numpy()
    chosen = kept_rows(name, params, table, SumBudget(TOKENS, total), embeddings=embeddings)
    m = len(chosen)
    assert int(sizes[chosen.indices].sum()) <= total  # never over
    prefix = kept_rows(name, params, table, m, embeddings=embeddings)
    assert chosen.indices.tolist() == prefix.indices.tolist()  # in the selector's order
    if m < table.num_rows:  # the next row in that order would exceed the total
        longer = kept_rows(name, params, table, m + 1, embeddings=embeddings)
        assert int(sizes[longer.indices].sum()) > total


RANK_ORDER = [
    ("topk", {"score": "score"}),
    ("bottomk", {"score": "score"}),
    ("random", {}),
    ("dsir", {"score": "score"}),
    ("quantile_band", {"score": "score", "band": "low"}),
]


@pytest.mark.parametrize(("name", "params"), RANK_ORDER, ids=[c[0] for c in RANK_ORDER])
@PROPERTY
@given(case=tables())
def test_rank_order_selectors_stop_before_the_first_row_that_would_exceed(
    name: str, params: dict[str, Any], case: tuple[pa.Table, int]
) -> None:
    table, total = case
    assert_prefix_rule(name, params, table, total)


def _band_order(table: pa.Table, band: str) -> np.ndarray:
    score = table.column("score").to_numpy()
    order = table.column("thresher_order").to_numpy()
    if band == "high":
        return np.lexsort((order, -score))
    return np.lexsort((order, score))


@pytest.mark.parametrize("band", ["medium", "high"])
@PROPERTY
@given(case=tables())
def test_quantile_bands_take_rows_in_band_order(band: str, case: tuple[pa.Table, int]) -> None:
    """``high`` from the top down; ``medium`` from past the rows fitting in half the excess."""
    table, total = case
    sizes = table.column(TOKENS).to_numpy()
    ranked = _band_order(table, band)
    start = 0
    total_sum = int(sizes.sum())
    if band == "medium" and total < total_sum:  # rows past those fitting in half the excess
        half = (total_sum - total) // 2
        start = int(np.searchsorted(np.cumsum(sizes[ranked]), half, side="right"))
    expected = fitting_prefix(ranked[start:], sizes, SumBudget(TOKENS, total))
    chosen = kept_rows(
        "quantile_band", {"score": "score", "band": band}, table, SumBudget(TOKENS, total)
    )
    assert sorted(chosen.indices.tolist()) == sorted(expected.tolist())
    assert int(sizes[chosen.indices].sum()) <= total
    rest = ranked[start + expected.size :]
    if rest.size:
        assert int(sizes[expected].sum()) + int(sizes[rest[0]]) > total


BY_LABEL = [
    ("topk", {"score": "score", "by_label": True}),
    ("random", {"by_label": True, "label_allocation": "equal"}),
    ("dsir", {"score": "score", "by_label": True}),
]


@pytest.mark.parametrize(("name", "params"), BY_LABEL, ids=[c[0] for c in BY_LABEL])
@PROPERTY
@given(case=tables())
def test_by_label_splits_the_total_by_class_sums_and_stops_in_each_class(
    name: str, params: dict[str, Any], case: tuple[pa.Table, int]
) -> None:
    table, total = case
    sizes = table.column(TOKENS).to_numpy()
    codes, n_classes = table_classes(table)
    sums = np.bincount(codes, weights=sizes, minlength=n_classes).astype(np.int64)
    mode = params.get("label_allocation", "proportional")
    shares = class_sum_budgets(sums, total, mode)
    chosen = kept_rows(name, params, table, SumBudget(TOKENS, total))
    assert int(sizes[chosen.indices].sum()) <= total
    flat = {**params, "by_label": False}
    for c in range(n_classes):
        rows = np.flatnonzero(codes == c)
        mine = np.intersect1d(chosen.indices, rows)
        assert int(sizes[mine].sum()) <= shares[c]
        # within the class, the rows are the class's own selection of as many rows...
        sub = table.take(pa.array(rows))
        alone = kept_rows(name, flat, sub, int(mine.size))
        assert rows[alone.indices].tolist() == mine.tolist()
        # ...and one more would exceed the class's share
        if mine.size < rows.size:
            more = kept_rows(name, flat, sub, int(mine.size) + 1)
            assert int(sizes[rows[more.indices]].sum()) > shares[c]


@PROPERTY
@given(case=tables(min_rows=2, max_rows=60))
def test_ccs_takes_rows_in_hash_order_and_stops_within_one_row(case: tuple[pa.Table, int]) -> None:
    table, total = case
    sizes = table.column(TOKENS).to_numpy()
    selector = make_selector("ccs", {"score": "score", "n_strata": 3})
    chosen = selector.select(table, None, SumBudget(TOKENS, total), random_state=7)
    assert int(sizes[chosen.indices].sum()) <= total
    assert chosen.details["kept_sum"] == int(sizes[chosen.indices].sum())
    seed = hash_seed(7)  # what random_state=7 gives the stratum sampling
    priority = id_priority(table.column("id"), seed)
    kept = np.zeros(table.num_rows, bool)
    kept[chosen.indices] = True
    strata = {int(g) for g in chosen.groups}
    stratum_of_kept = dict(zip(chosen.indices.tolist(), chosen.groups.tolist(), strict=True))
    for stratum in strata:
        mine = [i for i, g in stratum_of_kept.items() if g == stratum]
        # kept rows of a stratum precede (in hash order) the stratum's unkept rows: a prefix
        lowest_kept = max(int(priority[i]) for i in mine)
        edges = chosen.details["strata"][stratum]
        values = table.column("score").to_numpy()
        same = (values >= edges["low"]) & (values < edges["high"])
        unkept = np.flatnonzero(same & ~kept)
        assert all(int(priority[j]) > lowest_kept for j in unkept)
    # what the strata left goes to the rows they left, in hash order: the next one does not fit
    unkept = np.flatnonzero(~kept)
    if unkept.size:
        following = unkept[np.argmin(priority[unkept])]
        assert int(sizes[chosen.indices].sum()) + int(sizes[following]) > total


@pytest.mark.parametrize("ranked_by", ["priority", "tied score"])
def test_sum_cuts_keep_the_prefix_through_ties_and_zero_sizes(ranked_by: str) -> None:
    """Known answer: zero-size rows after the stop stay out; ties resolve in the secondary key."""
    n = 50
    sizes = np.tile([0, 5, 0, 5, 7], n // 5)
    table = with_row_keys(corpus(sizes.tolist(), [1.0] * n, [0] * n).drop_columns(["id"]))
    # one score for all: the cut lies in the input-order bits (past the first 64)
    key = PriorityKey(123) if ranked_by == "priority" else ScoreKey("score", True)
    rows, sums = group_sums(TableFrame.of(table), key, TOKENS, 1)
    _, primary, secondary = key(table)
    order = np.lexsort((secondary, primary))
    for total in [1, 4, 5, 6, 17, 60, int(sizes.sum()) - 1, int(sizes.sum())]:
        cuts, counts, kept = sum_cuts(
            TableFrame.of(table), key, TOKENS, np.array([total]), rows, sums
        )
        expected = fitting_prefix(order, sizes, SumBudget(TOKENS, total))
        assert counts[0] == expected.size
        assert kept[0] == int(sizes[expected].sum())
        chosen = np.flatnonzero(cuts.keep(*key(table)))
        assert chosen.tolist() == sorted(expected.tolist())


EMBEDDING_SELECTORS = [
    ("dpp", {"score": "score", "device": "cpu"}),
    ("d2", {"score": "score", "n_neighbors": 3}),
    ("ideal", {"n_neighbors": 3}),
    ("semdedup_rank", {"n_clusters": 3}),
    ("prototypes", {"n_clusters": 3}),
]


@pytest.mark.parametrize(
    ("name", "params"), EMBEDDING_SELECTORS, ids=[c[0] for c in EMBEDDING_SELECTORS]
)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tables(min_rows=6, max_rows=30), seed=st.integers(0, 3))
def test_greedy_selectors_stop_before_the_first_row_that_would_exceed(
    name: str, params: dict[str, Any], case: tuple[pa.Table, int], seed: int
) -> None:
    table, total = case
    embeddings = np.random.default_rng(seed).normal(size=(table.num_rows, 4)).astype(np.float32)
    assert_prefix_rule(name, params, table, total, embeddings=embeddings)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tables(min_rows=6, max_rows=30))
def test_sensitivity_sampling_takes_a_prefix_of_one_sampling_order(
    case: tuple[pa.Table, int],
) -> None:
    """Never over; larger totals extend the same order (nested); the full sum keeps every row."""
    table, total = case
    sizes = table.column(TOKENS).to_numpy()
    embeddings = np.random.default_rng(0).normal(size=(table.num_rows, 4)).astype(np.float32)
    selector = make_selector("kmeans_sensitivity", {"n_clusters": 2})
    smaller = selector.select(table, embeddings, SumBudget(TOKENS, total), random_state=5)
    larger = selector.select(table, embeddings, SumBudget(TOKENS, total + 9), random_state=5)
    assert int(sizes[smaller.indices].sum()) <= total
    assert set(smaller.indices.tolist()) <= set(larger.indices.tolist())
    assert np.all(smaller.weights >= 1.0)
    everything = selector.select(
        table, embeddings, SumBudget(TOKENS, int(sizes.sum()) + 1), random_state=5
    )
    assert len(everything) == table.num_rows


def test_sum_limit_bounds_any_prefix_that_fits() -> None:
    table = corpus([5, 1, 9, 1, 3], [0.0] * 5, [0] * 5)
    assert sum_limit(SumBudget(TOKENS, 5), table)[0] == 3  # 1 + 1 + 3
    assert sum_limit(SumBudget(TOKENS, 4), table)[0] == 2
    assert sum_limit(3, table) == (3, None)


@pytest.mark.parametrize(
    "values",
    [[1, None, 2], [1.0, float("nan"), 2.0], [1, -1, 2], [1.0, 2.5, 2.0], [1.0, float("inf"), 1.0]],
)
def test_sizes_a_budget_cannot_count_are_refused_by_name(values: list[Any]) -> None:
    table = pa.table({TOKENS: values, "score": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="budget column 'token_count'"):
        count_values(table, TOKENS, selector="topk")
    with pytest.raises(ValueError, match="token_count"):
        make_selector("topk", {"score": "score"}).select(table, None, SumBudget(TOKENS, 3))


@pytest.mark.parametrize(
    ("column", "total", "message"),
    [("", 5, "column name"), (TOKENS, 0, "> 0"), (TOKENS, -3, "> 0"), (TOKENS, 2.5, "an int")],
)
def test_a_sum_budget_checks_itself(column: str, total: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SumBudget(column, total)


def test_class_sum_budgets_proportional_and_equal() -> None:
    sums = np.array([600, 300, 100])
    assert class_sum_budgets(sums, 500, "proportional").tolist() == [300, 150, 50]
    assert class_sum_budgets(sums, 600, "equal").tolist() == [250, 250, 100]
    assert class_sum_budgets(sums, 5000, "equal").tolist() == [600, 300, 100]


def test_the_command_line_budget_takes_sum_budgets() -> None:
    from thresher.cli import _budget
    from thresher.errors import ConfigError

    assert _budget("tokens=2_000_000_000") == {"tokens": 2_000_000_000}
    assert _budget("bytes=500") == {"sum": "bytes", "total": 500}
    assert _budget("0.3") == 0.3 and _budget("1000") == 1000
    with pytest.raises(ConfigError, match="tokens=N"):
        _budget("tokens=lots")


def test_one_budget_type_for_the_config_the_command_line_and_the_api() -> None:
    """Every written form parses to the same Budget the selectors take, whichever edge wrote it."""
    from thresher.budget import budget_from_text, budget_json, parse_budget
    from thresher.config import SelectorConfig

    tokens, column = SumBudget(TOKENS, 7), SumBudget("bytes", 5)
    written = [
        (1000, 1000),
        (0.3, 0.3),
        ("250", 250),
        ({"tokens": 7}, tokens),
        ({"sum": "bytes", "total": 5}, column),
        (budget_from_text("tokens=7"), tokens),
        (budget_from_text("bytes=5"), column),
        (budget_from_text("0.3"), 0.3),
        (column, column),  # the API may pass a SumBudget itself
    ]
    for value, expected in written:
        assert parse_budget(value) == expected, value
        step = SelectorConfig(name="random", budget=value)
        assert step.selector_budget() == expected, value
        assert step.budget_json() == budget_json(expected)
    with pytest.raises(ValueError, match="a count budget must be >= 0"):
        parse_budget(-1)


FRAME_SELECTORS = [
    ("random", {"by_label": True}),
    ("topk", {"score": "score"}),
    ("quantile_band", {"score": "score", "band": "medium"}),
    ("dsir", {"score": "score", "by_label": True, "label_allocation": "equal"}),
    ("ccs", {"score": "score", "beta": 0.1, "n_strata": 4, "by_label": True}),
]


@pytest.mark.parametrize(("name", "params"), FRAME_SELECTORS, ids=[c[0] for c in FRAME_SELECTORS])
def test_sum_budget_cuts_do_not_depend_on_how_rows_are_split_into_parts(
    name: str, params: dict[str, Any]
) -> None:
    """The same rows from one part and from many uneven parts (what Spark partitions are)."""
    rng = np.random.default_rng(3)
    n = 3_000
    table = corpus(
        rng.integers(0, 400, n).tolist(),
        rng.choice([0.0, 1.0, 2.5], n).tolist(),  # heavy ties
        rng.integers(0, 3, n).tolist(),
    )
    budget = SumBudget(TOKENS, 200_000)
    selector = make_selector(name, params)
    whole = selector.select_frame(TableFrame.of(table), budget, random_state=4)
    edges = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    shuffled = table.take(pa.array(rng.permutation(n)))
    pieces = [shuffled.slice(a, b - a) for a, b in zip([0, *edges], [*edges, n], strict=True)]
    parts = TableFrame([lambda piece=piece: piece for piece in pieces], table.schema)
    split = selector.select_frame(parts, budget, random_state=4)
    expected = np.flatnonzero(whole(table)[0])
    assert np.flatnonzero(split(table)[0]).tolist() == expected.tolist()
    assert int(table.column(TOKENS).to_numpy()[expected].sum()) <= budget.total
    assert whole.details == split.details


def test_a_sum_budget_covering_every_row_is_reported() -> None:
    import logging

    from thresher.stages.select import _warn_unmet_budgets

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger("sum_budget_test")
    collect = Collect()
    logger.addHandler(collect)
    steps = [
        {"step": "random", "budget": {"sum": TOKENS, "total": 10**9}, "rows_in": 5, "kept": 5},
        {"step": "topk(s)", "budget": {"sum": TOKENS, "total": 10}, "rows_in": 5, "kept": 2},
    ]
    try:
        _warn_unmet_budgets(steps, logger)
    finally:
        logger.removeHandler(collect)
    assert collect.messages == [
        "random: budget token_count <= 1000000000 covers all 5 rows that reach it; "
        "all of them are kept"
    ]
