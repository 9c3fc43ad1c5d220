"""The ``curate`` flow: ingest, fit, score, dedup, select, materialise, publish, report.

One code path for every engine: each stage is a Prefect task that asks
the engine for per-shard work (:meth:`Engine.map_shards`) or whole-table
work (frames), and reports to the stage's progress. Tasks pass paths and
small statistics, never data: every stage reads its input from the run
directory and writes its output there. Tasks retry; a retried stage
redoes only what is not committed, because every per-shard output is
committed by one atomic write.

Resume and caching: the run directory is the cache. A shard's ingest is
done when its marker (``_state/ingest/``, holding the input's listing
fingerprint) exists, its scoring when ``scores/shard-NNNNN.parquet``
exists, and the run-level keys in ``_state/run.json`` (the schema; the
scorers and seed) refuse to mix results of another configuration.
Prefect's task caching would add a second record of the same facts that
can disagree with the files (a deleted score shard would still be a cache
hit), and needs pickled results stored outside the run directory; so tasks
use ``NO_CACHE`` and a re-run, in any process, on any engine, skips
exactly what the run directory holds. The driver decides what is done
from markers and one listing, so unchanged shards cost no task at all.

A corpus may grow between runs (shards are identified by name,
:mod:`thresher.io.shards`): new files are ingested and scored alone, then
dedup and selection run over the union. A removed, renamed or changed
input is refused with its name.

Faults: a run killed at any point leaves complete shards committed and
the published version intact (:mod:`thresher.io.publish`); the next run
takes over the dead run's lock, deletes its scratch files and the
unpublished versions it left, rewrites the root manifest, card and report
if they lag behind ``CURRENT``, and goes on from the committed shards. The
lock is checked before each stage and before publication: a run whose lock
was taken over stops with RunStateError and publishes nothing.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from thresher.config import (
    RunConfig,
    SchemaConfig,
    check_input_apart,
    load_config,
    parse_config,
)
from thresher.engines import Engine, make_engine
from thresher.errors import ConfigError, RunStateError, ThresherError
from thresher.flows.retries import retry_unless_user_error
from thresher.io import ingest_index, publish
from thresher.io.files import check_contained, read_json, write_json_atomic
from thresher.io.fs import FileEntry, Location
from thresher.io.lock import HEARTBEAT_SECONDS, STALE_SECONDS, RunLock
from thresher.io.manifest import build_manifest
from thresher.io.shards import Shard, ShardRegistry
from thresher.keys import json_digest
from thresher.logs import redact_logs
from thresher.preflight import check_losses, require_input_columns
from thresher.progress import Progress, StageProgress, make_progress
from thresher.redact import redact_known, remember_secrets
from thresher.reporting.card import write_card
from thresher.run_dir import RunDir
from thresher.stages.decontaminate import (
    clear_decontamination,
    decontaminate_to_run,
    eval_set_files,
    manifest_section,
)
from thresher.stages.dedup import clear_dedup, dedup_to_run
from thresher.stages.fit import fit_scorers
from thresher.stages.harmonize import harmonize_ingested
from thresher.stages.ingest import IngestShard, pending_shards, renew_repaired
from thresher.stages.materialize import MaterializeShard, write_empty_part
from thresher.stages.score import BoundScorer, ScoreShard
from thresher.stages.select import select_to_run

EngineKind = Literal["local", "spark"]
#: Which stages a flow run does: everything, up to scoring, or from selection on.
Stages = Literal["all", "score", "select"]


# -- tasks ---------------------------------------------------------------------------


@task(name="ingest", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_unless_user_error)
def ingest_task(
    engine: Engine,
    shards: list[Shard],
    cfg: RunConfig,
    run: RunDir,
    bar: StageProgress,
    stored: dict[int, dict[str, Any]],
) -> list[dict[str, Any]]:
    pending, done = pending_shards(shards, run, stored)
    bar.reuse(shards=len(done), docs=sum(s["rows_in"] for s in done))
    fresh = engine.map_shards(
        IngestShard(cfg.schema_, run, cfg.input.on_unreadable, cfg.input.read_limits()),
        pending,
        bar,
        on_done=lambda s: bar.advance(shards=1, docs=s["rows_in"]),
    )
    return sorted(done + fresh, key=lambda s: s["index"])


@task(name="harmonize", cache_policy=NO_CACHE)
def harmonize_task(
    engine: Engine, run: RunDir, stats: list[dict[str, Any]]
) -> tuple[dict[int, list[str]], list[dict[str, Any]]]:
    changed = harmonize_ingested(run, stats, engine)
    ingest_index.save(run.ingest_markers, stats)  # one file for the next run to read
    return changed, stats


@task(name="fit-scorers", cache_policy=NO_CACHE)
def fit_task(config: RunConfig, shard_rows: dict[int, int]) -> list[BoundScorer]:
    return fit_scorers(config, shard_rows)


@task(
    name="score",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_user_error,
)
def score_task(
    engine: Engine,
    run: RunDir,
    scorers: list[BoundScorer],
    shard_rows: dict[int, int],
    batch_size: int,
    bar: StageProgress,
) -> list[int]:
    scored = {e.location.name for e in run.scores.list_files(recursive=False)}
    pending = [i for i in sorted(shard_rows) if run.scores_shard(i).name not in scored]
    reused = sorted(set(shard_rows) - set(pending))
    bar.reuse(shards=len(reused), docs=sum(shard_rows[i] for i in reused))
    engine.map_shards(
        ScoreShard(scorers, run, batch_size),
        pending,
        bar,
        on_done=lambda r: bar.advance(shards=1, docs=int(r["rows"])),
    )
    return pending


@task(name="dedup", cache_policy=NO_CACHE)
def dedup_task(
    engine: Engine, config: RunConfig, indices: list[int], bar: StageProgress
) -> dict[str, Any]:
    return dedup_to_run(config, engine, indices, bar)


@task(
    name="decontaminate",
    cache_policy=NO_CACHE,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
)
def decontaminate_task(
    engine: Engine, config: RunConfig, indices: list[int], bar: StageProgress
) -> dict[str, Any]:
    return decontaminate_to_run(config, engine, indices, bar)


@task(name="select", cache_policy=NO_CACHE)
def select_task(
    config: RunConfig,
    engine: Engine,
    indices: list[int],
    version: publish.Version,
    bar: StageProgress,
) -> dict[str, Any]:
    return select_to_run(config, engine, indices, version, bar)


@task(
    name="materialize", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_unless_user_error
)
def materialize_task(
    engine: Engine,
    run: RunDir,
    version: publish.Version,
    indices: list[int],
    schema: SchemaConfig,
    weighted: bool,
    bar: StageProgress,
) -> int:
    counts = engine.map_shards(
        MaterializeShard(run, version, schema, weighted),
        indices,
        bar,
        on_done=lambda n: bar.advance(shards=1, docs=n),
    )
    written = sum(counts)
    if written == 0:  # readers still find the columns of an empty dataset
        write_empty_part(run, version, schema, weighted)
    (version.data / "_SUCCESS").write_bytes(b"")
    return written


@task(name="report", cache_policy=NO_CACHE)
def report_task(run: RunDir) -> str:
    from thresher.reporting.html import write_report

    return str(write_report(run.root))


# -- flow ----------------------------------------------------------------------------


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _warn_unmet_budgets(steps: list[dict[str, Any]], logger: Any) -> None:
    """Say when a budget (a count, or a sum) covers every row that reaches its step."""
    for step in steps:
        budget = step.get("budget")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > step["rows_in"]:
            logger.warning(
                "%s: budget %d exceeds the %d rows that reach it; all of them are kept",
                step["step"],
                budget,
                step["rows_in"],
            )
        elif isinstance(budget, dict) and step["rows_in"] and step["kept"] == step["rows_in"]:
            logger.warning(
                "%s: budget %s <= %d covers all %d rows that reach it; all of them are kept",
                step["step"],
                budget["sum"],
                budget["total"],
                step["rows_in"],
            )


def resolve_config(
    config: RunConfig | str, engine: EngineKind | None = None, run_dir: str | None = None
) -> RunConfig:
    """Load a config path (or take a config) and apply the engine and run directory overrides.

    A relative ``run_dir`` is taken from the current directory, not the
    config's: it is a parameter of this run, not part of the config file.
    """
    resolved = config if isinstance(config, RunConfig) else load_config(config)
    if run_dir is not None:
        data = {**resolved.config_dict(), "run_dir": Location.of(run_dir).uri}
        resolved = parse_config(data, base_dir=resolved.base_dir)
    if engine is not None and engine != resolved.engine.kind:
        resolved = resolved.model_copy(
            update={"engine": resolved.engine.model_copy(update={"kind": engine})}
        )
    return resolved


def run_keys(config: RunConfig) -> dict[str, str]:
    """What earlier results in a run directory depend on (see RunDir.prepare).

    Inputs are not among them: they are checked shard by shard, by name and
    fingerprint, so a corpus may grow and a run directory may move.
    """
    data = config.config_dict()
    # A cap refuses a shard, it never changes an ingested row: not part of the key.
    schema = {k: v for k, v in data["schema"].items() if k != "max_passthrough_columns"}
    return {
        "schema": json_digest([schema, data["input"]["format"]]),
        "scorers": json_digest([data["scorers"], data["seed"]]),
    }


def check_driver_limit(config: RunConfig, n_rows: int, engine: Engine | None = None) -> None:
    """Refuse, before scoring, a step that would gather more rows on the driver than allowed.

    An embedding selector without ``partitions`` runs on one machine with
    every vector of the rows that reach it; an engine that holds tables on
    the driver (the local engine) holds every row in its whole-table steps;
    otherwise no stage keeps anything per row on the driver.
    """
    from thresher.stages.decide import configured_steps

    limit = config.engine.driver_max_rows
    if engine is not None and engine.holds_tables_on_driver and n_rows > limit:
        raise ConfigError(
            f"engine.kind: {engine.kind!r} runs the whole-table steps (duplicate ids, dedup, "
            f"selection) in the driver's memory, about 0.4 KB per row, and this corpus has "
            f"{n_rows:,} ingested rows, more than engine.driver_max_rows ({limit:,}); use "
            "engine.kind: spark, or raise engine.driver_max_rows if the driver has the memory"
        )
    for number, (step, selector) in enumerate(configured_steps(config)):
        if selector.requires_embeddings and step.partitions is None and n_rows > limit:
            where = "selector" if number == len(config.filters) else f"filters[{number}]"
            raise ConfigError(
                f"{where}: {step.name!r} gathers the vectors of every row that reaches it on one "
                f"machine, and this corpus has {n_rows:,} ingested rows, more than "
                f"engine.driver_max_rows ({limit:,}); add `partitions: {{clusters: N}}` to the "
                "step to run it where the data is, or raise engine.driver_max_rows"
            )


def check_storage(config: RunConfig) -> None:
    """Fail before any work when the run directory's store cannot be reached or used."""
    config.run_path.store.check(config.run_path)


