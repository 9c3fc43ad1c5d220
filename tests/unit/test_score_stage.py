"""The score stage holds scorers to their contract and names the one that breaks it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from tests.helpers.batches import text_batch
from tests.helpers.lm import ingest_small_corpus, read_scores
from thresher.errors import ScorerError
from thresher.scorers.base import Scorer
from thresher.stages.score import BoundScorer, ScoreShard, score_batches, score_schema


class _TwoOutputs(Scorer):
    name: ClassVar[str] = "two"

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.float64()), pa.field(f"{column}_chars", pa.int64())]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        lengths = pa.compute.utf8_length(batch.column(0))
        return pa.StructArray.from_arrays([lengths.cast(pa.float64()), lengths], names=["a", "b"])


class _WrongLength(Scorer):
    name: ClassVar[str] = "wrong"

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        return pa.array([1.0])


def _positions(batch: pa.RecordBatch) -> pa.RecordBatch:
    n = batch.num_rows
    return batch.append_column("thresher_shard", pa.array([0] * n, pa.int32())).append_column(
        "thresher_row", pa.array(range(n), pa.int64())
    )


def test_struct_output_becomes_named_columns() -> None:
    bound = [BoundScorer("size", _TwoOutputs())]
    schema = score_schema(bound, None)
    assert schema.names == ["id", "thresher_shard", "thresher_row", "size", "size_chars"]
    (out,) = score_batches([_positions(text_batch(["ab", "abcd"]))], bound, schema)
    assert out.column(3).to_pylist() == [2.0, 4.0]
    assert out.column(4).to_pylist() == [2, 4]


def test_wrong_length_is_reported_with_the_scorer_name() -> None:
    bound = [BoundScorer("w", _WrongLength())]
    with pytest.raises(ScorerError, match="scorer 'wrong' returned 1 values for 2 rows"):
        list(score_batches([_positions(text_batch(["a", "b"]))], bound, score_schema(bound, None)))


@pytest.mark.spark
def test_every_engine_commits_each_shard_alone_with_the_same_scores(
    small_corpus: Path, tmp_path: Path, spark_engine: Any
) -> None:
    """One task per shard, each committing ``scores/shard-NNNNN.parquet`` whole; same bytes' worth."""
    from thresher.engines.local import LocalEngine
    from thresher.scorers import make_scorer

    results = {}
    for name, engine in (("local", LocalEngine(workers=2)), ("spark", spark_engine)):
        ingested = ingest_small_corpus(small_corpus, tmp_path / name)
        scorers = [BoundScorer("word_count", make_scorer("word_count"))]
        task = ScoreShard(scorers, ingested.run, batch_size=64)
        first = engine.map_shards(task, sorted(ingested.shard_rows))
        assert [r["reused"] for r in first] == [False] * len(first)
        files = sorted(e.location.name for e in ingested.run.scores.list_files())
        assert files == [f"shard-{i:05d}.parquet" for i in sorted(ingested.shard_rows)]
        again = engine.map_shards(task, sorted(ingested.shard_rows))
        assert all(r["reused"] for r in again)  # committed shards are not scored twice
        ingested.run.scores_shard(1).delete()
        third = engine.map_shards(task, sorted(ingested.shard_rows))
        assert [r["index"] for r in third if not r["reused"]] == [1]
        results[name] = read_scores(ingested.run)
        if name == "local":
            engine.close()
    assert results["local"].equals(results["spark"])
