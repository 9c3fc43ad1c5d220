"""The Python API: the command line's verbs as functions (the run view is :mod:`thresher.runs`).

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

from pathlib import Path
from typing import Any

from thresher.budget import Budget
from thresher.config import RunConfig, load_config, parse_config
from thresher.errors import RunStateError
from thresher.io.fs import Location
from thresher.run_dir import RunDir
from thresher.runs import Run, load_run, recorded_config

ConfigLike = RunConfig | str | Path | dict[str, Any]


# -- verbs ---------------------------------------------------------------------------


def run(
    config: ConfigLike,
    *,
    engine: str | None = None,
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
    engine : str, optional
        An engine name (``local``, ``spark``, or one added to
        :mod:`thresher.engines.registry`): overrides ``engine.kind``.
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
    engine: str | None = None,
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
    budget: Budget | dict[str, Any] | None = None,
    selector: str | None = None,
    params: dict[str, Any] | None = None,
    engine: str | None = None,
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
    budget : int, float, SumBudget or dict, optional
        New budget of the selector: a count, a fraction, or a sum budget
        (``{"tokens": N}``, ``{"sum": column, "total": N}`` or a
        :class:`~thresher.budget.SumBudget`), checked as a config's is
        (:func:`thresher.budget.parse_budget`).
    selector, params : optional
        A different selector (registry name) and its parameters; the
        budget is kept unless ``budget`` is given.
    """
    from thresher.flows.curate import curate

    cfg = with_selector(target_config(target), budget=budget, selector=selector, params=params)
    curate(cfg, engine=engine, stages="select", quiet=quiet)
    return load_run(cfg.run_path)


def report(
    run_dir: str | Path | Location, output: str | Path | Location | None = None, **options: Any
) -> Location:
    """Write the run report (``thresher report``): ``RUN_DIR/report.html``, or ``output``."""
    from thresher.reporting.html import write_report

    return write_report(Location.of(run_dir), output, **options)


def evaluate(
    config: Any,
    *,
    engine: str | None = None,
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
    engine : str, optional
        An engine name (``local``, ``spark``, or one added to
        :mod:`thresher.engines.registry`): overrides ``engine.kind`` of
        the scoring run.
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
    budget: Budget | dict[str, Any] | None = None,
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


def target_config(target: ConfigLike) -> RunConfig:
    """The config a command acts on: a run directory's recorded one, or a config (file)."""
    if isinstance(target, str | Path | Location):
        location = Location.of(target)
        run_dir = RunDir(location)
        if run_dir.is_run_dir():
            if not run_dir.recorded_config.is_file():
                raise RunStateError(
                    f"{run_dir.root} records no configuration (made by an older thresher); "
                    "pass its config file instead"
                )
            return recorded_config(run_dir)
        if location.is_dir():
            raise RunStateError(f"{run_dir.root} is not a thresher run directory")
    return resolve(target)


__all__ = [
    "Run",
    "evaluate",
    "load_run",
    "report",
    "resolve",
    "run",
    "score",
    "select",
    "target_config",
    "with_selector",
]
