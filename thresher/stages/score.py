"""Score stage: run the configured scorers over batches of one shard.

``score_shard_to_run`` is what every engine runs, once per shard, where the
data is (a worker process, a Spark executor): it reads the ingested shard,
scores it batch by batch and commits ``scores/shard-NNNNN.parquet`` in one
atomic write, so a shard is scored or not, never half. Scorers are set up
once per worker process (a cache keyed by the scorer's pickled state), not
once per batch or task. When the run directory is on an object store, a
worker first pulls the fitted models to a local copy (:mod:`thresher.io.localize`).

A scorer may read another scorer's output (an ``embedding_classifier``
reads the ``embedding`` column, ``score_combine`` reads score columns): an
input column that another scorer writes is that scorer's output, computed
on the same batch just before (:func:`dependency_order`); the other input
columns are read from the ingested shard. The canonical corpus columns
(:data:`CORPUS_COLUMNS`) always come from the shard.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from thresher import faults, profiling
from thresher.errors import ConfigError, ScorerError, ThresherError
from thresher.io import schema as S
from thresher.io.files import parquet_file
from thresher.io.fs import Location
from thresher.io.localize import models_mirror, pull
from thresher.io.sink import ParquetSink
from thresher.run_dir import RunDir
from thresher.scorers.base import Scorer, relocate_artifacts
from thresher.stages.base import RunContext, ShardStage
from thresher.tables import CAST_ERRORS


@dataclass(frozen=True)
class ModelsCopy:
    """Where a run's fitted models are (``RUN_DIR/models``) and the driver's local copy of them."""

    remote: Location
    fitted_in: str


@dataclass(frozen=True)
class BoundScorer:
    """A scorer, the column its output is written to, and where its fitted models are."""

    column: str
    scorer: Scorer
    models: ModelsCopy | None = None

    @property
    def fields(self) -> list[pa.Field]:
        return self.scorer.output_fields(self.column)


_READY: dict[str, Scorer] = {}


def _ready(bound: BoundScorer) -> Scorer:
    """Return a set-up scorer equal to ``bound.scorer``, set up at most once per process.

    With models on an object store, they are pulled to this machine's copy
    first, and the scorer's fitted paths moved there if it differs from the
    driver's.
    """
    scorer = bound.scorer
    key = hashlib.sha256(pickle.dumps(scorer)).hexdigest()
    ready = _READY.get(key)
    if ready is None:
        if bound.models is not None and not bound.models.remote.is_local:
            here = pull(bound.models.remote, models_mirror(bound.models.remote))
            if str(here) != bound.models.fitted_in:
                relocate_artifacts(scorer, bound.models.fitted_in, str(here))
        scorer.setup()
        ready = _READY[key] = scorer
    return ready


#: Columns a scorer always reads from the ingested shard, whatever a scorer's column is named.
CORPUS_COLUMNS = frozenset({S.ID, S.TEXT, S.LABEL, S.FEATURES, S.SHARD, S.ROW})


def _producers(scorers: Sequence[BoundScorer]) -> dict[str, int]:
    """Output column -> position of the scorer that writes it (corpus columns left out)."""
    return {
        field.name: position
        for position, bound in enumerate(scorers)
        for field in bound.fields
        if field.name not in CORPUS_COLUMNS
    }


def dependency_order(scorers: Sequence[BoundScorer]) -> list[BoundScorer]:
    """The scorers, each after the scorers whose outputs it reads; otherwise in their given order.

    A scorer reading a column it writes itself reads the ingested column of
    that name. Scorers that read each other's outputs in a cycle are refused
    (ConfigError naming their columns).
    """
    producers = _producers(scorers)
    needs = [
        {producers[c] for c in bound.scorer.input_columns if c in producers} - {position}
        for position, bound in enumerate(scorers)
    ]
    placed: list[int] = []
    waiting = list(range(len(scorers)))
    while waiting:
        ready = [i for i in waiting if needs[i] <= set(placed)]
        if not ready:
            columns = [scorers[i].column for i in waiting]
            raise ConfigError(
                f"scorers: the scorers of columns {columns} read each other's outputs in a "
                "cycle; a scorer can read only outputs of scorers that do not read its own"
            )
        placed.append(ready[0])
        waiting.remove(ready[0])
    return [scorers[i] for i in placed]


def input_columns(scorers: list[BoundScorer], has_label: bool) -> list[str]:
    """Ingested columns that scoring reads: positions, id, label, and every scorer input.

    Inputs that another scorer writes are computed, not read (see module docstring).
    """
    columns = [S.ID, S.SHARD, S.ROW] + ([S.LABEL] if has_label else [])
    producers = _producers(scorers)
    for position, bound in enumerate(scorers):
        for name in bound.scorer.input_columns:
            if producers.get(name, position) != position:
                continue
            if name not in columns:
                columns.append(name)
    return columns


def score_schema(scorers: list[BoundScorer], label_type: pa.DataType | None) -> pa.Schema:
    """Schema of a score table: id, positions, label (if any), one column per scorer."""
    fields = [
        pa.field(S.ID, pa.string()),
        pa.field(S.SHARD, pa.int32()),
        pa.field(S.ROW, pa.int64()),
    ]
    if label_type is not None:
        fields.append(pa.field(S.LABEL, label_type))
    return pa.schema(fields + [field for bound in scorers for field in bound.fields])


def score_batches(
    batches: Iterable[pa.RecordBatch], scorers: list[BoundScorer], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Yield one score batch per input batch (see module docstring)."""
    profile = profiling.enabled()  # benchmarks: time spent inside scorers (off: free)
    seconds = 0.0
    with profiling.timed("scorer_setup"):
        ready = [BoundScorer(b.column, _ready(b)) for b in dependency_order(scorers)]
    try:
        for batch in batches:
            start = time.perf_counter() if profile else 0.0
            scored = score_columns(batch, ready)
            if profile:
                seconds += time.perf_counter() - start
            columns = [
                scored[field.name]
                if field.name in scored
                else batch.column(batch.schema.get_field_index(field.name)).cast(field.type)
                for field in schema
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)
    finally:
        if profile:
            profiling.record("scorer", seconds, profile)


