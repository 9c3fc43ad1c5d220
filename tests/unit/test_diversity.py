"""Log-det diversity: known answers, and the kept rows of embedding steps against chance."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from thresher.config import RunConfig
from thresher.io import schema as S
from thresher.reporting.diversity import diversity_rows
from thresher.selectors.diversity import RIDGE, logdet_diversity
from thresher.stages.select import decide_table


def test_identical_vectors_are_far_less_diverse_than_orthogonal_ones() -> None:
    k = 6
    orthogonal = np.eye(k, 10) * 3.0  # lengths do not matter: the kernel is the cosine's
    identical = np.tile(np.linspace(1.0, 2.0, 10), (k, 1))
    assert logdet_diversity(orthogonal) == pytest.approx(math.log(1 + RIDGE))
    # eigenvalues k + ridge once, ridge k - 1 times
    expected = (math.log(k + RIDGE) + (k - 1) * math.log(RIDGE)) / k
    assert logdet_diversity(identical) == pytest.approx(expected)
    assert logdet_diversity(identical) < logdet_diversity(orthogonal) - 5.0


@pytest.mark.parametrize(("m", "d"), [(5, 9), (9, 4)])  # the kernel, and the Gram side
def test_diversity_is_the_mean_log_det_of_the_cosine_kernel(m: int, d: int) -> None:
    rng = np.random.default_rng(m)
    x = rng.normal(size=(m, d)) * rng.uniform(0.1, 5.0, size=(m, 1))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sign, logdet = np.linalg.slogdet(unit @ unit.T + RIDGE * np.eye(m))
    assert sign > 0
    assert logdet_diversity(x) == pytest.approx(logdet / m, rel=1e-10)
    with pytest.raises(ValueError, match="finite"):
        logdet_diversity(np.where(np.eye(m, d) > 0, np.nan, x))


def _clustered(sizes: list[int], dim: int = 8, seed: int = 0) -> pa.Table:
    """Tight clusters of unequal sizes along orthogonal axes, shuffled, as score rows."""
    rng = np.random.default_rng(seed)
    cluster = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    vectors = np.eye(len(sizes), dim)[cluster] + 0.05 * rng.normal(size=(cluster.size, dim))
    n = cluster.size
    return pa.table(
        {
            S.ID: [f"d{i}" for i in range(n)],
            S.SHARD: pa.array(np.zeros(n), pa.int32()),
            S.ROW: pa.array(np.arange(n), pa.int64()),
            "word_count": rng.uniform(5, 50, n),
            "embedding": pa.array(vectors.astype(np.float32).tolist(), pa.list_(pa.float32())),
            S.ORDER: pa.array(np.arange(n, dtype=np.int64)),
        }
    )


def _steps(make_config: Callable[..., RunConfig], selector: dict[str, Any], table: pa.Table) -> Any:
    config = make_config(
        scorers=[{"name": "word_count"}, {"name": "embedding", "params": {"dim": 8}}],
        filters=[],
        selector=selector,
    )
    return decide_table(config, table)[1]


def test_dpp_keeps_rows_more_diverse_than_a_random_subset(
    make_config: Callable[..., RunConfig],
) -> None:
    table = _clustered([400, 40, 20, 10, 5, 5])
    selector = {"name": "dpp", "params": {"device": "cpu"}, "budget": 12}
    steps = _steps(make_config, selector, table)
    diversity = steps[-1]["details"]["diversity"]
    assert diversity["sample"] == 12
    # the random subset is mostly the big cluster; the DPP takes every cluster
    assert diversity["logdet_kept"] > diversity["logdet_random"] + 1.0
    # the same rows through the partitioned path (one partition) give the same values
    one = _steps(make_config, {**selector, "partitions": {"clusters": 1, "sample": 50}}, table)
    assert one[-1]["details"]["diversity"] == diversity
    (row,) = diversity_rows(steps[-1])
    assert row[0] is None and row[1:4] == (12, diversity["logdet_kept"], diversity["logdet_random"])