@flow(name="curate", log_prints=True)
def curate(
    config: RunConfig | str,
    fresh: bool = False,
    engine: EngineKind | None = None,
    stages: Stages = "all",
    quiet: bool = False,
    run_dir: str | None = None,
) -> dict[str, Any]:
    """Run a curation job from a config (a path or a RunConfig); return its manifest.

    ``stages="score"`` stops after scoring (ingest, fit, score) and returns
    a summary; ``stages="select"`` runs only what follows scoring
    (selection, materialisation, manifest, card, report) from the scores
    stored in the run directory: no input is read, no scorer is built or
    fitted. ``quiet`` turns progress reporting off (see thresher.progress).
    ``run_dir`` replaces the config's run directory (a URI, or a path
    taken from the current directory: a deployment's working directory),
    so that one config can feed several deployments.

    Prefect stores the parameters with the config's secrets redacted
    (:meth:`RunConfig.recorded_dict`), and every log record and error
    message of the run without the secrets of the URIs in it.
    """
    redact_logs()
    try:
        return _curate_locked(config, fresh, engine, stages, quiet, run_dir)
    except ThresherError as error:  # its message becomes the flow run's stored state
        error.args = tuple(redact_known(a) if isinstance(a, str) else a for a in error.args)
        raise


def _curate_locked(
    config: RunConfig | str,
    fresh: bool,
    engine: EngineKind | None,
    stages: Stages,
    quiet: bool,
    run_dir: str | None,
) -> dict[str, Any]:
    """The flow's body: checks, then the stages under the run directory's lock."""
    logger = get_run_logger()
    cfg = resolve_config(config, engine, run_dir)
    remember_secrets(cfg.config_dict())
    run = RunDir(cfg.run_path)
    check_storage(cfg)
    if stages == "select" and (fresh or not run.is_run_dir()):
        raise RunStateError(
            f"{run.root} holds no scored run to select from"
            if not fresh
            else "selection reuses the stored scores; it cannot start --fresh"
        )
    # fails before any work if an input pattern matches nothing
    files = [] if stages == "select" else cfg.input_files()
    if cfg.decontaminate is not None:  # evaluation sets too, before any work
        eval_set_files(cfg)
    check_input_apart(cfg, files)
    for warning in require_input_columns(cfg, files):  # refuses a schema column no input has
        logger.warning("%s", warning)
    run.check_usable()
    check_contained(run.root)
    with RunLock(run.lock, wait_seconds=_lock_wait(logger)) as lock:
        if lock.taken_over is not None:
            logger.warning(
                "took over the lock of a dead run (pid %s on %s)",
                lock.taken_over.get("pid"),
                lock.taken_over.get("host"),
            )
        run.prepare(run_keys(cfg), fresh=fresh)
        _clean_up_after_a_dead_run(run, logger, lock)
        run.record_config(cfg.config_dict(), cfg.base_dir)
        progress = make_progress(quiet=quiet, logger=logger)
        return _curate(cfg, run, files, logger, stages, progress, lock, reuse_publication=not fresh)


