"""The run directory: where every output of a run lives, and what is already done.

Layout (on any store: a local directory or a prefix of an object store)::

    RUN_DIR/
      CURRENT          the published version (a pointer, written last; see thresher.io.publish)
      data/            local stores: a link to the current version's pruned dataset
      versions/<v>/    one published version: data/ (pruned Parquet dataset), selection/,
                       dropped/ (one file per shard), steps.json, stats.json, manifest.json
      manifest.json    a copy of the current version's manifest (config, inputs, versions,
                       counts), written after CURRENT moves
      README.md        dataset card of the current version (written after CURRENT moves)
      report.html      the run report (self-contained HTML, plots embedded; ditto)
      scores/          one file per shard: id, position, label, one column per scorer
      ingested/        validated canonical copy of each input shard (internal)
      quarantine/      rows that could not be used, with a reason (one file per shard)
      models/          artefacts fitted by scorers, reused on resume
      dedup/           summary.json, naming the files of the current duplicate clusters
      decontaminate/   summary.json, naming the matched rows of evaluation-set n-grams per shard
      eval/            results.parquet and summary.csv, when eval ran
      _state/          the shard registry, completion markers, the keys that guard resume, the lock
      _staging/        scratch space of the running stage (deleted by the next run)

Every file is written whole (one atomic write); what spans several files
is made visible by a file written last that names them (an ingest marker,
the dedup summary, the version pointer), and readers trust only what such
a file names. The root manifest, card and report follow ``CURRENT``: a run
killed after moving the pointer and before rewriting them leaves them
describing the previous version until the next run's start-up rewrites them
from the current version's ``manifest.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from thresher.errors import RunStateError
from thresher.io.files import read_json, read_json_or, write_json_atomic
from thresher.io.fs import Location
from thresher.io.publish import DATA_LINK, POINTER, VERSIONS, Version, current_version
from thresher.redact import redact_config, redact_uris

_STATE_FILE = "run.json"
#: What ``--fresh`` keeps: the published dataset and what describes it, until the next publication.
PUBLISHED = frozenset({POINTER, VERSIONS, DATA_LINK, "manifest.json", "README.md", "report.html"})


def shard_file(index: int) -> str:
    """The file name of shard ``index``'s outputs (``shard-00012.parquet``)."""
    return f"shard-{index:05d}.parquet"


