"""The ``curate`` flow: ingest, fit, score, dedup, select, materialise, report.

Tasks pass paths and small statistics, never data: every stage reads its
input from the run directory and writes its output there. With the local
engine, ingest, scoring and materialisation are tasks mapped over shards
(each runs in the engine's process pool); with Spark, each stage is one
task that runs Spark jobs. Scoring tasks retry; a retried shard starts
from scratch because a shard's scores are committed atomically.

Resume and caching: the run directory is the cache. A shard's ingest is
done when its marker (``_state/ingest/``, holding the input file's
fingerprint) exists, its scoring when ``scores/shard-NNNNN/`` exists (a
directory committed by one rename), and the run-level keys in
``_state/run.json`` (input and schema, scorers and seed) refuse to mix
results of another configuration. Prefect's task caching would add a
second record of the same facts that can disagree with the files (a
deleted score directory would still be a cache hit), does not reach the
Spark engine's per-wave work, and needs pickled results stored outside
the run directory; so tasks use ``NO_CACHE`` and a re-run, in any
process, on any engine, skips exactly what the run directory holds.
Dedup (when configured) is keyed apart, in ``dedup/summary.json``: a new
``dedup`` section re-runs it from the stored scores instead of refusing.

Faults: a run killed at any point leaves complete shards committed and
the previous published ``data/`` intact (:func:`publish_directory`); the
next run takes over the dead run's lock, deletes its staging files,
repairs an interrupted publish and goes on from the committed shards.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from thresher.config import RunConfig, SchemaConfig, check_input_apart, load_config
from thresher.engines import Engine, make_engine
from thresher.engines.local import LocalEngine
from thresher.engines.spark import SparkEngine
from thresher.errors import RunStateError
from thresher.io.files import (
    check_contained,
    publish_directory,
    recover_published,
    write_json_atomic,
)
from thresher.io.lock import RunLock
from thresher.io.manifest import build_manifest
from thresher.io.shards import Shard, make_shards
from thresher.progress import Progress, StageProgress, make_progress, watch_spark
from thresher.report.card import write_card
from thresher.run_dir import RunDir
from thresher.stages.dedup import clear_dedup, dedup_to_run
from thresher.stages.fit import fit_scorers
from thresher.stages.harmonize import harmonize_ingested
from thresher.stages.materialize import write_empty_part
from thresher.stages.score import BoundScorer
from thresher.stages.select import select_to_run

EngineKind = Literal["local", "spark"]
#: Which stages a flow run does: everything, up to scoring, or from selection on.
Stages = Literal["all", "score", "select"]


# -- tasks -------------------------------------------------------------------------


@task(name="ingest-shard", cache_policy=NO_CACHE, retries=1)
def ingest_shard_task(
    engine: LocalEngine, shard: Shard, schema: SchemaConfig, run_root: str
) -> dict[str, Any]:
    return engine.submit_ingest(shard, schema, run_root).result()


@task(name="ingest", cache_policy=NO_CACHE, retries=1)
def ingest_task(
    engine: Engine, shards: list[Shard], schema: SchemaConfig, run_root: str
) -> list[dict[str, Any]]:
    return engine.ingest(shards, schema, run_root)


@task(name="fit-scorers", cache_policy=NO_CACHE)
def fit_task(config: RunConfig, shard_rows: dict[int, int]) -> list[BoundScorer]:
    return fit_scorers(config, shard_rows)


@task(name="score-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def score_shard_task(
    engine: LocalEngine, index: int, scorers: list[BoundScorer], run_root: str, batch_size: int
) -> dict[str, Any]:
    return engine.submit_score(index, scorers, run_root, batch_size).result()


@task(name="score", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def score_task(
    engine: Engine, indices: list[int], scorers: list[BoundScorer], run_root: str, batch_size: int
) -> list[dict[str, Any]]:
    return engine.score(indices, scorers, run_root, batch_size)


@task(name="harmonize", cache_policy=NO_CACHE)
def harmonize_task(run_root: str, indices: list[int]) -> dict[int, list[str]]:
    return harmonize_ingested(run_root, indices)


@task(name="dedup", cache_policy=NO_CACHE)
def dedup_task(engine: Engine, config: RunConfig, indices: list[int]) -> dict[str, Any]:
    return dedup_to_run(config, engine, indices)


@task(name="select", cache_policy=NO_CACHE)
def select_task(config: RunConfig, engine: Engine) -> dict[str, Any]:
    return select_to_run(config, engine)


@task(name="materialize-shard", cache_policy=NO_CACHE, retries=1)
def materialize_shard_task(
    engine: LocalEngine,
    index: int,
    schema: SchemaConfig,
    weighted: bool,
    run_root: str,
    out_dir: str,
) -> int:
    return engine.submit_materialize(index, schema, weighted, run_root, out_dir).result()


@task(name="materialize", cache_policy=NO_CACHE, retries=1)
def materialize_task(
    engine: Engine,
    indices: list[int],
    schema: SchemaConfig,
    weighted: bool,
    run_root: str,
    out_dir: str,
) -> int:
    return engine.materialize(indices, schema, weighted, run_root, out_dir)


@task(name="report", cache_policy=NO_CACHE)
def report_task(run_root: str) -> str:
    from thresher.report.html import write_report

    return str(write_report(Path(run_root)))


# -- flow ----------------------------------------------------------------------------


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _spark_tasks(eng: Engine, bar: StageProgress) -> AbstractContextManager[Any]:
    """Report the Spark task counts of a stage to ``bar`` (nothing for the local engine)."""
    if isinstance(eng, SparkEngine):
        return watch_spark(eng.spark.sparkContext, bar)
    return nullcontext(bar)


def _warn_unmet_budgets(steps: list[dict[str, Any]], logger: Any) -> None:
    """Say when a count budget exceeds the rows that reach its step (all of them are kept)."""
    for step in steps:
        budget = step.get("budget")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > step["rows_in"]:
            logger.warning(
                "%s: budget %d exceeds the %d rows that reach it; all of them are kept",
                step["step"],
                budget,
                step["rows_in"],
            )


def resolve_config(config: RunConfig | str | Path, engine: EngineKind | None = None) -> RunConfig:
    """Load a config path (or take a config) and apply an engine override."""
    resolved = config if isinstance(config, RunConfig) else load_config(config)
    if engine is not None and engine != resolved.engine.kind:
        resolved = resolved.model_copy(
            update={"engine": resolved.engine.model_copy(update={"kind": engine})}
        )
    return resolved


def run_keys(config: RunConfig) -> dict[str, str]:
    """What earlier results in a run directory depend on (see RunDir.prepare)."""
    import json
    from hashlib import sha256

    def digest(value: Any) -> str:
        return sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

    data = config.config_dict()
    return {
        "input and schema": digest([data["input"], data["schema"], config.base_dir]),
        "scorers": digest([data["scorers"], data["seed"]]),
    }


@flow(name="curate", log_prints=True)
def curate(
    config: RunConfig | str,
    fresh: bool = False,
    engine: EngineKind | None = None,
    stages: Stages = "all",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a curation job from a config (a path or a RunConfig); return its manifest.

    ``stages="score"`` stops after scoring (ingest, fit, score) and returns
    a summary; ``stages="select"`` runs only what follows scoring
    (selection, materialisation, manifest, card, report) from the scores
    stored in the run directory: no input is read, no scorer is built or
    fitted. ``quiet`` turns progress reporting off (see thresher.progress).
    """
    logger = get_run_logger()
    cfg = resolve_config(config, engine)
    run = RunDir(cfg.run_path)
    if stages == "select" and (fresh or not run.is_run_dir()):
        raise RunStateError(
            f"{run.root} holds no scored run to select from"
            if not fresh
            else "selection reuses the stored scores; it cannot start --fresh"
        )
    # fails before any work if an input pattern matches nothing
    files = [] if stages == "select" else cfg.input_files()
    check_input_apart(cfg, files)
    run.check_usable()
    check_contained(run.root)
    with RunLock(run.lock):
        run.prepare(run_keys(cfg), fresh=fresh)
        _clean_up_after_a_dead_run(run)
        run.record_config(cfg.config_dict(), cfg.base_dir)
        progress = make_progress(quiet=quiet, logger=logger)
        return _curate(cfg, run, files, logger, stages, progress)


