"""The run directory: where every output of a run lives, and what is already done.

Layout::

    RUN_DIR/
      data/            pruned dataset (Parquet, _SUCCESS), published atomically
      dropped/         id, reason, detail of every ingested row not kept
      quarantine/      rows that could not be used, with a reason (one file per shard)
      scores/          one directory per shard: id, position, label, one column per scorer
      selection/       id, keep, weight, reason, detail, group for every ingested row
      models/          artefacts fitted by scorers, reused on resume
      ingested/        validated canonical copy of each input shard (internal)
      manifest.json    config and hash, inputs, versions, counts that reconcile
      README.md        dataset card
      report.html      the run report (self-contained HTML, plots embedded)
      dedup/           duplicate clusters (clusters.parquet), when dedup ran
      eval/            results.parquet and summary.csv, when eval ran
      _state/          completion markers and the keys that guard resume
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thresher.errors import RunStateError
from thresher.io.files import read_json, write_json_atomic

_STATE_FILE = "run.json"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dropped(self) -> Path:
        return self.root / "dropped"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def selection(self) -> Path:
        return self.root / "selection"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def ingested(self) -> Path:
        return self.root / "ingested"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def dedup(self) -> Path:
        return self.root / "dedup"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def state(self) -> Path:
        return self.root / "_state"

    @property
    def recorded_config(self) -> Path:
        """The configuration of the latest run here (and its base directory)."""
        return self.state / "config.json"

    @property
    def staging(self) -> Path:
        return self.root / "_staging"

    # -- per-shard paths ---------------------------------------------------------
    def ingested_shard(self, index: int) -> Path:
        return self.ingested / f"shard-{index:05d}.parquet"

    def quarantine_shard(self, index: int) -> Path:
        return self.quarantine / f"shard-{index:05d}.parquet"

    def ingest_marker(self, index: int) -> Path:
        return self.state / "ingest" / f"shard-{index:05d}.json"

    def scores_shard(self, index: int) -> Path:
        return self.scores / f"shard-{index:05d}"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    # -- lifecycle ---------------------------------------------------------------
    def is_run_dir(self) -> bool:
        return (self.state / _STATE_FILE).is_file()

    def _foreign_content(self) -> bool:
        """True when the directory holds files and is not a thresher run directory."""
        if not self.root.exists() or self.is_run_dir():
            return False
        return any(p.name != self.state.name for p in self.root.iterdir())

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
        results depend on (e.g. the input and schema, the scorers). A run
        directory made with other keys is refused unless ``fresh`` asks to
        start over, which deletes its contents first (but not the lock).
        """
        self.check_usable()
        if fresh and self.root.exists():
            for entry in self.root.iterdir():
                if entry == self.state:
                    for item in entry.iterdir():
                        if item != self.lock:
                            _remove(item)
                else:
                    _remove(entry)
        if self.is_run_dir():
            recorded = read_json(self.state / _STATE_FILE).get("keys", {})
            changed = sorted(k for k in keys if k in recorded and recorded[k] != keys[k])
            if changed:
                raise RunStateError(
                    f"{self.root} holds results made with a different {', '.join(changed)}; "
                    "rerun with --fresh to start over, or choose another run_dir"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"keys": keys}, self.state / _STATE_FILE)

    def read_state(self) -> dict[str, Any]:
        return read_json(self.state / _STATE_FILE)

    def record_config(self, config: dict[str, Any], base_dir: str) -> None:
        """Record the configuration of the run now using this directory (see recorded_config)."""
        write_json_atomic({"config": config, "base_dir": base_dir}, self.recorded_config)

    def stored_ingest_stats(self) -> list[dict[str, Any]]:
        """Statistics of every shard ingested so far (their completion markers), by index."""
        markers = sorted((self.state / "ingest").glob("shard-*.json"))
        return sorted((read_json(m) for m in markers), key=lambda s: int(s["index"]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
