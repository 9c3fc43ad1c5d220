"""The ``eval`` Prefect flow: score once, then select, train and test per (selector, rate, seed).

The flow is a list of stages (:mod:`thresher.evaluation.stages`) handed to
the curate flow's loop (:func:`thresher.stages.base.run_stages`), which
gives each its Prefect task, its time (``seconds_per_stage`` in
``eval.json``) and its log line, and checks the eval's lock before each:

1. **splits** (:mod:`thresher.evaluation.splits`): train pool (labels noised
   when asked), validation and test splits under ``RUN_DIR/splits``;
2. **score**: the ``curate`` flow, up to scoring, over the training pool
   (``RUN_DIR/run``, a thresher run directory), once: models fitted once,
   scores stored, resumed like any run;
3. **features** (:mod:`thresher.evaluation.features`): the downstream
   model's input vectors of the three splits;
4. **model search**: unless the configuration gives them, the downstream
   learning rate and then weight decay are chosen from small grids by
   full-pool models measured on the *validation* split (:func:`thresher.evaluation.steps.tune_downstream`);
   every later model trains with the chosen values;
   with ``eval.model.distill``, the **teacher** is trained next (once, stored
   under ``eval/teacher/``; :mod:`thresher.evaluation.teacher`) and every
   later model but the ``full`` reference is distilled from it;
5. **search**: for a selector with a ``search`` grid, every candidate at every
   rate is trained on its subset and measured on the *validation* split;
   the best candidate per rate is kept (``eval/search.parquet``);
6. **test**: every (selector, rate, seed), plus the full-data reference per
   seed, is selected, trained and measured on the test split; then the
   data check (:func:`thresher.evaluation.summary.data_check`): the
   full-data model must clearly beat a random 10% subset, or the eval warns
   (log, command line, ``eval.json`` and the report) that its comparisons
   mean nothing;
7. **record**: the outputs in ``RUN_DIR/run/eval/``: ``results.parquet`` (one row per
   model), ``summary.csv``, ``pruning_curve.svg``, ``eval.json`` (with the
   chosen learning rate and weight decay, the proxies' training and
   held-out accuracy, the data check); then the run report is rebuilt so
   that it shows the curve.

Steps 4 to 6 map Prefect tasks over batches of jobs (``eval.batch``
jobs per task; a task costs about 10 ms, a job a fraction of a second to
seconds), run by ``eval.workers`` threads. A finished batch is stored, so
an interrupted eval resumes where it stopped. The test split is read only
in step 6: the searches cannot see it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from thresher.engines.registry import check_engine
from thresher.errors import RunStateError
from thresher.evaluation.config import EvalConfig, resolve_eval_config, scoring_config
from thresher.evaluation.stages import RecordStage, eval_stages
from thresher.evaluation.steps import EVAL_RECORD
from thresher.io.files import check_contained, write_json_atomic
from thresher.io.fs import Location
from thresher.io.listing import check_input_apart, list_files
from thresher.io.lock import RunLock
from thresher.progress import NullProgress
from thresher.run_dir import RunDir
from thresher.stages.base import NO_ENGINE, RunContext, run_stages


def check_eval_dir(root: Path) -> None:
    """Refuse a non-empty directory that is not an eval directory (never touch it)."""
    if not root.exists() or (root / "_state" / EVAL_RECORD).is_file():
        return
    if any(entry.name != "_state" for entry in root.iterdir()):
        raise RunStateError(
            f"{root} is not empty and is not a thresher eval directory; choose another run_dir"
        )


@flow(name="eval", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]
def evaluate_flow(
    config: EvalConfig | str,
    fresh: bool = False,
    engine: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run an eval job (see module docstring); return its record (``eval/eval.json``)."""
    logger = get_run_logger()
    cfg = resolve_eval_config(config)
    if engine is not None and check_engine(engine) != cfg.run.engine.kind:
        run = cfg.run.model_copy(
            update={"engine": cfg.run.engine.model_copy(update={"kind": engine})}
        )
        cfg = cfg.model_copy(update={"run": run})
    root = cfg.root
    files = cfg.run.input_files()  # fails before any work when a pattern matches nothing
    if cfg.eval.test.paths is not None:
        files += list_files(cfg.eval.test.paths, cfg.run.base)
    check_input_apart(cfg.run.run_path, cfg.run.input.paths, files, cfg.run.base)
    check_eval_dir(root)
    check_contained(root)
    with RunLock(Location.of(root / "_state" / "lock")) as lock:
        if fresh:
            for name in ("splits", "run"):
                shutil.rmtree(root / name, ignore_errors=True)
        write_json_atomic(
            {"config": cfg.config_dict(), "base_dir": cfg.run.base_dir},
            root / "_state" / EVAL_RECORD,
        )
        return _evaluate(cfg, logger, quiet, lock)


def _evaluate(cfg: EvalConfig, logger: Any, quiet: bool, lock: RunLock) -> dict[str, Any]:
    """The eval's stages (:mod:`thresher.evaluation.stages`) run by the stage loop; its record."""
    ctx = RunContext(RunDir(cfg.root / "run"), NO_ENGINE, NullProgress(), logger, lock=lock)
    run_stages(eval_stages(cfg, scoring_config(cfg), quiet), ctx)
    outcome: dict[str, Any] = ctx.result(RecordStage.name).outcome
    return outcome


def evaluate_with_runner(
    config: EvalConfig | str | Path,
    *,
    fresh: bool = False,
    engine: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run :func:`evaluate_flow` with ``eval.workers`` training threads."""
    cfg = resolve_eval_config(config)
    runner: Any = ThreadPoolTaskRunner(max_workers=cfg.eval.workers)
    result: dict[str, Any] = evaluate_flow.with_options(task_runner=runner)(
        cfg, fresh=fresh, engine=engine, quiet=quiet
    )
    return result