def score_columns(batch: pa.RecordBatch, ready: Sequence[BoundScorer]) -> dict[str, pa.Array]:
    """Every output column of ``ready`` (set up, in :func:`dependency_order`) on one batch.

    Each scorer reads its inputs from the scorers before it, else from ``batch``.
    """
    producers = _producers(ready)
    available: dict[str, pa.Array] = {}
    scored: dict[str, pa.Array] = {}
    for position, bound in enumerate(ready):
        inputs: dict[str, pa.Array] = {}
        for name in bound.scorer.input_columns:
            if producers.get(name, position) != position:
                if name in available:
                    inputs[name] = available[name]
            elif name in batch.schema.names:
                inputs[name] = batch.column(batch.schema.get_field_index(name))
        for field, values in zip(bound.fields, _score_one(bound, inputs, batch), strict=True):
            scored[field.name] = available[field.name] = values
    return scored


def _score_one(
    bound: BoundScorer, inputs: Mapping[str, pa.Array], batch: pa.RecordBatch
) -> list[pa.Array]:
    scorer = bound.scorer
    missing = [c for c in scorer.input_columns if c not in inputs]
    if missing:
        raise ScorerError(
            f"scorer {scorer.name!r} needs column(s) {missing}, which the corpus lacks "
            "and no other scorer writes"
        )
    view = pa.RecordBatch.from_arrays(
        [inputs[c] for c in scorer.input_columns], names=list(scorer.input_columns)
    )
    try:
        result = scorer.score(view)
    except ThresherError:
        raise
    except Exception as error:
        raise ScorerError(f"scorer {scorer.name!r} failed on a batch: {error!r}") from error
    if isinstance(result, pa.ChunkedArray):
        result = result.combine_chunks()
    if len(result) != batch.num_rows:
        raise ScorerError(
            f"scorer {scorer.name!r} returned {len(result)} values for {batch.num_rows} rows"
        )
    fields = bound.fields
    if len(fields) == 1:
        values = [result]
    elif isinstance(result, pa.StructArray) and result.type.num_fields == len(fields):
        values = [result.field(i) for i in range(len(fields))]
    else:
        raise ScorerError(
            f"scorer {scorer.name!r} must return a struct of {len(fields)} fields, got {result.type}"
        )
    try:
        return [value.cast(field.type) for value, field in zip(values, fields, strict=True)]
    except CAST_ERRORS as error:
        raise ScorerError(
            f"scorer {scorer.name!r} returned {result.type}, expected {[f.type for f in fields]}"
        ) from error