def _lock_wait(logger: Any) -> float:
    """How long this flow run waits for a run directory's lock held elsewhere (seconds).

    A first attempt is refused at once. A retry (an automation reschedules
    a crashed run) may start on another machine before the lock of the
    attempt that crashed goes stale, since a holder on another host is
    trusted until its heartbeat is ``STALE_SECONDS`` old; it waits for that.
    """
    from prefect.runtime import flow_run

    attempt = int(flow_run.run_count or 1)
    if attempt <= 1:
        return 0.0
    wait = STALE_SECONDS + 2 * HEARTBEAT_SECONDS
    logger.info(
        "attempt %d of this flow run: a lock held on another machine is waited for (up to %.0f s)",
        attempt,
        wait,
    )
    return wait


def _clean_up_after_a_dead_run(run: RunDir, logger: Any, lock: RunLock) -> None:
    """Under the lock: drop a killed run's scratch files and unpublished versions; fix the root.

    A version no pointer names is deleted when the run whose lock was taken
    over wrote it and is proven dead, or when nothing was written into it
    for the stale limit: a younger one may be a live run's (see
    :func:`thresher.io.publish.retire_versions`). Root files that describe
    another version than ``CURRENT`` (a run killed after moving the pointer)
    are rewritten from the current version's manifest.
    """
    run.staging.delete_tree()
    dead = lock.taken_over.get("token") if lock.taken_over and lock.taken_from_dead else None
    retired = publish.recover(
        run.root,
        keep_younger_than=lock.stale_seconds,
        dead_writers=frozenset({str(dead)[:8]} if dead else ()),
    )
    if retired:
        logger.info("removed %d unpublished version(s) left by an earlier run", len(retired))
    current = publish.root_is_stale(run.root, run.manifest)
    if current is not None:
        logger.info("rewriting the root manifest, card and report of version %s", current.name)
        _write_root_files(run, read_json(current.manifest))


