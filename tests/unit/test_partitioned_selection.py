"""Partitioned selection: one partition is the in-memory result; Spark equals local."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from thresher import reasons as R
from thresher.config import RunConfig
from thresher.errors import ConfigError
from thresher.frame import TableFrame
from thresher.io import schema as S
from thresher.io.files import read_parquet_dir, write_json_atomic, write_parquet_atomic
from thresher.io.publish import new_version
from thresher.run_dir import RunDir
from thresher.selectors import make_selector
from thresher.stages.partitioned import PartitionJob, select_partitioned
from thresher.stages.select import decide_table, select_to_run

SIZES = [400, 200, 100, 50]


def _blobs(seed: int, dim: int = 8) -> tuple[pa.Table, np.ndarray]:
    """Four well separated blobs of unequal sizes, with a score and a label per row, shuffled."""
    rng = np.random.default_rng(seed)
    centres = 20.0 * np.eye(4, dim)
    blob = np.repeat(np.arange(4), SIZES)
    order = rng.permutation(blob.size)
    blob = blob[order]
    n = blob.size
    embeddings = (centres[blob] + rng.normal(size=(n, dim))).astype(np.float32)
    table = pa.table(
        {
            S.ID: [f"d{i}" for i in range(n)],
            S.SHARD: pa.array(np.arange(n) // 300, pa.int32()),
            S.ROW: pa.array(np.arange(n) % 300, pa.int64()),
            S.LABEL: rng.choice(["a", "b", "c"], size=n),
            "word_count": rng.exponential(size=n) * 100,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), dim),
            S.ORDER: pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    return table, embeddings


def partitioned(job: PartitionJob, table: pa.Table, frame: Any = None) -> dict[str, Any]:
    """Run a partitioned step on ``table`` (a frame of it); kept rows in input order."""
    frame = TableFrame.of(table) if frame is None else frame
    kept, details = select_partitioned(frame, job, table.num_rows)
    rows = kept.to_table(max_rows=table.num_rows).sort_by(S.ORDER)
    return {
        "indices": rows.column(S.ORDER).to_numpy(),
        "weights": rows.column("weight").to_numpy(),
        "groups": rows.column("group").to_numpy(),
        "details": details,
    }


def _job(name: str, params: dict[str, Any], budget: int | None, clusters: int) -> PartitionJob:
    selector = make_selector(name, params)
    return PartitionJob(
        selector=selector,
        budget=budget,
        clusters=clusters,
        sample=300,
        iterations=10,
        seed=3,
        step=1,
        embeddings="embedding",
        columns=tuple(dict.fromkeys([*selector.score_columns(), S.LABEL])),
    )


CASES = [
    ("ccs", {"score": "word_count", "beta": 0.1, "by_label": True}, 150),
    ("kmeans_sensitivity", {"n_clusters": 6}, 150),
    ("dpp", {"score": "word_count", "alpha": 0.01, "device": "cpu"}, 60),
    ("prototypes", {"n_clusters": 6}, 150),
    ("semdedup", {"eps": 0.3, "n_clusters": 6}, None),
    ("semdedup_rank", {"n_clusters": 6}, 150),
    ("d2", {"score": "word_count", "n_neighbors": 5, "beta": 0.05}, 150),
    ("ideal", {"n_neighbors": 5}, 150),
]


@pytest.mark.parametrize(("name", "params", "budget"), CASES)
def test_one_partition_gives_the_in_memory_result(
    name: str, params: dict[str, Any], budget: int | None
) -> None:
    table, embeddings = _blobs(0)
    result = partitioned(_job(name, params, budget, 1), table)
    in_memory = make_selector(name, params).select(
        table, embeddings, budget, random_state=np.random.default_rng([3, 1])
    )
    assert result["indices"].tolist() == in_memory.indices.tolist()
    np.testing.assert_array_equal(result["weights"], in_memory.weights)
    assert result["details"]["partitions"] == 1


def test_budget_is_split_across_partitions() -> None:
    table, embeddings = _blobs(1)
    blob = np.argmax(embeddings[:, :4], axis=1)
    ccs = partitioned(_job("ccs", {"score": "word_count"}, 150, 4), table)
    assert len(ccs["indices"]) == 150
    sizes = {c["size"]: c["selected"] for c in ccs["details"]["clusters"]}
    assert sizes == {400: 80, 200: 40, 100: 20, 50: 10}  # proportional to size
    # groups are the partitions, which recover the blobs
    for partition in np.unique(ccs["groups"]):
        assert np.unique(blob[ccs["indices"][ccs["groups"] == partition]]).size == 1

    sensitivity = partitioned(_job("kmeans_sensitivity", {"n_clusters": 3}, 150, 4), table)
    clusters = sensitivity["details"]["clusters"]
    costs = []
    for c in clusters:
        first = sensitivity["indices"][sensitivity["groups"] == c["cluster"]][0]
        members = embeddings[blob == blob[first]]
        costs.append(np.sum((members - members.mean(axis=0)) ** 2))
    share = 1.0 + np.array(costs) / np.sum(costs)  # each partition's sensitivity mass
    expected = 150 * share / share.sum()
    assert np.all(np.abs(np.array([c["selected"] for c in clusters]) - expected) <= 1.5)
    assert len(sensitivity["indices"]) == 150


def _config(
    make_config: Callable[..., RunConfig], selector: dict[str, Any], engine: str = "local"
) -> RunConfig:
    return make_config(
        scorers=[{"name": "word_count"}, {"name": "embedding", "params": {"dim": 8}}],
        filters=[{"name": "threshold", "params": {"score": "word_count", "min": 1.0}}],
        selector=selector,
        engine={"kind": engine},
    )


def test_select_stage_with_one_partition_equals_plain_selection(
    make_config: Callable[..., RunConfig],
) -> None:
    table, _ = _blobs(2)
    selector = {"name": "ccs", "params": {"score": "word_count", "beta": 0.2}, "budget": 0.25}
    plain, _ = decide_table(_config(make_config, selector), table)
    one, steps = decide_table(
        _config(make_config, {**selector, "partitions": {"clusters": 1, "sample": 100}}), table
    )
    assert plain.column("reason").to_pylist() == one.column("reason").to_pylist()
    assert steps[-1]["details"]["partitions"] == 1
    several, steps = decide_table(
        _config(make_config, {**selector, "partitions": {"clusters": 3}}), table
    )
    assert steps[-1]["details"]["partitions"] == 3
    assert sum(several.column("keep").to_pylist()) == sum(plain.column("keep").to_pylist())


def test_partitions_config_is_checked(make_config: Callable[..., RunConfig]) -> None:
    with pytest.raises(ConfigError, match="cannot run per partition"):
        _config(
            make_config,
            {
                "name": "topk",
                "params": {"score": "word_count"},
                "budget": 5,
                "partitions": {"clusters": 2},
            },
        )
    with pytest.raises(ConfigError, match="'vectors' is not produced"):
        _config(
            make_config,
            {
                "name": "ccs",
                "params": {"score": "word_count"},
                "budget": 5,
                "embeddings": "vectors",
                "partitions": {"clusters": 2},
            },
        )


def _write_scores(run_root: Path, table: pa.Table) -> list[int]:
    """The table as a run's score shards (and its shard registry)."""
    run = RunDir(run_root)
    shards = sorted(int(s) for s in np.unique(table.column(S.SHARD).to_numpy()))
    for shard in shards:
        part = table.filter(pa.compute.equal(table.column(S.SHARD), shard))
        write_parquet_atomic(part.drop_columns([S.ORDER]), run.scores_shard(shard))
    names = [{"index": i, "name": f"part-{i}"} for i in shards]
    write_json_atomic({"shards": names}, run.shard_registry)
    return shards


