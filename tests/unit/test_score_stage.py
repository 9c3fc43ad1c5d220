"""The score stage holds scorers to their contract and names the one that breaks it."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
import pytest

from tests.helpers.batches import text_batch
from thresher.errors import ScorerError
from thresher.scorers.base import Scorer
from thresher.stages.score import BoundScorer, score_batches, score_schema


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


@pytest.mark.parametrize("parallelism", [1, 2, 8, 64])
@pytest.mark.parametrize("pending", [1, 3, 8, 20, 100, 1000])
def test_spark_scoring_waves_are_few_and_fill_every_core(pending: int, parallelism: int) -> None:
    from thresher.engines.spark import _MAX_WAVES, _wave_size

    size = _wave_size(pending, parallelism)
    assert size % parallelism == 0  # whole shards per core: no idle core before the wave ends
    assert size >= 2 * parallelism  # small corpora still commit in several waves (resume)
    assert -(-pending // size) <= _MAX_WAVES  # the fixed cost per Spark job stays bounded
