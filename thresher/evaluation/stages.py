"""The eval flow's stages: splits, score, features, model search, search, test, record.

Each is a :class:`thresher.stages.base.Stage` run by the same loop as the
curate flow's (:func:`thresher.stages.base.run_stages`): the loop gives each
its Prefect task, its time (``seconds_per_stage`` in ``eval.json``, under
the key the stage is ``timed_as``) and its log line. A stage is built from
the slice of the eval config it needs and returns a frozen result that the
next stages read by attribute (``ctx.result(name)``). None shows a progress
line: the scoring's curate flow shows its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thresher.config import RunConfig
from thresher.evaluation.config import EvalConfig
from thresher.evaluation.features import build_features
from thresher.evaluation.lm_eval import measured_sets
from thresher.evaluation.splits import prepare_splits
from thresher.evaluation.steps import (
    EVAL_RECORD,
    check_jobs,
    choose_params,
    model_key,
    parts_key,
    proxy_records,
    results_frame,
    search_jobs,
    set_threads,
    test_jobs,
    train_in_batches,
    tune_downstream,
    tune_lm,
    with_lm_settings,
    with_model,
    write_tables,
)
from thresher.evaluation.summary import (
    CHECK_RATE,
    best_by_rate,
    data_check,
    summarize,
    summarize_lm,
)
from thresher.io.files import write_json_atomic
from thresher.stages.base import RunContext, Stage


class EvalStage(Stage):
    """An eval stage: no progress line of its own."""

    shown = False


@dataclass(frozen=True)
class Splits:
    """The splits' record (``splits/splits.json``) and whether this run rebuilt them."""

    record: dict[str, Any]
    rebuilt: bool


class SplitsStage(EvalStage):
    """Write (or reuse) the train pool, validation and test splits (:mod:`.splits`)."""

    name = "eval-splits"
    timing_key = "splits"

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def run(self, ctx: RunContext, bar: Any) -> Splits:
        record, rebuilt = prepare_splits(self.config)
        return Splits(record, rebuilt)

    def describe(self, result: Splits) -> str:
        rows, flipped = result.record["rows"], result.record["flipped"]
        noise = f"; {flipped} training labels flipped" if flipped else ""
        return (
            f"eval {self.config.root}: {rows['train']} training, {rows['validation']} "
            f"validation, {rows['test']} test rows{noise}"
        )


@dataclass(frozen=True)
class Scored:
    """The summary the curate flow returned for the scoring of the training pool."""

    summary: dict[str, Any]


class ScoreStage(EvalStage):
    """The curate flow up to scoring, over the training pool; started afresh with new splits."""

    name = "eval-score"
    timing_key = "score"

    def __init__(self, scoring: RunConfig, quiet: bool) -> None:
        self.scoring = scoring
        self.quiet = quiet

    def run(self, ctx: RunContext, bar: Any) -> Scored:
        from thresher.flows.curate import curate

        rebuilt = ctx.result(SplitsStage.name).rebuilt
        return Scored(curate(self.scoring, fresh=rebuilt, stages="score", quiet=self.quiet))


@dataclass(frozen=True)
class Deduplicated:
    """The dedup clusters' summary (``dedup/summary.json`` of the scoring run)."""

    summary: dict[str, Any]


class DedupStage(EvalStage):
    """The scoring run's near-duplicate clusters, when a selector drops duplicates.

    Computed once over the training pool with the configuration's ``dedup``
    section (reused while the scores are unchanged); a selector with
    ``dedup`` on selects among the clusters' keepers.
    """

    name = "eval-dedup"
    timing_key = "dedup"

    def __init__(self, config: EvalConfig, scoring: RunConfig) -> None:
        self.config = config
        self.scoring = scoring

    def run(self, ctx: RunContext, bar: Any) -> Deduplicated:
        from thresher.engines import in_memory_engine
        from thresher.run_dir import RunDir
        from thresher.stages.dedup import dedup_to_run

        run = RunDir(self.scoring.run_path.as_path())
        stats = run.stored_ingest_stats()
        rows = sum(int(s["ingested"]) for s in stats)
        engine = in_memory_engine(driver_max_rows=max(rows, 1))
        return Deduplicated(dedup_to_run(self.scoring, engine, [int(s["index"]) for s in stats]))

    def describe(self, result: Deduplicated) -> str:
        return (
            f"eval dedup: {result.summary['duplicates']} duplicate(s) in "
            f"{result.summary['clusters']} cluster(s)"
        )


@dataclass(frozen=True)
class Features:
    """The features' record (``features.json``: key, source, classes, rows, width)."""

    record: dict[str, Any]


class FeaturesStage(EvalStage):
    """The downstream model's input vectors of the three splits (:mod:`.features`)."""

    name = "eval-features"
    timing_key = "features"

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def run(self, ctx: RunContext, bar: Any) -> Features:
        return Features(build_features(self.config, ctx.result(SplitsStage.name).record["key"]))


