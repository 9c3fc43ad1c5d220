"""What the report shows, gathered from a run directory (no rendering here).

Nothing here reads a table row by row: the report of a run of a billion
documents costs what the report of a thousand does. The statistics were
computed where the data is and written as small files: the published
version's ``stats.json`` (counts per reason, score histograms of kept and
dropped rows, a few example rows per reason) and ``steps.json`` (each
selection step's details), ``dedup/summary.json`` (cluster sizes, the
rule, similarity to the keeper, the largest clusters, warnings), ``eval/`` (the pruning curve). Only the example
documents' texts are read, from the few shards that hold them.

Each section is left out when its input does not exist; an optional input
that exists but cannot be read becomes a visible note in the report rather
than a failed run (the note names the file and the error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from thresher import reasons as R
from thresher.errors import RunStateError
from thresher.io.files import read_json, read_parquet
from thresher.io.fs import Location
from thresher.reporting import sampling
from thresher.reporting.rules import rule_reasons
from thresher.run_dir import RunDir

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Drop reasons counted as duplicates in the funnel.
DUPLICATE_REASONS = (R.DUPLICATE_ID, R.DUPLICATE)


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

    run_dir: Location
    manifest: dict[str, Any] | None
    shard_stats: list[dict[str, Any]]
    funnel: list[FunnelStep]
    input_count: int
    kept: int | None
    histograms: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    dedup: dict[str, Any] | None
    eval_results: pd.DataFrame | None
    eval_summary: pd.DataFrame | None
    examples: dict[str, list[Example]]
    eval_record: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def gather(
    run_dir: str | Location,
    *,
    examples_per_reason: int = 3,
    text_limit: int = 600,
    seed: int = 0,
) -> ReportData:
    """Read what the report needs from ``run_dir`` (see module docstring).

    Parameters
    ----------
    run_dir : path or URI
        A thresher run directory (at least ingested).
    examples_per_reason : int
        Example documents shown per outcome (kept, each drop and quarantine reason).
    text_limit : int
        Characters of each example shown before it is cut.
    seed : int
        Kept for the API; the examples were chosen at selection (seeded by the run).
    """
    run = RunDir(run_dir)
    if not run.is_run_dir():
        raise RunStateError(f"{run.root} is not a thresher run directory (no _state/run.json)")
    notes: list[str] = []
    manifest = _optional(notes, run.manifest, read_json)
    shard_stats = run.stored_ingest_stats()
    version = run.current()
    steps = (_optional(notes, version.steps, read_json) if version else None) or []
    stats = (_optional(notes, version.stats, read_json) if version else None) or {}
    funnel, input_count, kept = build_funnel(manifest, shard_stats, steps)
    return ReportData(
        run_dir=run.root,
        manifest=manifest,
        shard_stats=shard_stats,
        funnel=funnel,
        input_count=input_count,
        kept=kept,
        histograms=stats.get("histograms", {}),
        steps=steps,
        dedup=_optional(notes, run.dedup / "summary.json", read_json),
        eval_results=_optional(notes, run.eval / "results.parquet", _read_eval),
        eval_summary=_optional(notes, run.eval / "summary.csv", _read_csv),
        examples=_examples(run, stats.get("examples", {}), examples_per_reason, text_limit),
        eval_record=_optional(notes, run.eval / "eval.json", read_json),
        notes=notes,
    )


def _optional(notes: list[str], path: Location, read: Callable[[Location], T]) -> T | None:
    """``read(path)`` when the file exists; a note instead of a failure when it is unreadable."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception as error:
        message = f"{path.name} could not be read ({type(error).__name__}: {error})"
        logger.warning("report: %s", message)
        notes.append(message)
        return None


def _read_csv(path: Location) -> pd.DataFrame:
    import io

    return pd.read_csv(io.BytesIO(path.read_bytes()))


# -- funnel ------------------------------------------------------------------------


def build_funnel(
    manifest: dict[str, Any] | None,
    shard_stats: list[dict[str, Any]],
    steps: list[dict[str, Any]],
) -> tuple[list[FunnelStep], int, int | None]:
    """The funnel: input, quarantine, contaminated, duplicates, invalid scores, filters, selector.

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

    take("contaminated", lambda r: r == R.CONTAMINATED)
    take("duplicates", lambda r: r in DUPLICATE_REASONS)
    take("invalid scores", lambda r: r == R.INVALID_SCORE)
    for step in steps:
        if step.get("role") == "filter":
            own = rule_reasons(step) or {R.filtered(step["step"])}  # a rules step: one per rule
            take(f"filter {step['step']}", own.__contains__)
    take("other filters", R.is_filter)
    take("not selected", R.is_not_selected)
    take("other", lambda r: True)
    return funnel, n_input, int(manifest["counts"]["kept"])


# -- optional inputs -----------------------------------------------------------------


def _read_eval(path: Location) -> pd.DataFrame:
    """The eval table, checked for the columns the pruning curve needs."""
    frame = read_parquet(path).to_pandas()
    # a classifier eval measures accuracy, a language-model eval per-token loss
    needed = {"selector", "fraction_kept", "loss" if "loss" in frame.columns else "accuracy"}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    if "label_noise" not in frame.columns:
        frame["label_noise"] = 0.0
    return frame


# -- examples ----------------------------------------------------------------------


def _examples(
    run: RunDir, chosen: dict[str, list[dict[str, Any]]], per_reason: int, limit: int
) -> dict[str, list[Example]]:
    """Example documents per outcome: ``kept``, each drop reason, ``quarantine:<reason>``.

    The rows were chosen at selection (the smallest seeded id hashes of each
    outcome); only their texts are read here.
    """
    shown: dict[str, list[Example]] = {}
    rows = [
        dict(r, outcome=outcome) for outcome, found in chosen.items() for r in found[:per_reason]
    ]
    texts = sampling.document_texts(run, rows, limit)
    details = sampling.decision_details(run, rows)
    for record, text, detail in zip(rows, texts, details, strict=True):
        shown.setdefault(str(record["outcome"]), []).append(
            Example(
                id=str(record["id"]),
                where=f"{sampling.shard_label(run, int(record['shard']))}, row {record['row']}",
                detail=_text(detail),
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
