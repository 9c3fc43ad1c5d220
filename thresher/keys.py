"""The keys thresher derives: row keys, input-order keys, digests, seeded row priorities.

- :func:`row_key`: one int64 naming a stored row, ``shard << 40 | row``
  (rows per shard < 2**40); what the stored tables join on.
- :func:`order_key`: the same with the shard's *rank* among the shard names
  in place of its key, so that input order is the order of names, then rows,
  whatever order shards were added in (:mod:`thresher.io.shards`).
- :func:`json_digest`: SHA-256 of canonical JSON, the key of every cached result.
- :func:`id_priority`: a seeded 64-bit hash of each document id, the random
  priority that random sampling ranks by. It depends on the id and the seed
  only, so the same document gets the same priority on every engine, in
  every partition, and in every run over a growing corpus.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

#: Shift of the shard in a row key (rows per shard < 2**40).
SHARD_SHIFT = 40


def row_key(shard: NDArray[np.integer[Any]] | int, row: NDArray[np.integer[Any]] | int) -> Any:
    """A stored row as one int64: ``shard * 2**40 + row``."""
    return (np.asarray(shard, dtype=np.int64) << SHARD_SHIFT) + np.asarray(row, dtype=np.int64)


def order_key(
    shard: NDArray[np.integer[Any]], row: NDArray[np.integer[Any]], ranks: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Input order as one int64: ``rank[shard] * 2**40 + row`` (see module docstring)."""
    shard = np.asarray(shard, dtype=np.int64)
    if shard.size and (shard.max() >= ranks.size or np.any(ranks[shard] < 0)):
        raise ValueError("a row names a shard the run does not know")
    return (ranks[shard] << SHARD_SHIFT) + np.asarray(row, dtype=np.int64)


def json_digest(value: Any, length: int = 16) -> str:
    """Hex SHA-256 of ``value`` as canonical JSON (sorted keys), cut to ``length`` characters."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def seed_material(*parts: int) -> int:
    """A 64-bit seed from integers (a run's seed, a step number...), by SplitMix64."""
    state = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for part in parts:
            state = _splitmix(state ^ np.uint64(part & 0xFFFFFFFFFFFFFFFF))
    return int(state)


def id_priority(ids: pa.Array | pa.ChunkedArray, seed: int) -> NDArray[np.uint64]:
    """A seeded 64-bit priority per id (FNV-1a over the UTF-8 bytes, then SplitMix64).

    Equal ids get equal priorities; a null id hashes as the empty string.
    """
    array = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    array = array.cast(pa.large_string())
    if len(array) == 0:
        return np.zeros(0, dtype=np.uint64)
    if array.null_count:
        array = pa.compute.fill_null(array, "")
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    data = (
        np.frombuffer(array.buffers()[2], dtype=np.uint8)
        if array.buffers()[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    return _hash_strings(offsets, data, np.uint64(seed & 0xFFFFFFFFFFFFFFFF))


@nb.njit(cache=True)
def _splitmix(value: np.uint64) -> np.uint64:
    value = (value + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


@nb.njit(cache=True)
def _hash_strings(
    offsets: NDArray[np.int64], data: NDArray[np.uint8], seed: np.uint64
) -> NDArray[np.uint64]:
    n = offsets.size - 1
    out = np.empty(n, dtype=np.uint64)
    start = _splitmix(seed) ^ np.uint64(0xCBF29CE484222325)
    prime = np.uint64(0x100000001B3)
    for i in range(n):
        h = start
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * prime
        out[i] = _splitmix(h)
    return out
