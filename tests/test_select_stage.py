"""The select stage: every ingested row gets a decision and a reason."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from thresher.config import RunConfig
from thresher.io import schema as S
from thresher.stages.select import select


def _scores(values: list[float], ids: list[str] | None = None) -> pa.Table:
    n = len(values)
    return pa.table(
        {
            S.ID: ids or [f"r{i}" for i in range(n)],
            S.SHARD: pa.array([0] * n, pa.int32()),
            S.ROW: pa.array(range(n), pa.int64()),
            "word_count": values,
            "alpha_fraction": [1.0] * n,
        }
    )


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
    decisions, steps = select(config, _scores(values, ids))
    reasons = list(decisions.reason)
    assert reasons[4] == S.DUPLICATE_ID  # second "a"
    assert reasons[2] == S.INVALID_SCORE
    assert reasons[1] == "filter:threshold(word_count)"
    kept = [i for i, r in enumerate(reasons) if r is None]
    assert kept == [0, 6]  # the two highest of the rows left: 50 and 60
    assert reasons[3] == reasons[5] == "not_selected:quantile_band(word_count)"
    assert [s["kept"] for s in steps] == [4, 2]


def test_randomness_depends_only_on_seed_and_rows(make_config: Callable[..., RunConfig]) -> None:
    table = _scores(list(np.linspace(1, 100, 200)))
    first, _ = select(make_config(), table)
    second, _ = select(make_config(), table)
    other, _ = select(make_config(seed=99), table)
    keep = pd.isna(first.reason)
    assert np.array_equal(keep, pd.isna(second.reason))
    assert not np.array_equal(keep, pd.isna(other.reason))