def _selection(config: RunConfig, engine: Any, indices: list[int]) -> tuple[pd.DataFrame, Any]:
    run = RunDir(config.run_path)
    version = new_version(run.root)
    summary = select_to_run(config, engine, indices, version)
    table = read_parquet_dir(version.selection).sort_by(
        [(S.SHARD, "ascending"), (S.ROW, "ascending")]
    )
    return table.to_pandas(), summary


@pytest.mark.spark
def test_spark_selects_the_same_rows_as_local(
    spark_engine: Any, make_config: Callable[..., RunConfig]
) -> None:
    from thresher.engines.local import LocalEngine

    table, _ = _blobs(3)
    vectors = table.column("embedding").to_pylist()
    vectors[5] = [float("nan")] * 8  # unusable vector: dropped as invalid_score on both engines
    table = table.set_column(
        table.schema.get_field_index("embedding"),
        "embedding",
        pa.array(vectors, pa.list_(pa.float32())),
    )
    selector = {
        "name": "kmeans_sensitivity",
        "params": {"n_clusters": 3},
        "budget": 120,
        "partitions": {"clusters": 4, "sample": 200, "iterations": 10},
    }
    local_config = _config(make_config, selector)
    indices = _write_scores(local_config.run_path.as_path(), table)
    local, local_summary = _selection(local_config, LocalEngine(workers=1), indices)
    remote, spark_summary = _selection(local_config, spark_engine, indices)
    pd.testing.assert_frame_equal(local, remote)
    assert local_summary["steps"] == spark_summary["steps"]  # the diversity samples too
    assert local_summary["steps"][-1]["details"]["diversity"]["sample"] == 120
    assert local.loc[5, "reason"] == R.INVALID_SCORE
    assert local["keep"].sum() == 120 and local_summary["weighted"]


