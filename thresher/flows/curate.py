"""The ``curate`` flow: ingest, fit, score, select, materialise, report.

Tasks pass paths and small statistics, never data: every stage reads its
input from the run directory and writes its output there. With the local
engine, ingest, scoring and materialisation are tasks mapped over shards
(each runs in the engine's process pool); with Spark, each stage is one
task that runs Spark jobs. Scoring tasks retry; a retried shard starts
from scratch because a shard's scores are committed atomically.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from thresher.config import RunConfig, SchemaConfig, load_config
from thresher.engines import Engine, make_engine
from thresher.engines.local import LocalEngine
from thresher.io.files import publish_directory, write_json_atomic, write_text_atomic
from thresher.io.lock import RunLock
from thresher.io.manifest import build_manifest
from thresher.io.shards import Shard, make_shards
from thresher.report.card import render_card
from thresher.run_dir import RunDir
from thresher.stages.fit import fit_scorers
from thresher.stages.score import BoundScorer
from thresher.stages.select import select_to_run

EngineKind = Literal["local", "spark"]


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


@task(name="select", cache_policy=NO_CACHE)
def select_task(config: RunConfig) -> dict[str, Any]:
    return select_to_run(config)


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


# -- flow ----------------------------------------------------------------------------


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


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
    config: RunConfig | str, fresh: bool = False, engine: EngineKind | None = None
) -> dict[str, Any]:
    """Run a curation job from a config (a path or a RunConfig); return its manifest."""
    logger = get_run_logger()
    cfg = resolve_config(config, engine)
    files = cfg.input_files()  # fails before any work if an input pattern matches nothing
    run = RunDir(cfg.run_path)
    run.check_usable()
    with RunLock(run.lock):
        run.prepare(run_keys(cfg), fresh=fresh)
        return _curate(cfg, run, files, logger)


def _curate(cfg: RunConfig, run: RunDir, files: list[Path], logger: Any) -> dict[str, Any]:
    shards = make_shards(files, Path(cfg.base_dir), cfg.input.format)
    root = str(run.root)
    timings: dict[str, float] = {}
    logger.info("run %s: %d shard(s), engine %s", root, len(shards), cfg.engine.kind)

    with make_engine(cfg) as eng:
        with _timed(timings, "ingest"):
            if isinstance(eng, LocalEngine):
                stats = [
                    f.result()
                    for f in ingest_shard_task.map(
                        unmapped(eng), shards, unmapped(cfg.schema_), unmapped(root)
                    )
                ]
            else:
                stats = ingest_task(eng, shards, cfg.schema_, root)
        shard_rows = {s["index"]: s["ingested"] for s in stats}
        logger.info(
            "ingested %d rows, quarantined %d",
            sum(shard_rows.values()),
            sum(s["quarantined"] for s in stats),
        )

        with _timed(timings, "fit"):
            scorers = fit_task(cfg, shard_rows)

        indices = [s.index for s in shards]
        with _timed(timings, "score"):
            if isinstance(eng, LocalEngine):
                for future in score_shard_task.map(
                    unmapped(eng),
                    indices,
                    unmapped(scorers),
                    unmapped(root),
                    unmapped(cfg.engine.batch_size),
                ):
                    future.result()
            else:
                score_task(eng, indices, scorers, root, cfg.engine.batch_size)

        with _timed(timings, "select"):
            selection = select_task(cfg)
        logger.info("selected %d of %d ingested rows", selection["kept"], selection["ingested"])

        with _timed(timings, "materialize"):
            staging = run.staging / f"data-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            if isinstance(eng, LocalEngine):
                written = sum(
                    f.result()
                    for f in materialize_shard_task.map(
                        unmapped(eng),
                        indices,
                        unmapped(cfg.schema_),
                        unmapped(selection["weighted"]),
                        unmapped(root),
                        unmapped(str(staging)),
                    )
                )
                (staging / "_SUCCESS").touch()
            else:
                written = materialize_task(
                    eng, indices, cfg.schema_, selection["weighted"], root, str(staging)
                )
            publish_directory(staging, run.data)
        shutil.rmtree(run.staging, ignore_errors=True)

    manifest = build_manifest(cfg, cfg.engine.kind, stats, selection, written, timings)
    write_json_atomic(manifest, run.manifest)
    write_text_atomic(render_card(manifest), run.card)
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
