"""Gates between stages: checks that stop a run (or make the rest unnecessary) once ingest is known.

- :class:`LossLimit`: a run that quarantined or skipped more than
  ``input.max_quarantined_fraction`` stops before scoring, unpublished;
- :class:`DriverLimit`: a step that would gather more rows on the driver
  than ``engine.driver_max_rows`` is refused before scoring;
- :class:`UnchangedPublication`: a run whose publication key (the config,
  every input's bytes, thresher's version) equals the current version's
  publishes nothing new; its result stops the flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thresher._version import __version__
from thresher.errors import ConfigError
from thresher.io import publish
from thresher.io.files import read_json
from thresher.keys import json_digest
from thresher.stages.base import RunContext, Stage


class LossLimit(Stage):
    """Stop a run that lost more than the configured share of records or files."""

    name = "loss-limit"
    shown = False
    timed = False

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def run(self, ctx: RunContext, bar: Any) -> None:
        from thresher.preflight import check_losses

        check_losses(self.limit, ctx.result("ingest").stats, ctx.run.quarantine)


class DriverLimit(Stage):
    """Refuse, before scoring, a step that would gather more rows on the driver than allowed.

    An embedding selector without ``partitions`` runs on one machine with
    every vector of the rows that reach it; an engine that holds tables on
    the driver (the local engine) holds every row in its whole-table steps;
    otherwise no stage keeps anything per row on the driver.
    """

    name = "driver-limit"
    shown = False
    timed = False

    def __init__(self, limit: int, steps: list[tuple[Any, Any]], n_filters: int) -> None:
        self.limit = limit
        self.steps = steps
        self.n_filters = n_filters

    def run(self, ctx: RunContext, bar: Any) -> None:
        n_rows, engine, limit = ctx.result("ingest").rows, ctx.engine, self.limit
        if engine.holds_tables_on_driver and n_rows > limit:
            raise ConfigError(
                f"engine.kind: {engine.kind!r} runs the whole-table steps (duplicate ids, dedup, "
                f"selection) in the driver's memory, about 0.4 KB per row, and this corpus has "
                f"{n_rows:,} ingested rows, more than engine.driver_max_rows ({limit:,}); use "
                "engine.kind: spark, or raise engine.driver_max_rows if the driver has the memory"
            )
        for number, (step, selector) in enumerate(self.steps):
            if selector.requires_embeddings and step.partitions is None and n_rows > limit:
                where = "selector" if number == self.n_filters else f"filters[{number}]"
                raise ConfigError(
                    f"{where}: {step.name!r} gathers the vectors of every row that reaches it on "
                    f"one machine, and this corpus has {n_rows:,} ingested rows, more than "
                    f"engine.driver_max_rows ({limit:,}); add `partitions: {{clusters: N}}` to "
                    "the step to run it where the data is, or raise engine.driver_max_rows"
                )


@dataclass(frozen=True)
class Publication:
    """The publication key of this run; with ``stop``, the unchanged current version's manifest."""

    key: str
    manifest: dict[str, Any] = field(default_factory=dict)
    stop: bool = False


class UnchangedPublication(Stage):
    """What a published version is a function of: the config, every input's bytes, the code.

    Selection is deterministic, so a run whose key equals the current
    version's would publish the same rows again: it publishes nothing (a
    nightly run over an unchanged corpus costs a listing and one index
    read). ``basis`` is (the config without the run directory, since a
    moved run directory is the same run; the evaluation sets' listings).
    ``reuse`` is off under ``--fresh``, which publishes whatever it finds.
    """

    name = "unchanged"
    shown = False
    timed = False

    def __init__(self, basis: tuple[Any, Any], reuse: bool = True) -> None:
        self.basis = basis
        self.reuse = reuse

    def run(self, ctx: RunContext, bar: Any) -> Publication:
        inputs = [
            [s["index"], s["name"], s.get("fingerprint"), s.get("content"), s["ingested"]]
            for s in ctx.result("ingest").stats
        ]
        config, evaluation = self.basis
        key = json_digest([config, inputs, evaluation, __version__], length=64)
        named = publish.pointer(ctx.run.root)
        current = ctx.run.current()
        if not self.reuse or named is None or current is None:
            return Publication(key)
        if named.get("publication_key") != key or not current.manifest.is_file():
            return Publication(key)
        ctx.logger.info(
            "nothing changed since version %s (same config, inputs and thresher version): it "
            "stays published; --fresh recomputes everything",
            current.name,
        )
        ctx.run.staging.delete_tree()
        return Publication(key, {**read_json(current.manifest), "unchanged": True}, stop=True)
