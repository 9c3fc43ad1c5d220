"""Fit stage: build the configured scorers and fit those that need a model.

Runs once per run on the driver. Fitted artefacts go to
``models/<column>/``; a scorer's ``fit`` is expected to reuse them when they
are already there (resume), so calling this again is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.config import RunConfig
from thresher.io import schema as S
from thresher.run_dir import RunDir
from thresher.scorers import make_scorer
from thresher.scorers.base import FitContext
from thresher.stages.score import BoundScorer


def build_scorers(config: RunConfig) -> list[BoundScorer]:
    """Instantiate the configured scorers (not yet fitted), with their file paths resolved."""
    return [
        BoundScorer(s.output_column, make_scorer(s.name, s.resolved_params(config.resolve)))
        for s in config.scorers
    ]


def fit_scorers(
    config: RunConfig, shard_rows: dict[int, int], device: str = "cpu"
) -> list[BoundScorer]:
    """Build the scorers and fit those with ``requires_fit`` on samples of the ingested corpus."""
    run = RunDir(config.run_path)
    scorers = build_scorers(config)
    for bound in scorers:
        if bound.scorer.requires_fit:
            bound.scorer.fit(fit_context(run, shard_rows, bound.column, config.seed, device))
    return scorers


def fit_context(
    run: RunDir,
    shard_rows: dict[int, int],
    name: str,
    seed: int,
    device: str = "cpu",
    n_rows: int | None = None,
) -> FitContext:
    """The context to fit a model on the run's ingested rows; artefacts go to ``models/NAME/``.

    ``n_rows`` defaults to every ingested row (what ``sample`` draws from).
    """
    artifact_dir = run.models / name
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return FitContext(
        artifact_dir=artifact_dir,
        sample=lambda n, columns, s: sample_ingested(run, shard_rows, n, columns, s),
        n_rows=sum(shard_rows.values()) if n_rows is None else n_rows,
        seed=seed,
        device=device,
    )


def sample_ingested(
    run: RunDir, shard_rows: dict[int, int], n: int, columns: list[str], seed: int
) -> pa.Table:
    """Up to ``n`` ingested rows drawn uniformly without replacement, in input order.

    Position columns are always included, so a caller can tell sampled rows
    apart from the rest (e.g. to keep a reference model's training data
    disjoint from what it scores).
    """
    shards = sorted(shard_rows)
    sizes = np.array([shard_rows[s] for s in shards], dtype=np.int64)
    total = int(sizes.sum())
    n = min(n, total)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    wanted = list(dict.fromkeys([*columns, S.SHARD, S.ROW]))
    parts = []
    for i, shard in enumerate(shards):
        local = picked[(picked >= starts[i]) & (picked < starts[i + 1])] - starts[i]
        if local.size == 0:
            continue
        path: Path = run.ingested_shard(shard)
        available = pq.ParquetFile(path).schema_arrow.names
        table = pq.read_table(path, columns=[c for c in wanted if c in available])
        parts.append(table.take(pa.array(local)))
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in wanted})
    return pa.concat_tables(parts, promote_options="permissive")
