"""``bucket_repeat``: quality buckets with repeat counts, budgets that count every copy.

Known answers on small tables, the budget rule checked against a plain
Python reading of the docstring (hypothesis), ties decided by input order
whatever the physical order or chunking, the zero-repeat bucket dropped
with the step's reason, and one run through ``curate`` on the local engine
and on Spark: the published dataset's ``repeat`` column, the manifest's
counts, identical on both engines.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher import reasons as R
from thresher.config import RunConfig
from thresher.errors import ConfigError
from thresher.frame import TableFrame
from thresher.io import schema as S
from thresher.selectors import make_selector
from thresher.selectors.base import Budget, SumBudget, with_row_keys
from thresher.stages.select import decide_table

#: Ten rows: best first they are 1 (0.9), 7, 5, 8, 2 (0.5), 3 (0.5, later), 9, 4, 6, 0 (0.1).
SCORES = [0.1, 0.9, 0.5, 0.5, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4]
TOKENS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def _table(scores: list[float], tokens: list[int] | None = None) -> pa.Table:
    columns: dict[str, Any] = {"id": [f"d{i}" for i in range(len(scores))], "score": scores}
    if tokens is not None:
        columns["token_count"] = pa.array(tokens, pa.int64())
    return pa.table(columns)


def _kept(selector: Any, table: pa.Table, budget: Budget | None = None) -> dict[int, int]:
    """Row -> repeat of the rows ``selector`` keeps (in memory)."""
    chosen = selector.select(table, None, budget)
    assert chosen.repeats is not None
    return dict(zip(chosen.indices.tolist(), chosen.repeats.tolist(), strict=True))


def _selector(buckets: int | list[float], repeats: list[int]) -> Any:
    return make_selector(
        "bucket_repeat", {"score": "score", "buckets": buckets, "repeats": repeats}
    )


# -- known answers -------------------------------------------------------------------------


def test_quantile_buckets_and_repeats_known_answer() -> None:
    selector = _selector(5, [0, 0, 1, 2, 3])
    chosen = selector.select(_table(SCORES, TOKENS))
    # five buckets of two rows, best first: {1, 7}, {5, 8}, {2, 3}, {9, 4}, {6, 0}
    assert _kept(selector, _table(SCORES, TOKENS)) == {1: 3, 7: 3, 5: 2, 8: 2, 2: 1, 3: 1}
    assert dict(zip(chosen.indices.tolist(), chosen.groups.tolist(), strict=True)) == {
        1: 4,
        7: 4,
        5: 3,
        8: 3,
        2: 2,
        3: 2,
    }
    details = chosen.details
    assert details["buckets"] == "quantiles" and details["repeats"] == [0, 0, 1, 2, 3]
    assert details["edges"] == [0.3, 0.5, 0.6, 0.8]  # each bucket's lowest score, above the first
    assert [b["rows"] for b in details["per_bucket"]] == [2, 2, 2, 2, 2]
    assert [b["kept_repeated"] for b in details["per_bucket"]] == [0, 0, 2, 4, 6]
    assert [b["sum"] for b in details["per_bucket"]] == [80, 150, 70, 150, 100]
    assert [b["kept_sum_repeated"] for b in details["per_bucket"]] == [0, 0, 70, 300, 300]
    assert details["kept"] == 6 and details["kept_repeated"] == 12
    assert details["stopped_in_bucket"] is None


def test_explicit_edges_known_answer() -> None:
    # [.., 0.3) -> 0; [0.3, 0.6) -> 1; [0.6, ..) -> 2: an edge belongs to the bucket above it
    selector = _selector([0.3, 0.6], [0, 1, 2])
    assert _kept(selector, _table(SCORES)) == {1: 2, 7: 2, 5: 2, 8: 2, 4: 1, 2: 1, 3: 1, 9: 1}
    details = selector.select(_table(SCORES)).details
    assert details["edges"] == [0.3, 0.6] and [b["rows"] for b in details["per_bucket"]] == [
        2,
        4,
        4,
    ]
    assert "sum_column" not in details  # no token column, no sums


# -- budgets count every copy --------------------------------------------------------------

#: A (0.9, 100 tokens) and B (0.8, 50) in the top bucket (repeat 3), C (0.2, 10) below (repeat 1).
ABC = _table([0.9, 0.8, 0.2], [100, 50, 10])
A, B, C = 0, 1, 2


@pytest.mark.parametrize(
    ("total", "expected", "kept_sum"),
    [
        (299, {}, 0),  # A costs 3 x 100 = 300 > 299: the first row does not fit, nothing after it
        (300, {A: 3}, 300),  # met exactly; B would make 450
        (459, {A: 3, B: 3}, 450),  # C would make 460
        (460, {A: 3, B: 3, C: 1}, 460),  # met exactly
    ],
)
def test_a_token_budget_counts_each_copy_of_a_repeated_document(
    total: int, expected: dict[int, int], kept_sum: int
) -> None:
    selector = _selector([0.5], [1, 3])
    budget = SumBudget("token_count", total)
    assert _kept(selector, ABC, budget) == expected
    details = selector.select(ABC, None, budget).details
    assert details["requested_sum"] == total and details["kept_sum"] == kept_sum <= total
    assert details["kept_sum_unique"] == sum([100, 50, 10][i] for i in expected)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(5, {A: 3}), (6, {A: 3, B: 3}), (7, {A: 3, B: 3, C: 1}), (1.0, {A: 3}), (100, None)],
)
def test_a_row_budget_counts_copies(budget: int | float, expected: dict[int, int] | None) -> None:
    """A count is copies, not capped at the rows; a fraction is of the rows (1.0 of 3: 3 copies)."""
    selector = _selector([0.5], [1, 3])
    everything = _kept(selector, ABC)
    assert everything == {A: 3, B: 3, C: 1}
    assert _kept(selector, ABC, budget) == (everything if expected is None else expected)


def test_the_budget_stops_at_the_first_row_that_does_not_fit() -> None:
    """Rows after the stopping row are not taken, even a lower bucket's row that would fit."""
    table = _table([0.9, 0.8, 0.7, 0.1], [10, 40, 10, 1])
    selector = _selector([0.5], [1, 2])
    # copies: 0.9 -> 20, 0.8 -> 80 (100 > 50: stop), 0.7 and 0.1 would fit but come after it
    assert _kept(selector, table, SumBudget("token_count", 50)) == {0: 2}
    details = selector.select(table, None, SumBudget("token_count", 50)).details
    assert details["stopped_in_bucket"] == 1 and details["kept_sum"] == 20