def score_shard_to_run(
    shard_index: int, scorers: list[BoundScorer], run: RunDir, batch_size: int
) -> dict[str, Any]:
    """Score one ingested shard and commit ``scores/shard-NNNNN.parquet`` atomically (idempotent)."""
    target = run.scores_shard(shard_index)
    source = parquet_file(run.ingested_shard(shard_index))
    rows = source.metadata.num_rows
    if target.is_file():
        return {"index": shard_index, "rows": rows, "reused": True}
    names = source.schema_arrow.names
    has_label = S.LABEL in names
    label_type = source.schema_arrow.field(S.LABEL).type if has_label else None
    schema = score_schema(scorers, label_type)
    columns = [c for c in input_columns(scorers, has_label) if c in names]
    batches = source.iter_batches(batch_size=batch_size, columns=columns)
    with ParquetSink(target, empty_schema=schema) as sink:  # a batch at a time, published whole
        for scored in score_batches(batches, scorers, schema):
            sink.write(scored)
    return {"index": shard_index, "rows": rows, "reused": False}


class ScoreShard:
    """The per-shard scoring task (picklable): ``ScoreShard(...)(index)``."""

    def __init__(self, scorers: list[BoundScorer], run: RunDir, batch_size: int) -> None:
        self.scorers = scorers
        self.run = run
        self.batch_size = batch_size

    def __call__(self, index: int) -> dict[str, Any]:
        faults.pause("score:shard")
        return score_shard_to_run(index, self.scorers, self.run, self.batch_size)


@dataclass(frozen=True)
class Scored:
    """The shards scored by this run, and how many had their scores already."""

    new: tuple[int, ...]
    reused: int = 0


class ScoreStage(ShardStage):
    """Score every ingested shard not scored yet (one listing of ``scores/`` says which)."""

    name = "score"
    retries = 2

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def totals(self, ctx: RunContext) -> dict[str, int]:
        ingested = ctx.result("ingest")
        return {"shards": len(ingested.stats), "docs": ingested.rows}

    def items(self, ctx: RunContext) -> list[int]:
        return sorted(ctx.result("ingest").shard_rows)

    def split(self, ctx: RunContext, items: list[Any]) -> tuple[list[Any], list[Any]]:
        rows = ctx.result("ingest").shard_rows
        scored = {e.location.name for e in ctx.run.scores.list_files(recursive=False)}
        pending = [i for i in items if ctx.run.scores_shard(i).name not in scored]
        reused = [{"index": i, "rows": rows[i], "reused": True} for i in items if i not in pending]
        return pending, reused

    def task(self, ctx: RunContext) -> ScoreShard:
        return ScoreShard(list(ctx.result("fit").scorers), ctx.run, self.batch_size)

    def documents(self, result: Any) -> int:
        return int(result["rows"])

    def collect(self, ctx: RunContext, reused: list[Any], fresh: list[Any]) -> Scored:
        return Scored(tuple(int(r["index"]) for r in fresh), len(reused))

    def describe(self, result: Scored) -> str:
        return f"scored {len(result.new)} shard(s), {result.reused} reused"
