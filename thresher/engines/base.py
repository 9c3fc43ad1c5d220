"""What an engine does: run the per-shard stages where the data is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.config import SchemaConfig
from thresher.io.shards import Shard
from thresher.stages.score import BoundScorer

if TYPE_CHECKING:
    from thresher.dedup.spec import DedupSpec
    from thresher.selectors import Selection
    from thresher.stages.partitioned import PartitionJob


class Engine(ABC):
    """Runs ingest, scoring and materialisation; selection runs on the driver for both."""

    kind: str

    @abstractmethod
    def ingest(
        self, shards: list[Shard], schema: SchemaConfig, run_root: str
    ) -> list[dict[str, Any]]:
        """Ingest every shard (idempotent per shard); return per-shard statistics."""

    @abstractmethod
    def score(
        self, shard_indices: list[int], scorers: list[BoundScorer], run_root: str, batch_size: int
    ) -> list[dict[str, Any]]:
        """Score the given ingested shards, committing each shard's scores atomically."""

    @abstractmethod
    def materialize(
        self,
        shard_indices: list[int],
        schema: SchemaConfig,
        weighted: bool,
        run_root: str,
        out_dir: str,
    ) -> int:
        """Write the kept rows of every shard under ``out_dir``; return the row count."""

    #: True when partitioned selection reads the embeddings where the data is (Spark),
    #: so the select stage leaves them off the driver.
    remote_selection: bool = False

    def select_partitioned(
        self,
        job: PartitionJob,
        scores: pa.Table,
        embeddings: NDArray[np.float32] | None,
        run_root: str,
    ) -> Selection:
        """Run one partitioned selection step (see ``thresher.stages.partitioned``).

        ``scores`` holds the rows reaching the step in input order. This
        default runs the algorithm in memory on ``embeddings``; engines with
        ``remote_selection`` read the vectors from the score shards under
        ``run_root`` instead.
        """
        from thresher.stages.partitioned import select_partitioned_local

        if embeddings is None:
            raise ValueError(f"{self.kind} engine: partitioned selection needs the embeddings")
        return select_partitioned_local(job, scores, embeddings)

    def invalid_vector_rows(self, run_root: str, column: str) -> pa.Table:
        """(thresher_shard, thresher_row) of score rows whose vector ``column`` is unusable.

        Needed only by engines with ``remote_selection``.
        """
        raise NotImplementedError(f"{self.kind} engine reads vectors on the driver")

    @abstractmethod
    def dedup(
        self, shard_indices: list[int], spec: DedupSpec, run_root: str, out_dir: str
    ) -> dict[str, Any]:
        """Find duplicate clusters in the stored scores; write ``clusters.parquet/`` under ``out_dir``.

        Returns the dedup summary (counts, LSH parameters). Both engines give
        the same clusters and keepers (``thresher.dedup``).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (process pool, Spark session)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
