"""Checks that stop a run early: a schema column no input has, and a run that lost too much.

Before any work (``thresher validate``, ``thresher run`` and the curate
flow), :func:`check_input_columns` reads the column names of a bounded
sample of the input files (:data:`SAMPLE_FILES`: the first few in name
order and a few spread over the rest; footers, headers, the first JSONL
records: :mod:`thresher.io.columns`) and refuses a role column that none
of them has:

- ``schema.text``, ``schema.features`` and ``schema.label`` must be in the
  input: without the column every record would be quarantined, or get no
  label, and the run would publish an empty or unlabelled dataset;
- ``schema.id`` must be in the input unless it is the default ``id``: a
  corpus without ids is read with ids derived from each record's position
  (as with ``id: null``), but a column named on purpose and found nowhere is
  a typo that would silently replace the corpus's own ids.

A sampled file that lacks a column the others have is only warned about:
its records are quarantined (text, features), unlabelled (label) or given
derived ids (id) as the ingest rules say.

After ingest, :func:`check_losses` stops a run that quarantined more than
``input.max_quarantined_fraction`` of its records, or skipped more than that
share of its files as unreadable, before anything is published: the
previous version stays current, and the ingested shards stay in the run
directory for a re-run with the limit raised.

:func:`validate_run_file` is ``thresher validate``: every mistake of a run
configuration (bad fields, the checks across sections, the input checks)
reported at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thresher.config import (
    RunConfig,
    config_problems,
    format_problems,
    parse_config,
    read_yaml,
)
from thresher.errors import ConfigError, InputError
from thresher.io.columns import file_columns
from thresher.io.formats import detect_format
from thresher.io.fs import FileEntry, Location
from thresher.io.listing import check_input_apart, list_sets
from thresher.io.shards import shard_name

#: Input files whose columns are read before a run: the first SAMPLE_HEAD, then spread out.
SAMPLE_FILES = 8
SAMPLE_HEAD = 4
#: Reasons (and skipped files) named in the message of a run stopped by check_losses.
TOP_REASONS = 3

_ROLES = {
    "text": "its records will be quarantined as missing_text_column",
    "features": "its records will be quarantined as missing_features_column",
    "label": "its records will have no label",
    "id": "its records will get ids derived from their position",
}


@dataclass
class ColumnCheck:
    """What :func:`check_input_columns` found: refusals and warnings, one line each."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: int = 0


def sample_files(files: list[FileEntry], n: int = SAMPLE_FILES) -> list[FileEntry]:
    """The first :data:`SAMPLE_HEAD` files, then others evenly spread up to the last (``n`` in all)."""
    if len(files) <= n:
        return list(files)
    rest = files[SAMPLE_HEAD:]
    spread = n - SAMPLE_HEAD
    picks = [rest[round(i * (len(rest) - 1) / (spread - 1))] for i in range(spread)]
    return files[:SAMPLE_HEAD] + list(dict.fromkeys(picks))


def check_input_columns(config: RunConfig, files: list[FileEntry]) -> ColumnCheck:
    """Compare the schema's role columns with the columns of a sample of ``files``."""
    found: dict[str, list[str]] = {}
    for entry in sample_files(files):
        try:
            fmt = detect_format(entry.location.name, config.input.format)
        except InputError:  # no format told by the name: ingest reports it
            continue
        columns = file_columns(entry.location, fmt)
        if columns is not None:
            found[shard_name(entry.location, config.base)] = columns
    check = ColumnCheck(checked=len(found))
    if not found:
        return check
    union = list(dict.fromkeys(c for columns in found.values() for c in columns))
    schema = config.schema_
    for role, column in (
        ("text", schema.text),
        ("features", schema.features),
        ("id", schema.id),
        ("label", schema.label),
    ):
        if column is None:
            continue
        lacking = [name for name, columns in found.items() if column not in columns]
        if len(lacking) == len(found):
            if role != "id" or column != "id":
                check.problems.append(_missing(role, column, found, len(files), union))
            continue
        for name in lacking:
            check.warnings.append(
                f"input {name} has no column {column!r} (schema.{role}; its columns: "
                f"{', '.join(found[name])}): {_ROLES[role]}"
            )
    return check


def _missing(
    role: str, column: str, found: dict[str, list[str]], n_files: int, union: list[str]
) -> str:
    names = list(found)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    close = difflib.get_close_matches(column, union, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"schema.{role}: no input file has a column {column!r} (checked {len(names)} of "
        f"{n_files} file(s): {shown}); their columns: {', '.join(union)}{hint}"
    )


