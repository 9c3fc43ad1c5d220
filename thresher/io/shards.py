"""Input shards: discovery order, formats and content fingerprints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import xxhash

from thresher.errors import InputError

_FORMATS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson.gz": "jsonl",
    ".json.gz": "jsonl",
}


@dataclass(frozen=True)
class Shard:
    """One input file. ``index`` is its position in the sorted input list."""

    index: int
    path: str
    name: str
    format: str

    @property
    def compressed(self) -> bool:
        return self.path.endswith(".gz")


def detect_format(path: Path, forced: str = "auto") -> str:
    """Return ``parquet`` or ``jsonl`` from the file name (or the forced format)."""
    if forced != "auto":
        return forced
    for suffix, fmt in sorted(_FORMATS.items(), key=lambda kv: -len(kv[0])):
        if path.name.endswith(suffix):
            return fmt
    raise InputError(
        f"{path}: cannot tell the format from the file name; "
        "use .parquet, .jsonl or .jsonl.gz, or set input.format"
    )


def make_shards(files: list[Path], base_dir: Path, forced_format: str = "auto") -> list[Shard]:
    """Number the input files in sorted order; names are relative to ``base_dir`` when inside it."""
    shards = []
    for index, path in enumerate(sorted(files)):
        try:
            name = str(path.relative_to(base_dir))
        except ValueError:
            name = str(path)
        shards.append(Shard(index, str(path), name, detect_format(path, forced_format)))
    return shards


def fingerprint(path: str | os.PathLike[str], chunk_size: int = 1 << 22) -> dict[str, object]:
    """Size and xxh3-64 digest of a file's bytes: detects any change to an input."""
    digest = xxhash.xxh3_64()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "xxh3_64": digest.hexdigest()}