class TokensStage(EvalStage):
    """The language-model task's tokenizer and tokenized splits (:mod:`.lm_eval`)."""

    name = "eval-tokens"
    timing_key = "tokens"

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def run(self, ctx: RunContext, bar: Any) -> Features:
        from thresher.evaluation.lm_eval import build_tokens

        return Features(build_tokens(self.config, ctx.result(SplitsStage.name).record["key"]))

    def describe(self, result: Features) -> str:
        tokens = result.record["tokens"]
        return (
            f"eval: {tokens['train']:,} training-pool tokens, {tokens['test']:,} held-out "
            f"tokens (vocabulary {result.record['vocab_size']:,})"
        )


@dataclass(frozen=True)
class ModelChoice:
    """The downstream model's learning rate and weight decay, and how every later model trains.

    ``tuning`` is the record ``eval.json`` keeps; ``config`` the eval config
    with the chosen values; ``parts`` where the finished batches are stored.
    """

    tuning: dict[str, Any]
    config: EvalConfig
    parts: Path


class ModelSearchStage(EvalStage):
    """Choose the downstream learning rate and weight decay on the validation split.

    ``base`` keys the stored batches: the splits, the features and the
    scoring config; the downstream model's settings are added to it.
    """

    name = "eval-model-search"
    timing_key = "model_search"

    def __init__(self, config: EvalConfig, scoring: RunConfig) -> None:
        self.config = config
        self.scoring = scoring

    def run(self, ctx: RunContext, bar: Any) -> ModelChoice:
        cfg = self.config
        inputs = TokensStage.name if cfg.eval.language_model else FeaturesStage.name
        features = ctx.result(inputs).record
        splits_key = ctx.result(SplitsStage.name).record["key"]
        base = cfg.digest(splits_key, features["key"], self.scoring.config_dict())
        threads = set_threads(cfg, int(features.get("width", 0)))
        ctx.logger.info("eval: training with %d torch thread(s) per worker", threads)
        stored = ctx.run.eval.as_path() / "_parts"
        if cfg.eval.language_model:
            lm_key = cfg.eval.lm.model_dump(mode="json")
            tuning = tune_lm(cfg, stored / cfg.digest(base, lm_key), ctx.logger)
            tuned = with_lm_settings(cfg, tuning["lr"], tuning["warmup"])
            return ModelChoice(
                tuning, tuned, stored / cfg.digest(base, tuned.eval.lm.model_dump(mode="json"))
            )
        tuning = tune_downstream(cfg, stored / cfg.digest(base, model_key(cfg)), ctx.logger)
        tuned = with_model(cfg, tuning["lr"], tuning["weight_decay"])
        return ModelChoice(tuning, tuned, stored / parts_key(tuned, base))


@dataclass(frozen=True)
class Taught:
    """The distillation teacher's record (``eval.json``: ``distill.teacher``); trained by this run?"""

    record: dict[str, Any]
    trained: bool


class TeacherStage(EvalStage):
    """Train (or reuse) the distillation teacher before any student (:mod:`.teacher`).

    Only with ``eval.model.distill``; after the model search, whose
    learning rate and weight decay the teacher trains with.
    """

    name = "eval-teacher"
    timing_key = "teacher"

    def run(self, ctx: RunContext, bar: Any) -> Taught:
        from thresher.evaluation.jobs import train_teacher
        from thresher.evaluation.teacher import ensure_teacher

        cfg = ctx.result(ModelSearchStage.name).config
        record, trained = ensure_teacher(cfg, train_teacher)
        return Taught(record, trained)

    def describe(self, result: Taught) -> str:
        record = result.record
        how = "trained" if result.trained else "reused"
        held = record.get("validation_accuracy")
        return (
            f"eval: distillation teacher {how} ({record['rows']} rows, seed {record['seed']}, "
            f"training accuracy {record['train_accuracy']:.3f}"
            + (f", validation accuracy {held:.3f}" if held is not None else "")
            + ")"
        )


@dataclass(frozen=True)
class Searched:
    """Every search model's validation row, and the parameters chosen per (selector, rate)."""

    rows: list[dict[str, Any]]
    chosen: dict[tuple[str, float], dict[str, Any]]


class SearchStage(EvalStage):
    """Train every search candidate at every rate; keep the best per rate (validation split)."""

    name = "eval-search"
    timing_key = "search"

    def run(self, ctx: RunContext, bar: Any) -> Searched:
        model = ctx.result(ModelSearchStage.name)
        cfg = model.config
        rows = train_in_batches(cfg, search_jobs(cfg), model.parts, ctx.logger, "search")
        return Searched(rows, choose_params(cfg, rows))


