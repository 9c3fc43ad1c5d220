"""Read one input shard into thresher's canonical table, quarantining bad rows.

A shard becomes two tables: the usable rows (columns ``id``, ``text``,
optional ``features`` and ``label``, the pass-through columns, and the
position columns ``thresher_shard``/``thresher_row``) and the quarantine
(one row per unusable record, with a reason). ``rows_in`` counts every record of the
shard, so ``rows_in == len(table) + len(quarantine)`` always holds.

JSONL is parsed line by line so that one broken line costs one record, not
the shard; blank lines are not records and are not counted. A text longer
than ``schema.max_text_bytes`` (UTF-8) is quarantined as ``text_too_long``:
one such blob (a dump, a base64 file) would otherwise dominate a scoring
batch. Columns whose inferred type changes between chunks of one shard get
one common type (:mod:`thresher.io.drift`).

With ``schema.features`` set, a record also needs a feature vector: a list
of finite numbers (list, large list or fixed-size list in Parquet; a JSON
array in JSONL), stored as ``features: list<float32>``. Null, empty or
non-numeric vectors, non-finite values (also values beyond float32's range)
and vectors whose length differs from the shard's first valid one are
quarantined as ``invalid_features``. With ``schema.text`` null, text is not
read or checked at all.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from thresher import reasons as R
from thresher.config import SchemaConfig
from thresher.errors import InputError, ThresherError
from thresher.io import schema as S
from thresher.io.drift import concat_conformed
from thresher.io.shards import Shard

RAW_PREVIEW_CHARS = 2000
JSONL_CHUNK_LINES = 8192
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class IngestResult:
    """What one shard yields: usable rows, quarantined rows, the input count, the bytes' digest."""

    shard: Shard
    rows_in: int
    table: pa.Table
    quarantine: pa.Table
    content: dict[str, Any] = field(default_factory=dict)

    def quarantine_counts(self) -> dict[str, int]:
        if self.quarantine.num_rows == 0:
            return {}
        counts = self.quarantine.column("reason").value_counts().to_pylist()
        return {item["values"]: item["counts"] for item in counts}


class _Quarantine:
    """Collects quarantined rows of one shard."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.rows: list[dict[str, Any]] = []
        # Length of the shard's first valid feature vector: every other must match it.
        self.features_length: int | None = None

    def add(
        self, row: int, reason: str, detail: str, raw: str | None, id_: str | None = None
    ) -> None:
        if raw is not None and len(raw) > RAW_PREVIEW_CHARS:
            raw = raw[:RAW_PREVIEW_CHARS] + "…"
        self.rows.append(
            {
                "shard": self.shard.name,
                "row": row,
                "id": id_,
                "reason": reason,
                "detail": detail,
                "raw": raw,
            }
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=S.QUARANTINE_SCHEMA)


class _HashingReader(io.RawIOBase):
    """A raw stream over a store's input stream that hashes every byte it reads."""

    def __init__(self, stream: Any, digest: Any) -> None:
        self.stream = stream
        self.digest = digest
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.digest.update(data)
        self.size += n
        return n


