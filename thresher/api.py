"""The Python API: the command line's verbs as functions, and a run directory as tables.

>>> import thresher
>>> run = thresher.run("examples/curate.yaml", engine="local")   # thresher run
>>> run.scores.num_rows, run.manifest["counts"]["kept"]
>>> smaller = thresher.select(run.path, budget=0.2)               # re-select, no re-scoring
>>> preview = run.try_selector("quantile_band", 0.3, {"score": "word_count", "band": "high"})
>>> thresher.report(run.path)                                     # rebuild report.html

``run``, ``score`` and ``select`` run the Prefect ``curate`` flow (Prefect's
temporary local server when no ``PREFECT_API_URL`` is set) and return a
:class:`Run`; :meth:`Run.try_selector` runs a selection in memory on the
stored scores, writing nothing, to compare selectors quickly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.config import RunConfig, load_config, parse_config
from thresher.errors import ConfigError, RunStateError
from thresher.io import schema as S
from thresher.io.files import read_json, read_parquet_dir
from thresher.run_dir import RunDir

ConfigLike = RunConfig | str | Path | dict[str, Any]
EngineKind = Literal["local", "spark"]


# -- verbs ---------------------------------------------------------------------------


def run(
    config: ConfigLike,
    *,
    engine: EngineKind | None = None,
    fresh: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Run:
    """Run a curation job (``thresher run``): ingest, score, select, write; return the run.

    Parameters
    ----------
    config : RunConfig, path to a YAML file, or mapping
        The run configuration. A mapping's relative paths are resolved
        against the current directory.
    engine : {"local", "spark"}, optional
        Overrides ``engine.kind``.
    fresh : bool
        Delete earlier results in the run directory first.
    quiet : bool
        No progress display.
    **overrides
        Top-level configuration keys to replace, e.g. ``run_dir="runs/x"``
        or ``selector={"name": "random", "budget": 0.3}``.
    """
    from thresher.flows.curate import curate

    cfg = resolve(config, **overrides)
    curate(cfg, fresh=fresh, engine=engine, quiet=quiet)
    return load_run(cfg.run_path)


def score(
    config: ConfigLike,
    *,
    engine: EngineKind | None = None,
    fresh: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Run:
    """Ingest, fit and score only (``thresher score``); select later with :func:`select`."""
    from thresher.flows.curate import curate

    cfg = resolve(config, **overrides)
    curate(cfg, fresh=fresh, engine=engine, stages="score", quiet=quiet)
    return load_run(cfg.run_path)


def select(
    target: ConfigLike,
    *,
    budget: int | float | None = None,
    selector: str | None = None,
    params: dict[str, Any] | None = None,
    engine: EngineKind | None = None,
    quiet: bool = False,
) -> Run:
    """Re-run selection from stored scores (``thresher select``), without re-scoring.

    Selection, materialisation, manifest, card and report are redone; no
    input is read and no scorer is built, fitted or run.

    Parameters
    ----------
    target : run directory, config file, RunConfig or mapping
        A run directory uses the configuration recorded there by its last
        run; a configuration must match the run's input and scorers.
    budget : int or float, optional
        New budget of the selector (a count or a fraction).
    selector, params : optional
        A different selector (registry name) and its parameters; the
        budget is kept unless ``budget`` is given.
    """
    from thresher.flows.curate import curate

    cfg = with_selector(_target_config(target), budget=budget, selector=selector, params=params)
    curate(cfg, engine=engine, stages="select", quiet=quiet)
    return load_run(cfg.run_path)


def evaluate(
    config: Any,
    *,
    engine: EngineKind | None = None,
    fresh: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Any:
    """Train on each selector's subsets and draw the pruning curve (``thresher eval``).

    Parameters
    ----------
    config : EvalConfig, path to a YAML file, or mapping
        A run configuration with an ``eval`` section
        (:mod:`thresher.evaluation.config`). A mapping's relative paths are
        resolved against the current directory.
    engine : {"local", "spark"}, optional
        Overrides ``engine.kind`` of the scoring run.
    fresh : bool
        Delete earlier splits, scores and results in the eval directory first.
    quiet : bool
        No progress display.
    **overrides
        Top-level keys to replace, e.g. ``run_dir="runs/x"`` or ``eval={...}``.

    Returns
    -------
    thresher.evaluation.result.Evaluation
        ``.results``, ``.summary``, ``.best``, ``.curve``, ``.report``, ``.run``.
    """
    from thresher.evaluation.config import resolve_eval_config
    from thresher.evaluation.flow import evaluate_with_runner
    from thresher.evaluation.result import load_evaluation

    cfg = resolve_eval_config(config, **overrides)
    evaluate_with_runner(cfg, fresh=fresh, engine=engine, quiet=quiet)
    return load_evaluation(cfg.root)


def load_run(path: str | Path) -> Run:
    """Open a run directory (read only)."""
    run_dir = RunDir(Path(path).expanduser().resolve())
    if not run_dir.is_run_dir():
        raise RunStateError(f"{run_dir.root} is not a thresher run directory (no _state/run.json)")
    return Run(run_dir.root)


# -- configuration helpers -----------------------------------------------------------


def resolve(config: ConfigLike, **overrides: Any) -> RunConfig:
    """A validated RunConfig from a config, a path or a mapping, with top-level overrides."""
    if isinstance(config, RunConfig):
        base, data = config.base_dir, config.config_dict()
    elif isinstance(config, dict):
        base, data = str(Path.cwd()), dict(config)
    else:
        loaded = load_config(config)
        if not overrides:
            return loaded
        base, data = loaded.base_dir, loaded.config_dict()
    if not overrides and isinstance(config, RunConfig):
        return config
    return parse_config({**data, **overrides}, base_dir=base)


def with_selector(
    config: RunConfig,
    *,
    budget: int | float | None = None,
    selector: str | None = None,
    params: dict[str, Any] | None = None,
) -> RunConfig:
    """``config`` with its selector's name, parameters or budget replaced (validated)."""
    if budget is None and selector is None and params is None:
        return config
    data = config.config_dict()
    step = dict(data["selector"])
    if selector is not None and selector != step["name"]:
        step.update(name=selector, params={})
    if params is not None:
        step["params"] = params
    if budget is not None:
        step["budget"] = budget
    return parse_config({**data, "selector": step}, base_dir=config.base_dir)


