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
   full-pool models measured on the *validation* split (:func:`tune_downstream`);
   every later model trains with the chosen values;
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

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from thresher.devices import worker_threads
from thresher.engines.registry import check_engine
from thresher.errors import RunStateError
from thresher.evaluation.config import RANDOM, EvalConfig, resolve_eval_config, scoring_config
from thresher.evaluation.jobs import Job, run_jobs
from thresher.evaluation.summary import CHECK_RATE, write_curve
from thresher.io.files import (
    check_contained,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from thresher.io.fs import Location
from thresher.io.listing import check_input_apart, list_files
from thresher.io.lock import RunLock
from thresher.models.proxy import PROXY_FIELDS, SHARED_DIR
from thresher.progress import NullProgress
from thresher.run_dir import RunDir
from thresher.stages.base import NO_ENGINE, RunContext, run_stages

#: The first columns (and types) of ``eval/results.parquet``: what the report and every
#: reader of the results rely on; other columns follow.
RESULT_FIELDS = [
    pa.field("selector", pa.string()),
    pa.field("prune_rate", pa.float64()),
    pa.field("fraction_kept", pa.float64()),
    pa.field("seed", pa.int64()),
    pa.field("label_noise", pa.float64()),
    pa.field("accuracy", pa.float64()),
]
EVAL_RECORD = "eval.json"


@task(name="eval-train", cache_policy=NO_CACHE, retries=1)
def train_task(config: EvalConfig, jobs: list[Job], parts: str) -> list[dict[str, Any]]:
    return run_jobs(config, jobs, Path(parts))


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
    from thresher.evaluation.stages import RecordStage, eval_stages

    ctx = RunContext(RunDir(cfg.root / "run"), NO_ENGINE, NullProgress(), logger, lock=lock)
    run_stages(eval_stages(cfg, scoring_config(cfg), quiet), ctx)
    outcome: dict[str, Any] = ctx.result(RecordStage.name).outcome
    return outcome


def write_tables(
    run: RunDir, frame: pd.DataFrame, search: list[dict[str, Any]], summary: pd.DataFrame
) -> None:
    """The eval's results, model search, summary and pruning curve, under ``run.eval``."""
    write_parquet_atomic(_results_table(frame), run.eval / "results.parquet")
    if search:
        write_parquet_atomic(
            pa.Table.from_pandas(pd.DataFrame(search), preserve_index=False),
            run.eval / "search.parquet",
        )
    else:
        (run.eval / "search.parquet").delete()
    write_text_atomic(summary.to_csv(index=False), run.eval / "summary.csv")
    write_curve(frame, run.eval.as_path() / "pruning_curve.svg")


def set_threads(cfg: EvalConfig, width: int) -> int:
    """Torch CPU threads for training: the cores shared by ``eval.workers``, one for small steps.

    Thread start-up and contention cost more than they save on a step of a
    few million multiply-adds (many times slower on a busy machine), as
    for the proxy models (:mod:`thresher.models.proxy`).
    """
    import torch

    model = cfg.eval.model
    step = model.batch_size * width * max(model.hidden, 1)  # multiply-adds of the first layer
    threads = 1 if step < 2**24 else max(1, worker_threads() // cfg.eval.workers)
    torch.set_num_threads(threads)
    return threads


def model_key(cfg: EvalConfig) -> dict[str, Any]:
    return cfg.eval.model.model_dump(mode="json")


def with_model(cfg: EvalConfig, lr: float, weight_decay: float) -> EvalConfig:
    """``cfg`` with the downstream learning rate and weight decay set."""
    model = cfg.eval.model.model_copy(update={"lr": lr, "weight_decay": weight_decay})
    settings = cfg.eval.model_copy(update={"model": model})
    return cfg.model_copy(update={"eval": settings})


def tune_downstream(cfg: EvalConfig, parts: Path, logger: Any) -> dict[str, Any]:
    """Choose the downstream learning rate, then weight decay, on the validation split.

    Each candidate is the full-pool model (``eval.search_seeds`` seeds,
    mean validation accuracy), trained as every subset is; values given in
    the configuration are kept. Returns the record ``eval.json`` keeps:
    ``lr``, ``weight_decay``, ``given`` and every ``trials`` row.
    """
    model = cfg.eval.model
    given = {"lr": model.lr is not None, "weight_decay": model.weight_decay is not None}
    trials: list[dict[str, Any]] = []
    if model.tuned:
        return {"lr": model.lr, "weight_decay": model.weight_decay, "given": given, "trials": []}
    if cfg.eval.validation == 0.0:
        raise RunStateError(
            "eval.model: the learning rate and weight decay are chosen on the validation split; "
            "set eval.validation > 0 or give eval.model.lr and eval.model.weight_decay"
        )

    def stage(candidates: list[tuple[float, float]]) -> tuple[float, float]:
        jobs = [
            Job.full(seed, split="validation", model={"lr": lr, "weight_decay": decay})
            for lr, decay in candidates
            for seed in range(cfg.eval.search_seeds)
        ]
        rows = train_in_batches(cfg, jobs, parts, logger, "model search")
        scores = []
        for lr, decay in candidates:
            mine = [r for r in rows if r["lr"] == lr and r["weight_decay"] == decay]
            diverged = any(r["diverged"] for r in mine)
            accuracy = float(np.mean([r["accuracy"] for r in mine]))
            trials.append(
                {"lr": lr, "weight_decay": decay, "accuracy": accuracy, "diverged": diverged}
            )
            scores.append(-1.0 if diverged else accuracy)
        return candidates[int(np.argmax(scores))]

    decay = model.weight_decay if model.weight_decay is not None else model.weight_decay_grid[0]
    lr = model.lr
    if lr is None:
        lr, _ = stage([(value, decay) for value in model.lr_grid])
    if model.weight_decay is None:
        done = {(t["lr"], t["weight_decay"]) for t in trials}
        remaining = [(lr, value) for value in model.weight_decay_grid if (lr, value) not in done]
        if remaining:
            stage(remaining)
        at_lr = [t for t in trials if t["lr"] == lr]
        scores = [-1.0 if t["diverged"] else t["accuracy"] for t in at_lr]
        decay = at_lr[int(np.argmax(scores))]["weight_decay"]
    logger.info("eval: downstream model lr %g, weight decay %g (validation split)", lr, decay)
    return {"lr": float(lr), "weight_decay": float(decay), "given": given, "trials": trials}


def check_jobs(cfg: EvalConfig) -> list[Job]:
    """Random subsets at :data:`CHECK_RATE` when the rates do not include so small a subset."""
    if not cfg.eval.full or max(cfg.eval.rates) >= CHECK_RATE:
        return []
    random = next(s for s in cfg.selectors if s.display == RANDOM)
    return [Job.of(random, {}, CHECK_RATE, seed) for seed in range(cfg.eval.seeds)]


def proxy_records(run: RunDir) -> list[dict[str, Any]]:
    """Training and held-out accuracy (and chosen settings) of every proxy the scorers trained."""
    import json

    shared = run.models.as_path() / SHARED_DIR if run.models.is_local else None
    if shared is None or not shared.is_dir():
        return []
    records = []
    for path in sorted(shared.glob("proxy-*/proxy.json")):
        meta = json.loads(path.read_text())
        records.append(
            {
                "proxy": path.parent.name,
                "features": meta["config"]["features"],
                "hidden": meta["hidden"],
                "epochs": meta["epochs"],
                "n_train": meta["n_train"],
                **{key: meta.get(key) for key in PROXY_FIELDS},
            }
        )
    return records


def search_jobs(cfg: EvalConfig) -> list[Job]:
    return [
        Job.of(selector, params, rate, seed, split="validation")
        for selector in cfg.selectors
        if len(selector.grid()) > 1
        for rate in cfg.eval.rates
        for params in selector.grid()
        for seed in range(cfg.eval.search_seeds)
    ]


def choose_params(
    cfg: EvalConfig, search: list[dict[str, Any]]
) -> dict[tuple[str, float], dict[str, Any]]:
    """Best parameters per (selector label, rate): highest mean validation accuracy.

    Ties go to the candidate listed first in the grid. Only validation rows
    (``split == "validation"``) are read.
    """
    import json

    chosen: dict[tuple[str, float], dict[str, Any]] = {}
    for selector in cfg.selectors:
        grid = selector.grid()
        if len(grid) < 2:
            continue
        for rate in cfg.eval.rates:
            means = []
            for params in grid:
                text = json.dumps(params, sort_keys=True, default=str)
                accuracies = [
                    row["accuracy"]
                    for row in search
                    if row["split"] == "validation"
                    and row["selector"] == selector.display
                    and row["prune_rate"] == rate
                    and row["params"] == text
                ]
                if not accuracies:
                    raise RunStateError(f"no validation result for {selector.display} {params}")
                means.append(float(np.mean(accuracies)))
            chosen[(selector.display, rate)] = grid[int(np.argmax(means))]
    return chosen


def test_jobs(cfg: EvalConfig, chosen: dict[tuple[str, float], dict[str, Any]]) -> list[Job]:
    jobs = [Job.full(seed) for seed in range(cfg.eval.seeds)] if cfg.eval.full else []
    for selector in cfg.selectors:
        for rate in cfg.eval.rates:
            params = chosen.get((selector.display, rate), selector.grid()[0])
            jobs += [Job.of(selector, params, rate, seed) for seed in range(cfg.eval.seeds)]
    return jobs


def train_in_batches(
    cfg: EvalConfig, jobs: list[Job], parts: Path, logger: Any, what: str
) -> list[dict[str, Any]]:
    """Run ``jobs`` as Prefect tasks over batches; rows in job order."""
    if not jobs:
        return []
    size = cfg.eval.batch
    batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    results: dict[int, list[dict[str, Any]]] = {}
    futures = train_task.map(unmapped(cfg), batches, unmapped(str(parts)))
    order = {id(future): number for number, future in enumerate(futures)}
    done = 0
    for future in as_completed(futures):
        results[order[id(future)]] = future.result()
        done += len(results[order[id(future)]])
        logger.info("eval %s: %d/%d models trained", what, done, len(jobs))
    return [row for number in range(len(batches)) for row in results[number]]


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Result rows as a DataFrame in the contract's column order."""
    frame = pd.DataFrame(rows)
    first = [f.name for f in RESULT_FIELDS]
    return frame[first + [c for c in frame.columns if c not in first]]


def _results_table(frame: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for field in RESULT_FIELDS:
        index = table.schema.get_field_index(field.name)
        table = table.set_column(index, field, table.column(field.name).cast(field.type))
    return table


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
