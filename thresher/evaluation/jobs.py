"""One eval job: select a subset from the stored scores, train on it, measure accuracy.

A :class:`Job` is one (selector, parameters, pruning rate, seed) on one
split (``validation`` for the hyper-parameter search, ``test`` for the
results). The subset comes from the select stage itself
(:func:`thresher.stages.select.select`) on the scoring run's score table,
with the run's filters, the selector as its final step and a count budget
of ``round((1 - prune_rate) * n)`` rows of the ``n``-row training pool, so
every selector keeps the same number of rows at a rate. The ``full`` job
keeps every row that reaches the selector (random, budget 1.0).

Seeds: seed ``s`` of a split gives the selection seed and the model's seed
(initial weights, batch order) through ``SeedSequence([run seed, split, s])``;
every selector and rate uses the same model seed for the same ``s``, so the
comparison against random is paired.

Distillation (``eval.model.distill``): every job but ``full`` trains against
the teacher's logits on its rows (:mod:`thresher.evaluation.teacher`); the
teacher is :func:`train_teacher`'s model, trained on the ``full`` job's rows.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.config import PartitionConfig, SumBudgetConfig
from thresher.errors import RunStateError
from thresher.evaluation.config import (
    FULL,
    RANDOM,
    EvalConfig,
    EvalSelectorConfig,
    selection_config,
)
from thresher.evaluation.features import SplitData, load_split
from thresher.evaluation.model import train_classifier
from thresher.evaluation.teacher import Teacher, teacher_logits, teacher_seed
from thresher.io import schema as S
from thresher.keys import row_key
from thresher.models.features import take_rows
from thresher.run_dir import RunDir
from thresher.stages.select import decide_table, read_score_table

SPLIT_CODES = {"validation": 1, "test": 2}
_SCORES: dict[tuple[str, int], pa.Table] = {}
_SCORES_LOCK = threading.Lock()


@dataclass(frozen=True)
class Job:
    """One model to train (see module docstring)."""

    selector: str
    name: str
    params: dict[str, Any]
    prune_rate: float
    seed: int
    split: str = "test"
    embeddings: str = "embedding"
    partitions: dict[str, Any] | None = None
    model: dict[str, float] | None = None
    dedup: bool = False

    @classmethod
    def of(
        cls,
        selector: EvalSelectorConfig,
        params: dict[str, Any],
        prune_rate: float,
        seed: int,
        split: str = "test",
    ) -> Job:
        return cls(
            selector=selector.display,
            name=selector.name,
            params=params,
            prune_rate=prune_rate,
            seed=seed,
            split=split,
            embeddings=selector.embeddings,
            partitions=None
            if selector.partitions is None
            else selector.partitions.model_dump(mode="json"),
            dedup=selector.dedup is not False,
        )

    @classmethod
    def full(cls, seed: int, split: str = "test", model: dict[str, float] | None = None) -> Job:
        """The reference trained on every row of the pool that reaches the selector.

        ``model`` overrides downstream settings (``lr``, ``weight_decay``): a
        candidate of the learning-rate search on the validation split.
        """
        return cls(
            selector=FULL,
            name=RANDOM,
            params={},
            prune_rate=0.0,
            seed=seed,
            split=split,
            model=model,
        )

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


@dataclass(frozen=True)
class Seeds:
    """Selection and model seeds of seed number ``seed`` on ``split``."""

    selection: int
    model: int

    @classmethod
    def of(cls, run_seed: int, split: str, seed: int) -> Seeds:
        state = np.random.SeedSequence([run_seed, SPLIT_CODES[split], seed]).generate_state(2)
        return cls(selection=int(state[0]), model=int(state[1]))


def score_table(config: EvalConfig) -> pa.Table:
    """The scoring run's score table in input order (cached per process while unchanged)."""
    run = RunDir(config.root / "run")
    files = run.scores.list_files()
    if not files:
        raise RunStateError(f"{run.root} has no scores: score the training pool first")
    stamp = max(e.mtime_ns or 0 for e in files)
    key = (str(run.root), stamp)
    with _SCORES_LOCK:
        if key not in _SCORES:
            _SCORES.clear()
            _SCORES[key] = read_score_table(run)
        return _SCORES[key]


def pool_tokens(scores: pa.Table) -> int:
    """The pool's tokens as the selection budgets count them (the ``token_count`` column)."""
    return int(pc.sum(scores.column(S.TOKEN_COLUMN)).as_py() or 0)


def token_budget(prune_rate: float, scores: pa.Table) -> SumBudgetConfig:
    """The language model's budget at ``prune_rate``: ``(1 - rate)`` of the pool's tokens."""
    total = max(1, math.floor((1.0 - prune_rate) * pool_tokens(scores)))
    return SumBudgetConfig(sum=S.TOKEN_COLUMN, total=total)


def budget_rows(prune_rate: float, n_pool: int) -> int:
    """Rows kept at ``prune_rate`` of an ``n_pool``-row pool (at least one)."""
    return max(1, round((1.0 - prune_rate) * n_pool))