def _reference(
    scores: list[float],
    tokens: list[int],
    buckets: int | list[float],
    repeats: list[int],
    budget: Budget | None,
) -> dict[int, int]:
    """The docstring's rule in plain Python: row -> repeat of the kept rows."""
    n = len(scores)
    best_first = sorted(range(n), key=lambda i: (-scores[i], i))
    if isinstance(buckets, int):
        bucket = {}
        for rank, row in enumerate(best_first):
            from_lowest = n - 1 - rank
            bucket[row] = max(i for i in range(buckets) if (i * n) // buckets <= from_lowest)
    else:
        bucket = {row: bisect.bisect_right(buckets, scores[row]) for row in range(n)}
    if isinstance(budget, SumBudget):
        limit, size = budget.total, tokens
    elif budget is None:
        limit, size = None, [1] * n
    else:
        limit = budget if isinstance(budget, int) else int(np.floor(budget * n + 0.5))
        size = [1] * n
    kept: dict[int, int] = {}
    used = 0
    for row in sorted(range(n), key=lambda i: (-bucket[i], -scores[i], i)):
        repeat = repeats[bucket[row]]
        if repeat == 0:
            continue
        if limit is not None and used + repeat * size[row] > limit:
            break
        used += repeat * size[row]
        kept[row] = repeat
    return kept


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[float], list[int], Any, list[int], Budget | None]:
    n = draw(st.integers(0, 30))
    scores = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=n, max_size=n))
    tokens = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    if draw(st.booleans()):
        buckets: Any = draw(st.integers(1, 6))
        n_buckets = buckets
    else:
        edges = draw(st.lists(st.sampled_from([0.1, 0.25, 0.4, 0.6, 0.75, 0.9]), unique=True))
        buckets = sorted(edges) or [0.5]
        n_buckets = len(buckets) + 1
    repeats = draw(st.lists(st.integers(0, 3), min_size=n_buckets, max_size=n_buckets))
    if not any(repeats):
        repeats[-1] = 2
    budget = draw(
        st.one_of(
            st.none(),
            st.integers(0, 60),
            st.floats(0.05, 1.0),
            st.integers(1, 800).map(lambda t: SumBudget("token_count", t)),
        )
    )
    return scores, tokens, buckets, repeats, budget


@settings(max_examples=150, deadline=None)
@given(case=_cases())
def test_the_selection_is_the_documented_rule(
    case: tuple[list[float], list[int], Any, list[int], Budget | None],
) -> None:
    scores, tokens, buckets, repeats, budget = case
    selector = _selector(buckets, repeats)
    expected = _reference(scores, tokens, buckets, repeats, budget)
    assert _kept(selector, _table(scores, tokens), budget) == expected


# -- ties ----------------------------------------------------------------------------------