@dataclass(frozen=True, init=False)
class RunDir:
    """Locations of one run directory (given as a Location, a path, a URI or another RunDir)."""

    root: Location

    def __init__(self, root: Location | str | os.PathLike[str] | RunDir) -> None:
        if isinstance(root, RunDir):
            root = root.root
        if not isinstance(root, Location):
            root = Location.of(root)
        object.__setattr__(self, "root", root)

    # -- published outputs -----------------------------------------------------------
    @property
    def pointer(self) -> Location:
        return self.root / POINTER

    @property
    def versions(self) -> Location:
        return self.root / VERSIONS

    def current(self) -> Version | None:
        """The published version (None before the first publication)."""
        return current_version(self.root)

    def published(self) -> Version:
        """The published version; RunStateError when nothing was published yet."""
        version = self.current()
        if version is None:
            raise RunStateError(f"{self.root} holds no published selection yet; run it first")
        return version

    @property
    def data(self) -> Location:
        """The current pruned dataset (through the pointer; the local ``data`` link agrees)."""
        return self.published().data

    @property
    def manifest(self) -> Location:
        return self.root / "manifest.json"

    @property
    def card(self) -> Location:
        return self.root / "README.md"

    @property
    def report(self) -> Location:
        return self.root / "report.html"

    # -- stage outputs ----------------------------------------------------------------
    @property
    def scores(self) -> Location:
        return self.root / "scores"

    @property
    def ingested(self) -> Location:
        return self.root / "ingested"

    @property
    def quarantine(self) -> Location:
        return self.root / "quarantine"

    @property
    def models(self) -> Location:
        return self.root / "models"

    @property
    def dedup(self) -> Location:
        return self.root / "dedup"

    @property
    def eval(self) -> Location:
        return self.root / "eval"

    @property
    def state(self) -> Location:
        return self.root / "_state"

    @property
    def staging(self) -> Location:
        return self.root / "_staging"

    @property
    def logs(self) -> Location:
        return self.state / "logs"

    @property
    def recorded_config(self) -> Location:
        """The configuration of the latest run here (and its base directory)."""
        return self.state / "config.json"

    @property
    def shard_registry(self) -> Location:
        return self.state / "shards.json"

    @property
    def lock(self) -> Location:
        return self.state / "lock"

    # -- per-shard outputs -------------------------------------------------------------
    def ingested_shard(self, index: int) -> Location:
        return self.ingested / shard_file(index)

    def quarantine_shard(self, index: int) -> Location:
        return self.quarantine / shard_file(index)

    @property
    def ingest_markers(self) -> Location:
        """The ingest markers and their index (see thresher.io.ingest_index)."""
        return self.state / "ingest"

    def ingest_marker(self, index: int) -> Location:
        return self.ingest_markers / f"shard-{index:05d}.json"

    def scores_shard(self, index: int) -> Location:
        return self.scores / shard_file(index)

    # -- lifecycle ----------------------------------------------------------------------
    def is_run_dir(self) -> bool:
        return (self.state / _STATE_FILE).is_file()

    def _foreign_content(self) -> bool:
        """True when the location holds files and is not a thresher run directory."""
        if self.is_run_dir():
            return False
        return any(child.name != self.state.name for child in self.root.children())

    def check_usable(self) -> None:
        """Refuse a non-empty directory that is not a thresher run directory (never touch it)."""
        if self._foreign_content():
            raise RunStateError(
                f"{self.root} is not empty and is not a thresher run directory; "
                "choose another run_dir"
            )

    def prepare(self, keys: dict[str, str], *, fresh: bool = False) -> None:
        """Create the run directory, or check that its results belong to this run.

        Call it while holding :attr:`lock`. ``keys`` identify what earlier
        results depend on (the schema, the scorers). A run directory made
        with other keys is refused unless ``fresh`` asks to start over,
        which deletes the earlier intermediate results first (ingested
        copies, scores, models, dedup, state) but not what readers use: the
        published versions, ``CURRENT``, the ``data`` link and the root
        manifest, card and report stay as they are until the new run
        publishes over them (see :data:`PUBLISHED`).
        """
        self.check_usable()
        if fresh:
            for child in self.root.children():
                if child.name == self.state.name:
                    for item in child.children():
                        if item.name not in (self.lock.name, f".{self.lock.name}.guard"):
                            item.delete_tree()
                elif child.name not in PUBLISHED:
                    child.delete_tree()
        if self.is_run_dir():
            recorded = read_json(self.state / _STATE_FILE).get("keys", {})
            changed = sorted(k for k in keys if k in recorded and recorded[k] != keys[k])
            if changed:
                raise RunStateError(
                    f"{self.root} holds results made with a different {', '.join(changed)}; "
                    "rerun with --fresh to start over, or choose another run_dir"
                )
        self.root.mkdir()
        write_json_atomic({"keys": keys}, self.state / _STATE_FILE)

    def record_config(self, config: dict[str, Any], base_dir: str) -> None:
        """Record the configuration of the run now using this directory (see recorded_config).

        Secrets are redacted first (:func:`thresher.redact.redact_config`).
        """
        record = {"config": redact_config(config), "base_dir": redact_uris(base_dir)}
        write_json_atomic(record, self.recorded_config)

    def stored_ingest_stats(self) -> list[dict[str, Any]]:
        """Statistics of every shard ingested so far (the index and newer markers), by index."""
        from thresher.io import ingest_index

        found = ingest_index.load(self.ingest_markers)
        return [found[key] for key in sorted(found)]

    def shard_names(self) -> dict[int, str]:
        """Shard key -> name, from the registry."""
        stored = read_json_or(self.shard_registry, {"shards": []})
        return {int(e["index"]): str(e["name"]) for e in stored["shards"]}

    def shards_added_by(self) -> dict[str, str]:
        """Shard name -> the run that first ingested it, from the registry."""
        stored = read_json_or(self.shard_registry, {"shards": []})
        return {str(e["name"]): str(e.get("added_by", "")) for e in stored["shards"]}
