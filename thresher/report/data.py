"""What the report shows, gathered from a run directory (no rendering here).

Each section reads its own input and is left out when that input does not
exist: scores and selection (``scores/``, ``selection/``), duplicate
clusters (``dedup/clusters.parquet``, TEAM contract 3), selector details
(``selection/steps.json``, contract 4), the pruning curve
(``eval/results.parquet``, contract 5). An optional input that exists but
cannot be read becomes a visible note in the report rather than a failed
run (the note names the file and the error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from thresher.errors import RunStateError
from thresher.io import schema as S
from thresher.io.files import read_json
from thresher.report import sampling
from thresher.run_dir import RunDir

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Prefixes of drop reasons, in funnel order.
DUPLICATE_REASONS = ("duplicate_id", "duplicate", "exact_duplicate")


@dataclass
class FunnelStep:
    """One stage of the funnel: rows it removed (by reason) and rows left after it."""

    stage: str
    removed: dict[str, int]
    remaining: int

    @property
    def total_removed(self) -> int:
        return sum(self.removed.values())


@dataclass
class Example:
    """A document shown in the report (text already truncated, not yet escaped)."""

    id: str
    where: str
    detail: str
    text: str


@dataclass
class ReportData:
    """Everything the report renders; ``None``/empty fields are sections left out."""

    run_dir: Path
    manifest: dict[str, Any] | None
    shard_stats: list[dict[str, Any]]
    funnel: list[FunnelStep]
    input_count: int
    kept: int | None
    scores: pd.DataFrame | None
    score_columns: list[str]
    sampled_rows: int
    total_scored_rows: int
    steps: list[dict[str, Any]]
    clusters: pd.DataFrame | None
    eval_results: pd.DataFrame | None
    eval_summary: pd.DataFrame | None
    examples: dict[str, list[Example]]
    notes: list[str] = field(default_factory=list)


def gather(
    run_dir: str | Path,
    *,
    max_rows: int = 200_000,
    examples_per_reason: int = 3,
    text_limit: int = 600,
    seed: int = 0,
) -> ReportData:
    """Read what the report needs from ``run_dir``.

    Parameters
    ----------
    run_dir : path
        A thresher run directory (at least ingested).
    max_rows : int
        Most score rows read for the histograms; larger runs are sampled
        uniformly (per shard), so the report's cost does not grow with the run.
    examples_per_reason : int
        Example documents shown per outcome (kept, each drop and quarantine reason).
    text_limit : int
        Characters of each example shown before it is cut.
    seed : int
        Seed of the sampling (the same run gives the same report).
    """
    run = RunDir(Path(run_dir).resolve())
    if not run.is_run_dir():
        raise RunStateError(f"{run.root} is not a thresher run directory (no _state/run.json)")
    notes: list[str] = []
    manifest = read_json(run.manifest) if run.manifest.is_file() else None
    shard_stats = run.stored_ingest_stats()
    steps = _optional(notes, run.selection / "steps.json", read_json) or []
    funnel, input_count, kept = build_funnel(manifest, shard_stats, steps)

    columns = sampling.score_columns(run)
    total_scored = sum(
        pq.ParquetFile(f).metadata.num_rows for f in sampling.parquet_files(run.scores)
    )
    scores = (
        sampling.sample_scores(run, columns, max_rows, seed) if columns and total_scored else None
    )
    return ReportData(
        run_dir=run.root,
        manifest=manifest,
        shard_stats=shard_stats,
        funnel=funnel,
        input_count=input_count,
        kept=kept,
        scores=scores,
        score_columns=columns,
        sampled_rows=0 if scores is None else len(scores),
        total_scored_rows=total_scored,
        steps=steps,
        clusters=_optional(notes, run.dedup / "clusters.parquet", _read_clusters),
        eval_results=_optional(notes, run.eval / "results.parquet", _read_eval),
        eval_summary=_optional(notes, run.eval / "summary.csv", pd.read_csv),
        examples=_examples(run, examples_per_reason, text_limit, seed),
        notes=notes,
    )


def _optional(notes: list[str], path: Path, read: Callable[[Path], T]) -> T | None:
    """``read(path)`` when the file exists; a note instead of a failure when it is unreadable."""
    if not path.exists():
        return None
    try:
        return read(path)
    except Exception as error:
        message = f"{path.name} could not be read ({type(error).__name__}: {error})"
        logger.warning("report: %s", message)
        notes.append(message)
        return None


# -- funnel ------------------------------------------------------------------------


def build_funnel(
    manifest: dict[str, Any] | None,
    shard_stats: list[dict[str, Any]],
    steps: list[dict[str, Any]],
) -> tuple[list[FunnelStep], int, int | None]:
    """The funnel: input, quarantine, duplicates, invalid scores, each filter, selector.

    Every drop reason lands in exactly one stage (unknown reasons in
    "other"), so the rows removed plus the rows selected add up to the input.
    Returns the steps, the input count and the kept count (None before selection).
    """
    n_input = sum(int(s["rows_in"]) for s in shard_stats)
    quarantined: dict[str, int] = {}
    for stats in shard_stats:
        for reason, count in stats["quarantined_by_reason"].items():
            quarantined[reason] = quarantined.get(reason, 0) + int(count)
    if manifest is not None:
        n_input = manifest["counts"]["input"]
        quarantined = dict(manifest["counts"]["quarantined"]["by_reason"])
    remaining = n_input - sum(quarantined.values())
    funnel = [FunnelStep("quarantine", quarantined, remaining)]
    if manifest is None:
        return funnel, n_input, None

    dropped = dict(manifest["counts"]["dropped"]["by_reason"])

    def take(stage: str, match: Callable[[str], bool]) -> None:
        nonlocal remaining
        removed = {r: dropped.pop(r) for r in sorted(dropped) if match(r)}
        if removed:
            remaining -= sum(removed.values())
            funnel.append(FunnelStep(stage, removed, remaining))

    take("duplicates", lambda r: r.split(":")[0] in DUPLICATE_REASONS)
    take("invalid scores", lambda r: r == S.INVALID_SCORE)
    for step in steps:
        if step.get("role") == "filter":
            label = f"filter:{step['step']}"
            take(f"filter {step['step']}", label.__eq__)
    take("other filters", lambda r: r.startswith("filter:"))
    take("not selected", lambda r: r.startswith(f"{S.NOT_SELECTED}:"))
    take("other", lambda r: True)
    return funnel, n_input, int(manifest["counts"]["kept"])


# -- optional inputs (contracts 3 and 5) -------------------------------------------


def _read_clusters(path: Path) -> pd.DataFrame:
    """One row per duplicate cluster (contract 3): ``cluster, size, kind, keeper_id``,
    and its non-keepers by kind (``exact_removed``, ``near_removed``).

    A cluster is ``exact`` when every member is a byte copy of its keeper,
    else ``near``. ``path`` may be a Parquet file or a directory of them.
    """
    table = pq.read_table(
        path, columns=["cluster", "cluster_size", "keeper", "keeper_id", "kind"]
    ).to_pandas()
    table["exact_removed"] = (~table["keeper"] & (table["kind"] == "exact")).astype(int)
    table["near_removed"] = (~table["keeper"] & (table["kind"] != "exact")).astype(int)
    table["all_exact"] = table["kind"] == "exact"
    clusters = (
        table.groupby("cluster", sort=True)
        .agg(
            size=("cluster_size", "max"),
            all_exact=("all_exact", "all"),
            keeper_id=("keeper_id", "first"),
            exact_removed=("exact_removed", "sum"),
            near_removed=("near_removed", "sum"),
        )
        .reset_index()
    )
    clusters["kind"] = np.where(clusters.pop("all_exact"), "exact", "near")
    return clusters


def _read_eval(path: Path) -> pd.DataFrame:
    """The eval table (contract 5), checked for the columns the pruning curve needs."""
    frame = pq.read_table(path).to_pandas()
    needed = {"selector", "fraction_kept", "accuracy"}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    if "label_noise" not in frame.columns:
        frame["label_noise"] = 0.0
    return frame


# -- examples ----------------------------------------------------------------------


def _examples(run: RunDir, per_reason: int, limit: int, seed: int) -> dict[str, list[Example]]:
    """Example documents per outcome: ``kept``, each drop reason, ``quarantine:<reason>``."""
    shown: dict[str, list[Example]] = {}
    rows = sampling.example_rows(run, per_reason, seed)
    if len(rows):
        texts = sampling.document_texts(run, rows, limit)
        for record, text in zip(rows.to_dict("records"), texts, strict=True):
            shown.setdefault(str(record["outcome"]), []).append(
                Example(
                    id=str(record[S.ID]),
                    where=f"shard {record[S.SHARD]}, row {record[S.ROW]}",
                    detail=_text(record.get("detail")),
                    text=text,
                )
            )
    quarantined = sampling.quarantine_examples(run, per_reason, limit)
    for record in quarantined.to_dict("records"):
        shown.setdefault(f"quarantine:{record['reason']}", []).append(
            Example(
                id=_text(record.get("id")),
                where=f"{record['shard']}, row {record['row']}",
                detail=_text(record.get("detail")),
                text=str(record["raw"]),
            )
        )
    return shown


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)