def test_ties_are_decided_by_input_order_whatever_the_physical_order_and_chunks() -> None:
    """Tied scores split across buckets and budgets by the input-order key, the earlier first."""
    n = 12
    table = with_row_keys(_table([1.0] * 8 + [0.5] * 4, [5] * n))
    selector = _selector(3, [1, 2, 3])
    # best first: rows 0..7 (ties by order), then 8..11; buckets of four: {0..3}, {4..7}, {8..11}
    expected = {**dict.fromkeys(range(4), 3), **dict.fromkeys(range(4, 8), 2)}
    expected |= dict.fromkeys(range(8, 12), 1)
    budget = SumBudget("token_count", 3 * 20 + 2 * 10 + 2)  # all of bucket 2, rows 4 and 5 of 1
    want_budget = {0: 3, 1: 3, 2: 3, 3: 3, 4: 2, 5: 2}
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(n)))
    for candidate in (table, shuffled):
        ids = candidate.column("id").to_pylist()
        for budget_given, want in ((None, expected), (budget, want_budget)):
            got = _kept(selector, candidate, budget_given)
            assert {int(ids[i][1:]): r for i, r in got.items()} == want
        # the same rule on a frame in several chunks, applied chunk by chunk
        chunks = [candidate.slice(0, 5), candidate.slice(5, 4), candidate.slice(9)]
        frame = TableFrame([lambda c=c: c for c in chunks], candidate.schema)
        marks = selector.select_frame(frame, budget)
        got_chunks: dict[int, int] = {}
        for chunk in chunks:
            keep = marks(chunk)[0]
            counts = marks.repeats(chunk)
            for row_id, kept, repeat in zip(
                chunk.column("id").to_pylist(), keep, counts, strict=True
            ):
                if kept:
                    got_chunks[int(row_id[1:])] = int(repeat)
        assert got_chunks == want_budget


