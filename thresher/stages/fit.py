"""Fit stage: build the configured scorers and fit those that need a model.

Runs once per run on the driver. Fitted artefacts go to
``models/<column>/``; a scorer's ``fit`` is expected to reuse them when they
are already there (resume), so calling this again is cheap. A run directory
on an object store is fitted in this machine's copy of ``models/``, pulled
first and pushed back after (:mod:`thresher.io.localize`).

A corpus that grows between runs keeps the models fitted by the run that
first needed them: new shards are scored with the same models, so scores
stay comparable across runs (``--fresh`` fits anew on the whole corpus).

Scorers are fitted in :func:`~thresher.stages.score.dependency_order`: a
scorer that reads another scorer's output (an ``embedding_classifier``
reading the ``embedding`` column) is fitted after it, and its context can
compute that output on the rows it trains on (:class:`~thresher.fitting.Derived`,
built by :func:`derived_columns`).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.config import RunConfig
from thresher.fitting import Derived, FitContext
from thresher.io import schema as S
from thresher.io.files import parquet_file
from thresher.io.localize import models_mirror, pull, push
from thresher.keys import json_digest
from thresher.run_dir import RunDir
from thresher.scorers import Scorer, make_scorer
from thresher.stages.base import RunContext, Stage
from thresher.stages.score import (
    CORPUS_COLUMNS,
    BoundScorer,
    ModelsCopy,
    dependency_order,
    score_columns,
)


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
    ordered = dependency_order(scorers)
    for position, bound in enumerate(ordered):
        if bound.scorer.requires_fit:
            derived = derived_columns(ordered[:position])
            bound.scorer.fit(
                fit_context(run, shard_rows, bound.column, seed, device, derived=derived)
            )
    push(mirror, run.models)


def derived_columns(scorers: Sequence[BoundScorer]) -> dict[str, Derived]:
    """How to compute each output column of ``scorers`` (fitted, in dependency order).

    A column is computed by its scorer and the scorers it reads from,
    transitively (not the others), on set-up copies of them made on first
    use: the fitted scorers themselves stay as they are.
    """
    producers = {f.name: i for i, b in enumerate(scorers) for f in b.fields}
    producers = {name: i for name, i in producers.items() if name not in CORPUS_COLUMNS}
    copies: dict[int, Scorer] = {}
    derived: dict[str, Derived] = {}
    for position, bound in enumerate(scorers):
        chain = _chain(scorers, producers, position)
        inputs = {
            name
            for i in chain
            for name in scorers[i].scorer.input_columns
            if producers.get(name, i) == i
        }
        fingerprint = json_digest(
            [
                [scorers[i].column, scorers[i].scorer.name, scorers[i].scorer.get_params()]
                for i in chain
            ],
            length=16,
        )
        for field in bound.fields:
            compute = partial(_compute, scorers, chain, copies, field.name)
            derived[field.name] = Derived(tuple(sorted(inputs)), compute, fingerprint)
    return derived


def _chain(
    scorers: Sequence[BoundScorer], producers: Mapping[str, int], position: int
) -> list[int]:
    """Positions of the scorer at ``position`` and of those it reads from, transitively, in order."""
    chain = {position}
    todo = [position]
    while todo:
        for name in scorers[todo.pop()].scorer.input_columns:
            source = producers.get(name)
            if source is not None and source not in chain and source < position:
                chain.add(source)
                todo.append(source)
    return sorted(chain)


def _compute(
    scorers: Sequence[BoundScorer],
    chain: list[int],
    copies: dict[int, Scorer],
    column: str,
    table: pa.Table,
) -> pa.Array:
    """``column`` on the rows of ``table`` (one batch of them at a time)."""
    for i in chain:
        if i not in copies:
            copy = pickle.loads(pickle.dumps(scorers[i].scorer))
            copy.setup()
            copies[i] = copy
    ready = [BoundScorer(scorers[i].column, copies[i]) for i in chain]
    parts = [score_columns(batch, ready)[column] for batch in table.to_batches(max_chunksize=1024)]
    field = next(f for b in ready for f in b.fields if f.name == column)
    return pa.concat_arrays(parts) if parts else pa.array([], field.type)


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
    derived: Mapping[str, Derived] | None = None,
) -> FitContext:
    """The context to fit a model on the run's ingested rows; artefacts go to ``models/NAME/``.

    ``n_rows`` defaults to every ingested row (what ``sample`` draws from);
    ``derived`` says how to compute the outputs of the scorers fitted before.
    """
    artifact_dir = models_mirror(run.models) / name
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return FitContext(
        artifact_dir=artifact_dir,
        sample=lambda n, columns, s: sample_ingested(run, shard_rows, n, columns, s),
        n_rows=sum(shard_rows.values()) if n_rows is None else n_rows,
        seed=seed,
        device=device,
        derived=dict(derived or {}),
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