def _clean_up_after_a_dead_run(run: RunDir) -> None:
    """Under the lock: drop staging files of a killed run and repair interrupted publishes."""
    shutil.rmtree(run.staging, ignore_errors=True)
    published = {p.name.split(".retired-")[0][1:] for p in run.root.glob(".*.retired-*")}
    for name in sorted(published | {run.data.name}):
        recover_published(run.root / name)


def _curate(
    cfg: RunConfig,
    run: RunDir,
    files: list[Path],
    logger: Any,
    stages: Stages = "all",
    progress: Progress | None = None,
) -> dict[str, Any]:
    root = str(run.root)
    timings: dict[str, float] = {}
    progress = progress or make_progress(quiet=True, logger=logger)

    with make_engine(cfg) as eng:
        if stages == "select":
            stats = run.stored_ingest_stats()
            unscored = [s["index"] for s in stats if not run.scores_shard(s["index"]).is_dir()]
            if not stats or unscored:
                raise RunStateError(
                    f"{run.root}: shard(s) {unscored or 'all'} have no stored scores; "
                    "score them first (thresher score CONFIG)"
                )
            logger.info("run %s: selecting from the stored scores of %d shard(s)", root, len(stats))
        else:
            stats = _ingest_score(cfg, eng, files, root, timings, progress, logger)
            if stages == "score":
                shutil.rmtree(run.staging, ignore_errors=True)
                return {
                    "stages": "score",
                    "run_dir": root,
                    "shards": len(stats),
                    "input": sum(s["rows_in"] for s in stats),
                    "ingested": sum(s["ingested"] for s in stats),
                    "quarantined": sum(s["quarantined"] for s in stats),
                    "seconds_per_stage": {k: round(v, 3) for k, v in timings.items()},
                }
        indices = [s["index"] for s in stats]

        if cfg.dedup is not None:  # dedup results are keyed apart: a new dedup section re-runs it
            with _timed(timings, "dedup"), progress.stage("dedup", shards=len(indices)) as bar:
                with _spark_tasks(eng, bar):
                    deduped = dedup_task(eng, cfg, indices)
                bar.advance(shards=len(indices), docs=deduped["documents"])
            logger.info(
                "dedup: %d duplicate(s) in %d cluster(s)%s",
                deduped["duplicates"],
                deduped["clusters"],
                " (reused)" if deduped["reused"] else "",
            )
        else:
            clear_dedup(cfg)

        with _timed(timings, "select"):
            selection = select_task(cfg, eng)
        logger.info("selected %d of %d ingested rows", selection["kept"], selection["ingested"])
        _warn_unmet_budgets(selection["steps"], logger)

        with (
            _timed(timings, "materialize"),
            progress.stage("materialize", shards=len(indices), docs=selection["kept"]) as bar,
        ):
            staging = run.staging / f"data-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            if isinstance(eng, LocalEngine):
                written = 0
                for future in as_completed(
                    materialize_shard_task.map(
                        unmapped(eng),
                        indices,
                        unmapped(cfg.schema_),
                        unmapped(selection["weighted"]),
                        unmapped(root),
                        unmapped(str(staging)),
                    )
                ):
                    count = future.result()
                    written += count
                    bar.advance(shards=1, docs=count)
                if written == 0:  # readers still find the columns of an empty dataset
                    write_empty_part(root, cfg.schema_, selection["weighted"], str(staging))
                (staging / "_SUCCESS").touch()
            else:
                with _spark_tasks(eng, bar):
                    written = materialize_task(
                        eng, indices, cfg.schema_, selection["weighted"], root, str(staging)
                    )
                bar.advance(shards=len(indices), docs=written)
            publish_directory(staging, run.data)
        shutil.rmtree(run.staging, ignore_errors=True)

    manifest = build_manifest(cfg, cfg.engine.kind, stats, selection, written, timings)
    write_json_atomic(manifest, run.manifest)
    write_card(run.root, manifest)
    report_task(str(run.root))
    counts = manifest["counts"]
    if not counts["reconciles"]:
        raise AssertionError(f"counts do not reconcile: {counts}")
    logger.info(
        "kept %d, dropped %d, quarantined %d of %d input records -> %s",
        counts["kept"],
        counts["dropped"]["total"],
        counts["quarantined"]["total"],
        counts["input"],
        run.data,
    )
    return manifest


