"""Before and around a flow's stages: the config as this run takes it, the lock, a dead run's leftovers.

- :func:`resolve_config`: a config path or object, with the engine and
  run-directory overrides of this run applied;
- :func:`lock_wait`: how long a retried flow run waits for the lock of the
  attempt that crashed;
- :func:`clean_up_after_a_dead_run`: under the lock, a killed run's scratch
  files and unpublished versions, and root files that lag behind ``CURRENT``.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from thresher.config import RunConfig, load_config, parse_config
from thresher.engines import Engine
from thresher.engines.registry import check_engine
from thresher.io import publish
from thresher.io.files import read_json
from thresher.io.fs import Location
from thresher.io.lock import HEARTBEAT_SECONDS, STALE_SECONDS, RunLock
from thresher.run_dir import RunDir
from thresher.stages.export import lagging_tables, publish_tables
from thresher.stages.publish import write_root_files


def resolve_config(
    config: RunConfig | str, engine: str | None = None, run_dir: str | None = None
) -> RunConfig:
    """Load a config path (or take a config) and apply the engine and run directory overrides.

    A relative ``run_dir`` is taken from the current directory, not the
    config's: it is a parameter of this run, not part of the config file.
    """
    resolved = config if isinstance(config, RunConfig) else load_config(config)
    if run_dir is not None:
        data = {**resolved.config_dict(), "run_dir": Location.of(run_dir).uri}
        resolved = parse_config(data, base_dir=resolved.base_dir)
    if engine is not None and check_engine(engine) != resolved.engine.kind:
        resolved = resolved.model_copy(
            update={"engine": resolved.engine.model_copy(update={"kind": engine})}
        )
    return resolved


def check_storage(config: RunConfig) -> None:
    """Fail before any work when the run directory's store cannot be reached or used."""
    config.run_path.store.check(config.run_path)


def lock_wait(logger: Any) -> float:
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


def clean_up_after_a_dead_run(run: RunDir, logger: Any, lock: RunLock) -> None:
    """Under the lock: drop a killed run's scratch files and unpublished versions; fix the root.

    A version no pointer names is deleted when the run whose lock was taken
    over wrote it and is proven dead, or when nothing was written into it
    for the stale limit: a younger one may be a live run's (see
    :func:`thresher.io.publish.retire_versions`). Root files that describe
    another version than ``CURRENT`` (a run killed after moving the pointer)
    are rewritten from the current version's manifest, and Delta tables of
    the hand-off that lag it are published to.
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
        write_root_files(run, read_json(current.manifest))
    republish_lagging_tables(run, logger)


def republish_lagging_tables(run: RunDir, logger: Any) -> None:
    """Publish the current version to the Delta tables a killed run left behind it."""
    current = publish.current_version(run.root)
    if current is None or not current.manifest.is_file():
        return
    output = read_json(current.manifest).get("output")
    if not output or "delta" not in output.get("formats", []):
        return
    lagging = lagging_tables(run.root, current, output)
    if lagging:
        logger.info("publishing version %s to the Delta tables of %s", current.name, lagging)
        publish_tables(run.root, current, {**output, "splits": {n: None for n in lagging}})


def engine_log_to_run_dir(engine: Engine, run: RunDir, run_id: str, logger: Any) -> None:
    """In a deployment's flow run, write the engine's driver log to a file the run's log names.

    Nobody watches a deployment's stdout (it is the worker's), so an engine
    with a driver log of its own (Spark's JVM: :meth:`Engine.log_to`) writes
    it to ``RUN_DIR/logs/`` (a local temporary directory, this user's alone,
    when the run directory is on an object store). Runs started by hand show
    the warnings that matter on the console; Spark's console progress bars
    are off in both: thresher's progress reports the stages.
    """
    from prefect.runtime import deployment

    if deployment.id is None:
        return
    name = f"{engine.kind}-driver-{run_id}.log"
    if run.logs.is_local:
        log_file = Path(run.logs.path) / name
    else:  # made only for an engine that writes a log
        log_file = Path(tempfile.gettempdir()) / f"thresher-logs-{uuid.uuid4().hex}" / name
    if engine.log_to(log_file):
        if not run.logs.is_local:
            log_file.parent.mkdir(mode=0o700)
        logger.info(
            "%s driver log (the engine's warnings and errors): %s", engine.kind.title(), log_file
        )