def _write_root_files(run: RunDir, manifest: dict[str, Any]) -> None:
    """The root copies of the current version's manifest, its card and the run report."""
    write_json_atomic(manifest, run.manifest)
    write_card(run.root, manifest)
    report_task(run)


def publication_key(config: RunConfig, stats: list[dict[str, Any]]) -> str:
    """What a published version is a function of: the config, every input's bytes, the code.

    Selection is deterministic, so a run whose key equals the current
    version's would publish the same rows again: it publishes nothing (a
    nightly run over an unchanged corpus costs a listing and one index read).
    The run directory is not part of the key (a moved run directory is the
    same run), the evaluation sets' listings are.
    """
    from thresher import __version__

    data = {k: v for k, v in config.config_dict().items() if k != "run_dir"}
    inputs = [
        [s["index"], s["name"], s.get("fingerprint"), s.get("content"), s["ingested"]]
        for s in sorted(stats, key=lambda s: int(s["index"]))
    ]
    evaluation = (
        {
            name: [[e.location.uri, e.fingerprint()] for e in entries]
            for name, entries in eval_set_files(config).items()
        }
        if config.decontaminate is not None
        else None
    )
    return json_digest([data, inputs, evaluation, __version__], length=64)


def _unchanged_publication(run: RunDir, key: str, logger: Any) -> dict[str, Any] | None:
    """The current version's manifest when it was published with ``key`` (nothing changed)."""
    named = publish.pointer(run.root)
    current = run.current()
    if named is None or current is None or named.get("publication_key") != key:
        return None
    if not current.manifest.is_file():
        return None
    logger.info(
        "nothing changed since version %s (same config, inputs and thresher version): it stays "
        "published; --fresh recomputes everything",
        current.name,
    )
    manifest = read_json(current.manifest)
    return {**manifest, "unchanged": True}