def require_input_columns(config: RunConfig, files: list[FileEntry]) -> list[str]:
    """Refuse a role column no sampled input has (ConfigError); return the warnings."""
    check = check_input_columns(config, files)
    if check.problems:
        raise ConfigError(format_problems(check.problems))
    return check.warnings


# -- thresher validate --------------------------------------------------------------


@dataclass
class Validated:
    """A valid run configuration, its input files and the warnings about them."""

    config: RunConfig
    files: list[FileEntry]
    warnings: list[str]


def validate_run_file(path: str | Path | Location) -> Validated:
    """Every mistake of a run configuration file at once (ConfigError), or the valid config.

    Field errors and the checks across sections come from
    :func:`thresher.config.config_problems`; the input checks (patterns that
    match nothing, evaluation sets, the run directory apart from the input,
    the role columns) run whenever the input and schema sections are valid.
    """
    base = Location.of(path).parent
    data = read_yaml(path)
    problems = config_problems(data, base)
    inputs = _input_part(data, base)
    files: list[FileEntry] = []
    warnings: list[str] = []
    if inputs is not None:
        more, files, warnings = input_problems(inputs)
        problems += more
    if problems:
        raise ConfigError(format_problems(problems))
    return Validated(parse_config(data, base), files, warnings)


def input_problems(config: RunConfig) -> tuple[list[str], list[FileEntry], list[str]]:
    """The problems of a config's inputs, its input files and the warnings about them."""
    problems: list[str] = []
    try:
        files = config.input_files()
    except ConfigError as error:
        return [str(error)], [], []
    checks: list[Any] = [
        lambda: check_input_apart(config.run_path, config.input.paths, files, config.base)
    ]
    if (decontaminate := config.decontaminate) is not None:
        sets = {name: spec.paths for name, spec in decontaminate.sets.items()}
        checks.append(lambda: list_sets(sets, config.base))
    for check in checks:
        try:
            check()
        except ConfigError as error:
            problems.append(str(error))
    columns = check_input_columns(config, files)
    return problems + columns.problems, files, columns.warnings


def _input_part(data: Any, base: Location) -> RunConfig | None:
    """A config of ``data``'s input sections alone (None when they are invalid themselves)."""
    if not isinstance(data, dict):
        return None
    keys = ("run_dir", "input", "schema", "storage_options", "decontaminate")
    part = {k: data[k] for k in keys if k in data}
    part.setdefault("run_dir", ".")
    for attempt in (part, {k: v for k, v in part.items() if k != "decontaminate"}):
        try:
            return parse_config(attempt, base_dir=base)
        except ConfigError:
            continue
    return None


# -- after ingest ---------------------------------------------------------------------


def check_losses(
    limit: float, stats: Iterable[dict[str, Any]], quarantine: Location | None = None
) -> None:
    """Stop (InputError) a run that quarantined or skipped more than ``limit`` (a share).

    ``limit`` is ``input.max_quarantined_fraction``; ``stats`` are the
    per-shard ingest statistics; ``quarantine`` (the run's quarantine
    directory) is named in the message. Nothing has been published when this
    runs; what was ingested stays for a re-run.
    """
    stats = list(stats)
    setting = f"input.max_quarantined_fraction ({limit:g})"
    records = sum(int(s["rows_in"]) for s in stats)
    quarantined = sum(int(s["quarantined"]) for s in stats)
    skipped = [s["name"] for s in stats if s.get("unreadable")]
    found = []
    if records and quarantined / records > limit:
        reasons: dict[str, int] = {}
        for s in stats:
            for reason, count in (s.get("quarantined_by_reason") or {}).items():
                reasons[reason] = reasons.get(reason, 0) + int(count)
        top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
        found.append(
            f"{quarantined:,} of {records:,} input records ({quarantined / records:.1%}) were "
            f"quarantined, more than {setting} allows; top reasons: "
            + ", ".join(f"{reason} ({count:,})" for reason, count in top)
        )
    if stats and len(skipped) / len(stats) > limit:
        shown = ", ".join(skipped[:TOP_REASONS])
        more = f" and {len(skipped) - TOP_REASONS} more" if len(skipped) > TOP_REASONS else ""
        found.append(
            f"{len(skipped)} of {len(stats)} input file(s) ({len(skipped) / len(stats):.1%}) "
            f"were skipped as unreadable ({shown}{more}), more than {setting} allows"
        )
    if found:
        raise InputError(
            "; ".join(found) + ". Nothing was published (the current version, if any, stays "
            f"current){f'; see {quarantine}' if quarantine is not None else ''}. Fix the input "
            "or the schema, or "
            "raise input.max_quarantined_fraction and run again: the ingested shards are reused"
        )
