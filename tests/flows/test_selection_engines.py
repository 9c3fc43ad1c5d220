"""Every scalar selector decides the same rows on both engines, and Spark keeps nothing per row on its driver.

The score shards are written directly (duplicated ids across shards, NaN
and infinite scores, heavy ties, a missing label), then each selector runs
through the select stage on the local engine and on Spark with
``engine.driver_max_rows`` set far below the number of rows: every way a
stage can gather rows on the driver goes through that limit
(:meth:`thresher.frame.Frame.to_table`), so a selector that collected
per-row data there would fail. The last test shows the limit does fail a
step that needs every vector in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from thresher import reasons as R
from thresher.config import RunConfig
from thresher.engines.local import LocalEngine
from thresher.errors import ThresherError
from thresher.io import schema as S
from thresher.io.files import read_parquet_dir, write_json_atomic, write_parquet_atomic
from thresher.io.publish import new_version
from thresher.run_dir import RunDir
from thresher.stages.select import select_to_run

pytestmark = pytest.mark.spark
N_SHARDS, ROWS = 3, 400


def write_scores(run_root: Path) -> list[int]:
    """Score shards with the hard cases in them, and the shard registry."""
    rng = np.random.default_rng(0)
    run = RunDir(run_root)
    for shard in range(N_SHARDS):
        ids = [f"doc-{shard}-{row}" for row in range(ROWS)]
        ids[7] = "repeated-id"  # the same id in every shard: only the first is kept
        alpha = rng.uniform(0.5, 1.0, ROWS)
        alpha[rng.choice(ROWS, 12, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], 12)
        labels: list[str | None] = list(
            rng.choice(["a", "b", "c", "d"], ROWS, p=[0.5, 0.3, 0.15, 0.05])
        )
        labels[3] = None
        table = pa.table(
            {
                S.ID: ids,
                S.SHARD: pa.array([shard] * ROWS, pa.int32()),
                S.ROW: pa.array(range(ROWS), pa.int64()),
                S.LABEL: pa.array(labels, pa.string()),
                "word_count": rng.integers(0, 30, ROWS).astype(np.float64),  # heavy ties
                "alpha_fraction": alpha,
            }
        )
        write_parquet_atomic(table.take(pa.array(rng.permutation(ROWS))), run.scores_shard(shard))
    # shard keys given in the reverse of name order: input order is by name, not by key
    names = [{"index": i, "name": f"part-{N_SHARDS - i:02d}.parquet"} for i in range(N_SHARDS)]
    write_json_atomic({"shards": names}, run.shard_registry)
    return list(range(N_SHARDS))


CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("random", {}, 500),
    ("random", {"by_label": True}, 0.3),
    ("random", {"by_label": True, "label_allocation": "equal"}, 200),
    ("threshold", {"score": "alpha_fraction", "min": 0.75}, None),
    ("quantile_band", {"score": "word_count", "band": "low"}, 301),
    ("quantile_band", {"score": "word_count", "band": "medium"}, 0.25),
    ("quantile_band", {"score": "alpha_fraction", "band": "high"}, 99),
    ("topk", {"score": "word_count"}, 333),
    ("bottomk", {"score": "alpha_fraction"}, 0.1),
    ("topk", {"score": "word_count", "by_label": True}, 250),
    ("bottomk", {"score": "word_count", "by_label": True, "label_allocation": "equal"}, 120),
    ("ccs", {"score": "word_count", "beta": 0.1, "n_strata": 10}, 400),
    ("ccs", {"score": "alpha_fraction", "by_label": True, "n_strata": 7}, 0.2),
    (
        "ccs",
        {"score": "word_count", "cutoff_score": "alpha_fraction", "beta": 0.2, "n_strata": 5},
        300,
    ),
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("selection-engines") / "run"
    write_scores(root)
    return root


def config_for(
    make_config: Callable[..., RunConfig],
    root: Path,
    name: str,
    params: dict[str, Any],
    budget: Any,
) -> RunConfig:
    """A filter, then the selector (a threshold is a filter itself, before a random half)."""
    if name == "threshold":
        filters = [{"name": name, "params": params}]
        selector = {"name": "random", "budget": 0.5}
    else:
        filters = [{"name": "threshold", "params": {"score": "word_count", "min": 1}}]
        selector = {"name": name, "params": params, "budget": budget}
    return make_config(run_dir=str(root), filters=filters, selector=selector)


def decisions(config: RunConfig, engine: Any) -> tuple[pa.Table, dict[str, Any]]:
    run = RunDir(config.run_path)
    version = new_version(run.root)
    summary = select_to_run(config, engine, list(range(N_SHARDS)), version)
    table = read_parquet_dir(version.selection).sort_by(
        [(S.SHARD, "ascending"), (S.ROW, "ascending")]
    )
    return table, summary


@pytest.mark.parametrize(
    ("name", "params", "budget"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_both_engines_decide_every_row_alike_without_rows_on_the_driver(
    name: str,
    params: dict[str, Any],
    budget: Any,
    scored: Path,
    spark: Any,
    make_config: Callable[..., RunConfig],
) -> None:
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    config = config_for(make_config, scored, name, params, budget)
    local, local_summary = decisions(config, LocalEngine(workers=1))
    remote_engine = SparkEngine(SparkConfig(master="local[2]"), driver_max_rows=10)
    remote, remote_summary = decisions(config, remote_engine)
    assert local.equals(remote)  # every row: keep, weight, reason, detail, group
    assert local_summary["steps"] == remote_summary["steps"]
    assert local_summary["dropped_by_reason"] == remote_summary["dropped_by_reason"]

    reasons = local.column("reason").to_pylist()
    ids = local.column(S.ID).to_pylist()
    repeated = [r for i, r in zip(ids, reasons, strict=True) if i == "repeated-id"]
    assert repeated.count(R.DUPLICATE_ID) == N_SHARDS - 1
    if "alpha_fraction" in params.values():  # the NaN and infinite values it holds
        assert (
            reasons.count(R.INVALID_SCORE)
            == local_summary["dropped_by_reason"][R.INVALID_SCORE]
            > 0
        )
    final = local_summary["steps"][-1]
    if isinstance(budget, int):
        assert final["kept"] == min(budget, final["rows_in"])  # exactly the budget
    elif isinstance(budget, float):
        assert final["kept"] == min(final["rows_in"], int(budget * final["rows_in"] + 0.5))


def test_the_first_occurrence_in_input_order_is_the_one_kept(
    scored: Path, make_config: Callable[..., RunConfig]
) -> None:
    config = config_for(make_config, scored, "random", {}, 1.0)
    table, _ = decisions(config, LocalEngine(workers=1))
    repeated = table.filter(pa.compute.equal(table.column(S.ID), "repeated-id")).to_pylist()
    first = [r for r in repeated if r["reason"] != R.DUPLICATE_ID]
    # shard 2 is named part-01 (the first name), so its row is the first occurrence
    assert [r[S.SHARD] for r in first] == [2]
    assert all("part-01.parquet" in r["detail"] for r in repeated if r["reason"] == R.DUPLICATE_ID)


def test_the_driver_limit_refuses_a_step_that_gathers_its_rows(
    scored: Path, spark: Any, make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    """The control: a selector that needs every vector on one machine hits the limit."""
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    root = tmp_path / "run"
    run = RunDir(root)
    rng = np.random.default_rng(1)
    table = pa.table(
        {
            S.ID: [f"d{i}" for i in range(50)],
            S.SHARD: pa.array([0] * 50, pa.int32()),
            S.ROW: pa.array(range(50), pa.int64()),
            "word_count": rng.uniform(1, 9, 50),
            "embedding": pa.array(rng.normal(size=(50, 4)).tolist(), pa.list_(pa.float32())),
        }
    )
    write_parquet_atomic(table, run.scores_shard(0))
    write_json_atomic({"shards": [{"index": 0, "name": "only.parquet"}]}, run.shard_registry)
    config = make_config(
        run_dir=str(root),
        scorers=[{"name": "word_count"}, {"name": "embedding", "params": {"dim": 4}}],
        filters=[],
        selector={"name": "dpp", "params": {"device": "cpu"}, "budget": 5},
    )
    engine = SparkEngine(SparkConfig(master="local[2]"), driver_max_rows=10)
    with pytest.raises((ThresherError, ValueError), match="add `partitions`"):
        select_to_run(config, engine, [0], new_version(run.root))
    assert (
        select_to_run(
            config, LocalEngine(workers=1, driver_max_rows=50), [0], new_version(run.root)
        )["kept"]
        == 5
    )
