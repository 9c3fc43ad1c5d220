"""Input formats: the registry of readers, which one a file name asks for, how its bytes are compressed.

A shard's *format* is its container, one row of :data:`FORMATS`:
``parquet``, ``jsonl`` (one JSON object per line), ``arrow`` (Arrow IPC,
file or stream: Feather v2 and the ``.arrow`` files of a Hugging Face
``datasets.save_to_disk`` directory), ``csv`` or ``tsv`` (with a header
row). A format read as a byte stream (``stream``: the line- and
row-oriented ones) may be compressed, told by a last suffix: ``.gz``,
``.zst``/``.zstd`` (the Pile, RedPajama and DCLM shards), ``.bz2`` or ``.xz``.
The name is a hint: ingest reads the content first (:func:`thresher.io.readers.sniff`:
Parquet and Arrow by their magic bytes, a compression by its own).

Everything else reads this table: ingest (a format's reader), config
validation (``input.format``: ``auto`` or a name here), the shard listing
of input directories and the evaluation sets. A new format is one reader
function and one row: a line in :data:`FORMATS` or a :func:`register_format`
call. The reader's contract is :class:`thresher.io.ingest.FormatReader`.

A Hugging Face dataset directory (one holding ``state.json`` and
``dataset_info.json``; a ``DatasetDict`` holds one per split) is read as
its Arrow files in name order, its metadata files being no shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from thresher.errors import InputError

if TYPE_CHECKING:
    from thresher.io.fs import FileEntry, Location


@dataclass(frozen=True)
class InputFormat:
    """One input format: its name, file suffixes, reader, and how its bytes are stored.

    Attributes
    ----------
    name : str
        What ``input.format`` and the shard listings call it.
    suffixes : tuple of str
        File name endings that tell it (lower case, with the dot).
    reader : str or callable
        ``reader(source, schema, log) -> Iterator[pa.Table]``
        (:class:`thresher.io.ingest.FormatReader`), or where it is as
        ``"module:function"`` (imported when a shard of the format is read).
    stream : bool
        Read as one byte stream (``Source.stream``), so it may be compressed
        as a whole (``.gz``, ``.zst``...). A random-access format (Parquet,
        Arrow) is not: a compressed one is no shard.
    columns : str, callable or None
        ``columns(location) -> list[str] | None``: the file's column names,
        read cheaply, for the check of role columns before any work
        (:mod:`thresher.io.columns`); None leaves that check to ingest.
    """

    name: str
    suffixes: tuple[str, ...]
    reader: str | Callable[..., Any]
    stream: bool = True
    columns: str | Callable[[Location], list[str] | None] | None = None

    def read_function(self) -> Callable[..., Any]:
        """The reader itself (imported now when named by a string)."""
        return _resolve(self.reader)

    def columns_function(self) -> Callable[[Location], list[str] | None] | None:
        """The column probe itself, or None."""
        return None if self.columns is None else _resolve(self.columns)


#: Every format thresher reads, by name (in the order file suffixes are listed in messages).
FORMATS: dict[str, InputFormat] = {
    entry.name: entry
    for entry in (
        InputFormat(
            "parquet",
            (".parquet",),
            "thresher.io.ingest:parquet_records",
            stream=False,
            columns="thresher.io.columns:parquet_columns",
        ),
        InputFormat(
            "jsonl",
            (".jsonl", ".ndjson", ".json"),
            "thresher.io.ingest:jsonl_records",
            columns="thresher.io.columns:jsonl_columns",
        ),
        InputFormat(
            "arrow",
            (".arrow", ".feather", ".ipc"),
            "thresher.io.ingest:arrow_records",
            stream=False,
            columns="thresher.io.columns:arrow_columns",
        ),
        InputFormat(
            "csv",
            (".csv",),
            "thresher.io.ingest:csv_records",
            columns="thresher.io.columns:csv_columns",
        ),
        InputFormat(
            "tsv",
            (".tsv",),
            "thresher.io.ingest:tsv_records",
            columns="thresher.io.columns:tsv_columns",
        ),
    )
}
_BUILT_IN = frozenset(FORMATS)
#: Compression suffix -> codec name.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
#: The metadata files of a ``datasets.save_to_disk`` directory.
HF_METADATA = frozenset({"state.json", "dataset_info.json", "dataset_dict.json"})


def register_format(
    name: str,
    suffixes: Iterable[str],
    reader: str | Callable[..., Any],
    *,
    stream: bool = True,
    columns: str | Callable[[Location], list[str] | None] | None = None,
) -> InputFormat:
    """Add an input format (see :class:`InputFormat`); a name or suffix is registered once.

    A format registered by a call exists in this process; the engines carry
    it to the processes that run per-shard work (:func:`carried`).

    Examples
    --------
    >>> register_format("lines", [".txt"], "my_package.lines:read_lines")
    """
    entry = InputFormat(name, tuple(s.lower() for s in suffixes), reader, stream, columns)
    _add(entry)
    return entry


def unregister_format(name: str) -> None:
    """Remove a format added by :func:`register_format` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"input format {name!r} is built in")
    FORMATS.pop(name, None)


