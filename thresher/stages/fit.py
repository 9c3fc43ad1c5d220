"""Fit stage: build the configured scorers and fit those that need a model.

Runs once per run on the driver. Fitted artefacts go to
``models/<column>/``; a scorer's ``fit`` is expected to reuse them when they
are already there (resume), so calling this again is cheap. A run directory
on an object store is fitted in this machine's copy of ``models/``, pulled
first and pushed back after (:mod:`thresher.io.localize`).

A corpus that grows between runs keeps the models fitted by the run that
first needed them: new shards are scored with the same models, so scores
stay comparable across runs (``--fresh`` fits anew on the whole corpus).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.config import RunConfig
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.io.files import parquet_file
from thresher.io.localize import models_mirror, pull, push
from thresher.run_dir import RunDir
from thresher.scorers import make_scorer
from thresher.stages.base import RunContext, Stage
from thresher.stages.score import BoundScorer, ModelsCopy


def build_scorers(config: RunConfig) -> list[BoundScorer]:
    """Instantiate the configured scorers (not yet fitted), with their file paths resolved."""
    run = RunDir(config.run_path)
    models = ModelsCopy(run.models, str(models_mirror(run.models)))
    return [
        BoundScorer(s.output_column, make_scorer(s.name, s.resolved_params(config.resolve)), models)
        for s in config.scorers
    ]


def fit_bound(
    run: RunDir,
    scorers: list[BoundScorer],
    shard_rows: dict[int, int],
    seed: int,
    device: str = "cpu",
) -> None:
    """Fit the scorers that need a model, in this machine's copy of ``models/`` (pushed back)."""
    if not any(bound.scorer.requires_fit for bound in scorers):
        return
    mirror = pull(run.models, models_mirror(run.models))
    for bound in scorers:
        if bound.scorer.requires_fit:
            bound.scorer.fit(fit_context(run, shard_rows, bound.column, seed, device))
    push(mirror, run.models)


@dataclass(frozen=True)
class Fitted:
    """The run's scorers, fitted (what the score stage hands to every worker)."""

    scorers: tuple[BoundScorer, ...]


class FitStage(Stage):
    """Fit the scorers that need a model, once per run on the driver (see module docstring)."""

    name = "fit"
    shown = False

    def __init__(self, scorers: list[BoundScorer], seed: int) -> None:
        self.scorers = scorers
        self.seed = seed

    def run(self, ctx: RunContext, bar: Any) -> Fitted:
        fit_bound(ctx.run, self.scorers, ctx.result("ingest").shard_rows, self.seed)
        return Fitted(tuple(self.scorers))


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
    artifact_dir = models_mirror(run.models) / name
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
        source = parquet_file(run.ingested_shard(shard))
        available = source.schema_arrow.names
        table = source.read(columns=[c for c in wanted if c in available])
        parts.append(table.take(pa.array(local)))
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in wanted})
    return pa.concat_tables(parts, promote_options="permissive")