def select_rows(config: EvalConfig, job: Job) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Positions (score-table order) and importance weights of the subset a job trains on."""
    scores = score_table(config)
    selector = EvalSelectorConfig(
        name=job.name,
        params=job.params,
        embeddings=job.embeddings,
        partitions=None if job.partitions is None else PartitionConfig(**job.partitions),
    )
    budget: int | float | SumBudgetConfig
    if job.selector == FULL:
        budget = 1.0
    elif config.eval.language_model:
        budget = token_budget(job.prune_rate, scores)
    else:
        budget = budget_rows(job.prune_rate, scores.num_rows)
    seeds = Seeds.of(config.run.seed, job.split, job.seed)
    run_config = selection_config(config, selector.step(job.params, budget), seeds.selection)
    deduplicated = job.dedup and config.run.dedup is not None
    run = RunDir(config.root / "run") if deduplicated else None  # its clusters drop duplicates
    selection, steps = decide_table(run_config, scores, run)
    kept = np.flatnonzero(selection.column("keep").to_numpy(zero_copy_only=False))
    weights = selection.column("weight").to_numpy()[kept]
    return kept, weights, steps[-1]


def pool_split(config: EvalConfig) -> SplitData:
    """The training pool's features, checked to be in the score table's order."""
    train = load_split(config, "train")
    scores = score_table(config)
    positions = row_key(scores.column(S.SHARD).to_numpy(), scores.column(S.ROW).to_numpy())
    if train.positions is None or not np.array_equal(train.positions, positions):
        raise RunStateError(
            f"{config.root / 'run'}: the eval features do not match the score table; "
            "rerun thresher eval (it recomputes them)"
        )
    return train


def train_teacher(config: EvalConfig) -> Teacher:
    """The distillation teacher: the ``full`` job's model with the teacher's seed.

    It trains on the rows the ``full`` reference keeps, with the downstream
    settings of ``config`` (tuned), undistilled; its logits cover every pool row.
    """
    kept, weights, _ = select_rows(config, Job.full(0))
    train = pool_split(config)
    n_classes = int(train.targets.max()) + 1
    settings = config.eval.model.model_copy(update={"distill": None})
    model = train_classifier(
        take_rows(train.matrix, kept),
        train.targets[kept],
        n_classes,
        settings,
        teacher_seed(config.run.seed),
        weights=weights,
    )
    if model.diverged:
        raise RunStateError(
            "the distillation teacher diverged; lower eval.model.lr or give smaller lr_grid values"
        )
    record: dict[str, Any] = {
        "rows": int(kept.size),
        "train_accuracy": model.accuracy(take_rows(train.matrix, kept), train.targets[kept]),
        "validation_accuracy": None,
    }
    if config.eval.validation > 0.0:
        validation = load_split(config, "validation")
        if validation.targets.size:
            record["validation_accuracy"] = model.accuracy(validation.matrix, validation.targets)
    return Teacher(model.state(), model.predict_logits(train.matrix), record)


def run_job(config: EvalConfig, job: Job) -> dict[str, Any]:
    """Select, train and evaluate one classifier job; return its result row.

    With ``eval.model.distill``, every job but ``full`` is distilled from the
    eval's teacher (trained first when it is not stored).
    """
    started = time.perf_counter()
    kept, weights, step = select_rows(config, job)
    selected = time.perf_counter()
    train = pool_split(config)
    scores = score_table(config)
    if kept.size == 0:
        raise RunStateError(f"{job.selector} kept no row at pruning rate {job.prune_rate}")
    n_classes = int(train.targets.max()) + 1
    settings = config.eval.model.model_copy(update=job.model or {})
    distill = settings.distill if job.selector != FULL else None
    teacher = None if distill is None else teacher_logits(config, train_teacher)[kept]
    model = train_classifier(
        take_rows(train.matrix, kept),
        train.targets[kept],
        n_classes,
        settings,
        Seeds.of(config.run.seed, job.split, job.seed).model,
        weights=weights,
        teacher_logits=teacher,
    )
    trained = time.perf_counter()
    target = load_split(config, job.split)
    accuracy = model.accuracy(target.matrix, target.targets)
    return {
        "selector": job.selector,
        "prune_rate": float(job.prune_rate),
        "fraction_kept": kept.size / scores.num_rows,
        "seed": int(job.seed),
        "label_noise": float(config.eval.label_noise),
        "accuracy": float(accuracy),
        "split": job.split,
        "n_kept": int(kept.size),
        "n_pool": int(scores.num_rows),
        "flipped_kept": float(train.flipped[kept].mean()),
        "params": json.dumps(job.params, sort_keys=True, default=str),
        "classes_kept": int(np.unique(train.targets[kept]).size),
        "select_seconds": round(selected - started, 4),
        "train_seconds": round(trained - selected, 4),
        "step_kept": int(step["kept"]),
        "lr": float(settings.lr) if settings.lr is not None else None,
        "weight_decay": float(settings.weight_decay) if settings.weight_decay is not None else None,
        "diverged": bool(model.diverged),
        "distill_alpha": None if distill is None else float(distill.alpha),
        "distill_temperature": None if distill is None else float(distill.temperature),
    }


def run_jobs(
    config: EvalConfig,
    jobs: list[Job],
    parts: Path,
    run: Callable[[EvalConfig, Job], dict[str, Any]] = run_job,
) -> list[dict[str, Any]]:
    """Run ``jobs`` (one Prefect task's batch) with ``run``; reuse the batch's stored rows.

    A finished batch is written to ``parts/<hash>.json`` (its rows), so an
    interrupted eval resumes where it stopped.
    """
    from thresher.io.files import read_json, write_json_atomic

    path = parts / f"{config.digest([job.key() for job in jobs])}.json"
    if path.is_file():
        stored = read_json(path)
        if stored.get("jobs") == [job.key() for job in jobs]:
            return list(stored["rows"])
    rows = [run(config, job) for job in jobs]
    write_json_atomic({"jobs": [job.key() for job in jobs], "rows": rows}, path)
    return rows
