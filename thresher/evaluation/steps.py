"""The eval's steps: downstream model search, job lists, batched training and result tables.

The stages of :mod:`thresher.evaluation.stages` call these; the flow
(:mod:`thresher.evaluation.flow`) only runs the stages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from thresher.devices import worker_threads
from thresher.errors import RunStateError
from thresher.evaluation.config import RANDOM, EvalConfig
from thresher.evaluation.dynamic import run_classifier_job
from thresher.evaluation.jobs import Job, run_jobs
from thresher.evaluation.lm_eval import run_lm_job
from thresher.evaluation.summary import CHECK_RATE, write_curve
from thresher.io.files import write_parquet_atomic, write_text_atomic
from thresher.models.proxy import PROXY_FIELDS, SHARED_DIR
from thresher.run_dir import RunDir

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
#: The language model's first columns: its per-token loss on the held-out split in accuracy's place.
LM_RESULT_FIELDS = [*RESULT_FIELDS[:5], pa.field("loss", pa.float64())]
EVAL_RECORD = "eval.json"


@task(name="eval-train", cache_policy=NO_CACHE, retries=1)
def train_task(config: EvalConfig, jobs: list[Job], parts: str) -> list[dict[str, Any]]:
    run = run_lm_job if config.eval.language_model else run_classifier_job
    return run_jobs(config, jobs, Path(parts), run)


def write_tables(
    run: RunDir,
    frame: pd.DataFrame,
    search: list[dict[str, Any]],
    summary: pd.DataFrame,
    sets: list[str] | None = None,
) -> None:
    """The eval's results, model search, summary and pruning curve, under ``run.eval``.

    ``sets``: the language model's held-out sets (the curve plots their losses).
    """
    write_parquet_atomic(_results_table(frame), run.eval / "results.parquet")
    if search:
        write_parquet_atomic(
            pa.Table.from_pandas(pd.DataFrame(search), preserve_index=False),
            run.eval / "search.parquet",
        )
    else:
        (run.eval / "search.parquet").delete()
    write_text_atomic(summary.to_csv(index=False), run.eval / "summary.csv")
    write_curve(frame, run.eval.as_path() / "pruning_curve.svg", sets)


def metric(cfg: EvalConfig) -> tuple[str, bool]:
    """The result column a search compares and whether higher is better.

    Test accuracy for the classifier task; per-token loss for the language model.
    """
    return ("loss", False) if cfg.eval.language_model else ("accuracy", True)


def set_threads(cfg: EvalConfig, width: int) -> int:
    """Torch CPU threads for training: the cores shared by ``eval.workers``, one for small steps.

    Thread start-up and contention cost more than they save on a step of a
    few million multiply-adds (many times slower on a busy machine), as
    for the proxy models (:mod:`thresher.models.proxy`).
    """
    import torch

    model = cfg.eval.model
    step = model.batch_size * width * max(model.hidden, 1)  # multiply-adds of the first layer
    if cfg.eval.language_model:  # a transformer step is large: share the cores
        step = 2**24
    threads = 1 if step < 2**24 else max(1, worker_threads() // cfg.eval.workers)
    torch.set_num_threads(threads)
    return threads


def model_key(cfg: EvalConfig) -> dict[str, Any]:
    """The downstream settings that key the model search's stored batches.

    ``distill`` is left out: the search trains full-pool models, never
    distilled (:func:`parts_key` adds it for the subsets' models).
    """
    return cfg.eval.model.model_dump(mode="json", exclude={"distill"})


def parts_key(cfg: EvalConfig, base: str) -> str:
    """The key of the stored batches of the subsets' models: ``base``, the settings, ``distill``."""
    distill = cfg.eval.model.distill
    if distill is None:
        return cfg.digest(base, model_key(cfg))
    return cfg.digest(base, model_key(cfg), {"distill": distill.model_dump(mode="json")})


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


def tune_lm(cfg: EvalConfig, parts: Path, logger: Any) -> dict[str, Any]:
    """Choose the language model's learning rate, then warm-up, on the validation split.

    Each candidate trains the full-pool model (``eval.search_seeds`` seeds)
    and is measured by its mean per-token validation loss; a diverged
    candidate is never chosen. The learning rate is tried from
    ``eval.lm.lr_grid`` at the given warm-up (else the first of
    ``warmup_grid``), then the warm-up from ``warmup_grid`` at the chosen
    rate; values given in the configuration are kept. Returns the record
    ``eval.json`` keeps: ``lr``, ``warmup``, ``given`` and every ``trials`` row.
    """
    lm = cfg.eval.lm
    given = {"lr": lm.lr is not None, "warmup": lm.warmup is not None}
    trials: list[dict[str, Any]] = []

    def stage(candidates: list[tuple[float, float]]) -> None:
        jobs = [
            Job.full(seed, split="validation", model={"lr": lr, "warmup": warmup})
            for lr, warmup in candidates
            for seed in range(cfg.eval.search_seeds)
        ]
        rows = train_in_batches(cfg, jobs, parts, logger, "learning-rate search")
        for lr, warmup in candidates:
            mine = [r for r in rows if r["lr"] == lr and r["warmup"] == warmup]
            diverged = any(r["diverged"] or not np.isfinite(r["loss"]) for r in mine)
            loss = float(np.mean([r["loss"] for r in mine]))
            trials.append({"lr": lr, "warmup": warmup, "loss": loss, "diverged": diverged})

    def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
        usable = [t for t in rows if not t["diverged"]]
        if not usable:
            raise RunStateError(
                f"eval.lm: every candidate of {[(t['lr'], t['warmup']) for t in rows]} "
                "diverged; give smaller learning rates"
            )
        return min(usable, key=lambda t: t["loss"])

    warmup = lm.warmup if lm.warmup is not None else lm.warmup_grid[0]
    lr = lm.lr
    if lr is None:
        stage([(value, warmup) for value in lm.lr_grid])
        lr = float(best(trials)["lr"])
    if lm.warmup is None:
        done = {(t["lr"], t["warmup"]) for t in trials}
        remaining = [(lr, value) for value in lm.warmup_grid if (lr, value) not in done]
        if remaining:
            stage(remaining)
        at_lr = [t for t in trials if t["lr"] == lr]
        warmup = float(best(at_lr)["warmup"]) if at_lr else warmup
    logger.info("eval: language model lr %g, warm-up %g (validation split)", lr, warmup)
    return {"lr": float(lr), "warmup": float(warmup), "given": given, "trials": trials}


def with_lm_settings(cfg: EvalConfig, lr: float, warmup: float) -> EvalConfig:
    """``cfg`` with the language model's learning rate and warm-up set."""
    lm = cfg.eval.lm.model_copy(update={"lr": lr, "warmup": warmup})
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"lm": lm})})


