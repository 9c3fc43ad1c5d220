"""Token budgets decide the same rows on both engines, never exceed the total, and reach the stats.

Score shards are written directly, with a ``token_count`` column drawn
from a lognormal (a few rows null or negative, which a budget cannot
count), heavy score ties, labels and embeddings. Each case runs through
the select stage on the local engine and on Spark with
``engine.driver_max_rows`` far below the number of rows, so a selector
that gathered per-row data on the driver would fail; partitioned cases
allow only the centroid sample there.
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
from thresher.io import schema as S
from thresher.io.files import read_json, read_parquet_dir, write_json_atomic, write_parquet_atomic
from thresher.io.manifest import build_counts
from thresher.io.publish import new_version
from thresher.run_dir import RunDir
from thresher.stages.select import select_to_run

pytestmark = pytest.mark.spark
N_SHARDS, ROWS, DIM = 3, 300, 4
TOKENS = "token_count"
SCORERS = [
    {"name": "token_count"},
    {"name": "word_count"},
    {"name": "alpha_fraction"},
    {"name": "embedding", "params": {"dim": DIM}},
]


def write_scores(run_root: Path) -> None:
    rng = np.random.default_rng(11)
    run = RunDir(run_root)
    centres = 6.0 * np.eye(3, DIM)
    for shard in range(N_SHARDS):
        tokens: list[int | None] = np.round(rng.lognormal(4.0, 1.0, ROWS)).astype(int).tolist()
        tokens[5], tokens[9] = None, -3  # not countable: dropped as invalid_score
        blob = rng.integers(0, 3, ROWS)
        vectors = (centres[blob] + rng.normal(size=(ROWS, DIM))).astype(np.float32)
        table = pa.table(
            {
                S.ID: [f"doc-{shard}-{row}" for row in range(ROWS)],
                S.SHARD: pa.array([shard] * ROWS, pa.int32()),
                S.ROW: pa.array(range(ROWS), pa.int64()),
                S.LABEL: pa.array(rng.choice(["a", "b", "c"], ROWS, p=[0.6, 0.3, 0.1])),
                TOKENS: pa.array(tokens, pa.int64()),
                "word_count": rng.integers(0, 20, ROWS).astype(np.float64),  # heavy ties
                "alpha_fraction": rng.uniform(0.5, 1.0, ROWS),
                "embedding": pa.array(vectors.tolist(), pa.list_(pa.float32())),
            }
        )
        write_parquet_atomic(table.take(pa.array(rng.permutation(ROWS))), run.scores_shard(shard))
    names = [{"index": i, "name": f"part-{i:02d}.parquet"} for i in range(N_SHARDS)]
    write_json_atomic({"shards": names}, run.shard_registry)


PARTITIONS = {"clusters": 3, "sample": 60, "iterations": 5}
CASES: list[tuple[str, dict[str, Any], Any, dict[str, Any] | None]] = [
    ("random", {}, {"tokens": 20_000}, None),
    ("random", {"by_label": True, "label_allocation": "equal"}, {"tokens": 15_000}, None),
    ("topk", {"score": "word_count"}, {"tokens": 25_000}, None),
    ("bottomk", {"score": "alpha_fraction", "by_label": True}, {"tokens": 12_345}, None),
    ("quantile_band", {"score": "word_count", "band": "medium"}, {"tokens": 18_000}, None),
    ("dsir", {"score": "alpha_fraction", "by_label": True}, {"tokens": 9_000}, None),
    (
        "ccs",
        {"score": "word_count", "beta": 0.1, "n_strata": 5, "by_label": True},
        {"tokens": 20_000},
        None,
    ),
    ("random", {}, {"sum": "word_count", "total": 2_000}, None),
    ("ccs", {"score": "alpha_fraction", "n_strata": 4}, {"tokens": 16_000}, PARTITIONS),
    ("dpp", {"score": "alpha_fraction", "device": "cpu"}, {"tokens": 6_000}, PARTITIONS),
    ("kmeans_sensitivity", {"n_clusters": 2}, {"tokens": 10_000}, PARTITIONS),
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("token-engines") / "run"
    write_scores(root)
    return root


def decisions(config: RunConfig, engine: Any) -> tuple[pa.Table, dict[str, Any], Path]:
    run = RunDir(config.run_path)
    version = new_version(run.root)
    summary = select_to_run(config, engine, list(range(N_SHARDS)), version)
    table = read_parquet_dir(version.selection).sort_by(
        [(S.SHARD, "ascending"), (S.ROW, "ascending")]
    )
    return table, summary, version.stats.as_path()


def sizes_of(root: Path, column: str) -> dict[str, float]:
    """Each id's value of ``column``, read from the score shards."""
    table = read_parquet_dir(RunDir(root).scores_shard(0).parent)
    return dict(zip(table.column(S.ID).to_pylist(), table.column(column).to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("name", "params", "budget", "partitions"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_token_budgets_decide_alike_on_both_engines_and_never_exceed(
    name: str,
    params: dict[str, Any],
    budget: dict[str, Any],
    partitions: dict[str, Any] | None,
    scored: Path,
    spark: Any,
    make_config: Callable[..., RunConfig],
) -> None:
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    selector: dict[str, Any] = {"name": name, "params": params, "budget": budget}
    if partitions is not None:
        selector["partitions"] = partitions
    config = make_config(run_dir=str(scored), scorers=SCORERS, filters=[], selector=selector)
    local, local_summary, stats = decisions(config, LocalEngine(workers=1))
    limit = PARTITIONS["sample"] if partitions is not None else 10
    remote_engine = SparkEngine(SparkConfig(master="local[2]"), driver_max_rows=limit)
    remote, remote_summary, _ = decisions(config, remote_engine)
    assert local.equals(remote)  # every row: keep, weight, reason, detail, group
    assert local_summary["steps"] == remote_summary["steps"]
    assert local_summary["sums"] == remote_summary["sums"]

    column = budget.get("sum", TOKENS)
    total = budget.get("tokens", budget.get("total"))
    sizes = sizes_of(scored, column)
    kept_ids = [
        i
        for i, k in zip(
            local.column(S.ID).to_pylist(), local.column("keep").to_pylist(), strict=True
        )
        if k
    ]
    kept_sum = sum(sizes[i] for i in kept_ids)
    assert 0 < kept_sum <= total  # never over the requested total
    assert local_summary["sums"][column]["kept"] == kept_sum
    assert local_summary["budget"] == {"sum": column, "total": total}
    # rows whose count a budget cannot use are dropped with the invalid-score reason
    if column == TOKENS:
        invalid = [
            d
            for r, d in zip(
                local.column("reason").to_pylist(), local.column("detail").to_pylist(), strict=True
            )
            if r == R.INVALID_SCORE
        ]
        assert len(invalid) == 2 * N_SHARDS and all("token_count" in d for d in invalid)
    # the statistics file and the manifest counts carry the kept tokens, from the stage's sums
    written = read_json(stats)
    assert written["sums"][column]["kept"] == kept_sum
    counts = build_counts([], {**local_summary, "dropped": 0}, 0)
    assert counts["tokens"] == {
        "column": column,
        "kept": kept_sum,
        "ingested": written["sums"][column]["ingested"],
        "requested": total,
    }


def test_a_token_budget_on_a_step_gathered_on_the_driver(
    scored: Path, make_config: Callable[..., RunConfig]
) -> None:
    """An embedding step without partitions reads the token column with its vectors."""
    selector = {"name": "dpp", "params": {"device": "cpu"}, "budget": {"tokens": 5_000}}
    config = make_config(run_dir=str(scored), scorers=SCORERS, filters=[], selector=selector)
    table, summary, _ = decisions(config, LocalEngine(workers=1))
    sizes = sizes_of(scored, TOKENS)
    kept = [
        i
        for i, k in zip(
            table.column(S.ID).to_pylist(), table.column("keep").to_pylist(), strict=True
        )
        if k
    ]
    assert (
        5_000 - max(v for v in sizes.values() if v is not None)
        < sum(sizes[i] for i in kept)
        <= 5_000
    )
    assert summary["sums"][TOKENS]["kept"] == sum(sizes[i] for i in kept)
