"""A run directory as tables: :func:`load_run` and the :class:`Run` view (read only).

Works on any store (a local path or a URI such as ``s3://bucket/run``).
The published outputs (the pruned dataset, the selection, the dropped rows)
are read through the version pointer (:mod:`thresher.io.publish`), so a
view never mixes two versions. Tables are read whole when asked for: this
is for runs that fit in memory (notebooks, exploration); the stages never
do it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from thresher.config import RunConfig, parse_config
from thresher.errors import ConfigError, RunStateError
from thresher.io import schema as S
from thresher.io.files import data_files, read_json, read_json_or, read_parquet_files
from thresher.io.fs import Location
from thresher.redact import redactions, shown
from thresher.run_dir import RunDir


def load_run(path: str | Path | Location) -> Run:
    """Open a run directory (read only): a local path or a URI."""
    run_dir = RunDir(Location.of(path))
    if not run_dir.is_run_dir():
        raise RunStateError(f"{run_dir.root} is not a thresher run directory (no _state/run.json)")
    return Run(run_dir.root)


def recorded_config(run_dir: RunDir) -> RunConfig:
    """The configuration a run directory's latest run recorded (run_dir set to where it is now).

    A configuration recorded with secrets redacted (a Spark setting, a
    storage option) is refused with the fields named: the config file
    holds what the run needs.
    """
    record = read_json_or(run_dir.recorded_config, None)
    if record is not None:
        data, base = record["config"], record["base_dir"]
    elif run_dir.manifest.is_file():  # made before configs were recorded: enough to select
        data, base = read_json(run_dir.manifest)["config"], run_dir.root.uri
    else:
        raise RunStateError(f"{run_dir.root} records no configuration; use the config file")
    # inputs are not read again by a selection, and run_dir is replaced: what else lost
    # a secret cannot be used as recorded
    redacted = [w for w in redactions(data) if w != "run_dir" and not w.startswith("input.")]
    if redacted:
        raise ConfigError(
            f"{shown(run_dir.root)} records its configuration with secrets removed "
            f"({', '.join(redacted)}); pass the config file instead of the run directory"
        )
    return parse_config({**data, "run_dir": run_dir.root.uri}, base_dir=base)


@dataclass
class SelectionPreview:
    """A selection computed in memory by :meth:`Run.try_selector` (nothing written).

    ``table`` has one row per scored row, in input order: ``id,
    thresher_shard, thresher_row, keep, weight, reason, detail, group``;
    ``steps`` holds each step's details (as ``steps.json``).
    """

    table: pa.Table
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def keep(self) -> np.ndarray:
        """Boolean mask over the score table's rows."""
        return np.asarray(self.table.column("keep").to_numpy(zero_copy_only=False), dtype=bool)

    @property
    def kept_ids(self) -> set[str]:
        return set(self.table.filter(self.table.column("keep")).column(S.ID).to_pylist())

    def to_pandas(self) -> pd.DataFrame:
        return self.table.to_pandas()


def _read_all(directory: Location, empty: pa.Schema) -> pa.Table:
    files = data_files(directory)
    return read_parquet_files(files) if files else empty.empty_table()


