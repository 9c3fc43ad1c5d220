"""Select stage: from the score table to a keep/drop decision for every ingested row.

Order of decisions, each recorded as a reason on the rows it drops:

1. ``duplicate_id``: a row whose id appeared earlier in input order;
2. ``duplicate``: with ``dedup`` configured, a member of a duplicate cluster
   that is not its keeper (detail ``keeper=<id of the kept document>``);
3. ``invalid_score``: a NaN/inf value in a score a step reads;
4. each filter in order (``filter:<name>(<score>)``);
5. the selector, which meets the budget (``not_selected:<name>``).

Each step sees only the rows that survived the previous ones, in input
order, and draws its randomness from ``(seed, step number)``, so the result
does not depend on the engine or on how the score table was partitioned.
A step with ``partitions`` runs per k-means partition
(:mod:`thresher.stages.partitioned`; on Spark executors with the Spark engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from thresher.config import RunConfig, SelectorConfig
from thresher.errors import RunStateError
from thresher.io import schema as S
from thresher.io.files import read_parquet_dir, write_json_atomic, write_parquet_atomic
from thresher.profiling import timed
from thresher.run_dir import RunDir
from thresher.selectors import Selection, Selector, make_selector
from thresher.selectors.base import resolve_budget
from thresher.stages.partitioned import (
    PartitionJob,
    select_partitioned_local,
    valid_vectors,
    vector_matrix,
)
from thresher.stages.partitioned_spark import score_files

if TYPE_CHECKING:
    from thresher.engines.base import Engine


@dataclass
class Decisions:
    """Keep/drop state of every row of the score table, in input order."""

    n_rows: int
    reason: NDArray[np.object_] = field(init=False)
    detail: NDArray[np.object_] = field(init=False)
    weight: NDArray[np.float64] = field(init=False)
    group: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.reason = np.full(self.n_rows, None, dtype=object)
        self.detail = np.full(self.n_rows, None, dtype=object)
        self.weight = np.ones(self.n_rows)
        self.group = np.full(self.n_rows, -1, dtype=np.int64)

    @property
    def active(self) -> NDArray[np.int64]:
        return np.flatnonzero(pd.isna(self.reason))

    def drop(self, rows: NDArray[np.int64], reason: str, detail: Any = None) -> None:
        self.reason[rows] = reason
        self.detail[rows] = detail


def step_label(step: SelectorConfig, selector: Selector) -> str:
    columns = selector.score_columns()
    return f"{step.name}({', '.join(columns)})" if columns else step.name


def read_score_table(run: RunDir, columns: list[str] | None = None) -> pa.Table:
    """The score table of a run in input order (sorted by shard, then row)."""
    table = read_parquet_dir(run.scores, columns=columns)
    return table.sort_by([(S.SHARD, "ascending"), (S.ROW, "ascending")])


def select(
    config: RunConfig, scores: pa.Table, engine: Engine | None = None
) -> tuple[Decisions, list[dict[str, Any]]]:
    """Decide every row of ``scores`` (see module docstring). Returns decisions and step details.

    ``engine`` runs steps with ``partitions``: in memory when it is None or
    local, as Spark jobs over the run's score shards for the Spark engine
    (``scores`` may then lack those steps' embedding columns).
    """
    decisions = Decisions(scores.num_rows)
    _drop_duplicate_ids(scores, decisions)
    _drop_near_duplicates(config, scores, decisions)
    steps = [
        (step, make_selector(step.name, step.params)) for step in [*config.filters, config.selector]
    ]
    _drop_invalid_scores(scores, steps, decisions, engine, str(config.run_path))
    details: list[dict[str, Any]] = []
    for number, (step, selector) in enumerate(steps):
        final = number == len(steps) - 1
        active = decisions.active
        subset = scores.take(pa.array(active))
        with timed("selector"):  # benchmarks only (thresher.profiling); free when off
            if step.partitions is not None:
                chosen = _select_partitioned(config, number, step, selector, subset, engine)
            else:
                embeddings = (
                    embedding_matrix(subset, step.embeddings)
                    if selector.requires_embeddings
                    else None
                )
                chosen = selector.select(
                    subset,
                    embeddings,
                    step.budget,
                    random_state=np.random.default_rng([config.seed, number]),
                )
        label = step_label(step, selector)
        kept = np.zeros(active.size, dtype=bool)
        kept[chosen.indices] = True
        reason = f"not_selected:{label}" if final else f"filter:{label}"
        decisions.drop(active[~kept], reason, _describe(step))
        if final:
            decisions.weight[active[chosen.indices]] = chosen.weights
            decisions.group[active[chosen.indices]] = chosen.groups
        details.append(
            {
                "step": label,
                "role": "selector" if final else "filter",
                "params": step.params,
                "budget": step.budget,
                "rows_in": int(active.size),
                "kept": len(chosen),
                "details": chosen.details,
            }
        )
    return decisions, details


def _select_partitioned(
    config: RunConfig,
    number: int,
    step: SelectorConfig,
    selector: Selector,
    subset: pa.Table,
    engine: Engine | None,
) -> Selection:
    """Run a step with ``partitions`` (thresher.stages.partitioned) on the engine."""
    assert step.partitions is not None
    label = [S.LABEL] if S.LABEL in subset.column_names else []
    job = PartitionJob(
        selector=selector,
        budget=None
        if step.budget is None
        else resolve_budget(step.budget, subset.num_rows, selector=step.name),
        clusters=step.partitions.clusters,
        sample=step.partitions.sample,
        iterations=step.partitions.iterations,
        seed=config.seed,
        step=number,
        embeddings=step.embeddings,
        columns=tuple(dict.fromkeys([*selector.score_columns(), *label])),
    )
    if engine is None:
        return select_partitioned_local(job, subset, embedding_matrix(subset, step.embeddings))
    embeddings = None if engine.remote_selection else embedding_matrix(subset, step.embeddings)
    return engine.select_partitioned(job, subset, embeddings, str(config.run_path))


def remote_vector_columns(config: RunConfig, engine: Engine | None) -> set[str]:
    """Embedding columns only partitioned steps read: left on the executors by a Spark engine."""
    if engine is None or not engine.remote_selection:
        return set()
    remote, local = set(), set()
    for step in [*config.filters, config.selector]:
        selector = make_selector(step.name, step.params)
        if step.partitions is not None:
            remote.add(step.embeddings)
        elif selector.requires_embeddings:
            local.add(step.embeddings)
    return remote - local


def minhash_columns(config: RunConfig) -> set[str]:
    """Signature and content-hash columns of ``minhash`` scorers: no selection step reads them."""
    return {
        name
        for scorer in config.scorers
        if scorer.name == "minhash"
        for name in (scorer.output_column, f"{scorer.output_column}_exact")
    }


def _describe(step: SelectorConfig) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted(step.params.items()))
    budget = "" if step.budget is None else f"; budget={step.budget}"
    return f"{step.name}({params}){budget}"


def _drop_duplicate_ids(scores: pa.Table, decisions: Decisions) -> None:
    ids = scores.column(S.ID).to_pandas()
    repeated = ids.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    frame = pd.DataFrame(
        {
            "id": ids,
            "shard": scores.column(S.SHARD).to_numpy(),
            "row": scores.column(S.ROW).to_numpy(),
        }
    )
    first = frame.groupby("id", sort=False)[["shard", "row"]].transform("first")
    for index in np.flatnonzero(repeated):
        decisions.drop(
            np.array([index]),
            S.DUPLICATE_ID,
            f"id first seen at shard {first['shard'].iat[index]} row {first['row'].iat[index]}",
        )


def _drop_near_duplicates(config: RunConfig, scores: pa.Table, decisions: Decisions) -> None:
    """Drop every non-keeper of a duplicate cluster (``RUN_DIR/dedup/``) as ``duplicate``."""
    if config.dedup is None:
        return
    from thresher.dedup import DUPLICATE
    from thresher.dedup.spec import doc_key, read_clusters

    run = RunDir(config.run_path)
    try:
        clusters = read_clusters(run.dedup, [S.SHARD, S.ROW, "keeper", "keeper_id"])
    except FileNotFoundError:
        raise RunStateError(f"{run.dedup}: no dedup result; run the dedup stage first") from None
    dropped = clusters.filter(pc.invert(clusters.column("keeper")))
    if dropped.num_rows == 0:
        return
    keys = doc_key(scores.column(S.SHARD).to_numpy(), scores.column(S.ROW).to_numpy())
    wanted = doc_key(dropped.column(S.SHARD).to_numpy(), dropped.column(S.ROW).to_numpy())
    rows = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    if keys.size == 0 or not np.array_equal(keys[rows], wanted):
        raise RunStateError(
            f"{run.dedup}: duplicate clusters name rows the scores lack; rerun dedup"
        )
    detail = np.array(
        ["keeper=" + str(k) for k in dropped.column("keeper_id").to_pylist()], dtype=object
    )
    active = pd.isna(decisions.reason[rows])
    decisions.drop(rows[active], DUPLICATE, detail[active])


def _drop_invalid_scores(
    scores: pa.Table,
    steps: list[tuple[SelectorConfig, Selector]],
    decisions: Decisions,
    engine: Engine | None = None,
    run_root: str | None = None,
) -> None:
    checked: set[str] = set()
    for step, selector in steps:
        columns = list(selector.score_columns())
        if selector.requires_embeddings or step.partitions is not None:
            columns.append(step.embeddings)
        for column in columns:
            if column in checked:
                continue
            if column not in scores.column_names:
                if not (
                    engine is not None
                    and engine.remote_selection
                    and step.partitions is not None
                    and column == step.embeddings
                    and run_root is not None
                ):
                    continue
                bad = _remote_invalid_rows(scores, engine, run_root, column)
            else:
                bad = ~_finite_rows(scores.column(column))
            checked.add(column)
            bad_rows = np.flatnonzero(bad & pd.isna(decisions.reason))
            if bad_rows.size:
                decisions.drop(bad_rows, S.INVALID_SCORE, f"{column} is null, NaN or infinite")


def _finite_rows(column: pa.ChunkedArray) -> NDArray[np.bool_]:
    """True where a score (or every element of an embedding) is present and finite."""
    if (
        pa.types.is_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
        or pa.types.is_large_list(column.type)
    ):
        return valid_vectors(column)  # vectorised: no Python loop over rows
    values = column.to_numpy(zero_copy_only=False)
    try:
        numeric = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray(pc.is_valid(column)).astype(bool)
    return np.isfinite(numeric)


def embedding_matrix(table: pa.Table, column: str) -> NDArray[np.float32]:
    """An (n, d) float32 matrix from a list or fixed-size-list column."""
    if column not in table.column_names:
        raise ValueError(f"embedding column {column!r} not found; have {table.column_names}")
    values = table.column(column).combine_chunks()
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(values.type):
        flat = values.flatten().to_numpy(zero_copy_only=False)
        return flat.astype(np.float32).reshape(len(values), values.type.list_size)
    return vector_matrix(values, column)  # vectorised; refuses ragged or null rows


def _remote_invalid_rows(
    scores: pa.Table, engine: Engine, run_root: str, column: str
) -> NDArray[np.bool_]:
    """Rows of ``scores`` whose vector (read by the engine, not the driver) is unusable."""
    invalid = engine.invalid_vector_rows(run_root, column)
    keys = scores.column(S.SHARD).to_numpy().astype(np.int64) << 40 | scores.column(
        S.ROW
    ).to_numpy().astype(np.int64)
    bad_keys = invalid.column(S.SHARD).to_numpy().astype(np.int64) << 40 | invalid.column(
        S.ROW
    ).to_numpy().astype(np.int64)
    return np.isin(keys, bad_keys)


def selection_table(scores: pa.Table, decisions: Decisions) -> pa.Table:
    """The selection table (``S.SELECTION_SCHEMA``): one row per row of ``scores``."""
    return pa.table(
        {
            S.ID: scores.column(S.ID),
            S.SHARD: scores.column(S.SHARD),
            S.ROW: scores.column(S.ROW),
            "keep": pa.array(pd.isna(decisions.reason)),
            "weight": pa.array(decisions.weight),
            "reason": pa.array(decisions.reason, pa.string()),
            "detail": pa.array(decisions.detail, pa.string()),
            "group": pa.array(decisions.group),
        },
        schema=S.SELECTION_SCHEMA,
    )


def select_to_run(config: RunConfig, engine: Engine | None = None) -> dict[str, Any]:
    """Run selection on the stored scores and write ``selection/`` and ``dropped/``.

    Steps with ``partitions`` run on ``engine``; when it is None and the run
    uses the Spark engine, a Spark engine is made here (on the running Spark
    session if there is one, which is then left running).
    """
    run = RunDir(config.run_path)
    owned: Engine | None = None
    if engine is None and config.engine.kind == "spark" and _has_partitioned_step(config):
        engine, owned = _spark_engine(config)
    try:
        remote = remote_vector_columns(config, engine) | minhash_columns(config)
        columns = None
        if remote:
            names = pa.unify_schemas(
                [pq.read_schema(f) for f in score_files(run)], promote_options="permissive"
            ).names
            columns = [name for name in names if name not in remote]
        scores = read_score_table(run, columns)
        decisions, details = select(config, scores, engine)
    finally:
        if owned is not None:
            owned.close()
    keep = pd.isna(decisions.reason)
    selection = selection_table(scores, decisions)
    # In input order, in row groups: each shard's materialisation reads only its own groups.
    write_parquet_atomic(selection, run.selection / "selection.parquet", row_group_size=1 << 16)
    dropped = selection.filter(pa.array(~keep)).select([S.ID, "reason", "detail"])
    write_parquet_atomic(dropped.cast(S.DROPPED_SCHEMA), run.dropped / "dropped.parquet")
    write_json_atomic(details, run.selection / "steps.json")
    reasons = pd.Series(decisions.reason[~keep]).value_counts().sort_index()
    return {
        "ingested": scores.num_rows,
        "kept": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "dropped_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "weighted": bool(np.any(decisions.weight[keep] != 1.0)),
        "steps": details,
    }


def _has_partitioned_step(config: RunConfig) -> bool:
    return any(step.partitions is not None for step in [*config.filters, config.selector])


def _spark_engine(config: RunConfig) -> tuple[Engine, Engine | None]:
    """A Spark engine for partitioned steps, and itself again if it started the session."""
    from pyspark import SparkContext

    from thresher.engines import make_engine

    running = SparkContext._active_spark_context is not None  # pyspark has no public test
    engine = make_engine(config)
    return engine, None if running else engine
