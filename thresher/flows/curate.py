"""The ``curate`` flow: a list of stages run by one loop (:mod:`thresher.stages.base`).

ingest, harmonise, the loss and driver limits, fit, score, the unchanged
check, dedup, decontaminate, select, materialise, publish. One code path
for every engine: each stage asks the engine for per-shard work
(:meth:`Engine.map_shards`) or whole-table work (frames). Stages pass
small typed results, never data: every stage reads its input from the run
directory and writes its output there. A stage's task retries; a retried
stage redoes only what is not committed, because every per-shard output is
committed by one atomic write.

Resume and caching: the run directory is the cache. A shard's ingest is
done when the ingest index or its marker (``_state/ingest/``, holding the
input's listing fingerprint) says so, its scoring when
``scores/shard-NNNNN.parquet`` exists, and the run-level keys in
``_state/run.json`` (the schema; the scorers and seed) refuse to mix
results of another configuration. Prefect's task caching would add a
second record of the same facts that can disagree with the files (a
deleted score shard would still be a cache hit), and needs pickled results
stored outside the run directory; so tasks use ``NO_CACHE`` and a re-run,
in any process, on any engine, skips exactly what the run directory holds.
The driver decides what is done from one index and one listing, so
unchanged shards cost no task at all, and a run with nothing changed
publishes nothing new.

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

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger

from thresher.config import RunConfig
from thresher.engines import make_engine
from thresher.errors import RunStateError, ThresherError
from thresher.flows.lifecycle import (
    check_storage,
    clean_up_after_a_dead_run,
    engine_log_to_run_dir,
    lock_wait,
    resolve_config,
)
from thresher.io.files import check_contained
from thresher.io.fs import FileEntry
from thresher.io.listing import check_input_apart
from thresher.io.lock import RunLock
from thresher.logs import redact_logs
from thresher.plan import Plan, run_keys
from thresher.preflight import require_input_columns
from thresher.progress import make_progress
from thresher.redact import redact_known, remember_secrets
from thresher.stages.base import RunContext, Stage, run_stages
from thresher.stages.decide import SelectionSpec
from thresher.stages.decontaminate import DecontaminateStage, Decontamination, eval_set_files
from thresher.stages.dedup import DedupStage, dedup_basis
from thresher.stages.export import ExportStage
from thresher.stages.fit import FitStage, build_scorers
from thresher.stages.gates import DriverLimit, LossLimit, UnchangedPublication
from thresher.stages.harmonize import HarmonizeStage
from thresher.stages.ingest import IngestStage, StoredIngest
from thresher.stages.materialize import MaterializeStage
from thresher.stages.publish import PublishStage
from thresher.stages.score import ScoreStage
from thresher.stages.select import SelectStage

__all__ = ["curate", "resolve_config", "run_keys", "stages_for"]

#: Which stages a flow run does: everything, up to scoring, or from selection on.
Stages = Literal["all", "score", "select"]


def stages_for(
    plan: Plan, mode: Stages = "all", files: list[FileEntry] | None = None, fresh: bool = False
) -> list[Stage]:
    """The curate flow's stages for ``mode``, each built from the slice of the plan it uses."""
    config = plan.config
    listed = eval_set_files(config) if config.decontaminate is not None else None
    selecting: list[Stage] = [
        UnchangedPublication(
            ({k: v for k, v in config.config_dict().items() if k != "run_dir"}, _listing(listed)),
            reuse=not fresh,
        ),
        DedupStage(plan.dedup, dedup_basis(config)),
        DecontaminateStage(
            Decontamination(config.decontaminate, listed, config.base, config.engine.batch_size)
            if config.decontaminate is not None and listed is not None
            else None
        ),
        SelectStage(
            SelectionSpec(
                plan.steps,
                config.seed,
                plan.dedup is not None,
                bool(listed),
                config.schema_.label,
            )
        ),
        MaterializeStage(config.schema_, config.materialize),
        ExportStage(config),
        PublishStage(config),
    ]
    limits: list[Stage] = [
        LossLimit(config.input.max_quarantined_fraction),
        DriverLimit(config.engine.driver_max_rows, list(plan.steps), len(config.filters)),
    ]
    if mode == "select":
        return [StoredIngest(), *limits, *selecting]
    scoring: list[Stage] = [
        IngestStage(config.schema_, config.input, files or [], config.base),
        HarmonizeStage(),
        *limits,
        FitStage(build_scorers(config), config.seed),
        ScoreStage(config.engine.batch_size),
    ]
    return scoring if mode == "score" else [*scoring, *selecting]