def _ingest_score(
    cfg: RunConfig,
    eng: Engine,
    files: list[Path],
    root: str,
    timings: dict[str, float],
    progress: Progress,
    logger: Any,
) -> list[dict[str, Any]]:
    """Ingest, fit and score; return the per-shard ingest statistics in shard order."""
    shards = make_shards(files, Path(cfg.base_dir), cfg.input.format)
    logger.info("run %s: %d shard(s), engine %s", root, len(shards), cfg.engine.kind)
    with _timed(timings, "ingest"), progress.stage("ingest", shards=len(shards)) as bar:
        if isinstance(eng, LocalEngine):
            stats = []
            for future in as_completed(
                ingest_shard_task.map(unmapped(eng), shards, unmapped(cfg.schema_), unmapped(root))
            ):
                stats.append(future.result())
                bar.advance(shards=1, docs=stats[-1]["rows_in"])
            stats.sort(key=lambda s: s["index"])
        else:
            with _spark_tasks(eng, bar):
                stats = ingest_task(eng, shards, cfg.schema_, root)
            bar.advance(shards=len(stats), docs=sum(s["rows_in"] for s in stats))
        drifted = harmonize_task(root, [s["index"] for s in stats])
        for index, columns in drifted.items():
            logger.warning(
                "%s: column(s) %s had another type than in other shards; converted (schema drift)",
                shards[index].name,
                columns,
            )
    shard_rows = {s["index"]: s["ingested"] for s in stats}
    logger.info(
        "ingested %d rows, quarantined %d",
        sum(shard_rows.values()),
        sum(s["quarantined"] for s in stats),
    )

    with _timed(timings, "fit"):
        scorers = fit_task(cfg, shard_rows)

    indices = [s.index for s in shards]
    with (
        _timed(timings, "score"),
        progress.stage("score", shards=len(indices), docs=sum(shard_rows.values())) as bar,
    ):
        if isinstance(eng, LocalEngine):
            for future in as_completed(
                score_shard_task.map(
                    unmapped(eng),
                    indices,
                    unmapped(scorers),
                    unmapped(root),
                    unmapped(cfg.engine.batch_size),
                )
            ):
                done = future.result()
                bar.advance(shards=1, docs=shard_rows[done["index"]])
        else:
            with _spark_tasks(eng, bar):
                score_task(eng, indices, scorers, root, cfg.engine.batch_size)
            bar.advance(shards=len(indices), docs=sum(shard_rows.values()))
    return stats
