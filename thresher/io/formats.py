"""Input formats: which reader a file name asks for, and how its bytes are compressed.

A shard's *format* is its container: ``parquet``, ``jsonl`` (one JSON object
per line), ``arrow`` (Arrow IPC, file or stream: Feather v2 and the
``.arrow`` files of a Hugging Face ``datasets.save_to_disk`` directory),
``csv`` or ``tsv`` (with a header row). The line- and row-oriented formats
may be compressed, told by a last suffix: ``.gz``, ``.zst``/``.zstd``
(the Pile, RedPajama and DCLM shards), ``.bz2`` or ``.xz``.

A Hugging Face dataset directory (one holding ``state.json`` and
``dataset_info.json``; a ``DatasetDict`` holds one per split) is read as
its Arrow files in name order, its metadata files being no shards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from thresher.errors import InputError

if TYPE_CHECKING:
    from thresher.io.fs import FileEntry

#: Container suffix -> format.
CONTAINERS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".tsv": "tsv",
}
#: Compression suffix -> codec name.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
#: Formats read as a byte stream, which may therefore be compressed as a whole.
STREAM_FORMATS = frozenset({"jsonl", "csv", "tsv"})
FORMATS = ("parquet", "jsonl", "arrow", "csv", "tsv")
#: The metadata files of a ``datasets.save_to_disk`` directory.
HF_METADATA = frozenset({"state.json", "dataset_info.json", "dataset_dict.json"})


def split_name(name: str) -> tuple[str | None, str | None]:
    """(format, compression) told by a file name's suffixes; None where it tells nothing."""
    lowered = name.lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if lowered.endswith(suffix):
            compression, lowered = codec, lowered[: -len(suffix)]
            break
    for suffix, fmt in CONTAINERS.items():
        if lowered.endswith(suffix):
            if compression is not None and fmt not in STREAM_FORMATS:
                return None, compression  # a compressed Parquet or Arrow file is not a shard
            return fmt, compression
    return None, compression


def detect_format(name: str | os.PathLike[str], forced: str = "auto") -> str:
    """The format of a file from its name, or ``forced`` when not ``auto``."""
    if forced != "auto":
        return forced
    text = os.fspath(name)
    fmt, _ = split_name(text)
    if fmt is None:
        raise InputError(
            f"{text}: cannot tell the format from the file name; use one of "
            f"{', '.join(CONTAINERS)} (the text formats optionally ending in "
            f"{', '.join(COMPRESSIONS)}), or set input.format"
        )
    return fmt


def compression_of(name: str) -> str | None:
    """The codec a file name's last suffix names (``gzip``, ``zstd``, ``bz2``, ``xz``) or None."""
    return split_name(name)[1]


def is_shard_name(name: str) -> bool:
    """Whether a file found under an input directory is a shard (by its name alone)."""
    base = name.rsplit("/", 1)[-1]
    return split_name(base)[0] is not None and not base.startswith((".", "_"))


def shard_entries(entries: Iterable[FileEntry]) -> list[FileEntry]:
    """The shards among files listed under an input directory.

    Drops files that are no shard by name and the metadata files of Hugging
    Face dataset directories.
    """
    listed = list(entries)
    names_by_dir: dict[str, set[str]] = {}
    for entry in listed:
        parent, _, base = entry.location.uri.rpartition("/")
        names_by_dir.setdefault(parent, set()).add(base)
    hf_dirs = {
        parent
        for parent, names in names_by_dir.items()
        if {"state.json", "dataset_info.json"} <= names or "dataset_dict.json" in names
    }
    kept = []
    for entry in listed:
        parent, _, base = entry.location.uri.rpartition("/")
        if parent in hf_dirs and base in HF_METADATA:
            continue
        if is_shard_name(entry.location.uri):
            kept.append(entry)
    return kept