def _listing(listed: dict[str, list[FileEntry]] | None) -> Any:
    """The evaluation sets' listings, as what a publication depends on."""
    if listed is None:
        return None
    return {
        name: [[e.location.uri, e.fingerprint()] for e in entries]
        for name, entries in listed.items()
    }


@flow(name="curate", log_prints=True)
def curate(
    config: RunConfig | str,
    fresh: bool = False,
    engine: str | None = None,
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
    engine: str | None,
    stages: Stages,
    quiet: bool,
    run_dir: str | None,
) -> dict[str, Any]:
    """The flow's body: checks before any work, then the stages under the run directory's lock."""
    logger = get_run_logger()
    plan = Plan(resolve_config(config, engine, run_dir))
    cfg, run = plan.config, plan.run
    remember_secrets(cfg.config_dict())
    check_storage(cfg)
    if stages == "select" and (fresh or not run.is_run_dir()):
        raise RunStateError(
            f"{run.root} holds no scored run to select from"
            if not fresh
            else "selection reuses the stored scores; it cannot start --fresh"
        )
    files = [] if stages == "select" else cfg.input_files()  # no match: refused before any work
    check_input_apart(cfg.run_path, cfg.input.paths, files, cfg.base)
    for warning in require_input_columns(cfg, files):  # refuses a schema column no input has
        logger.warning("%s", warning)
    run.check_usable()
    check_contained(run.root)
    plan_stages = stages_for(plan, stages, files, fresh)  # evaluation sets listed: refused early
    with RunLock(run.lock, wait_seconds=lock_wait(logger)) as lock:
        if lock.taken_over is not None:
            logger.warning(
                "took over the lock of a dead run (pid %s on %s)",
                lock.taken_over.get("pid"),
                lock.taken_over.get("host"),
            )
        run.prepare(plan.keys, fresh=fresh)
        clean_up_after_a_dead_run(run, logger, lock)
        run.record_config(cfg.config_dict(), cfg.base_dir)
        return _run(plan, plan_stages, stages, make_progress(quiet=quiet, logger=logger), lock)


def _run(plan: Plan, stages: list[Stage], mode: Stages, progress: Any, lock: RunLock) -> Any:
    """Run the stages with the plan's engine; the manifest (or, for ``score``, a summary)."""
    logger = get_run_logger()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    with make_engine(plan.config) as engine:
        engine_log_to_run_dir(engine, plan.run, run_id, logger)
        ctx = RunContext(plan.run, engine, progress, logger, run_id, lock)
        run_stages(stages, ctx)
    if "publish" in ctx.results:
        return ctx.results["publish"].manifest
    if mode == "score":
        ctx.check_lock()
        plan.run.staging.delete_tree()
        ingested = ctx.result("ingest")
        return {
            "stages": "score",
            "run_dir": str(plan.run.root),
            "shards": len(ingested.stats),
            "input": sum(s["rows_in"] for s in ingested.stats),
            "ingested": ingested.rows,
            "quarantined": ingested.quarantined,
            "seconds_per_stage": {k: round(v, 3) for k, v in ctx.timings.items()},
        }
    return ctx.result("unchanged").manifest  # nothing changed: the current version's manifest
