"""What an engine does: run the per-shard stages where the data is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from thresher.config import SchemaConfig
from thresher.io.shards import Shard
from thresher.stages.score import BoundScorer


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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (process pool, Spark session)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
