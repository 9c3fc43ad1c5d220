"""Select stage: a decision for every ingested row, written per shard into a new version.

The score rows are read where they are (a :class:`~thresher.frame.Frame`),
decided (:mod:`thresher.stages.decide`) and written back by the engine,
one file per shard: ``versions/<v>/selection/shard-NNNNN.parquet`` (every
row: ``id, thresher_shard, thresher_row, keep, weight, reason, detail,
group, repeat``) and ``versions/<v>/dropped/shard-NNNNN.parquet`` (``id, reason,
detail`` of the rows not kept). What reaches the driver is a row of
counts per shard, histograms of the scores (kept and dropped) and a few
example rows per reason, written to ``stats.json`` for the report, card
and ``inspect``; the step details go to ``steps.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.config import TOKEN_COLUMN, RunConfig
from thresher.errors import ConfigError
from thresher.frame import Frame
from thresher.io import schema as S
from thresher.io.files import read_schema, write_json_atomic
from thresher.io.publish import Version
from thresher.io.shards import input_order, order_ranks
from thresher.run_dir import RunDir
from thresher.stages.base import RunContext, Stage
from thresher.stages.decide import (
    _DETAIL,
    SelectionSpec,
    decide,
    needs_vectors,
    sum_budget_columns,
)
from thresher.stages.decisions import (
    KEPT,
    SUMMARY_SCHEMA,
    WriteShards,
    dataset_repeats,
    merge_summaries,
    merge_sums,
    write_empty_shards,
)
from thresher.stages.score_stats import numeric_columns, score_histograms

if TYPE_CHECKING:
    from thresher.engines.base import Engine
    from thresher.progress import StageProgress


class AddOrder:
    """Add the input-order key (``thresher_order``) from the shards' ranks (a picklable transform)."""

    def __init__(self, ranks: NDArray[np.int64]) -> None:
        self.ranks = ranks

    def __call__(self, table: pa.Table) -> pa.Table:
        order = input_order(table, self.ranks)
        return table.append_column(S.ORDER, pa.array(order, pa.int64()))


def selection_columns(spec: SelectionSpec, available: pa.Schema) -> list[str]:
    """Score columns the decisions read: ids, positions, label, the steps' scores and vectors."""
    wanted = [S.ID, S.SHARD, S.ROW, S.LABEL]
    wanted += [TOKEN_COLUMN, *sum_budget_columns(list(spec.steps))]
    for step, selector in spec.steps:
        wanted += selector.score_columns()
        if needs_vectors(step, selector):
            wanted.append(step.embeddings)
    if spec.mixture_column is not None:
        wanted.append(spec.mixture_column)
    return [c for c in dict.fromkeys(wanted) if c in available.names]


def score_schema(run: RunDir, indices: list[int]) -> pa.Schema:
    """The unified schema of the score shards (from their footers only)."""
    schemas = [read_schema(run.scores_shard(i)) for i in indices]
    return pa.unify_schemas(schemas, promote_options="permissive")


def score_rows(
    engine: Engine, run: RunDir, indices: list[int], columns: list[str], ranks: NDArray[np.int64]
) -> Frame:
    """The score rows of the shards, with the columns asked for and the input-order key."""
    available = score_schema(run, indices)
    schema = pa.schema([available.field(c) for c in columns] + [pa.field(S.ORDER, pa.int64())])
    files = [run.scores_shard(i) for i in sorted(indices)]
    return engine.read(files, schema, AddOrder(ranks))


def with_group_column(
    engine: Engine,
    run: RunDir,
    indices: list[int],
    spec: SelectionSpec,
    rows: Frame,
    ranks: NDArray[np.int64],
) -> Frame:
    """``rows`` with a mixture's group column: from the score files, else the ingested shards.

    The score files hold the label and the score columns; a passthrough
    column is joined in from the ingested shards on the input-order key.
    A column in neither is refused naming the columns there are.
    """
    column = spec.mixture_column
    if column is None or column in rows.schema.names:
        return rows
    assert spec.mixture is not None
    ingested = pa.unify_schemas(
        [read_schema(run.ingested_shard(i)) for i in indices], promote_options="permissive"
    )
    if column not in ingested.names:
        hidden = {S.SHARD, S.ROW, S.TEXT, S.FEATURES}
        names = {*rows.schema.names, *ingested.names} - hidden - {S.ORDER}
        raise ConfigError(
            f"selector.mixture.by: column {spec.mixture.by!r} is in neither the scores nor the "
            f"ingested input; available: {sorted(names)}"
        )
    fields = [ingested.field(S.SHARD), ingested.field(S.ROW), ingested.field(column)]
    schema = pa.schema([*fields, pa.field(S.ORDER, pa.int64())])
    files = [run.ingested_shard(i) for i in sorted(indices)]
    groups = engine.read(files, schema, AddOrder(ranks)).select([S.ORDER, column])
    return rows.join(groups, [S.ORDER], "left")


