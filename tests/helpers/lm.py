"""Shared by the LM and fastText scorer tests: an ingested run directory and its fit context.

The small sample corpus is ingested into a real run directory (the ingest
stage, local), so fitting reads ``sample_ingested`` like a run does and the
Spark engine can score the same shards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.config import SchemaConfig
from thresher.fitting import FitContext
from thresher.io.files import data_files, parquet_file, read_parquet
from thresher.io.shards import ShardRegistry, numbered_shards
from thresher.run_dir import RunDir
from thresher.scorers.base import Scorer
from thresher.stages.fit import fit_context
from thresher.stages.ingest import ingest_to_run
from thresher.stages.score import BoundScorer, input_columns, score_batches, score_schema

#: A reference LM that trains in a few seconds on the small corpus and still learns it.
SMALL_LM = {
    "vocab_size": 1024,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
    "context_length": 128,
    "n_documents": 400,
    "steps": 150,
    "batch_size": 8,
    "learning_rate": 0.005,
}


@dataclass(frozen=True)
class IngestedRun:
    """A run directory holding the ingested small corpus."""

    run: RunDir
    shard_rows: dict[int, int]
    corpus: Path

    def context(self, column: str, seed: int = 0) -> FitContext:
        return fit_context(self.run, self.shard_rows, column, seed)

    def table(self) -> pa.Table:
        """Every ingested row with the ground truth ``kind`` of the sample corpus."""
        tables = [read_parquet(self.run.ingested_shard(i)) for i in sorted(self.shard_rows)]
        table = pa.concat_tables(tables, promote_options="permissive")
        truth = pq.read_table(self.corpus / "_truth.parquet", columns=["id", "kind"])
        kinds = dict(
            zip(truth.column("id").to_pylist(), truth.column("kind").to_pylist(), strict=True)
        )
        return table.append_column(
            "kind", pa.array([kinds.get(i, "bad") for i in table.column("id").to_pylist()])
        )

    def score_locally(self, column: str, scorer: Scorer, batch_size: int = 64) -> pa.Table:
        """Scores of every shard computed in this process (the engines' shared code path)."""
        bound = [BoundScorer(column, scorer)]
        parts = []
        for index in sorted(self.shard_rows):
            source = parquet_file(self.run.ingested_shard(index))
            has_label = "label" in source.schema_arrow.names
            schema = score_schema(
                bound, source.schema_arrow.field("label").type if has_label else None
            )
            columns = [c for c in input_columns(bound, has_label) if c in source.schema_arrow.names]
            batches = source.iter_batches(batch_size=batch_size, columns=columns)
            parts.append(pa.Table.from_batches(list(score_batches(batches, bound, schema)), schema))
        return pa.concat_tables(parts)


def ingest_small_corpus(corpus: Path, root: Path) -> IngestedRun:
    """Ingest every shard of ``corpus`` into a run directory at ``root``."""
    run = RunDir(root)
    shards = numbered_shards(sorted(corpus.glob("shard-*")), corpus)
    registry = ShardRegistry(run.shard_registry)
    registry.record(shards)
    registry.save()
    schema = SchemaConfig(label="topic")
    stats = [ingest_to_run(shard, schema, run) for shard in shards]
    return IngestedRun(run, {s["index"]: s["ingested"] for s in stats}, corpus)


def read_scores(run: RunDir) -> pa.Table:
    """Every shard's committed scores, sorted by position."""
    files = data_files(run.scores)
    table = pa.concat_tables([read_parquet(f) for f in files], promote_options="permissive")
    return table.sort_by([("thresher_shard", "ascending"), ("thresher_row", "ascending")])


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive = np.asarray(positive, dtype=np.float64)[:, None]
    negative = np.asarray(negative, dtype=np.float64)[None, :]
    return float(np.mean((positive > negative) + 0.5 * (positive == negative)))


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread (as one worker's share would): tiny test models gain nothing
    from more, and spinning OpenMP threads crawl on a busy machine. Restored afterwards."""
    import torch

    before_env = os.environ.get("THRESHER_WORKER_THREADS")
    before_threads = torch.get_num_threads()
    os.environ["THRESHER_WORKER_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop("THRESHER_WORKER_THREADS", None)
        else:
            os.environ["THRESHER_WORKER_THREADS"] = before_env
        torch.set_num_threads(before_threads)