class _Source:
    """The bytes of one shard, read once through the filesystem layer and hashed as they go."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.digest = xxhash.xxh3_64()
        self.size = 0

    def parquet(self) -> pq.ParquetFile:
        data = self.shard.location.read_bytes()
        self.digest.update(data)
        self.size = len(data)
        return pq.ParquetFile(pa.BufferReader(data))

    def lines(self) -> Iterator[bytes]:
        raw = _HashingReader(self.shard.location.open_input_stream(), self.digest)
        try:
            handle: Any = io.BufferedReader(raw, buffer_size=1 << 20)
            if self.shard.compressed:
                handle = gzip.GzipFile(fileobj=handle, mode="rb")
            yield from handle
        finally:
            self.size = raw.size
            raw.stream.close()

    def content(self) -> dict[str, Any]:
        return {"size": self.size, "xxh3_64": self.digest.hexdigest()}


def ingest_shard(shard: Shard, schema: SchemaConfig) -> IngestResult:
    """Read and validate one shard (see module docstring)."""
    quarantine = _Quarantine(shard)
    source = _Source(shard)
    if shard.format == "parquet":
        chunks, rows_in = _read_parquet(source, schema, quarantine)
    elif shard.format == "jsonl":
        chunks, rows_in = _read_jsonl(source, schema, quarantine)
    else:
        raise InputError(f"{shard.name}: unsupported format {shard.format!r}")
    chunks = [c for c in chunks if c.num_rows]
    # JSONL chunks may infer different types for a column: give them one.
    table = concat_conformed(chunks) if chunks else _empty_canonical(schema)
    return IngestResult(shard, rows_in, table, quarantine.table(), source.content())


# -- Parquet ------------------------------------------------------------------


def _read_parquet(
    source: _Source, schema: SchemaConfig, quarantine: _Quarantine
) -> tuple[list[pa.Table], int]:
    shard = source.shard
    try:
        parquet = source.parquet()
    except ThresherError:
        raise
    except FileNotFoundError:
        raise InputError(f"{shard.name}: the file vanished since it was listed") from None
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise InputError(f"{shard.name}: unreadable Parquet file ({error})") from error
    columns = parquet.schema_arrow.names
    chunks: list[pa.Table] = []
    offset = 0
    try:
        for batch in parquet.iter_batches(batch_size=JSONL_CHUNK_LINES):
            table = pa.Table.from_batches([batch])
            rows = np.arange(offset, offset + table.num_rows, dtype=np.int64)
            offset += table.num_rows
            missing = _missing_role_column(schema, columns)
            if missing is not None:
                reason, column = missing
                for row in rows:
                    quarantine.add(
                        int(row),
                        reason,
                        f"shard has no column {column!r} (columns: {columns})",
                        None,
                    )
                continue
            keep = np.ones(table.num_rows, dtype=bool)
            if schema.text is not None:
                text, bad = _text_column_from_parquet(table.column(schema.text))
                for index, reason in bad.items():
                    raw = _preview(table.column(schema.text)[index].as_py())
                    quarantine.add(int(rows[index]), reason, f"column {schema.text!r}", raw)
                index = table.schema.get_field_index(schema.text)
                table = table.set_column(index, schema.text, text)
                keep[list(bad)] = False
                for index, size in _too_long(text, schema.max_text_bytes, keep).items():
                    raw = _preview(text[index].as_py())
                    quarantine.add(
                        int(rows[index]), R.TEXT_TOO_LONG, _size_detail(size, schema), raw
                    )
                    keep[index] = False
            chunks.append(
                _finish(table.filter(pa.array(keep)), rows[keep], shard, schema, quarantine)
            )
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{shard.name}: unreadable Parquet file ({error})") from error
    return chunks, offset


def _missing_role_column(schema: SchemaConfig, columns: list[str]) -> tuple[str, str] | None:
    """(reason, column) when a shard lacks the text or features column the schema needs."""
    if schema.text is not None and schema.text not in columns:
        return R.MISSING_TEXT_COLUMN, schema.text
    if schema.features is not None and schema.features not in columns:
        return R.MISSING_FEATURES_COLUMN, schema.features
    return None


def _text_column_from_parquet(column: pa.ChunkedArray) -> tuple[pa.Array, dict[int, str]]:
    """Return the column as UTF-8 strings, plus {row: reason} for unusable values."""
    array = column.combine_chunks()
    bad: dict[int, str] = {}
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        try:
            array.validate(full=True)
            return array.cast(pa.string()), bad
        except pa.ArrowInvalid:
            array = array.view(pa.binary() if pa.types.is_string(array.type) else pa.large_binary())
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        values: list[str | None] = []
        for index, value in enumerate(array.to_pylist()):
            if value is None:
                values.append(None)
                continue
            try:
                values.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(None)
                bad[index] = R.INVALID_UTF8
        return pa.array(values, pa.string()), bad
    # Any other type (numbers, structs...) is not text.
    for position in np.flatnonzero(np.asarray(array.is_valid())):
        bad[int(position)] = R.TEXT_NOT_STRING
    return pa.nulls(len(array), pa.string()), bad


# -- JSONL ----------------------------------------------------------------------


def _iter_lines(source: _Source) -> Iterator[bytes]:
    try:
        yield from source.lines()
    except ThresherError:
        raise
    except FileNotFoundError:
        raise InputError(f"{source.shard.name}: the file vanished since it was listed") from None
    except (OSError, EOFError) as error:
        raise InputError(f"{source.shard.name}: unreadable file ({error})") from error


def _read_jsonl(
    source: _Source, schema: SchemaConfig, quarantine: _Quarantine
) -> tuple[list[pa.Table], int]:
    shard = source.shard
    chunks: list[pa.Table] = []
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    rows_in = 0
    for line_number, line in enumerate(_iter_lines(source)):
        if not line.strip():
            continue
        rows_in += 1
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raw = line.decode("utf-8", errors="backslashreplace").rstrip("\n")
            quarantine.add(line_number, R.INVALID_UTF8, str(error), _preview(raw))
            continue
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as error:
            quarantine.add(
                line_number, R.MALFORMED_JSON, str(error), _preview(decoded.rstrip("\n"))
            )
            continue
        if not isinstance(record, dict):
            quarantine.add(
                line_number,
                R.MALFORMED_JSON,
                "a line must hold a JSON object",
                _preview(decoded.rstrip("\n")),
            )
            continue
        text = None if schema.text is None else record.get(schema.text)
        if text is not None and not isinstance(text, str):
            quarantine.add(
                line_number,
                R.TEXT_NOT_STRING,
                f"field {schema.text!r} is {type(text).__name__}",
                _preview(decoded.rstrip("\n")),
            )
            continue
        size = _text_bytes(text, schema.max_text_bytes)
        if size is not None:
            quarantine.add(line_number, R.TEXT_TOO_LONG, _size_detail(size, schema), _preview(text))
            continue
        problem = None if schema.features is None else _json_features_problem(record, schema)
        if problem is not None:
            shown = _preview(decoded.rstrip("\n"))
            id_value = None if schema.id is None else record.get(schema.id)
            id_text = None if id_value is None else str(id_value)
            quarantine.add(line_number, R.INVALID_FEATURES, problem, shown, id_text)
            continue
        records.append(record)
        rows.append(line_number)
        if len(records) >= JSONL_CHUNK_LINES:
            chunks.append(_records_to_canonical(records, rows, shard, schema, quarantine))
            records, rows = [], []
    if records:
        chunks.append(_records_to_canonical(records, rows, shard, schema, quarantine))
    return chunks, rows_in


def _records_to_canonical(
    records: list[dict[str, Any]],
    rows: list[int],
    shard: Shard,
    schema: SchemaConfig,
    quarantine: _Quarantine,
) -> pa.Table:
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    for role in (schema.text, schema.features):
        if role is not None and role not in names:
            names[role] = None
    roles = {schema.text, schema.features}
    columns = {
        name: _to_arrow([r.get(name) for r in records]) for name in names if name not in roles
    }
    if schema.text is not None:
        columns[schema.text] = pa.array([r.get(schema.text) for r in records], pa.string())
    if schema.features is not None:
        vectors = [r.get(schema.features) for r in records]
        columns[schema.features] = pa.array(vectors, pa.list_(pa.float64()))
    return _finish(pa.table(columns), np.asarray(rows, dtype=np.int64), shard, schema, quarantine)


def _json_features_problem(record: dict[str, Any], schema: SchemaConfig) -> str | None:
    """Why a JSON record's feature vector is unusable (null is left to the shared check)."""
    assert schema.features is not None
    value = record.get(schema.features)
    if value is None:
        return None
    if not isinstance(value, list):
        return f"{schema.features!r} is {type(value).__name__}, not a list of numbers"
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            return f"{schema.features!r} holds a non-numeric value ({type(item).__name__})"
        try:
            finite = math.isfinite(float(item)) and abs(float(item)) <= _FLOAT32_MAX
        except OverflowError:
            finite = False
        if not finite:
            return f"{schema.features!r} holds a non-finite value (in float32)"
    return None


