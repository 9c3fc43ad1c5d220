"""Read one input shard into thresher's canonical table, quarantining bad rows.

A shard becomes two tables: the usable rows (columns ``id``, ``text``,
optional ``label``, the pass-through columns, and the position columns
``thresher_shard``/``thresher_row``) and the quarantine (one row per
unusable record, with a reason). ``rows_in`` counts every record of the
shard, so ``rows_in == len(table) + len(quarantine)`` always holds.

JSONL is parsed line by line so that one broken line costs one record, not
the shard; blank lines are not records and are not counted.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.config import SchemaConfig
from thresher.errors import InputError
from thresher.io import schema as S
from thresher.io.shards import Shard

RAW_PREVIEW_CHARS = 2000
JSONL_CHUNK_LINES = 8192


@dataclass
class IngestResult:
    """What one shard yields: usable rows, quarantined rows, and the input count."""

    shard: Shard
    rows_in: int
    table: pa.Table
    quarantine: pa.Table

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


def ingest_shard(shard: Shard, schema: SchemaConfig) -> IngestResult:
    """Read and validate one shard (see module docstring)."""
    quarantine = _Quarantine(shard)
    if shard.format == "parquet":
        chunks, rows_in = _read_parquet(shard, schema, quarantine)
    elif shard.format == "jsonl":
        chunks, rows_in = _read_jsonl(shard, schema, quarantine)
    else:
        raise InputError(f"{shard.name}: unsupported format {shard.format!r}")
    chunks = [c for c in chunks if c.num_rows]
    if chunks:
        table = pa.concat_tables(chunks, promote_options="permissive")
    else:
        table = _empty_canonical(schema)
    return IngestResult(shard, rows_in, table, quarantine.table())


# -- Parquet ------------------------------------------------------------------


def _read_parquet(
    shard: Shard, schema: SchemaConfig, quarantine: _Quarantine
) -> tuple[list[pa.Table], int]:
    try:
        parquet = pq.ParquetFile(shard.path)
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
            if schema.text not in columns:
                for row in rows:
                    quarantine.add(
                        int(row),
                        S.MISSING_TEXT_COLUMN,
                        f"shard has no column {schema.text!r} (columns: {columns})",
                        None,
                    )
                continue
            text, bad = _text_column_from_parquet(table.column(schema.text))
            for index, reason in bad.items():
                raw = _preview(table.column(schema.text)[index].as_py())
                quarantine.add(int(rows[index]), reason, f"column {schema.text!r}", raw)
            table = table.set_column(table.schema.get_field_index(schema.text), schema.text, text)
            keep = np.ones(table.num_rows, dtype=bool)
            keep[list(bad)] = False
            chunks.append(
                _finish(table.filter(pa.array(keep)), rows[keep], shard, schema, quarantine)
            )
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{shard.name}: unreadable Parquet file ({error})") from error
    return chunks, offset


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
                bad[index] = S.INVALID_UTF8
        return pa.array(values, pa.string()), bad
    # Any other type (numbers, structs...) is not text.
    for position in np.flatnonzero(np.asarray(array.is_valid())):
        bad[int(position)] = S.TEXT_NOT_STRING
    return pa.nulls(len(array), pa.string()), bad


# -- JSONL ----------------------------------------------------------------------


def _iter_lines(shard: Shard) -> Iterator[bytes]:
    opener = gzip.open if shard.compressed else open
    try:
        with opener(shard.path, "rb") as handle:
            yield from handle
    except (OSError, EOFError) as error:
        raise InputError(f"{shard.name}: unreadable file ({error})") from error


def _read_jsonl(
    shard: Shard, schema: SchemaConfig, quarantine: _Quarantine
) -> tuple[list[pa.Table], int]:
    chunks: list[pa.Table] = []
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    rows_in = 0
    for line_number, line in enumerate(_iter_lines(shard)):
        if not line.strip():
            continue
        rows_in += 1
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raw = line.decode("utf-8", errors="backslashreplace").rstrip("\n")
            quarantine.add(line_number, S.INVALID_UTF8, str(error), _preview(raw))
            continue
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as error:
            quarantine.add(
                line_number, S.MALFORMED_JSON, str(error), _preview(decoded.rstrip("\n"))
            )
            continue
        if not isinstance(record, dict):
            quarantine.add(
                line_number,
                S.MALFORMED_JSON,
                "a line must hold a JSON object",
                _preview(decoded.rstrip("\n")),
            )
            continue
        text = record.get(schema.text)
        if text is not None and not isinstance(text, str):
            quarantine.add(
                line_number,
                S.TEXT_NOT_STRING,
                f"field {schema.text!r} is {type(text).__name__}",
                _preview(decoded.rstrip("\n")),
            )
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
    if schema.text not in names:
        names[schema.text] = None
    columns = {name: _to_arrow([r.get(name) for r in records]) for name in names}
    columns[schema.text] = pa.array([r.get(schema.text) for r in records], pa.string())
    return _finish(pa.table(columns), np.asarray(rows, dtype=np.int64), shard, schema, quarantine)


def _to_arrow(values: list[Any]) -> pa.Array:
    """Infer an Arrow array; values of mixed types are kept as their JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array(
            [None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string()
        )


# -- shared -------------------------------------------------------------------------


def _finish(
    table: pa.Table, rows: np.ndarray, shard: Shard, schema: SchemaConfig, quarantine: _Quarantine
) -> pa.Table:
    """Check text and id, build canonical columns, quarantine the rest."""
    text = table.column(schema.text)
    has_id = schema.id is not None and schema.id in table.column_names
    if has_id:
        assert schema.id is not None
        ids = table.column(schema.id)
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            ids = pc.cast(ids, pa.string())
    else:
        ids = pa.chunked_array([pa.array([f"{shard.name}:{r}" for r in rows], pa.string())])

    missing_text = np.asarray(pc.is_null(text)).astype(bool)
    empty_text = ~missing_text & np.asarray(
        pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
    ).astype(bool)
    missing_id = np.asarray(pc.is_null(ids)).astype(bool) & ~missing_text & ~empty_text
    for mask, reason, detail in (
        (missing_text, S.MISSING_TEXT, f"{schema.text!r} is null or absent"),
        (empty_text, S.EMPTY_TEXT, f"{schema.text!r} is empty or whitespace"),
        (missing_id, S.MISSING_ID, f"{schema.id!r} is null"),
    ):
        for index in np.flatnonzero(mask):
            raw = _preview(text[int(index)].as_py())
            id_value = ids[int(index)].as_py()
            quarantine.add(int(rows[index]), reason, detail, raw, id_value)
    keep = ~(missing_text | empty_text | missing_id)

    out: dict[str, pa.ChunkedArray | pa.Array] = {S.ID: ids, S.TEXT: text}
    role_names = {schema.text}
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


def _passthrough_names(columns: list[str], role_names: set[str], schema: SchemaConfig) -> list[str]:
    if schema.passthrough == "all":
        return [c for c in columns if c not in role_names]
    return [c for c in schema.passthrough if c not in role_names]


def _empty_canonical(schema: SchemaConfig) -> pa.Table:
    fields = [pa.field(S.ID, pa.string()), pa.field(S.TEXT, pa.string())]
    if schema.label is not None:
        fields.append(pa.field(S.LABEL, pa.null()))
    fields += [pa.field(S.SHARD, pa.int32()), pa.field(S.ROW, pa.int64())]
    return pa.schema(fields).empty_table()


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text[:RAW_PREVIEW_CHARS]
