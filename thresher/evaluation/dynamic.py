"""Dynamic pruning in the eval: ``dynamic_el2n`` beside the static selectors, at every rate.

Listed in ``eval.selectors`` (``{name: dynamic_el2n, params: {every: 1}}``,
searchable, labelled, seeded like any selector), it trains the downstream
model on the whole pool (every row that reaches the selector: the run's
filters, and the dedup keepers when the selector drops duplicates) and
prunes it as it trains: every ``every`` epochs the model rescores the pool
by EL2N and keeps the hardest ``round((1 - rate) * n)`` rows, as many as a
static subset at that rate (:mod:`thresher.models.dynamic_pruning`). It
trains for the same fixed number of steps, from the same model seed, as
every subset: its row in the results is read like a selector's.

Beside the usual columns, a result row records ``rescorings`` (how many
times the pool was rescored), ``ever_trained`` (the fraction of the pool
that was in some batch) and ``ever_kept`` (in some pruned subset);
``flipped_kept`` is the mean over the pruned subsets, ``classes_kept`` the
fewest classes in one. A pool whose first ``every`` epochs take all the
steps is never pruned (``rescorings`` 0, the subset statistics are the
pool's): the model is then the full-data model, so give ``every`` below
``steps / (n / batch_size)``.

With ``eval.model.distill`` it trains against the teacher's logits on the
pool's rows, as every subset does.

Only for the classifier task: a language model trains on token budgets,
not rows scored by a classifier's EL2N.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import numpy as np

from thresher.errors import ConfigError, RunStateError
from thresher.evaluation.config import EvalConfig
from thresher.evaluation.features import load_split
from thresher.evaluation.jobs import (
    Job,
    Seeds,
    budget_rows,
    pool_split,
    run_job,
    score_table,
    select_rows,
    train_teacher,
)
from thresher.evaluation.model import settings
from thresher.evaluation.teacher import teacher_logits
from thresher.models.classifier import SoftTargets
from thresher.models.dynamic_pruning import DYNAMIC_EL2N, dynamic_params, train_dynamic
from thresher.models.features import take_rows


def run_classifier_job(config: EvalConfig, job: Job) -> dict[str, Any]:
    """One classifier job's result row: dynamic pruning's, or a static subset's (:func:`run_job`)."""
    return run_dynamic_job(config, job) if job.name == DYNAMIC_EL2N else run_job(config, job)


def pool_job(job: Job) -> Job:
    """The selection dynamic pruning starts from: every row that reaches the selector."""
    return replace(Job.full(job.seed, job.split, job.model), dedup=job.dedup)


def run_dynamic_job(config: EvalConfig, job: Job) -> dict[str, Any]:
    """Train one dynamically pruned classifier and evaluate it; return its result row."""
    if config.eval.language_model:
        raise ConfigError(
            f"eval.selectors: {DYNAMIC_EL2N} prunes a classifier's rows by its EL2N; "
            "the language_model task does not support it"
        )
    params = dynamic_params(job.params)
    started = time.perf_counter()
    pool, _, _ = select_rows(config, pool_job(job))
    scores = score_table(config)
    train = pool_split(config)
    if pool.size == 0:
        raise RunStateError(f"{job.selector}: no row reaches the selector")
    n_pool = scores.num_rows
    keep = min(budget_rows(job.prune_rate, n_pool), pool.size)
    model_settings = config.eval.model.model_copy(update=job.model or {})
    distill = model_settings.distill
    soft = None
    if distill is not None:
        logits = teacher_logits(config, train_teacher)[pool]
        soft = SoftTargets(logits, float(distill.alpha), float(distill.temperature))
    selected = time.perf_counter()
    model, schedule = train_dynamic(
        take_rows(train.matrix, pool),
        train.targets[pool],
        int(train.targets.max()) + 1,
        model_settings.hidden,
        settings(model_settings),
        Seeds.of(config.run.seed, job.split, job.seed).model,
        keep,
        float(params.every),
        soft_targets=soft,
    )
    trained = time.perf_counter()
    target = load_split(config, job.split)
    pruned = [pool[period.rows] for period in schedule.periods[1:]] or [pool]
    return {
        "selector": job.selector,
        "prune_rate": float(job.prune_rate),
        "fraction_kept": keep / n_pool,
        "seed": int(job.seed),
        "label_noise": float(config.eval.label_noise),
        "accuracy": float(model.accuracy(target.matrix, target.targets)),
        "split": job.split,
        "n_kept": int(keep),
        "n_pool": int(n_pool),
        "flipped_kept": float(np.mean([train.flipped[rows].mean() for rows in pruned])),
        "params": json.dumps(job.params, sort_keys=True, default=str),
        "classes_kept": min(int(np.unique(train.targets[rows]).size) for rows in pruned),
        "select_seconds": round(selected - started + schedule.score_seconds, 4),
        "train_seconds": round(trained - selected - schedule.score_seconds, 4),
        "step_kept": int(keep),
        "lr": float(model_settings.lr) if model_settings.lr is not None else None,
        "weight_decay": float(model_settings.weight_decay)
        if model_settings.weight_decay is not None
        else None,
        "diverged": bool(model.diverged),
        "distill_alpha": None if distill is None else float(distill.alpha),
        "distill_temperature": None if distill is None else float(distill.temperature),
        "rescorings": int(schedule.rescorings),
        "ever_trained": int(schedule.trained.sum()) / n_pool,
        "ever_kept": np.unique(np.concatenate(pruned)).size / n_pool,
    }