@dataclass(frozen=True)
class Tested:
    """The test split's rows: every (selector, rate, seed) and the data check's random subsets."""

    results: list[dict[str, Any]]
    checks: list[dict[str, Any]]


class TestStage(EvalStage):
    """Select, train and measure every (selector, rate, seed) on the test split, then the check."""

    __test__ = False  # not a pytest test class
    name = "eval-test"
    timing_key = "test"

    def run(self, ctx: RunContext, bar: Any) -> Tested:
        model = ctx.result(ModelSearchStage.name)
        cfg, parts = model.config, model.parts
        chosen = ctx.result(SearchStage.name).chosen
        results = train_in_batches(cfg, test_jobs(cfg, chosen), parts, ctx.logger, "test")
        checks = train_in_batches(cfg, check_jobs(cfg), parts, ctx.logger, "check")
        return Tested(results, checks)


@dataclass(frozen=True)
class Recorded:
    """The eval's record, as written to ``eval/eval.json``."""

    outcome: dict[str, Any]
    where: str


class RecordStage(EvalStage):
    """Write the results, the search, the summary, the curve and ``eval.json``; rebuild the report.

    Not timed: it reads the other stages' times (``seconds_per_stage``).
    """

    name = "eval-record"
    timed = False

    def run(self, ctx: RunContext, bar: Any) -> Recorded:
        from thresher.reporting.html import write_report

        run, tested = ctx.run, ctx.result(TestStage.name)
        searched, model = ctx.result(SearchStage.name), ctx.result(ModelSearchStage.name)
        cfg = model.config
        frame = results_frame(tested.results)
        taught = ctx.results.get(TeacherStage.name)
        sets = measured_sets(cfg) if cfg.eval.language_model else None
        if sets is None:
            summary = summarize(frame)
            checks = results_frame(tested.checks) if tested.checks else None
            check = data_check(frame, checks, CHECK_RATE)
        else:
            summary = summarize_lm(frame, sets)
            check = {"ok": True, "message": "not checked for language models"}
        warnings = [] if check["ok"] else [check["message"]]
        for message in warnings:
            ctx.logger.warning("eval: WARNING: %s", message)
        write_tables(run, frame, searched.rows, summary, sets)
        n_models = len(tested.results) + len(searched.rows) + len(tested.checks)
        inputs = TokensStage.name if sets is not None else FeaturesStage.name
        outcome = {
            "run_dir": str(run.root),
            "task": cfg.eval.task,
            "splits": ctx.result(SplitsStage.name).record,
            "features" if sets is None else "tokens": ctx.result(inputs).record,
            "models": n_models + len(model.tuning["trials"]),
            "model": model.tuning,
            "dedup": getattr(ctx.results.get(DedupStage.name), "summary", None),
            "distill": _distill_record(cfg, taught),
            **(
                {}
                if sets is None
                else {
                    "lm": cfg.eval.lm.model_dump(mode="json"),
                    "sets": sets,
                    "summary": summary.replace({np.nan: None}).to_dict("records"),
                }
            ),
            "proxies": proxy_records(run),
            "chosen": [
                {"selector": label, "prune_rate": rate, "params": params}
                for (label, rate), params in sorted(searched.chosen.items())
            ],
            "best": best_by_rate(summary).to_dict("records"),
            "data_check": check,
            "warnings": warnings,
            "seconds_per_stage": {key: round(s, 3) for key, s in ctx.timings.items()},
        }
        write_json_atomic(outcome, run.eval / EVAL_RECORD)
        write_report(run.root)
        return Recorded(outcome, str(run.eval))

    def describe(self, result: Recorded) -> str:
        return f"eval: {result.outcome['models']} models; results in {result.where}"


def _distill_record(cfg: EvalConfig, taught: Taught | None) -> dict[str, Any] | None:
    """``eval.json``'s ``distill``: alpha, temperature and the teacher (None: not distilled)."""
    distill = cfg.eval.model.distill
    if distill is None or taught is None:
        return None
    return {**distill.model_dump(mode="json"), "teacher": taught.record}


def eval_stages(config: EvalConfig, scoring: RunConfig, quiet: bool) -> list[Stage]:
    """The eval flow's stages, in order (see :mod:`thresher.evaluation.flow`)."""
    inputs = TokensStage(config) if config.eval.language_model else FeaturesStage(config)
    deduplicated = scoring.dedup is not None and any(s.dedup is not False for s in config.selectors)
    return [
        SplitsStage(config),
        ScoreStage(scoring, quiet),
        *([DedupStage(config, scoring)] if deduplicated else []),
        inputs,
        ModelSearchStage(config, scoring),
        *([TeacherStage()] if config.eval.model.distill is not None else []),
        SearchStage(),
        TestStage(),
        RecordStage(),
    ]