class _Duplicates:
    """Non-keepers of the dedup clusters as (order key, ``keeper=<id>; similarity=<s>``)."""

    def __init__(self, ranks: NDArray[np.int64]) -> None:
        self.ranks = ranks

    def __call__(self, table: pa.Table) -> pa.Table:
        table = table.filter(pc.invert(table.column("keeper")))
        order = input_order(table, self.ranks)
        similarity = [f"{value:.3f}" for value in table.column("similarity").to_pylist()]
        detail = pc.binary_join_element_wise(
            pa.scalar("keeper="),
            table.column("keeper_id").cast(pa.string()),
            pa.scalar("; similarity="),
            pa.array(similarity, pa.string()),
            "",
        )
        return pa.table({S.ORDER: pa.array(order, pa.int64()), _DETAIL: detail})


class _Contaminated:
    """Matched rows of the decontaminate stage as (order key, ``set=<name>; ngram=<n-gram>``)."""

    def __init__(self, ranks: NDArray[np.int64]) -> None:
        self.ranks = ranks

    def __call__(self, table: pa.Table) -> pa.Table:
        order = input_order(table, self.ranks)
        detail = pc.binary_join_element_wise(
            pa.scalar("set="), table.column("set"), pa.scalar("; ngram="), table.column("ngram"), ""
        )
        return pa.table({S.ORDER: pa.array(order, pa.int64()), _DETAIL: detail})


def contaminated_rows(engine: Engine, run: RunDir, ranks: NDArray[np.int64]) -> Frame:
    """The rows the committed decontaminate result names, as ``decide`` takes them."""
    from thresher.stages.decontaminate import MATCHES_SCHEMA, contamination_files

    schema = pa.schema([pa.field(S.ORDER, pa.int64()), pa.field(_DETAIL, pa.string())])
    files = contamination_files(run)
    if not files:
        return engine.from_table(schema.empty_table())
    return engine.read(files, MATCHES_SCHEMA).map_batches(_Contaminated(ranks), schema)


def duplicate_rows(engine: Engine, run: RunDir, ranks: NDArray[np.int64]) -> Frame:
    from thresher.dedup.spec import CLUSTERS_SCHEMA, cluster_files

    schema = pa.schema([pa.field(S.ORDER, pa.int64()), pa.field(_DETAIL, pa.string())])
    return engine.read(cluster_files(run), CLUSTERS_SCHEMA).map_batches(_Duplicates(ranks), schema)


# -- the stage -----------------------------------------------------------------------------