def _check_lock(lock: RunLock | None) -> None:
    """RunStateError when this run lost its lock (called before each stage)."""
    if lock is not None:
        lock.check()


def _spark_log_to_run_dir(eng: Engine, run: RunDir, run_id: str, logger: Any) -> None:
    """In a deployment's flow run, write Spark's driver log to a file the run's log names.

    Nobody watches a deployment's stdout (it is the worker's), so Spark's
    warnings go to ``RUN_DIR/_state/logs/`` (a local temporary directory
    when the run directory is on an object store). Runs started by hand show
    Spark's warnings that matter on the console (:mod:`thresher.engines.spark`);
    Spark's console progress bars are off in both: thresher's progress reports
    the stages.
    """
    from prefect.runtime import deployment

    from thresher.engines.spark import SparkEngine

    if not isinstance(eng, SparkEngine) or deployment.id is None:
        return
    name = f"spark-driver-{run_id}.log"
    if run.logs.is_local:
        log_file = Path(run.logs.path) / name
    else:
        log_file = Path(tempfile.mkdtemp(prefix="thresher-logs-")) / name
    if eng.log_to(log_file):
        logger.info("Spark driver log (warnings and errors of the JVM): %s", log_file)


def _curate(
    cfg: RunConfig,
    run: RunDir,
    files: list[FileEntry],
    logger: Any,
    stages: Stages = "all",
    progress: Progress | None = None,
    lock: RunLock | None = None,
    reuse_publication: bool = True,
) -> dict[str, Any]:
    timings: dict[str, float] = {}
    progress = progress or make_progress(quiet=True, logger=logger)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"

    with make_engine(cfg) as eng:
        _spark_log_to_run_dir(eng, run, run_id, logger)
        if stages == "select":
            stats = run.stored_ingest_stats()
            scored = {e.location.name for e in run.scores.list_files(recursive=False)}
            unscored = [
                s["index"] for s in stats if run.scores_shard(s["index"]).name not in scored
            ]
            if not stats or unscored:
                raise RunStateError(
                    f"{run.root}: shard(s) {unscored or 'all'} have no stored scores; "
                    "score them first (thresher score CONFIG)"
                )
            check_losses(cfg, stats)
            logger.info(
                "run %s: selecting from the stored scores of %d shard(s)", run.root, len(stats)
            )
            check_driver_limit(cfg, sum(s["ingested"] for s in stats), eng)
        else:
            stats = _ingest_score(cfg, eng, run, files, run_id, timings, progress, logger, lock)
            if stages == "score":
                _check_lock(lock)
                run.staging.delete_tree()
                return {
                    "stages": "score",
                    "run_dir": str(run.root),
                    "shards": len(stats),
                    "input": sum(s["rows_in"] for s in stats),
                    "ingested": sum(s["ingested"] for s in stats),
                    "quarantined": sum(s["quarantined"] for s in stats),
                    "seconds_per_stage": {k: round(v, 3) for k, v in timings.items()},
                }
        indices = [s["index"] for s in stats]
        key = publication_key(cfg, stats)
        unchanged = _unchanged_publication(run, key, logger) if reuse_publication else None
        if unchanged is not None:
            run.staging.delete_tree()
            return unchanged

        _check_lock(lock)
        if cfg.dedup is not None:  # keyed apart: a new dedup section (or shard) re-runs it
            with _timed(timings, "dedup"), progress.stage("dedup", shards=len(indices)) as bar:
                deduped = dedup_task(eng, cfg, indices, bar)
                bar.advance(shards=len(indices), docs=deduped["documents"])
            logger.info(
                "dedup: %d duplicate(s) in %d cluster(s)%s",
                deduped["duplicates"],
                deduped["clusters"],
                " (reused)" if deduped["reused"] else "",
            )
        else:
            clear_dedup(cfg)

        decontaminated = None
        _check_lock(lock)
        if cfg.decontaminate is not None:  # keyed by the evaluation sets' content
            with (
                _timed(timings, "decontaminate"),
                progress.stage("decontaminate", shards=len(indices)) as bar,
            ):
                decontaminated = decontaminate_task(eng, cfg, indices, bar)
            logger.info(
                "decontaminate: %d document(s) share a %d-gram with an evaluation set%s",
                decontaminated["contaminated"],
                decontaminated["ngram"],
                " (reused)" if decontaminated["reused"] else "",
            )
        else:
            clear_decontamination(cfg)

        _check_lock(lock)
        version = publish.new_version(run.root, lock.token if lock is not None else None)
        with _timed(timings, "select"), progress.stage("select") as bar:
            selection = select_task(cfg, eng, indices, version, bar)
        logger.info("selected %d of %d ingested rows", selection["kept"], selection["ingested"])
        _warn_unmet_budgets(selection["steps"], logger)

        _check_lock(lock)
        with (
            _timed(timings, "materialize"),
            progress.stage("materialize", shards=len(indices), docs=selection["kept"]) as bar,
        ):
            written = materialize_task(
                eng, run, version, indices, cfg.schema_, selection["weighted"], bar
            )

    manifest = build_manifest(
        cfg,
        cfg.engine.kind,
        stats,
        selection,
        written,
        timings,
        version.name,
        run.shards_added_by(),
        decontamination=manifest_section(decontaminated),
    )
    counts = manifest["counts"]
    if not counts["reconciles"]:
        raise AssertionError(f"counts do not reconcile: {counts}")
    write_json_atomic(manifest, version.manifest)
    publish.publish(
        run.root,
        version,
        {"rows": written, "publication_key": key},
        lock=lock,
        retention=publish.Retention(cfg.retention.versions, cfg.retention.hours),
    )
    _check_lock(lock)
    _write_root_files(run, manifest)
    run.staging.delete_tree()
    logger.info(
        "kept %d, dropped %d, quarantined %d of %d input records -> %s",
        counts["kept"],
        counts["dropped"]["total"],
        counts["quarantined"]["total"],
        counts["input"],
        version.data,
    )
    return manifest