def _to_arrow(values: list[Any]) -> pa.Array:
    """Infer an Arrow array; values of mixed types become strings (others as their JSON text)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array(
            [
                v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                for v in values
            ],
            pa.string(),
        )


def _text_bytes(text: str | None, limit: int | None) -> int | None:
    """The UTF-8 size of ``text`` when it exceeds ``limit`` (None when it does not)."""
    if text is None or limit is None or len(text) <= limit // 4:
        return None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    return size if size > limit else None


def _too_long(text: pa.Array, limit: int | None, candidates: np.ndarray) -> dict[int, int]:
    """{row: UTF-8 size} of the candidate rows whose text exceeds ``limit`` bytes."""
    if limit is None or len(text) == 0:
        return {}
    sizes = np.asarray(pc.fill_null(pc.binary_length(text), 0), dtype=np.int64)
    return {int(i): int(sizes[i]) for i in np.flatnonzero(candidates & (sizes > limit))}


def _size_detail(size: int, schema: SchemaConfig) -> str:
    return (
        f"{schema.text!r} holds {size:,} bytes, more than schema.max_text_bytes "
        f"({schema.max_text_bytes:,})"
    )


# -- shared -------------------------------------------------------------------------


def _finish(
    table: pa.Table, rows: np.ndarray, shard: Shard, schema: SchemaConfig, quarantine: _Quarantine
) -> pa.Table:
    """Check text, features and id, build canonical columns, quarantine the rest."""
    text = table.column(schema.text) if schema.text is not None else None
    has_id = schema.id is not None and schema.id in table.column_names
    if has_id:
        assert schema.id is not None
        ids = table.column(schema.id)
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            ids = pc.cast(ids, pa.string())
    else:
        ids = pa.chunked_array([pa.array([f"{shard.name}:{r}" for r in rows], pa.string())])

    missing_text = np.zeros(table.num_rows, dtype=bool)
    empty_text = np.zeros(table.num_rows, dtype=bool)
    if text is not None:
        missing_text = np.asarray(pc.is_null(text)).astype(bool)
        empty_text = ~missing_text & np.asarray(
            pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
        ).astype(bool)
    features: pa.Array | None = None
    feature_problems: dict[int, str] = {}
    if schema.features is not None:
        features, feature_problems = _features_column(
            table.column(schema.features), ~(missing_text | empty_text), quarantine
        )
    invalid_features = np.zeros(table.num_rows, dtype=bool)
    invalid_features[list(feature_problems)] = True
    missing_id = (
        np.asarray(pc.is_null(ids)).astype(bool) & ~missing_text & ~empty_text & ~invalid_features
    )
    preview = text if text is not None else table.column(schema.features or S.FEATURES)
    for mask, reason, detail in (
        (missing_text, R.MISSING_TEXT, f"{schema.text!r} is null or absent"),
        (empty_text, R.EMPTY_TEXT, f"{schema.text!r} is empty or whitespace"),
        (invalid_features, R.INVALID_FEATURES, None),
        (missing_id, R.MISSING_ID, f"{schema.id!r} is null"),
    ):
        for index in np.flatnonzero(mask):
            raw = _preview(preview[int(index)].as_py())
            id_value = ids[int(index)].as_py()
            why = detail if detail is not None else feature_problems[int(index)]
            quarantine.add(int(rows[index]), reason, why, raw, id_value)
    keep = ~(missing_text | empty_text | invalid_features | missing_id)

    out: dict[str, pa.ChunkedArray | pa.Array] = {S.ID: ids}
    role_names: set[str] = set()
    if text is not None and schema.text is not None:
        out[S.TEXT] = text
        role_names.add(schema.text)
    if features is not None and schema.features is not None:
        out[S.FEATURES] = features
        role_names.add(schema.features)
    if has_id and schema.id is not None:
        role_names.add(schema.id)
    if schema.label is not None:
        role_names.add(schema.label)
        out[S.LABEL] = (
            table.column(schema.label)
            if schema.label in table.column_names
            else pa.nulls(table.num_rows)
        )
    for name in _passthrough_names(table.column_names, role_names, schema):
        if name in out or name in S.POSITION_COLUMNS:
            raise InputError(
                f"{shard.name}: pass-through column {name!r} collides with a name thresher uses "
                f"internally; rename it or leave it out of schema.passthrough"
            )
        out[name] = table.column(name) if name in table.column_names else pa.nulls(table.num_rows)
    out[S.SHARD] = pa.array(np.full(table.num_rows, shard.index, dtype=np.int32))
    out[S.ROW] = pa.array(rows, pa.int64())
    return pa.table(out).filter(pa.array(keep))


def _features_column(
    column: pa.ChunkedArray, candidates: np.ndarray, quarantine: _Quarantine
) -> tuple[pa.Array, dict[int, str]]:
    """The feature vectors as list<float32>, plus {row: why} for unusable ones.

    ``candidates`` marks rows not already quarantined for another reason; the
    first of them with a usable vector fixes the shard's vector length (kept
    on ``quarantine`` across chunks) when no earlier chunk did.
    """
    array = column.combine_chunks()
    n = len(array)
    problems: dict[int, str] = {}
    null = np.asarray(array.is_null()).astype(bool)
    kind = array.type
    is_list = (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )
    numeric = is_list and (
        pa.types.is_integer(kind.value_type)
        or pa.types.is_floating(kind.value_type)
        or pa.types.is_decimal(kind.value_type)
    )
    if not numeric:
        for index in range(n):
            problems[index] = (
                "null or absent" if null[index] else f"not a list of numbers (type {kind})"
            )
        return pa.nulls(n, pa.list_(pa.float32())), problems
    lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0), dtype=np.int64)
    flat = pc.list_flatten(array)
    parents = np.asarray(pc.list_parent_indices(array), dtype=np.int64)
    values = np.asarray(pc.fill_null(flat.cast(pa.float64()), np.nan), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        as_float32 = values.astype(np.float32)
    non_finite = np.zeros(n, dtype=bool)
    non_finite[parents[~np.isfinite(as_float32)]] = True
    for index in range(n):
        if null[index]:
            problems[index] = "null or absent"
        elif lengths[index] == 0:
            problems[index] = "empty vector"
        elif non_finite[index]:
            problems[index] = "holds a null, NaN, infinite or beyond-float32 value"
    usable = candidates & ~null & (lengths > 0) & ~non_finite
    if quarantine.features_length is None and usable.any():
        quarantine.features_length = int(lengths[np.flatnonzero(usable)[0]])
    expected = quarantine.features_length
    for position in np.flatnonzero(usable & (lengths != expected)):
        problems[int(position)] = (
            f"length {lengths[position]}, but the shard's first valid vector has length {expected}"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    vectors = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(as_float32, pa.float32()), mask=pa.array(null)
    )
    return vectors, problems


def _passthrough_names(columns: list[str], role_names: set[str], schema: SchemaConfig) -> list[str]:
    if schema.passthrough == "all":
        return [c for c in columns if c not in role_names]
    return [c for c in schema.passthrough if c not in role_names]


def _empty_canonical(schema: SchemaConfig) -> pa.Table:
    fields = [pa.field(S.ID, pa.string())]
    if schema.text is not None:
        fields.append(pa.field(S.TEXT, pa.string()))
    if schema.features is not None:
        fields.append(pa.field(S.FEATURES, pa.list_(pa.float32())))
    if schema.label is not None:
        fields.append(pa.field(S.LABEL, pa.null()))
    fields += [pa.field(S.SHARD, pa.int32()), pa.field(S.ROW, pa.int64())]
    return pa.schema(fields).empty_table()


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text[:RAW_PREVIEW_CHARS]
