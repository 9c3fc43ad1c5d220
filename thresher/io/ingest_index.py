"""The statistics of every ingested shard, in one file: a re-run reads one index, not a file per shard.

Each ingest task commits its shard by writing a marker last
(``_state/ingest/shard-NNNNN.json``: counts, fingerprint, digest, the
ingested file's schema). After the ingest stage, the driver folds every
marker into ``_state/ingest/index.parquet`` (one atomic write) and deletes
the markers it holds. A reader takes the index, then the markers written
since (a run killed after some tasks committed): a marker is newer than
the index entry of its shard. So a re-run over 200,000 unchanged inputs
reads one file and one listing, not 200,000 markers.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from thresher.io.files import read_json, read_parquet, write_parquet_atomic
from thresher.io.fs import Location

INDEX_NAME = "index.parquet"
_SCHEMA = pa.schema([("index", pa.int64()), ("stats", pa.string())])


def index_location(markers: Location) -> Location:
    return markers / INDEX_NAME


def load(markers: Location | str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Shard key -> statistics: the index, then the markers written since (newer)."""
    markers = Location.of(markers)
    found: dict[int, dict[str, Any]] = {}
    entries = {e.location.name: e.location for e in markers.list_files(recursive=False)}
    index = entries.pop(INDEX_NAME, None)
    if index is not None:
        table = read_parquet(index)
        for key, stats in zip(
            table.column("index").to_pylist(), table.column("stats").to_pylist(), strict=True
        ):
            found[int(key)] = json.loads(stats)
    for name, location in sorted(entries.items()):
        if name.startswith("shard-") and name.endswith(".json"):
            try:
                stats = read_json(location)
            except FileNotFoundError:  # folded into the index meanwhile
                continue
            found[int(stats["index"])] = stats
    return found


def save(markers: Location, stats: Iterable[dict[str, Any]]) -> None:
    """Write the index of ``stats`` (every shard of the run), then delete the markers it holds."""
    ordered = sorted(stats, key=lambda s: int(s["index"]))
    clean = [{k: v for k, v in s.items() if k != "reused"} for s in ordered]
    table = pa.table(
        {
            "index": pa.array([int(s["index"]) for s in clean], pa.int64()),
            "stats": pa.array([json.dumps(s, sort_keys=True) for s in clean], pa.string()),
        },
        schema=_SCHEMA,
    )
    write_parquet_atomic(table, index_location(markers))
    held = {int(s["index"]) for s in clean}
    for entry in markers.list_files(recursive=False):
        name = entry.location.name
        if name.startswith("shard-") and name.endswith(".json") and _key_of(name) in held:
            entry.location.delete()


def _key_of(name: str) -> int | None:
    digits = name.removeprefix("shard-").removesuffix(".json")
    return int(digits) if digits.isdigit() else None


def encode_schema(schema: pa.Schema) -> str:
    """An Arrow schema as text, for the statistics (harmonize reads it instead of a footer)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
