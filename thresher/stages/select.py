"""Select stage: from the score table to a keep/drop decision for every ingested row.

Order of decisions, each recorded as a reason on the rows it drops:

1. ``duplicate_id``: a row whose id appeared earlier in input order;
2. ``invalid_score``: a NaN/inf value in a score a step reads;
3. each filter in order (``filter:<name>(<score>)``);
4. the selector, which meets the budget (``not_selected:<name>``).

Each step sees only the rows that survived the previous ones, in input
order, and draws its randomness from ``(seed, step number)``, so the result
does not depend on the engine or on how the score table was partitioned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.config import RunConfig, SelectorConfig
from thresher.io import schema as S
from thresher.io.files import read_parquet_dir, write_json_atomic, write_parquet_atomic
from thresher.run_dir import RunDir
from thresher.selectors import Selector, make_selector


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


def select(config: RunConfig, scores: pa.Table) -> tuple[Decisions, list[dict[str, Any]]]:
    """Decide every row of ``scores`` (see module docstring). Returns decisions and step details."""
    decisions = Decisions(scores.num_rows)
    _drop_duplicate_ids(scores, decisions)
    steps = [
        (step, make_selector(step.name, step.params)) for step in [*config.filters, config.selector]
    ]
    _drop_invalid_scores(scores, steps, decisions)
    details: list[dict[str, Any]] = []
    for number, (step, selector) in enumerate(steps):
        final = number == len(steps) - 1
        active = decisions.active
        subset = scores.take(pa.array(active))
        embeddings = (
            embedding_matrix(subset, step.embeddings) if selector.requires_embeddings else None
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


def _drop_invalid_scores(
    scores: pa.Table, steps: list[tuple[SelectorConfig, Selector]], decisions: Decisions
) -> None:
    checked: set[str] = set()
    for step, selector in steps:
        columns = list(selector.score_columns())
        if selector.requires_embeddings:
            columns.append(step.embeddings)
        for column in columns:
            if column in checked or column not in scores.column_names:
                continue
            checked.add(column)
            bad = ~_finite_rows(scores.column(column))
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
        ok = np.ones(len(column), dtype=bool)
        for position, value in enumerate(column.to_pylist()):
            ok[position] = value is not None and len(value) > 0 and bool(np.all(np.isfinite(value)))
        return ok
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
    return np.asarray(values.to_pylist(), dtype=np.float32)


def select_to_run(config: RunConfig) -> dict[str, Any]:
    """Run selection on the stored scores and write ``selection/`` and ``dropped/``."""
    run = RunDir(config.run_path)
    scores = read_score_table(run)
    decisions, details = select(config, scores)
    keep = pd.isna(decisions.reason)
    selection = pa.table(
        {
            S.ID: scores.column(S.ID),
            S.SHARD: scores.column(S.SHARD),
            S.ROW: scores.column(S.ROW),
            "keep": pa.array(keep),
            "weight": pa.array(decisions.weight),
            "reason": pa.array(decisions.reason, pa.string()),
            "detail": pa.array(decisions.detail, pa.string()),
            "group": pa.array(decisions.group),
        },
        schema=S.SELECTION_SCHEMA,
    )
    write_parquet_atomic(selection, run.selection / "selection.parquet")
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
