"""Input shards: identity by name, formats, fingerprints, and the run's shard registry.

A shard is one input file. Its identity is its **name** (the path relative
to the config's directory when inside it, else its URI), never its position
in the input list, so a corpus may grow between runs: a new file anywhere in
the order is ingested and scored alone, and every earlier shard keeps its
results. Inside a run a shard is known by a small integer key (``index``,
the ``thresher_shard`` column), given the first time the name is seen and
never changed (the registry, ``_state/shards.json``). *Input order*, which
decides ties (the first occurrence of a repeated id, top-k ties...), is the
order of names, then rows: :func:`order_ranks`.

Whether a file changed is decided from the listing alone (size and ETag or
generation on object stores, size and modification time locally): a nightly
run over a large corpus reads no byte of an unchanged input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.errors import RunStateError
from thresher.io.files import read_json_or, write_json_atomic
from thresher.io.formats import compression_of, detect_format
from thresher.io.fs import FileEntry, Location, StorageOptions
from thresher.io.schema import ROW, SHARD
from thresher.keys import order_key


@dataclass(frozen=True)
class Shard:
    """One input file.

    Attributes
    ----------
    index : int
        The shard's key in this run (stable across runs; see module docstring).
    path : str
        Its URI (or local path).
    name : str
        Its identity: relative to the config's directory when inside it.
    format : str
        One of :data:`thresher.io.formats.FORMATS`.
    fingerprint : dict or None
        Size and version (or modification time) from the listing.
    """

    index: int
    path: str
    name: str
    format: str
    fingerprint: dict[str, Any] | None = None
    options: StorageOptions = field(default_factory=StorageOptions, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):  # a local path given as a Path
            object.__setattr__(self, "path", Location.of(self.path).uri)

    @property
    def location(self) -> Location:
        return Location.of(self.path, self.options)

    @property
    def compression(self) -> str | None:
        """The codec of a compressed text shard (``gzip``, ``zstd``, ``bz2``, ``xz``) or None."""
        return compression_of(self.path)


def shard_name(location: Location, base: Location) -> str:
    """A shard's identity: its path relative to ``base`` when inside it, else its URI."""
    try:
        return location.relative_to(base)
    except ValueError:
        return location.uri


def numbered_shards(
    files: Sequence[FileEntry | Location | str | os.PathLike[str]],
    base: Location | str | os.PathLike[str],
    forced_format: str = "auto",
) -> list[Shard]:
    """Shards keyed by their position in name order, for readers without a run's registry.

    (A run keys its shards through :class:`ShardRegistry`; eval splits and
    tools that read a fixed list of files use this.)
    """
    root = Location.of(base)
    entries = [
        f
        if isinstance(f, FileEntry)
        else (Location.of(f).info() or FileEntry(Location.of(f), 0, None))
        for f in files
    ]
    named = sorted(entries, key=lambda e: shard_name(e.location, root))
    return [
        Shard(
            index,
            entry.location.uri,
            shard_name(entry.location, root),
            detect_format(entry.location.name, forced_format),
            entry.fingerprint(),
            entry.location.options,
        )
        for index, entry in enumerate(named)
    ]


class ShardRegistry:
    """The run's shard keys by name (``_state/shards.json``): assigned once, never reused."""

    def __init__(self, location: Location) -> None:
        self.location = location
        stored = read_json_or(location, {"shards": []})
        self.entries: dict[str, dict[str, Any]] = {e["name"]: e for e in stored["shards"]}

    @property
    def next_index(self) -> int:
        return 1 + max((int(e["index"]) for e in self.entries.values()), default=-1)

    def assign(
        self, entries: list[FileEntry], base: Location, forced_format: str, run_id: str
    ) -> tuple[list[Shard], list[str]]:
        """Shards for the listed inputs (new names get new keys); also the names added now.

        Raises RunStateError naming an input an earlier run ingested that
        the listing no longer has (removed or renamed).
        """
        named = {shard_name(e.location, base): e for e in entries}
        missing = sorted(set(self.entries) - set(named))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise RunStateError(
                f"input {missing[0]}{more} was ingested by an earlier run into "
                f"{self.location.parent.parent} and is missing now (removed or renamed); "
                "restore it, or rerun with --fresh to start over without it"
            )
        added = []
        shards = []
        for name in sorted(named):
            entry = named[name]
            if name not in self.entries:
                self.entries[name] = {
                    "index": self.next_index,
                    "name": name,
                    "added_by": run_id,
                    "added": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                added.append(name)
            shards.append(
                Shard(
                    int(self.entries[name]["index"]),
                    entry.location.uri,
                    name,
                    detect_format(name, forced_format),
                    entry.fingerprint(),
                    entry.location.options,
                )
            )
        return shards, added

    def renew(self, name: str, run_id: str) -> int:
        """A new key for ``name`` (a repaired file that an earlier run skipped as unreadable)."""
        entry = self.entries[name]
        entry.update(index=self.next_index, renewed_by=run_id)
        entry.pop("unreadable", None)
        return int(entry["index"])

    def mark_unreadable(self, names: Sequence[str]) -> None:
        """Remember that these shards were skipped as damaged (see :meth:`renew`)."""
        for name in names:
            self.entries[name]["unreadable"] = True

    def was_unreadable(self, name: str) -> bool:
        return bool(self.entries.get(name, {}).get("unreadable"))

    def record(self, shards: Sequence[Shard], run_id: str = "") -> None:
        """Add shards whose keys were given elsewhere (:func:`numbered_shards`)."""
        for shard in shards:
            self.entries.setdefault(
                shard.name, {"index": shard.index, "name": shard.name, "added_by": run_id}
            )

    def save(self) -> None:
        ordered = sorted(self.entries.values(), key=lambda e: int(e["index"]))
        write_json_atomic({"shards": ordered}, self.location)

    def names(self) -> dict[int, str]:
        return {int(e["index"]): str(e["name"]) for e in self.entries.values()}

    def added_by(self) -> dict[str, str]:
        return {name: str(e.get("added_by", "")) for name, e in self.entries.items()}


def order_ranks(names: dict[int, str]) -> NDArray[np.int64]:
    """``rank[index]``: the position of each shard key among the shard names in sorted order.

    Input order is (rank of the shard, row). Keys not in ``names`` get -1.
    """
    size = 1 + max(names, default=-1)
    ranks = np.full(size, -1, dtype=np.int64)
    for rank, index in enumerate(sorted(names, key=lambda i: names[i])):
        ranks[index] = rank
    return ranks


def input_order(table: pa.Table, ranks: NDArray[np.int64]) -> NDArray[np.int64]:
    """The input-order key of each row of ``table`` (its shard and row columns, the shards' ranks)."""
    return np.asarray(
        order_key(
            table.column(SHARD).to_numpy(zero_copy_only=False),
            table.column(ROW).to_numpy(zero_copy_only=False),
            ranks,
        ),
        dtype=np.int64,
    )
