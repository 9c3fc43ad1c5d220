"""The ``eval`` Prefect flow: score once, then select, train and test per (selector, rate, seed).

1. **splits** (:mod:`thresher.evaluation.splits`): train pool (labels noised
   when asked), validation and test splits under ``RUN_DIR/splits``;
2. **score**: the ``curate`` flow, up to scoring, over the training pool
   (``RUN_DIR/run``, a thresher run directory), once: models fitted once,
   scores stored, resumed like any run;
3. **features** (:mod:`thresher.evaluation.features`): the downstream
   model's input vectors of the three splits;
4. **search**: for a selector with a ``search`` grid, every candidate at every
   rate is trained on its subset and measured on the *validation* split;
   the best candidate per rate is kept (``eval/search.parquet``);
5. **test**: every (selector, rate, seed), plus the full-data reference per
   seed, is selected, trained and measured on the test split;
6. **outputs** in ``RUN_DIR/run/eval/``: ``results.parquet`` (one row per
   model), ``summary.csv``, ``pruning_curve.svg``, ``eval.json``; then the
   run report is rebuilt so that it shows the curve.

Steps 4 and 5 are Prefect tasks mapped over batches of jobs (``eval.batch``
jobs per task; a task costs about 10 ms, a job a fraction of a second to
seconds), run by ``eval.workers`` threads. A finished batch is stored, so
an interrupted eval resumes where it stopped. The test split is read only
in step 5: the search cannot see it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from thresher.config import check_input_apart
from thresher.devices import worker_threads
from thresher.errors import RunStateError
from thresher.evaluation.config import EvalConfig, resolve_eval_config, scoring_config
from thresher.evaluation.features import build_features
from thresher.evaluation.jobs import Job, run_jobs
from thresher.evaluation.splits import prepare_splits
from thresher.evaluation.summary import best_by_rate, summarize, write_curve
from thresher.io.files import (
    check_contained,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from thresher.io.fs import Location
from thresher.io.lock import RunLock
from thresher.run_dir import RunDir

EngineKind = Literal["local", "spark"]

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


@task(name="eval-splits", cache_policy=NO_CACHE)
def splits_task(config: EvalConfig) -> tuple[dict[str, Any], bool]:
    return prepare_splits(config)


@task(name="eval-features", cache_policy=NO_CACHE)
def features_task(config: EvalConfig, splits_key: dict[str, Any]) -> dict[str, Any]:
    return build_features(config, splits_key)


@task(name="eval-train", cache_policy=NO_CACHE, retries=1)
def train_task(config: EvalConfig, jobs: list[Job], parts: str) -> list[dict[str, Any]]:
    return run_jobs(config, jobs, Path(parts))


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - start, 3)


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
    engine: EngineKind | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run an eval job (see module docstring); return its record (``eval/eval.json``)."""
    logger = get_run_logger()
    cfg = resolve_eval_config(config)
    if engine is not None and engine != cfg.run.engine.kind:
        run = cfg.run.model_copy(
            update={"engine": cfg.run.engine.model_copy(update={"kind": engine})}
        )
        cfg = cfg.model_copy(update={"run": run})
    root = cfg.root
    files = cfg.run.input_files()  # fails before any work when a pattern matches nothing
    if cfg.eval.test.paths is not None:
        test = cfg.run.model_copy(update={"input": cfg.eval.test.input_config()})
        files += test.input_files()
    check_input_apart(cfg.run, files)
    check_eval_dir(root)
    check_contained(root)
    with RunLock(Location.of(root / "_state" / "lock")):
        if fresh:
            for name in ("splits", "run"):
                shutil.rmtree(root / name, ignore_errors=True)
        write_json_atomic(
            {"config": cfg.config_dict(), "base_dir": cfg.run.base_dir},
            root / "_state" / EVAL_RECORD,
        )
        return _evaluate(cfg, logger, quiet)


def _evaluate(cfg: EvalConfig, logger: Any, quiet: bool) -> dict[str, Any]:
    from thresher.flows.curate import curate
    from thresher.reporting.html import write_report

    timings: dict[str, float] = {}
    run = RunDir(cfg.root / "run")
    with _timed(timings, "splits"):
        record, rebuilt = splits_task(cfg)
    rows = record["rows"]
    logger.info(
        "eval %s: %d training, %d validation, %d test rows%s",
        cfg.root,
        rows["train"],
        rows["validation"],
        rows["test"],
        f"; {record['flipped']} training labels flipped" if record["flipped"] else "",
    )
    with _timed(timings, "score"):
        curate(scoring_config(cfg), fresh=rebuilt, stages="score", quiet=quiet)
    with _timed(timings, "features"):
        features = features_task(cfg, record["key"])

    context = cfg.digest(
        record["key"],
        features["key"],
        scoring_config(cfg).config_dict(),
        cfg.eval.model.model_dump(mode="json"),
    )
    parts = run.eval.as_path() / "_parts" / context
    threads = _set_threads(cfg, int(features["width"]))
    logger.info("eval: training with %d torch thread(s) per worker", threads)

    with _timed(timings, "search"):
        search = _map(cfg, _search_jobs(cfg), parts, logger, "search")
    chosen = choose_params(cfg, search)
    with _timed(timings, "test"):
        results = _map(cfg, _test_jobs(cfg, chosen), parts, logger, "test")

    frame = results_frame(results)
    summary = summarize(frame)
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
    best = best_by_rate(summary)
    outcome = {
        "run_dir": str(run.root),
        "splits": record,
        "features": features,
        "models": len(results) + len(search),
        "chosen": [
            {"selector": label, "prune_rate": rate, "params": params}
            for (label, rate), params in sorted(chosen.items())
        ],
        "best": best.to_dict("records"),
        "seconds_per_stage": timings,
    }
    write_json_atomic(outcome, run.eval / EVAL_RECORD)
    write_report(run.root)
    logger.info("eval: %d models; results in %s", outcome["models"], run.eval)
    return outcome


def _set_threads(cfg: EvalConfig, width: int) -> int:
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


def _search_jobs(cfg: EvalConfig) -> list[Job]:
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


def _test_jobs(cfg: EvalConfig, chosen: dict[tuple[str, float], dict[str, Any]]) -> list[Job]:
    jobs = [Job.full(seed) for seed in range(cfg.eval.seeds)] if cfg.eval.full else []
    for selector in cfg.selectors:
        for rate in cfg.eval.rates:
            params = chosen.get((selector.display, rate), selector.grid()[0])
            jobs += [Job.of(selector, params, rate, seed) for seed in range(cfg.eval.seeds)]
    return jobs


def _map(
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
    engine: EngineKind | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run :func:`evaluate_flow` with ``eval.workers`` training threads."""
    cfg = resolve_eval_config(config)
    runner: Any = ThreadPoolTaskRunner(max_workers=cfg.eval.workers)
    result: dict[str, Any] = evaluate_flow.with_options(task_runner=runner)(
        cfg, fresh=fresh, engine=engine, quiet=quiet
    )
    return result