def _add(entry: InputFormat) -> None:
    if entry.name == "auto" or entry.name in FORMATS:
        raise ValueError(f"input format {entry.name!r} is registered already")
    taken = {suffix: fmt.name for fmt in FORMATS.values() for suffix in fmt.suffixes}
    for suffix in entry.suffixes:
        if not suffix.startswith(".") or suffix in COMPRESSIONS:
            raise ValueError(f"{suffix!r} is no container suffix (a dot, then the format's name)")
        if suffix in taken:
            raise ValueError(f"suffix {suffix!r} already tells format {taken[suffix]!r}")
    FORMATS[entry.name] = entry


def format_names() -> list[str]:
    """The registered format names, in registration order."""
    return list(FORMATS)


def check_format_name(name: str) -> str:
    """``name`` when it is ``auto`` or a registered format, else ValueError naming them."""
    if name != "auto" and name not in FORMATS:
        raise ValueError(
            f"unknown input format {name!r}; available: auto, {', '.join(format_names())}"
        )
    return name


def input_format(name: str) -> InputFormat:
    """The registry row of format ``name``; InputError naming those available when unknown."""
    entry = FORMATS.get(name)
    if entry is None:
        raise InputError(f"unsupported format {name!r}; available: {', '.join(format_names())}")
    return entry


def carried(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn``, made to register this process's added formats first where it runs.

    The engines wrap per-shard work with it, so that a format registered by
    a call in the driver is known in worker processes. Without added formats
    it is ``fn`` itself.
    """
    added = tuple(entry for name, entry in FORMATS.items() if name not in _BUILT_IN)
    return _WithFormats(fn, added) if added else fn


class _WithFormats:
    """A per-shard function that registers formats (the driver's) before it runs."""

    def __init__(self, fn: Callable[[Any], Any], formats: tuple[InputFormat, ...]) -> None:
        self.fn = fn
        self.formats = formats

    def __call__(self, item: Any) -> Any:
        for entry in self.formats:  # checked where it was registered
            FORMATS[entry.name] = entry
        return self.fn(item)


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    function: Callable[..., Any] = getattr(import_module(module), attribute)
    return function


def _containers() -> list[tuple[str, InputFormat]]:
    """(suffix, format) of every registered format, longest suffix first."""
    pairs = [(suffix, fmt) for fmt in FORMATS.values() for suffix in fmt.suffixes]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def split_name(name: str) -> tuple[str | None, str | None]:
    """(format, compression) told by a file name's suffixes; None where it tells nothing."""
    lowered = name.lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if lowered.endswith(suffix):
            compression, lowered = codec, lowered[: -len(suffix)]
            break
    for suffix, fmt in _containers():
        if lowered.endswith(suffix):
            if compression is not None and not fmt.stream:
                return None, compression  # a compressed Parquet or Arrow file is not a shard
            return fmt.name, compression
    return None, compression


def detect_format(name: str | os.PathLike[str], forced: str = "auto") -> str:
    """The format of a file from its name, or ``forced`` when not ``auto``."""
    if forced != "auto":
        return forced
    text = os.fspath(name)
    fmt, _ = split_name(text)
    if fmt is None:
        suffixes = [suffix for entry in FORMATS.values() for suffix in entry.suffixes]
        raise InputError(
            f"{text}: cannot tell the format from the file name; use one of "
            f"{', '.join(suffixes)} (the text formats optionally ending in "
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