@pytest.mark.spark
def test_spark_result_does_not_depend_on_the_partition_layout(spark_engine: Any) -> None:
    table, embeddings = _blobs(4)
    table = table.set_column(
        table.schema.get_field_index("embedding"),
        "embedding",
        pa.array(list(embeddings), pa.list_(pa.float32())),
    )
    job = _job("semdedup", {"eps": 0.2, "n_clusters": 3}, None, 3)
    expected = partitioned(job, table)
    spark = spark_engine.spark
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "7")
        frame = spark_engine.from_table(table).map_batches(lambda t: t, table.schema)
        got = partitioned(job, table, frame.map_groups([S.ID], lambda t: t, table.schema))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert got["indices"].tolist() == expected["indices"].tolist()
    assert got["details"] == expected["details"]


def test_vector_checks_are_vectorised_and_strict() -> None:
    from thresher.selectors.vectors import valid_vectors, vector_matrix

    column = pa.array([[1.0, 2.0], None, [], [1.0, float("nan")], [3.0, None], [0.0, 4.0]])
    assert valid_vectors(column).tolist() == [True, False, False, False, False, True]
    sliced = pa.array([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]]).slice(1)
    np.testing.assert_array_equal(vector_matrix(sliced, "e"), [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="mixes vector lengths"):
        vector_matrix(pa.array([[1.0, 2.0], [1.0]]), "e")
    with pytest.raises(ValueError, match="null rows"):
        vector_matrix(pa.array([[1.0, 2.0], None]), "e")


def _with_tokens(table: pa.Table) -> pa.Table:
    tokens = np.round(np.random.default_rng(9).lognormal(4.0, 1.0, table.num_rows)).astype(np.int64)
    return table.append_column("token_count", pa.array(tokens))


def _sum_job(name: str, params: dict[str, Any], total: int, clusters: int) -> PartitionJob:
    from thresher.selectors.base import SumBudget

    job = _job(name, params, None, clusters)
    return PartitionJob(
        **{
            **job.__dict__,
            "budget": SumBudget("token_count", total),
            "columns": (*job.columns, "token_count"),
        }
    )


SUM_CASES = [c for c in CASES if c[2] is not None]


@pytest.mark.parametrize(("name", "params", "budget"), SUM_CASES)
def test_one_partition_with_a_token_budget_gives_the_in_memory_result(
    name: str, params: dict[str, Any], budget: int
) -> None:
    from thresher.selectors.base import SumBudget

    table, embeddings = _blobs(0)
    table = _with_tokens(table)
    total = 60 * budget
    result = partitioned(_sum_job(name, params, total, 1), table)
    in_memory = make_selector(name, params).select(
        table,
        embeddings,
        SumBudget("token_count", total),
        random_state=np.random.default_rng([3, 1]),
    )
    assert result["indices"].tolist() == in_memory.indices.tolist()
    np.testing.assert_allclose(result["weights"], in_memory.weights)


@pytest.mark.parametrize(("name", "params", "budget"), SUM_CASES)
def test_a_token_budget_is_split_across_partitions_by_their_token_sums(
    name: str, params: dict[str, Any], budget: int
) -> None:
    """Never over the total, and each partition short of its share by less than one of its rows."""
    table = _with_tokens(_blobs(1)[0])
    tokens = table.column("token_count").to_numpy()
    total = 60 * budget
    result = partitioned(_sum_job(name, params, total, 4), table)
    assert result["details"]["requested_sum"] == total
    kept = tokens[result["indices"]]
    assert total - 4 * int(tokens.max()) < int(kept.sum()) <= total
    sizes = {c["cluster"]: c["selected"] for c in result["details"]["clusters"]}
    assert sum(sizes.values()) == result["indices"].size and len(sizes) == 4