def check_jobs(cfg: EvalConfig) -> list[Job]:
    """Random subsets at :data:`CHECK_RATE` when the rates do not include so small a subset.

    None for the language model: its data check would cost models of their own.
    """
    if cfg.eval.language_model or not cfg.eval.full or max(cfg.eval.rates) >= CHECK_RATE:
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
    """Best parameters per (selector label, rate): best mean validation metric.

    The metric is accuracy (highest) or, for the language model, loss
    (lowest). Ties go to the candidate listed first in the grid. Only
    validation rows (``split == "validation"``) are read.
    """
    import json

    column, higher = metric(cfg)
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
                    row[column]
                    for row in search
                    if row["split"] == "validation"
                    and row["selector"] == selector.display
                    and row["prune_rate"] == rate
                    and row["params"] == text
                ]
                if not accuracies:
                    raise RunStateError(f"no validation result for {selector.display} {params}")
                means.append(float(np.mean(accuracies)))
            best = np.argmax(means) if higher else np.argmin(means)
            chosen[(selector.display, rate)] = grid[int(best)]
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
    """Run ``jobs`` as Prefect tasks over batches; rows in job order.

    A finished batch is stored (:func:`thresher.evaluation.jobs.run_jobs`);
    language models, seconds to minutes each, are batches of one, so a
    killed eval loses at most the models in training. Each finished batch
    logs the models done, the training tokens/s (language models) and the
    time left at the pace so far.
    """
    if not jobs:
        return []
    size = 1 if cfg.eval.language_model else cfg.eval.batch
    batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    results: dict[int, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    futures = train_task.map(unmapped(cfg), batches, unmapped(str(parts)))
    order = {id(future): number for number, future in enumerate(futures)}
    done = 0
    for future in as_completed(futures):
        results[order[id(future)]] = future.result()
        done += len(results[order[id(future)]])
        logger.info("eval %s: %s", what, progress_line(done, len(jobs), results, started))
    return [row for number in range(len(batches)) for row in results[number]]


def progress_line(
    done: int, total: int, results: dict[int, list[dict[str, Any]]], started: float
) -> str:
    """``5/24 models trained, 41,210 tokens/s, about 12 min left`` (what is known so far)."""
    line = f"{done}/{total} models trained"
    speeds = [
        float(row["tokens_per_second"])
        for rows in results.values()
        for row in rows
        if row.get("tokens_per_second")
    ]
    if speeds:
        line += f", {np.median(speeds):,.0f} tokens/s"
    elapsed = time.perf_counter() - started
    if 0 < done < total:
        left = elapsed / done * (total - done)
        line += f", about {left / 60:.1f} min left" if left >= 60 else f", about {left:.0f} s left"
    return line


#: Columns of the classifier's result rows that batches stored by earlier versions lack.
DISTILL_COLUMNS = ("distill_alpha", "distill_temperature")


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Result rows as a DataFrame: the contract's columns first, then the others by name.

    Classifier rows always have the distillation columns (None: not distilled).
    """
    frame = pd.DataFrame(rows)
    if "accuracy" in frame.columns:
        for column in DISTILL_COLUMNS:
            if column not in frame.columns:
                frame[column] = None
    first = [f.name for f in _fields(frame)]
    # the rest by name: rows read back from stored batches have their keys sorted
    return frame[first + sorted(c for c in frame.columns if c not in first)]


def _results_table(frame: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for field in _fields(frame):
        index = table.schema.get_field_index(field.name)
        table = table.set_column(index, field, table.column(field.name).cast(field.type))
    return table


def _fields(frame: pd.DataFrame) -> list[pa.Field]:
    return LM_RESULT_FIELDS if "accuracy" not in frame.columns else RESULT_FIELDS