class Run:
    """A run directory's outputs as Arrow tables (read lazily, cached).

    Attributes
    ----------
    path : Location
        The run directory.
    """

    def __init__(self, path: Location | str | Path) -> None:
        self.path = Location.of(path)
        self.dir = RunDir(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---- documents -------------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict[str, Any] | None:
        """``manifest.json`` (None before the first selection)."""
        value = read_json_or(self.dir.manifest, None)
        return value if isinstance(value, dict) else None

    @cached_property
    def config(self) -> RunConfig:
        """The configuration of the run's latest flow run."""
        return recorded_config(self.dir)

    @cached_property
    def version(self) -> str:
        """The name of the published version the tables below come from."""
        return self.dir.published().name

    # ---- tables ----------------------------------------------------------------------
    @cached_property
    def scores(self) -> pa.Table:
        """Every scored row in input order: ``id``, positions, ``label``, one column per score."""
        from thresher.stages.select import read_score_table

        return read_score_table(self.dir).drop_columns([S.ORDER])

    @cached_property
    def selection(self) -> pa.Table:
        """``id, thresher_shard, thresher_row, keep, weight, reason, detail, group`` per row."""
        if self.dir.current() is None:
            raise RunStateError(f"{self.path} has no selection yet (run thresher select)")
        table = _read_all(self.dir.published().selection, S.SELECTION_SCHEMA)
        return _in_input_order(self.dir, table)

    @cached_property
    def dropped(self) -> pa.Table:
        """``id, reason, detail`` of every ingested row that was not kept."""
        if self.dir.current() is None:
            return S.DROPPED_SCHEMA.empty_table()
        return _read_all(self.dir.published().dropped, S.DROPPED_SCHEMA)

    @cached_property
    def quarantine(self) -> pa.Table:
        """Rows that could not be used: ``shard, row, id, reason, detail, raw``."""
        return _read_all(self.dir.quarantine, S.QUARANTINE_SCHEMA)

    @cached_property
    def data(self) -> pa.Table:
        """The pruned dataset of the published version, with your column names."""
        version = self.dir.current()
        if version is None or not (version.data / "_SUCCESS").is_file():
            raise RunStateError(f"{self.path} has no published dataset yet")
        return read_parquet_files(data_files(version.data))

    @cached_property
    def clusters(self) -> pa.Table | None:
        """Duplicate clusters (named by ``dedup/summary.json``), None when dedup did not run."""
        from thresher.dedup.spec import read_clusters

        if not (self.dir.dedup / "summary.json").is_file():
            return None
        return read_clusters(self.dir)

    @cached_property
    def eval_results(self) -> pa.Table | None:
        """``eval/results.parquet``, None when eval did not run."""
        path = self.dir.eval / "results.parquet"
        return read_parquet_files([path]) if path.is_file() else None

    def scored_selection(self) -> pa.Table:
        """The score table with each row's ``keep, weight, reason, group`` joined on."""
        from thresher.tables import join_tables

        decisions = self.selection.select([S.SHARD, S.ROW, "keep", "weight", "reason", "group"])
        return join_tables(self.scores, decisions, [S.SHARD, S.ROW], "left")

    def to_pandas(self, table: str = "scores") -> pd.DataFrame:
        """One of ``scores``, ``selection``, ``dropped``, ``quarantine``, ``data``,
        ``scored_selection`` as a pandas DataFrame."""
        tables = ("scores", "selection", "dropped", "quarantine", "data", "scored_selection")
        if table not in tables:
            raise ValueError(f"table must be one of {tables}, got {table!r}")
        value = getattr(self, table)
        return (value() if callable(value) else value).to_pandas()

    # ---- what-if selection -----------------------------------------------------------
    def try_selector(
        self,
        selector: str,
        budget: int | float | None = None,
        params: dict[str, Any] | None = None,
        *,
        filters: bool = True,
        seed: int | None = None,
    ) -> SelectionPreview:
        """Select in memory from the stored scores, as ``thresher select`` would; write nothing.

        Parameters
        ----------
        selector : str
            Registry name of the selector (``random``, ``quantile_band``...).
        budget : int or float, optional
            Count or fraction of the rows that reach the selector.
        params : dict, optional
            The selector's parameters.
        filters : bool
            Apply the run's configured filters first (as a real run would).
        seed : int, optional
            Seed (default: the run's).
        """
        from thresher.stages.select import decide_table, read_score_table

        data = self.config.config_dict()
        data["selector"] = {"name": selector, "params": params or {}, "budget": budget}
        if not filters:
            data["filters"] = []
        if seed is not None:
            data["seed"] = seed
        try:
            cfg = parse_config(data, base_dir=self.config.base_dir)
        except ConfigError as error:
            raise ConfigError(f"try_selector({selector!r}): {error}") from None
        table, steps = decide_table(cfg, read_score_table(self.dir), self.dir)
        return SelectionPreview(table, steps)


def _in_input_order(run: RunDir, table: pa.Table) -> pa.Table:
    from thresher.io.shards import input_order, order_ranks

    if table.num_rows == 0:
        return table
    order = input_order(table, order_ranks(run.shard_names()))
    return table.take(pa.array(np.argsort(order, kind="stable")))
