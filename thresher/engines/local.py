"""The local engine: a pool of worker processes over shards; no JVM.

Workers are started with ``spawn`` (safe with torch and threads) and each
caps torch's threads to its share of the machine's cores.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from thresher.config import SchemaConfig
from thresher.dedup.spec import DedupSpec
from thresher.engines.base import Engine
from thresher.io.shards import Shard
from thresher.stages.ingest import ingest_to_run
from thresher.stages.materialize import materialize_shard
from thresher.stages.score import BoundScorer, score_shard_to_run


def _init_worker(threads: int) -> None:
    """Cap the threads of this worker before anything starts a thread pool.

    torch (and numpy's BLAS) read these variables when first imported, so
    torch is not imported here: a run whose scorers do not need it pays
    neither its import time nor its memory in every worker.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["THRESHER_WORKER_THREADS"] = str(threads)


class LocalEngine(Engine):
    """Runs per-shard work in ``workers`` processes (default: one per core)."""

    kind = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    @property
    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads,),
            )
        return self._pool

    # Per-shard submissions: the Prefect flow maps a task over shards with these.
    def submit_ingest(
        self, shard: Shard, schema: SchemaConfig, run_root: str
    ) -> Future[dict[str, Any]]:
        return self.pool.submit(ingest_to_run, shard, schema, run_root)

    def submit_score(
        self, shard_index: int, scorers: list[BoundScorer], run_root: str, batch_size: int
    ) -> Future[dict[str, Any]]:
        return self.pool.submit(score_shard_to_run, shard_index, scorers, run_root, batch_size)

    def submit_materialize(
        self, shard_index: int, schema: SchemaConfig, weighted: bool, run_root: str, out_dir: str
    ) -> Future[int]:
        return self.pool.submit(materialize_shard, run_root, shard_index, schema, weighted, out_dir)

    # Whole-stage forms (notebooks, tests).
    def ingest(
        self, shards: list[Shard], schema: SchemaConfig, run_root: str
    ) -> list[dict[str, Any]]:
        return [f.result() for f in [self.submit_ingest(s, schema, run_root) for s in shards]]

    def score(
        self, shard_indices: list[int], scorers: list[BoundScorer], run_root: str, batch_size: int
    ) -> list[dict[str, Any]]:
        futures = [self.submit_score(i, scorers, run_root, batch_size) for i in shard_indices]
        return [f.result() for f in futures]

    def materialize(
        self,
        shard_indices: list[int],
        schema: SchemaConfig,
        weighted: bool,
        run_root: str,
        out_dir: str,
    ) -> int:
        futures = [
            self.submit_materialize(i, schema, weighted, run_root, out_dir) for i in shard_indices
        ]
        return sum(f.result() for f in futures)

    def dedup(
        self, shard_indices: list[int], spec: DedupSpec, run_root: str, out_dir: str
    ) -> dict[str, Any]:
        """Dedup in this process, band by band in bounded memory (``thresher.dedup.local``)."""
        from thresher.dedup.local import dedup_local

        return dedup_local(shard_indices, spec, run_root, out_dir)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