def _ingest_score(
    cfg: RunConfig,
    eng: Engine,
    run: RunDir,
    files: list[FileEntry],
    run_id: str,
    timings: dict[str, float],
    progress: Progress,
    logger: Any,
    lock: RunLock | None = None,
) -> list[dict[str, Any]]:
    """Ingest, fit and score; return the per-shard ingest statistics in shard order."""
    _check_lock(lock)
    registry = ShardRegistry(run.shard_registry)
    shards, added = registry.assign(files, cfg.base, cfg.input.format, run_id)
    stored = ingest_index.load(run.ingest_markers)
    shards, renewed = renew_repaired(shards, registry, run, run_id, stored)
    registry.save()
    logger.info(
        "run %s: %d shard(s) (%d new), engine %s",
        run.root,
        len(shards),
        len(added),
        cfg.engine.kind,
    )
    for name in renewed:
        logger.info(
            "%s: skipped as unreadable by an earlier run and changed since; reading it again", name
        )
    with _timed(timings, "ingest"), progress.stage("ingest", shards=len(shards)) as bar:
        stats = ingest_task(eng, shards, cfg, run, bar, stored)
        skipped = [s for s in stats if s.get("unreadable")]
        for item in skipped:
            if not item.get("reused"):
                logger.warning(
                    "%s: unreadable, skipped after %d record(s) (%s)",
                    item["name"],
                    item["unreadable"]["rows_read"],
                    item["unreadable"]["error"],
                )
        if skipped:
            registry.mark_unreadable([s["name"] for s in skipped])
            registry.save()
        drifted, stats = harmonize_task(eng, run, stats)
        names = {s.index: s.name for s in shards}
        for index, columns in drifted.items():
            logger.warning(
                "%s: column(s) %s had another type than in other shards; converted (schema drift)",
                names.get(index, index),
                columns,
            )
    shard_rows = {s["index"]: s["ingested"] for s in stats}
    check_driver_limit(cfg, sum(shard_rows.values()), eng)
    reused = sum(1 for s in stats if s.get("reused"))
    logger.info(
        "ingested %d rows, quarantined %d (%d shard(s) reused, %d ingested now)",
        sum(shard_rows.values()),
        sum(s["quarantined"] for s in stats),
        reused,
        len(stats) - reused,
    )
    check_losses(cfg, stats)  # before scoring and publishing: the ingested shards stay

    _check_lock(lock)
    with _timed(timings, "fit"):
        scorers = fit_task(cfg, shard_rows)

    _check_lock(lock)
    with (
        _timed(timings, "score"),
        progress.stage("score", shards=len(shard_rows), docs=sum(shard_rows.values())) as bar,
    ):
        scored = score_task(eng, run, scorers, shard_rows, cfg.engine.batch_size, bar)
    logger.info("scored %d shard(s), %d reused", len(scored), len(shard_rows) - len(scored))
    return stats