def recorded_config(run_dir: RunDir) -> RunConfig:
    """The configuration a run directory's latest run recorded (run_dir set to where it is now)."""
    if run_dir.recorded_config.is_file():
        record = read_json(run_dir.recorded_config)
        data, base = record["config"], record["base_dir"]
    elif run_dir.manifest.is_file():  # made before configs were recorded: enough to select
        data, base = read_json(run_dir.manifest)["config"], str(run_dir.root)
    else:
        raise RunStateError(f"{run_dir.root} records no configuration; use the config file")
    return parse_config({**data, "run_dir": str(run_dir.root)}, base_dir=base)


def _target_config(target: ConfigLike) -> RunConfig:
    if isinstance(target, str | Path) and Path(target).is_dir():
        run_dir = RunDir(Path(target).resolve())
        if not run_dir.is_run_dir():
            raise RunStateError(f"{run_dir.root} is not a thresher run directory")
        if not run_dir.recorded_config.is_file():
            raise RunStateError(
                f"{run_dir.root} records no configuration (made by an older thresher); "
                "pass its config file instead"
            )
        return recorded_config(run_dir)
    return resolve(target)


# -- a run directory as tables -------------------------------------------------------


@dataclass
class SelectionPreview:
    """A selection computed in memory by :meth:`Run.try_selector` (nothing written).

    ``table`` has one row per scored row, in input order: ``id,
    thresher_shard, thresher_row, keep, weight, reason, detail, group``;
    ``steps`` holds each step's details (as ``selection/steps.json``).
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


class Run:
    """A run directory's outputs as Arrow tables (read lazily, cached).

    Attributes
    ----------
    path : Path
        The run directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = RunDir(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---- documents -------------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict[str, Any] | None:
        """``manifest.json`` (None before the first selection)."""
        return read_json(self.dir.manifest) if self.dir.manifest.is_file() else None

    @cached_property
    def config(self) -> RunConfig:
        """The configuration of the run's latest flow run."""
        return recorded_config(self.dir)

    # ---- tables ----------------------------------------------------------------------
    @cached_property
    def scores(self) -> pa.Table:
        """Every scored row in input order: ``id``, positions, ``label``, one column per score."""
        from thresher.stages.select import read_score_table

        if not self.dir.scores.is_dir():
            raise RunStateError(f"{self.path} has no scores yet (run thresher score or run)")
        return read_score_table(self.dir)

    @cached_property
    def selection(self) -> pa.Table:
        """``id, thresher_shard, thresher_row, keep, weight, reason, detail, group`` per row."""
        path = self.dir.selection / "selection.parquet"
        if not path.is_file():
            raise RunStateError(f"{self.path} has no selection yet (run thresher select)")
        return pq.read_table(path)

    @cached_property
    def dropped(self) -> pa.Table:
        """``id, reason, detail`` of every ingested row that was not kept."""
        path = self.dir.dropped / "dropped.parquet"
        return pq.read_table(path) if path.is_file() else S.DROPPED_SCHEMA.empty_table()

    @cached_property
    def quarantine(self) -> pa.Table:
        """Rows that could not be used: ``shard, row, id, reason, detail, raw``."""
        try:
            return read_parquet_dir(self.dir.quarantine)
        except FileNotFoundError:
            return S.QUARANTINE_SCHEMA.empty_table()

    @cached_property
    def data(self) -> pa.Table:
        """The pruned dataset (``data/``), with your column names."""
        if not (self.dir.data / "_SUCCESS").exists():
            raise RunStateError(f"{self.path} has no published dataset yet")
        return read_parquet_dir(self.dir.data)

    @cached_property
    def clusters(self) -> pa.Table | None:
        """Duplicate clusters (``dedup/clusters.parquet``), None when dedup did not run."""
        path = self.dir.dedup / "clusters.parquet"  # a file or a directory of files
        return pq.read_table(path) if path.exists() else None

    @cached_property
    def eval_results(self) -> pa.Table | None:
        """``eval/results.parquet``, None when eval did not run."""
        path = self.dir.eval / "results.parquet"
        return pq.read_table(path) if path.is_file() else None

    def scored_selection(self) -> pa.Table:
        """The score table with each row's ``keep, weight, reason, group`` joined on."""
        decisions = self.selection.select([S.SHARD, S.ROW, "keep", "weight", "reason", "group"])
        joined = self.scores.join(decisions, keys=[S.SHARD, S.ROW], join_type="left outer")
        return joined.sort_by([(S.SHARD, "ascending"), (S.ROW, "ascending")])

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
        from thresher.stages.select import select as run_selection
        from thresher.stages.select import selection_table

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
        scores = self.scores
        decisions, steps = run_selection(cfg, scores)
        table = selection_table(scores, decisions)
        return SelectionPreview(table, steps)
