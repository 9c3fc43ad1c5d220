"""The decisions: every ingested row gets a decision and a reason, in the documented order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from thresher import reasons as R
from thresher.config import RunConfig
from thresher.io import schema as S
from thresher.stages.select import decide_table


def _scores(values: list[float], ids: list[str] | None = None) -> pa.Table:
    n = len(values)
    return pa.table(
        {
            S.ID: ids or [f"r{i}" for i in range(n)],
            S.SHARD: pa.array([0] * n, pa.int32()),
            S.ROW: pa.array(range(n), pa.int64()),
            "word_count": values,
            "alpha_fraction": [1.0] * n,
            S.ORDER: pa.array(range(n), pa.int64()),
        }
    )


def reasons_of(config: RunConfig, table: pa.Table) -> tuple[list[str | None], list[dict]]:
    selection, steps = decide_table(config, table)
    return selection.column("reason").to_pylist(), steps


def test_reasons_in_order(make_config: Callable[..., RunConfig]) -> None:
    config = make_config(
        filters=[{"name": "threshold", "params": {"score": "word_count", "min": 10}}],
        selector={
            "name": "quantile_band",
            "params": {"score": "word_count", "band": "high"},
            "budget": 2,
        },
    )
    values = [50.0, 5.0, float("nan"), 40.0, 30.0, 20.0, 60.0]
    ids = ["a", "b", "c", "d", "a", "f", "g"]
    reasons, steps = reasons_of(config, _scores(values, ids))
    assert reasons[4] == R.DUPLICATE_ID  # second "a"
    assert reasons[2] == R.INVALID_SCORE
    assert reasons[1] == "filter:threshold(word_count)"
    kept = [i for i, r in enumerate(reasons) if r is None]
    assert kept == [0, 6]  # the two highest of the rows left: 50 and 60
    assert reasons[3] == reasons[5] == "not_selected:quantile_band(word_count)"
    assert [s["kept"] for s in steps] == [4, 2]
    assert [s["rows_in"] for s in steps] == [5, 4]  # each step sees the survivors only


def test_randomness_depends_only_on_seed_and_rows(make_config: Callable[..., RunConfig]) -> None:
    table = _scores(list(np.linspace(1, 100, 200)))
    first, _ = reasons_of(make_config(), table)
    second, _ = reasons_of(make_config(), table)
    other, _ = reasons_of(make_config(seed=99), table)
    keep = np.array([r is None for r in first])
    assert np.array_equal(keep, [r is None for r in second])
    assert not np.array_equal(keep, [r is None for r in other])


def test_row_order_and_shard_keys_do_not_change_the_decisions(
    make_config: Callable[..., RunConfig],
) -> None:
    """Decisions depend on ids, scores and input order, not on how rows are laid out."""
    values = [float(v % 7) for v in range(120)]  # many ties
    table = _scores(values)
    config = make_config(
        filters=[{"name": "threshold", "params": {"score": "word_count", "min": 1}}],
        selector={"name": "topk", "params": {"score": "word_count"}, "budget": 30},
    )
    reference, _ = decide_table(config, table)
    shuffled = table.take(pa.array(np.random.default_rng(1).permutation(table.num_rows)))
    again, _ = decide_table(config, shuffled)
    by_id = dict(zip(again.column("id").to_pylist(), again.column("keep").to_pylist(), strict=True))
    assert [by_id[i] for i in reference.column("id").to_pylist()] == reference.column(
        "keep"
    ).to_pylist()
    keep = reference.column("keep").to_pylist()
    sixes = [i for i, v in enumerate(values) if v == 6.0]
    fives = [i for i, v in enumerate(values) if v == 5.0]
    assert all(keep[i] for i in sixes)
    # the rest of the budget goes to the earliest fives: ties are broken by input order
    assert [i for i in fives if keep[i]] == fives[: 30 - len(sixes)]
