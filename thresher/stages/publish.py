"""Publish stage: the manifest, the pointer, the root files and the report of the new version.

The version's own ``manifest.json`` is written first, then ``CURRENT``
moves to the version (:func:`thresher.io.publish.publish`, which checks the
lock first: a run that lost its lock publishes nothing), then the root
copies (manifest, card, report) follow. Counts that do not reconcile
(``input = kept + dropped + quarantined``) stop the run before anything is
published: that is a bug, never bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thresher.config import RunConfig
from thresher.io import publish
from thresher.io.files import write_json_atomic
from thresher.io.manifest import build_manifest
from thresher.reporting.card import write_card
from thresher.run_dir import RunDir
from thresher.stages.base import RunContext, Stage
from thresher.stages.decontaminate import manifest_section
from thresher.stages.export import publish_tables


@dataclass(frozen=True)
class Published:
    """The manifest of the version this run published, and where its data is."""

    manifest: dict[str, Any]
    data: str


def write_root_files(run: RunDir, manifest: dict[str, Any]) -> None:
    """The root copies of the current version's manifest, its card and the run report."""
    from thresher.reporting.html import write_report

    write_json_atomic(manifest, run.manifest)
    write_card(run.root, manifest)
    write_report(run.root)


class PublishStage(Stage):
    """Write the manifest, move ``CURRENT``, then the root manifest, card and report."""

    name = "publish"
    shown = False
    timed = False

    def __init__(self, config: RunConfig) -> None:
        self.config = config  # recorded whole (redacted) in the manifest

    def run(self, ctx: RunContext, bar: Any) -> Published:
        run = ctx.run
        selected = ctx.result("select")
        materialized = ctx.result("materialize")
        written = materialized.rows
        contamination = ctx.results.get("decontaminate")
        exported = ctx.results.get("export")
        manifest = build_manifest(
            self.config.recorded_dict(),
            self.config.config_hash(),
            self.config.seed,
            ctx.engine.kind,
            list(ctx.result("ingest").stats),
            selected.summary,
            written,
            ctx.timings,
            selected.version.name,
            run.shards_added_by(),
            decontamination=manifest_section(contamination.summary if contamination else None),
            redactions=materialized.redactions,
            output=exported.summary if exported is not None else None,
        )
        counts = manifest["counts"]
        if not counts["reconciles"]:
            raise AssertionError(f"counts do not reconcile: {counts}")
        write_json_atomic(manifest, selected.version.manifest)
        retention = self.config.retention
        publish.publish(
            run.root,
            selected.version,
            {"rows": written, "publication_key": ctx.result("unchanged").key},
            lock=ctx.lock,
            retention=publish.Retention(retention.versions, retention.hours),
        )
        ctx.check_lock()
        if exported is not None:
            publish_tables(run.root, selected.version, exported.summary)
        write_root_files(run, manifest)
        run.staging.delete_tree()
        return Published(manifest, str(selected.version.data))

    def describe(self, result: Published) -> str:
        counts = result.manifest["counts"]
        return (
            f"kept {counts['kept']}, dropped {counts['dropped']['total']}, quarantined "
            f"{counts['quarantined']['total']} of {counts['input']} input records -> {result.data}"
        )