def select_to_run(
    config: RunConfig,
    engine: Engine,
    indices: list[int],
    version: Version,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Decide every ingested row of ``indices`` and write the decisions into ``version``.

    Returns the summary: ingested, kept and dropped rows (by reason),
    whether weights and repeat counts were set (then ``kept_repeated``, the
    kept rows times their repeat), and the steps' details.
    """
    spec = SelectionSpec.of(config)
    return select_into(RunDir(config.run_path), spec, engine, indices, version, progress)


def select_into(
    run: RunDir,
    spec: SelectionSpec,
    engine: Engine,
    indices: list[int],
    version: Version,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """:func:`select_to_run` from the slice of the config it needs (see SelectionSpec)."""
    names = run.shard_names()
    ranks = order_ranks(names)
    with engine.watch(progress):
        columns = selection_columns(spec, score_schema(run, indices))
        rows = score_rows(engine, run, indices, columns, ranks)
        rows = with_group_column(engine, run, indices, spec, rows, ranks)
        duplicates = duplicate_rows(engine, run, ranks) if spec.deduplicated else None
        contaminated = contaminated_rows(engine, run, ranks) if spec.decontaminated else None
        decided, steps = decide(rows, spec, engine, names, duplicates, contaminated)
        try:
            histograms = score_histograms(decided, numeric_columns(decided.schema))
            wanted = [TOKEN_COLUMN, *sum_budget_columns(list(spec.steps))]
            summed = [c for c in dict.fromkeys(wanted) if c in decided.schema.names]
            written = decided.map_groups(
                [S.SHARD], WriteShards(version, spec.seed, summed), SUMMARY_SCHEMA
            ).to_table(max_rows=max(len(indices), 1))
        finally:
            decided.release()
    counts, examples = merge_summaries(written)
    write_empty_shards(version, sorted(set(indices) - set(written.column("shard").to_pylist())))
    kept = counts.pop(KEPT, 0)
    dropped = dict(sorted(counts.items()))
    summary = {
        "ingested": int(sum(written.column("rows").to_pylist())),
        "kept": kept,
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dropped,
        "weighted": spec.weighted,
        **_repeat_summary(spec, written),
        "budget": spec.budget,
        "sums": merge_sums(written, spec.repeated),
        "steps": steps,
    }
    write_json_atomic(steps, version.steps)
    statistics = {k: v for k, v in summary.items() if k != "steps"}
    write_json_atomic({**statistics, "histograms": histograms, "examples": examples}, version.stats)
    return summary


def _repeat_summary(spec: SelectionSpec, written: pa.Table) -> dict[str, Any]:
    """``repeated`` and, when the selector sets repeat counts, ``kept_repeated``."""
    if not spec.repeated:
        return {"repeated": False}
    return {
        "repeated": True,
        "kept_repeated": int(sum(written.column("kept_repeated").to_pylist())),
    }


@dataclass(frozen=True)
class Selected:
    """What the select stage decided, and the version it wrote the decisions into."""

    version: Version
    summary: dict[str, Any]

    @property
    def kept(self) -> int:
        return int(self.summary["kept"])

    @property
    def weighted(self) -> bool:
        return bool(self.summary["weighted"])

    @property
    def repeated(self) -> bool:
        return bool(self.summary.get("repeated"))


class SelectStage(Stage):
    """Decide every ingested row into a new version (see module docstring)."""

    name = "select"

    def __init__(self, spec: SelectionSpec) -> None:
        self.spec = spec

    def run(self, ctx: RunContext, bar: StageProgress) -> Selected:
        from thresher.io import publish

        token = ctx.lock.token if ctx.lock is not None else None
        version = publish.new_version(ctx.run.root, token)
        indices = ctx.result("ingest").indices
        summary = select_into(ctx.run, self.spec, ctx.engine, indices, version, bar)
        _warn_unmet_budgets(summary["steps"], ctx.logger)
        return Selected(version, summary)

    def describe(self, result: Selected) -> str:
        return f"selected {result.kept} of {result.summary['ingested']} ingested rows"


def _warn_unmet_budgets(steps: list[dict[str, Any]], logger: Any) -> None:
    """Say when a budget (a count, or a sum) covers every row that reaches its step."""
    for step in steps:
        budget = step.get("budget")
        if (
            isinstance(budget, int)
            and not isinstance(budget, bool)
            and budget > step["rows_in"]
            and step["kept"] == step["rows_in"]  # repeated rows may fill a budget above the rows
        ):
            logger.warning(
                "%s: budget %d exceeds the %d rows that reach it; all of them are kept",
                step["step"],
                budget,
                step["rows_in"],
            )
        elif isinstance(budget, dict) and step["rows_in"] and step["kept"] == step["rows_in"]:
            logger.warning(
                "%s: budget %s <= %d covers all %d rows that reach it; all of them are kept",
                step["step"],
                budget["sum"],
                budget["total"],
                step["rows_in"],
            )


# -- in memory (the Python API, notebooks, thresher eval) -------------------------------------


def read_score_table(run: RunDir, columns: list[str] | None = None) -> pa.Table:
    """Every score shard of a run as one table in input order, with ``thresher_order``.

    For runs that fit in memory (the Python API, eval); the stages use frames.
    """
    from thresher.io.files import read_parquet

    indices = sorted(run.shard_names())
    files = [run.scores_shard(i) for i in indices if run.scores_shard(i).is_file()]
    if not files:
        from thresher.errors import RunStateError

        raise RunStateError(f"{run.root} has no scores yet (run thresher score or run)")
    add = AddOrder(order_ranks(run.shard_names()))
    tables = []
    for location in files:
        available = read_schema(location).names
        wanted = (
            None
            if columns is None
            else [c for c in dict.fromkeys([*columns, S.SHARD, S.ROW]) if c in available]
        )
        tables.append(add(read_parquet(location, columns=wanted)))
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.sort_by(S.ORDER)


def decide_table(
    config: RunConfig, scores: pa.Table, run: RunDir | None = None
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Decisions for an in-memory score table (input order, with ``thresher_order``).

    The same pipeline as the select stage (:func:`~thresher.stages.decide.decide`),
    on the table; returns the selection table (``S.SELECTION_SCHEMA``, input
    order) and the step details. With ``dedup`` configured, ``run``'s
    clusters drop the duplicates; with ``decontaminate``, its stored matches
    drop the contaminated rows.
    """
    from thresher.engines import in_memory_engine
    from thresher.frame import TableFrame

    engine = in_memory_engine(driver_max_rows=max(scores.num_rows, 1))
    names = run.shard_names() if run is not None else {}
    duplicates = contaminated = None
    if config.dedup is not None and run is not None:
        duplicates = duplicate_rows(engine, run, order_ranks(names))
    if config.decontaminate is not None and run is not None:
        contaminated = contaminated_rows(engine, run, order_ranks(names))
    spec = SelectionSpec.of(config)
    rows: Frame = TableFrame.of(scores)
    if run is not None:
        rows = with_group_column(engine, run, sorted(names), spec, rows, order_ranks(names))
    decided, steps = decide(rows, spec, engine, names, duplicates, contaminated)
    table = decided.to_table(max_rows=scores.num_rows).sort_by(S.ORDER)
    keep = pc.is_null(table.column("reason"))
    selection = pa.table(
        {
            S.ID: table.column(S.ID).cast(pa.string()),
            S.SHARD: table.column(S.SHARD).cast(pa.int32()),
            S.ROW: table.column(S.ROW).cast(pa.int64()),
            "keep": keep,
            "weight": table.column("weight"),
            "reason": table.column("reason"),
            "detail": table.column("detail"),
            "group": table.column("group"),
            S.REPEAT: dataset_repeats(table.column(S.REPEAT), np.asarray(keep, dtype=bool)),
        },
        schema=S.SELECTION_SCHEMA,
    )
    return selection, steps
