"""The training hand-off: the kept rows shuffled, split, cut into files, in a trainer's formats.

A pruned dataset's ``data/`` keeps one part per input shard, in input
order: what an audit reads. A trainer wants something else: rows in a
random order that is the same however often the job runs, files of a
known size, a held-out validation split, and a format its data loader
streams. This module computes that order and writes the files; the
export stage (:mod:`thresher.stages.export`) runs it on the engine.

- **Order.** Each row copy gets a 64-bit key: a seeded hash of its id
  (:func:`thresher.keys.id_priority`), salted with the copy's number when
  the selector repeats the row (``repeat``), so every copy has its own
  place. The order depends on the ids and the seed alone: the same on every
  engine, core count, batch size and re-run.
- **Split.** A document is in the validation split when another seeded
  hash of its id falls below ``validation x 2**64``: all its copies go to
  the same split, and the split of a document never changes when the
  corpus grows.
- **Files.** A split's files are contiguous ranges of the order: the
  driver counts the split's keys in 65,536 buckets of their top bits and
  cuts the buckets into runs of as equal row counts as can be, so each
  file is within one bucket's rows of its share, and reading the files in
  name order reads the split in key order. The number of files comes from
  the split's rows (``file_rows``) or its Arrow bytes (``file_size``).

One task writes one file in every format (:class:`WriteFiles`), holding
that file's rows; the driver then writes what spans files (an MDS
``index.json`` per split) and records the counts in the manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher import faults
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.io.fs import Location
from thresher.io.sink import ParquetSink
from thresher.keys import id_priority, seed_material

#: The row copy's place in the order: its key, an int64 whose order is the uint64 key's.
KEY = "_thresher_key"
#: 0 for the train split, 1 for validation.
SPLIT = "_thresher_split"
#: The file of its split the row goes to.
FILE = "_thresher_file"
SPLITS = ("train", "validation")
FORMATS = ("parquet", "megatron", "mds")
#: Default file size: Arrow bytes of rows per file.
DEFAULT_FILE_BYTES = 256 << 20

_SHUFFLE_SALT = 0x73687566  # "shuf"
_VALIDATION_SALT = 0x76616C69  # "vali"
_SIGN = np.uint64(1 << 63)
_INTERNAL = (KEY, SPLIT, FILE)
_EOD_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")


def order_keys(ids: pa.Array | pa.ChunkedArray, seed: int, copy: int = 0) -> NDArray[np.uint64]:
    """The 64-bit place of copy ``copy`` of each id in the shuffled order."""
    return id_priority(ids, seed_material(seed, _SHUFFLE_SALT, copy))


def in_validation(ids: pa.Array | pa.ChunkedArray, seed: int, fraction: float) -> NDArray[np.bool_]:
    """Whether each id's document is held out for validation (about ``fraction`` of them)."""
    if fraction <= 0.0:
        return np.zeros(len(ids), dtype=bool)
    bound = np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))
    return id_priority(ids, seed_material(seed, _VALIDATION_SALT)) < bound


#: Buckets of the key's top bits that file boundaries are drawn between.
BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS


def bucket_of(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Each key's bucket: its top :data:`BUCKET_BITS` bits (buckets are ranges of the order)."""
    return (keys >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)


def bucket_files(histogram: NDArray[np.int64], files: int) -> NDArray[np.int64]:
    """The file of each bucket: ``files`` runs of buckets holding as equal row counts as can be.

    File ``i`` ends at the bucket whose running count is nearest to
    ``(i + 1) x rows / files``, so a file's size is off its share by at most
    one bucket's rows (``rows / 65,536`` on average). Files left empty (a
    split with fewer rows than files) are dropped and the rest renumbered.
    """
    if not 1 <= files <= BUCKETS:
        raise ValueError(f"a split has 1 to {BUCKETS} files, not {files}")
    counts = np.cumsum(histogram)
    rows = int(counts[-1]) if counts.size else 0
    targets = np.floor(np.arange(1, files) * rows / files + 0.5)
    after = np.searchsorted(counts, targets, side="left")  # first bucket reaching the target
    before = np.maximum(after - 1, 0)
    nearer = np.abs(counts[before] - targets) <= np.abs(
        counts[np.minimum(after, BUCKETS - 1)] - targets
    )
    ends = np.where(nearer & (after > 0), before, after)
    assigned = np.searchsorted(ends, np.arange(histogram.size), side="left")
    sizes = np.bincount(assigned, weights=histogram, minlength=files)
    renumber = np.cumsum(sizes > 0) - 1
    return renumber[assigned].astype(np.int64)


def signed(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Keys as int64 ordered as the uint64 keys (engines without unsigned types sort them)."""
    return (keys ^ _SIGN).view(np.int64)


def unsigned(keys: NDArray[np.int64]) -> NDArray[np.uint64]:
    """The inverse of :func:`signed`."""
    return np.asarray(keys, dtype=np.int64).view(np.uint64) ^ _SIGN


def file_count(rows: int, nbytes: int, file_rows: int | None, file_bytes: int | None) -> int:
    """How many files a split of ``rows`` rows and ``nbytes`` Arrow bytes is cut into."""
    if rows == 0:
        return 0
    if file_rows is not None:
        return max(1, min(BUCKETS, math.ceil(rows / file_rows)))
    wanted = math.ceil(nbytes / (file_bytes or DEFAULT_FILE_BYTES))
    return max(1, min(rows, BUCKETS, wanted))


class KeyRows:
    """Each kept row as its copies, with their key and split (a picklable ``map_batches`` step).

    ``table`` has the published dataset's columns; the ``repeat`` column,
    when there, becomes that many copies and is dropped.
    """

    def __init__(self, id_column: str, seed: int, validation: float) -> None:
        self.id_column = id_column
        self.seed = seed
        self.validation = validation

    def schema(self, data: pa.Schema) -> pa.Schema:
        """The keyed rows' schema for a dataset of schema ``data``."""
        fields = [f for f in data if f.name != S.REPEAT]
        return pa.schema([*fields, pa.field(KEY, pa.int64()), pa.field(SPLIT, pa.int64())])

    def __call__(self, table: pa.Table) -> pa.Table:
        copies = np.zeros(table.num_rows, dtype=np.int64)
        if S.REPEAT in table.column_names:
            counts = np.asarray(table.column(S.REPEAT).to_numpy(zero_copy_only=False), np.int64)
            starts = np.cumsum(counts) - counts
            rows = np.repeat(np.arange(table.num_rows), counts)
            copies = np.arange(rows.size) - np.repeat(starts, counts)
            table = table.drop_columns([S.REPEAT]).take(pa.array(rows))
        ids = table.column(self.id_column)
        keys = np.empty(table.num_rows, dtype=np.uint64)
        for copy in np.unique(copies).tolist():
            at = np.flatnonzero(copies == copy)
            keys[at] = order_keys(ids.take(pa.array(at)), self.seed, copy)
        split = in_validation(ids, self.seed, self.validation).astype(np.int64)
        return table.append_column(KEY, pa.array(signed(keys))).append_column(
            SPLIT, pa.array(split)
        )


@dataclass
class SplitSizes:
    """Rows, Arrow bytes and the key histogram of one split (summed over chunks)."""

    rows: int
    nbytes: int
    histogram: NDArray[np.int64]

    def files(self, file_rows: int | None, file_bytes: int | None) -> NDArray[np.int64]:
        """Each bucket's file, for the file count the size settings ask for."""
        return bucket_files(
            self.histogram, file_count(self.rows, self.nbytes, file_rows, file_bytes)
        )


def split_sizes(table: pa.Table) -> dict[int, SplitSizes]:
    """The sizes of each split in ``table`` (an ``aggregate`` partial)."""
    split = np.asarray(table.column(SPLIT).to_numpy(zero_copy_only=False))
    buckets = bucket_of(unsigned(table.column(KEY).to_numpy(zero_copy_only=False)))
    sizes = {}
    for value in np.unique(split).tolist():
        at = split == value
        histogram = np.bincount(buckets[at], minlength=BUCKETS).astype(np.int64)
        sizes[int(value)] = SplitSizes(
            int(at.sum()), int(table.filter(pa.array(at)).nbytes), histogram
        )
    return sizes


def add_sizes(parts: list[dict[int, SplitSizes]]) -> dict[int, SplitSizes]:
    """The sum of :func:`split_sizes` results (an ``aggregate`` combine)."""
    total: dict[int, SplitSizes] = {}
    for part in parts:
        for split, size in part.items():
            before = total.get(split)
            total[split] = (
                size
                if before is None
                else SplitSizes(
                    before.rows + size.rows,
                    before.nbytes + size.nbytes,
                    before.histogram + size.histogram,
                )
            )
    return total


class AssignFiles:
    """Each keyed row's file: the file of its key's bucket in its split (``map_batches``)."""

    def __init__(self, files: dict[int, NDArray[np.int64]]) -> None:
        self.files = files

    def __call__(self, table: pa.Table) -> pa.Table:
        split = np.asarray(table.column(SPLIT).to_numpy(zero_copy_only=False))
        buckets = bucket_of(unsigned(table.column(KEY).to_numpy(zero_copy_only=False)))
        out = np.zeros(table.num_rows, dtype=np.int64)
        for value, files in self.files.items():
            at = split == value
            if at.any():
                out[at] = files[buckets[at]]
        return table.append_column(FILE, pa.array(out))


# -- tokenizers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentTokenizer:
    """The tokenizer the token formats are written with: its JSON travels with the tasks.

    ``kind`` is ``hf`` (a Hugging Face ``tokenizer.json``, special tokens
    not added) or ``thresher`` (thresher's byte-level BPE); ``eod`` is the
    end-of-document token id written after every document. The file's
    text is carried (a few MB at most) so that executors need no access to
    the driver's files.
    """

    text: str
    kind: str
    eod: int
    vocab_size: int

    @classmethod
    def read(cls, location: Location, eod_token: str | None = None) -> DocumentTokenizer:
        """The tokenizer in the file at ``location`` (ConfigError when it is neither kind)."""
        try:
            text = location.read_text()
            head = json.loads(text)
        except (OSError, ValueError) as error:
            raise ConfigError(f"output: cannot read the tokenizer {location} ({error})") from None
        if isinstance(head, dict) and str(head.get("format", "")).startswith("thresher-bpe"):
            from thresher.models.tokenizer import DOCUMENT

            if eod_token is not None:
                raise ConfigError(
                    "output.eod_token: thresher's tokenizer ends documents with its own "
                    "document token; leave eod_token out"
                )
            return cls(text, "thresher", DOCUMENT, int(_load(text, "thresher").vocab_size))
        tokenizer = _load(text, "hf")
        names = [eod_token] if eod_token is not None else list(_EOD_NAMES)
        for name in names:
            token = tokenizer.token_to_id(name)
            if token is not None:
                return cls(text, "hf", int(token), int(tokenizer.get_vocab_size()))
        raise ConfigError(
            f"output.eod_token: the tokenizer {location} has no token "
            + (repr(eod_token) if eod_token else f"among {list(_EOD_NAMES)}; set eod_token")
        )

    def documents(self, texts: Sequence[str | None]) -> list[NDArray[np.int64]]:
        """Each text's token ids followed by the end-of-document token (None: the token alone)."""
        tokenizer = _load(self.text, self.kind)
        values = [text or "" for text in texts]
        if self.kind == "hf":
            encoded = [e.ids for e in tokenizer.encode_batch_fast(values, add_special_tokens=False)]
        else:
            encoded = [tokenizer.encode(text) for text in values]
        return [np.asarray([*ids, self.eod], dtype=np.int64) for ids in encoded]


@lru_cache(maxsize=2)
def _load(text: str, kind: str) -> Any:
    """The tokenizer of JSON ``text``, built once per process."""
    if kind == "thresher":
        from thresher.models.tokenizer import BPETokenizer

        return BPETokenizer.from_dict(json.loads(text))
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(
            "output: a Hugging Face tokenizer needs the `tokenizers` package "
            "(pip install 'thresher[hf]')"
        ) from None
    try:
        return Tokenizer.from_str(text)
    except Exception as error:  # the Rust loader raises plain Exceptions
        raise ConfigError(f"output: not a Hugging Face tokenizer.json ({error})") from None


# -- writing ------------------------------------------------------------------------------


def part_name(file: int) -> str:
    return f"part-{file:05d}"


#: One written file, as the writing task reports it.
FILE_SCHEMA = pa.schema(
    [
        pa.field(SPLIT, pa.int64()),
        pa.field(FILE, pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("tokens", pa.int64()),
        pa.field("parquet_bytes", pa.int64()),
        pa.field("megatron_bytes", pa.int64()),
        pa.field("mds_bytes", pa.int64()),
        pa.field("mds_shards", pa.string()),
    ]
)


@dataclass(frozen=True)
class WriteFiles:
    """Write each (split, file) group of rows it is given, in key order, in every format.

    A picklable ``map_groups`` step: it returns one :data:`FILE_SCHEMA` row
    per file written. ``root`` is the version's directory; a file lands in
    ``<root>/<split>/<format>/``. Each file is published whole, so a
    retried task rewrites the same bytes under the same names.
    """

    root: Location
    formats: tuple[str, ...]
    id_column: str
    text_column: str | None
    tokenizer: DocumentTokenizer | None
    mds_encodings: dict[str, str] | None

    def directory(self, split: int, fmt: str) -> Location:
        return self.root / SPLITS[split] / fmt

    def __call__(self, table: pa.Table) -> pa.Table:
        table = table.sort_by([(SPLIT, "ascending"), (FILE, "ascending"), (KEY, "ascending")])
        split = np.asarray(table.column(SPLIT).to_numpy(zero_copy_only=False))
        file = np.asarray(table.column(FILE).to_numpy(zero_copy_only=False))
        reports = []
        start = 0
        while start < table.num_rows:
            end = start + 1
            while end < table.num_rows and split[end] == split[start] and file[end] == file[start]:
                end += 1
            rows = table.slice(start, end - start)
            reports.append(self._write(int(split[start]), int(file[start]), rows))
            faults.point("export:after-file")
            start = end
        if not reports:
            return FILE_SCHEMA.empty_table()
        return pa.Table.from_pylist(reports, schema=FILE_SCHEMA)

    def _write(self, split: int, file: int, rows: pa.Table) -> dict[str, Any]:
        out = rows.drop_columns(list(_INTERNAL))
        name = part_name(file)
        report: dict[str, Any] = {
            SPLIT: split,
            FILE: file,
            "rows": out.num_rows,
            "tokens": 0,
            "parquet_bytes": 0,
            "megatron_bytes": 0,
            "mds_bytes": 0,
            "mds_shards": "[]",
        }
        if "parquet" in self.formats:
            target = self.directory(split, "parquet") / f"{name}.parquet"
            with ParquetSink(target) as sink:
                sink.write(out)
            report["parquet_bytes"] = _size(target)
        if "megatron" in self.formats:
            report.update(self._megatron(split, name, out))
        if "mds" in self.formats:
            from thresher.export.mds import MDSWriter

            assert self.mds_encodings is not None
            writer = MDSWriter(self.directory(split, "mds"), name, self.mds_encodings)
            for batch in out.to_batches(max_chunksize=4096):
                writer.write(pa.Table.from_batches([batch], out.schema))
            shards = writer.close()
            report["mds_bytes"] = sum(int(s["raw_data"]["bytes"]) for s in shards)
            report["mds_shards"] = json.dumps(shards, sort_keys=True)
        return report

    def _megatron(self, split: int, name: str, out: pa.Table) -> dict[str, int]:
        from thresher.export.megatron import MegatronWriter

        assert self.tokenizer is not None and self.text_column is not None
        texts = out.column(self.text_column)
        prefix = self.directory(split, "megatron") / name
        with MegatronWriter(prefix, self.tokenizer.vocab_size) as writer:
            for start in range(0, out.num_rows, 1024):
                chunk = texts.slice(start, 1024).to_pylist()
                for tokens in self.tokenizer.documents(chunk):
                    writer.add_document(tokens)
        written = writer.files
        assert written is not None
        return {"tokens": written.tokens, "megatron_bytes": written.bin_bytes + written.idx_bytes}


def _size(location: Location) -> int:
    entry = location.info()
    return int(entry.size) if entry is not None and entry.size is not None else 0


def required_columns(schema: pa.Schema, id_column: str, text_column: str | None) -> list[str]:
    """The columns every hand-off row has a value in (the MDS encodings' strict columns)."""
    return [c for c in (id_column, text_column) if c is not None and c in schema.names]


def public_schema(keyed: pa.Schema) -> pa.Schema:
    """The written files' schema: the keyed rows without thresher's own columns."""
    return pa.schema([f for f in keyed if f.name not in _INTERNAL])
