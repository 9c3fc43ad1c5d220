"""Ingest stage: validate one input shard into the run directory (idempotent).

A shard is done when its marker (``_state/ingest/shard-NNNNN.json``) exists:
it is written last, after the ingested rows and the quarantine, and holds
the input's listing fingerprint (size and version or modification time),
the digest of its bytes, the row counts and the ingested file's schema.
After the stage the driver folds the markers into one index
(:mod:`thresher.io.ingest_index`). A re-run compares the index with the
listing on the driver (:func:`pending_shards`), so an unchanged shard costs
no task and no file read, and an input that changed under an existing run
is refused with its name.

A damaged file skipped under ``input.on_unreadable: skip`` is done too (with
the rows read before the damage); when it changes later (a repaired
upload), :func:`renew_repaired` gives it a new key, so that the next run
ingests and scores it like a new shard instead of refusing it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from thresher.config import InputConfig, SchemaConfig
from thresher.errors import RunStateError
from thresher.io import ingest_index
from thresher.io.files import read_json_or, write_json_atomic
from thresher.io.fs import FileEntry, Location
from thresher.io.ingest import empty_canonical, ingest_stream
from thresher.io.readers import ReadLimits
from thresher.io.shards import Shard, ShardRegistry
from thresher.io.sink import ParquetSink
from thresher.run_dir import RunDir
from thresher.stages.base import RunContext, ShardStage, Stage


class IngestShard:
    """The per-shard ingest task (picklable).

    It lives here, not in the flow's module, because Prefect may load that
    module from its file under another name, which Spark's workers could
    not import to unpickle it.
    """

    def __init__(
        self,
        schema: SchemaConfig,
        run: RunDir,
        on_unreadable: str = "fail",
        limits: ReadLimits | None = None,
    ) -> None:
        self.schema = schema
        self.run = run
        self.on_unreadable = on_unreadable
        self.limits = limits or ReadLimits()

    def __call__(self, shard: Shard) -> dict[str, Any]:
        return ingest_to_run(shard, self.schema, self.run, self.on_unreadable, self.limits)


def ingest_to_run(
    shard: Shard,
    schema: SchemaConfig,
    run: RunDir,
    on_unreadable: str = "fail",
    limits: ReadLimits | None = None,
) -> dict[str, Any]:
    """Ingest ``shard`` into ``run`` unless it was ingested already; return its statistics.

    Rows and quarantined rows are written batch by batch (a task holds a
    batch, never the file) and each file appears whole. The statistics
    (also the completion marker, written last): input rows, ingested rows,
    quarantined rows by reason, the listing fingerprint, the content digest
    and, for a damaged file that was skipped, ``unreadable`` (its error and
    the rows read before the damage).
    """
    marker = run.ingest_marker(shard.index)
    stored = read_json_or(marker, None)
    if stored is not None:
        check_unchanged(shard, stored, run)
        return {**stored, "reused": True}
    quarantine_path = run.quarantine_shard(shard.index)
    limits = limits or ReadLimits()
    rows = ParquetSink(
        run.ingested_shard(shard.index),
        empty_schema=empty_canonical(schema).schema,
        row_group_bytes=limits.batch_bytes,
        null_as_string=True,  # Spark cannot read Parquet's null type
    )
    with rows, ParquetSink(quarantine_path, row_group_bytes=limits.batch_bytes) as quarantine:
        result = ingest_stream(
            shard, schema, rows, quarantine, on_unreadable=on_unreadable, limits=limits
        )
    if result.quarantined == 0:
        quarantine_path.delete()
    stats: dict[str, Any] = {
        "index": shard.index,
        "name": shard.name,
        "format": result.format,
        "fingerprint": shard.fingerprint,
        "content": result.content,
        "rows_in": result.rows_in,
        "ingested": result.ingested,
        "quarantined": result.quarantined,
        "quarantined_by_reason": result.quarantined_by_reason,
        # What harmonize needs, so that a re-run reads no footer.
        "schema": ingest_index.encode_schema(rows.schema or empty_canonical(schema).schema),
        "valued": sorted(rows.valued),
    }
    if result.compression is not None:
        stats["compression"] = result.compression
    if result.unreadable is not None:
        stats["unreadable"] = result.unreadable
    if result.rows_in != result.ingested + result.quarantined:  # a bug, never bad input
        raise AssertionError(f"ingest lost rows of {shard.name}: {stats}")
    write_json_atomic(stats, marker)
    return {**stats, "reused": False}


def check_unchanged(shard: Shard, stored: dict[str, Any], run: RunDir) -> None:
    """Refuse an input whose listing differs from what its marker recorded."""
    if stored.get("name") != shard.name or (
        shard.fingerprint is not None and stored.get("fingerprint") != shard.fingerprint
    ):
        raise RunStateError(
            f"input {shard.name} changed since it was ingested into {run.root}; restore it, "
            "or rerun with --fresh to start over"
        )


def renew_repaired(
    shards: list[Shard],
    registry: ShardRegistry,
    run: RunDir,
    run_id: str,
    stored: dict[int, dict[str, Any]],
) -> tuple[list[Shard], list[str]]:
    """Give a new key to each shard skipped as unreadable whose file changed since.

    Its old rows, quarantine, scores and statistics are deleted (from
    ``stored`` and the run's index too); under the new key it is pending
    like a new shard. Returns the shards and the renewed names.
    """
    out, renewed = [], []
    for shard in shards:
        if registry.was_unreadable(shard.name):
            old = stored.get(shard.index)
            if old is not None and old.get("fingerprint") != shard.fingerprint:
                for location in (
                    run.ingest_marker(shard.index),
                    run.ingested_shard(shard.index),
                    run.quarantine_shard(shard.index),
                    run.scores_shard(shard.index),
                ):
                    location.delete()
                del stored[shard.index]
                shard = replace(shard, index=registry.renew(shard.name, run_id))
                renewed.append(shard.name)
        out.append(shard)
    if renewed:
        ingest_index.save(run.ingest_markers, stored.values())
    return out, renewed


def pending_shards(
    shards: list[Shard], run: RunDir, stored: dict[int, dict[str, Any]] | None = None
) -> tuple[list[Shard], list[dict[str, Any]]]:
    """The shards still to ingest, and the stored statistics of the others (checked unchanged).

    Runs on the driver from the index alone (``stored``, read when not
    given): no task, no byte of input read, one file for any number of shards.
    """
    if stored is None:
        stored = ingest_index.load(run.ingest_markers)
    pending, done = [], []
    for shard in shards:
        found = stored.get(shard.index)
        if found is None:
            pending.append(shard)
        else:
            check_unchanged(shard, found, run)
            done.append({**found, "reused": True})
    return pending, done


# -- the stage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingested:
    """Every shard's ingest statistics (its marker's content), in shard order."""

    stats: tuple[dict[str, Any], ...]

    @property
    def indices(self) -> list[int]:
        return [int(s["index"]) for s in self.stats]

    @property
    def shard_rows(self) -> dict[int, int]:
        """Shard key -> ingested rows."""
        return {int(s["index"]): int(s["ingested"]) for s in self.stats}

    @property
    def rows(self) -> int:
        return sum(int(s["ingested"]) for s in self.stats)

    @property
    def quarantined(self) -> int:
        return sum(int(s["quarantined"]) for s in self.stats)

    @property
    def reused(self) -> int:
        return sum(1 for s in self.stats if s.get("reused"))


class IngestStage(ShardStage):
    """Read and validate every input shard into the run directory (see module docstring)."""

    name = "ingest"
    retries = 1

    def __init__(
        self, schema: SchemaConfig, inputs: InputConfig, files: list[FileEntry], base: Location
    ) -> None:
        self.schema = schema
        self.inputs = inputs
        self.files = files
        self.base = base
        self._stored: dict[int, dict[str, Any]] = {}
        self._registry: ShardRegistry | None = None

    def totals(self, ctx: RunContext) -> dict[str, int]:
        return {"shards": len(self.files)}

    def items(self, ctx: RunContext) -> list[Shard]:
        """The shards of the listed inputs, keyed by the run's registry (new names added)."""
        run = ctx.run
        registry = self._registry = ShardRegistry(run.shard_registry)
        shards, added = registry.assign(self.files, self.base, self.inputs.format, ctx.run_id)
        self._stored = ingest_index.load(run.ingest_markers)
        shards, renewed = renew_repaired(shards, registry, run, ctx.run_id, self._stored)
        registry.save()
        ctx.logger.info(
            "run %s: %d shard(s) (%d new), engine %s",
            run.root,
            len(shards),
            len(added),
            ctx.engine.kind,
        )
        for name in renewed:
            ctx.logger.info(
                "%s: skipped as unreadable by an earlier run and changed since; reading it again",
                name,
            )
        return shards

    def split(self, ctx: RunContext, items: list[Any]) -> tuple[list[Any], list[Any]]:
        return pending_shards(items, ctx.run, self._stored)

    def task(self, ctx: RunContext) -> IngestShard:
        return IngestShard(
            self.schema, ctx.run, self.inputs.on_unreadable, self.inputs.read_limits()
        )

    def documents(self, result: Any) -> int:
        return int(result["rows_in"])

    def collect(self, ctx: RunContext, reused: list[Any], fresh: list[Any]) -> Ingested:
        stats = sorted(reused + fresh, key=lambda s: s["index"])
        skipped = [s for s in stats if s.get("unreadable")]
        for item in skipped:
            if not item.get("reused"):
                ctx.logger.warning(
                    "%s: unreadable, skipped after %d record(s) (%s)",
                    item["name"],
                    item["unreadable"]["rows_read"],
                    item["unreadable"]["error"],
                )
        if skipped and self._registry is not None:
            self._registry.mark_unreadable([s["name"] for s in skipped])
            self._registry.save()
        return Ingested(tuple(stats))

    def describe(self, result: Ingested) -> str:
        return (
            f"ingested {result.rows} rows, quarantined {result.quarantined} "
            f"({result.reused} shard(s) reused, {len(result.stats) - result.reused} ingested now)"
        )


class StoredIngest(Stage):
    """The ingest statistics of a run scored earlier (``thresher select``): nothing is read.

    It stands in for the ingest stage, under its name, for the stages that follow.
    """

    name = "ingest"
    shown = False
    timed = False

    def run(self, ctx: RunContext, bar: Any) -> Ingested:
        run = ctx.run
        stats = run.stored_ingest_stats()
        scored = {e.location.name for e in run.scores.list_files(recursive=False)}
        unscored = [s["index"] for s in stats if run.scores_shard(s["index"]).name not in scored]
        if not stats or unscored:
            raise RunStateError(
                f"{run.root}: shard(s) {unscored or 'all'} have no stored scores; "
                "score them first (thresher score CONFIG)"
            )
        ctx.logger.info(
            "run %s: selecting from the stored scores of %d shard(s)", run.root, len(stats)
        )
        return Ingested(tuple(stats))