# -- parameters and the config -------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"buckets": 3, "repeats": [1, 2]}, "one count per bucket"),
        ({"buckets": [0.5, 0.2], "repeats": [1, 1, 1]}, "ascending"),
        ({"buckets": [0.5, 0.5], "repeats": [1, 1, 1]}, "ascending"),
        ({"buckets": 2, "repeats": [0, 0]}, "keeps nothing"),
        ({"buckets": 2, "repeats": [1, -1]}, "repeats"),
        ({"buckets": 0, "repeats": [1]}, "buckets"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_selector("bucket_repeat", {"score": "score", **params})


def _config(make_config: Callable[..., RunConfig], **overrides: Any) -> RunConfig:
    data: dict[str, Any] = {
        "scorers": [{"name": "alpha_fraction"}, {"name": "token_count"}],
        "filters": [],
        "selector": {
            "name": "bucket_repeat",
            "params": {"score": "alpha_fraction", "buckets": [0.5], "repeats": [0, 2]},
        },
    }
    data.update(overrides)
    return make_config(**data)


def test_the_config_takes_a_budget_or_none_and_refuses_it_as_a_filter(
    make_config: Callable[..., RunConfig],
) -> None:
    assert _config(make_config).selector.budget is None
    step = {
        "name": "bucket_repeat",
        "params": {"score": "alpha_fraction", "buckets": 2, "repeats": [1, 2]},
        "budget": {"tokens": 1000},
    }
    assert _config(make_config, selector=step).selector.budget is not None
    with pytest.raises(ConfigError, match="repeat counts"):
        _config(make_config, filters=[step], selector={"name": "random", "budget": 0.5})


def test_a_zero_repeat_bucket_is_dropped_with_the_steps_reason(
    make_config: Callable[..., RunConfig],
) -> None:
    """Through the decisions: the kept rows carry their repeat, dropped rows 0 and the reason."""
    config = _config(make_config)
    n = len(SCORES)
    scores = pa.table(
        {
            S.ID: [f"d{i}" for i in range(n)],
            S.SHARD: pa.array([0] * n, pa.int32()),
            S.ROW: pa.array(range(n), pa.int64()),
            "alpha_fraction": SCORES,
            "token_count": pa.array(TOKENS, pa.int64()),
            S.ORDER: pa.array(range(n), pa.int64()),
        }
    )
    selection, steps = decide_table(config, scores)
    rows = selection.to_pylist()
    high = [i for i, s in enumerate(SCORES) if s >= 0.5]
    assert [r["keep"] for r in rows] == [i in high for i in range(n)]
    assert [r[S.REPEAT] for r in rows] == [2 if i in high else 0 for i in range(n)]
    reason = R.not_selected("bucket_repeat(alpha_fraction)")
    assert all(r["reason"] == reason for r in rows if not r["keep"])
    assert all(r["reason"] is None and r["group"] == 1 for r in rows if r["keep"])
    details = steps[-1]["details"]
    assert [b["rows"] for b in details["per_bucket"]] == [n - len(high), len(high)]
    assert details["per_bucket"][0]["kept"] == 0 and details["per_bucket"][0]["repeat"] == 0


def test_other_selectors_keep_repeat_one(make_config: Callable[..., RunConfig]) -> None:
    config = _config(
        make_config, selector={"name": "topk", "params": {"score": "alpha_fraction"}, "budget": 4}
    )
    n = len(SCORES)
    scores = pa.table(
        {
            S.ID: [f"d{i}" for i in range(n)],
            S.SHARD: pa.array([0] * n, pa.int32()),
            S.ROW: pa.array(range(n), pa.int64()),
            "alpha_fraction": SCORES,
            S.ORDER: pa.array(range(n), pa.int64()),
        }
    )
    selection, _ = decide_table(config, scores)
    keep = selection.column("keep").to_pylist()
    assert sum(keep) == 4
    assert selection.column(S.REPEAT).to_pylist() == [1 if k else 0 for k in keep]


# -- end to end: the dataset and the manifest on both engines --------------------------------

TOTAL = 370_000  # the top buckets take 334,453 tokens with their repeats: stops in bucket 1


def _run_config(make_config: Callable[..., RunConfig], root: Path, engine: str) -> RunConfig:
    return make_config(
        run_dir=str(root),
        scorers=[
            {"name": "alpha_fraction"},
            {"name": "token_count", "params": {"lm": {"vocab_size": 400, "n_documents": 200}}},
        ],
        filters=[],
        selector={
            "name": "bucket_repeat",
            "params": {"score": "alpha_fraction", "buckets": 4, "repeats": [0, 1, 2, 3]},
            "budget": {"tokens": TOTAL},
        },
        engine={"kind": engine, "workers": 2},
    )


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_dataset_and_manifest_carry_repeats_alike_on_both_engines(
    make_config: Callable[..., RunConfig], tmp_path: Path, spark: Any
) -> None:
    from thresher.api import load_run
    from thresher.flows.curate import curate
    from thresher.run_dir import RunDir
    from thresher.stages.select import read_score_table

    published: dict[str, Any] = {}
    for engine in ("local", "spark"):
        root = tmp_path / engine
        manifest = curate(_run_config(make_config, root, engine))
        run = load_run(root)
        data = run.data
        assert S.REPEAT in data.column_names
        in_data = dict(
            zip(data.column("id").to_pylist(), data.column(S.REPEAT).to_pylist(), strict=True)
        )
        # the rows that reached the selector, and the rule applied to them
        selection = run.selection
        reached = {
            row["id"]
            for row in selection.to_pylist()
            if row["reason"] is None or row["reason"].startswith(R.NOT_SELECTED_PREFIX)
        }
        scores = read_score_table(RunDir(root)).sort_by(S.ORDER).to_pylist()
        scores = [row for row in scores if row["id"] in reached]
        values = [row["alpha_fraction"] for row in scores]
        tokens = [row["token_count"] for row in scores]
        expected = _reference(values, tokens, 4, [0, 1, 2, 3], SumBudget("token_count", TOTAL))
        assert in_data == {scores[i]["id"]: r for i, r in expected.items()}
        assert set(in_data.values()) == {1, 2, 3}  # every bucket with a repeat reached the data
        assert 0 < len(in_data) < len(reached)  # the budget stopped inside the buckets
        # the decisions carry the same counts: 0 for every dropped row
        decided = dict(
            zip(
                selection.column("id").to_pylist(),
                selection.column(S.REPEAT).to_pylist(),
                strict=True,
            )
        )
        assert {i: r for i, r in decided.items() if r} == in_data
        # the manifest: rows, rows x repeat, tokens x repeat, all reconciled with the data
        by_id = {row["id"]: row["token_count"] for row in scores}
        counts = manifest["counts"]
        assert manifest["repeated"] is True and counts["reconciles"]
        assert counts["kept"] == counts["written"] == data.num_rows == len(in_data)
        assert counts["kept_repeated"] == sum(in_data.values())
        kept_tokens = sum(r * by_id[i] for i, r in in_data.items())
        assert counts["tokens"] == {
            "column": "token_count",
            "kept": kept_tokens,
            "kept_unique": sum(by_id[i] for i in in_data),
            "ingested": counts["tokens"]["ingested"],
            "requested": TOTAL,
        }
        assert TOTAL - 3 * max(tokens) < kept_tokens <= TOTAL
        assert manifest["selection_steps"][-1]["details"]["kept_sum"] == kept_tokens
        published[engine] = (sorted(in_data.items()), counts, manifest["selection_steps"])
    assert published["local"] == published["spark"]
