"""Ingest: every record is either a canonical row or a quarantine row with a reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher import reasons as R
from thresher.config import SchemaConfig
from thresher.errors import InputError
from thresher.io import schema as S
from thresher.io.formats import detect_format
from thresher.io.ingest import ingest_shard
from thresher.io.shards import Shard, numbered_shards


def _shard(path: Path, index: int = 0) -> Shard:
    return Shard(index, str(path), path.name, detect_format(path))


def _jsonl(path: Path, lines: list[bytes], gz: bool = False) -> Path:
    payload = b"\n".join(lines) + b"\n"
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def test_jsonl_bad_lines_are_quarantined_with_reasons(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "a.jsonl",
        [
            json.dumps({"id": "1", "text": "good text here", "url": "u1"}).encode(),
            b'{"id": "2", "text": "caf\xe9 \xff"}',
            b'{"id": "3", "text": "cut',
            b"",
            b'["not", "an", "object"]',
            json.dumps({"id": "5", "text": ""}).encode(),
            json.dumps({"id": "6"}).encode(),
            json.dumps({"id": None, "text": "no id"}).encode(),
            json.dumps({"id": "8", "text": 42}).encode(),
            json.dumps({"id": "9", "text": "also good", "url": "u9"}).encode(),
        ],
    )
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.rows_in == 9  # the blank line is not a record
    assert result.table.column("id").to_pylist() == ["1", "9"]
    assert result.table.column("url").to_pylist() == ["u1", "u9"]
    assert result.table.column(S.ROW).to_pylist() == [0, 9]
    reasons = dict(
        zip(
            result.quarantine.column("row").to_pylist(),
            result.quarantine.column("reason").to_pylist(),
            strict=True,
        )
    )
    assert reasons == {
        1: R.INVALID_UTF8,
        2: R.MALFORMED_JSON,
        4: R.MALFORMED_JSON,
        5: R.EMPTY_TEXT,
        6: R.MISSING_TEXT,
        7: R.MISSING_ID,
        8: R.TEXT_NOT_STRING,
    }
    assert result.rows_in == result.table.num_rows + result.quarantine.num_rows
    assert (
        "caf\\xe9"
        in result.quarantine.filter(pa.compute.equal(result.quarantine.column("row"), 1))
        .column("raw")[0]
        .as_py()
    )


def test_gzip_jsonl_is_read(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "a.jsonl.gz",
        [json.dumps({"id": str(i), "text": f"doc {i}"}).encode() for i in range(5)],
        gz=True,
    )
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.table.column("text").to_pylist() == [f"doc {i}" for i in range(5)]


def test_parquet_with_configured_columns_and_derived_ids(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"body": ["x y", None, "  ", "z"], "cls": [1, 2, 3, 4], "extra": [1.0, 2, 3, 4]}),
        path,
    )
    result = ingest_shard(_shard(path, index=3), SchemaConfig(id=None, text="body", label="cls"))
    assert result.table.column_names == ["id", "text", "label", "extra", S.SHARD, S.ROW]
    assert result.table.column("id").to_pylist() == ["p.parquet:0", "p.parquet:3"]
    assert result.table.column("label").to_pylist() == [1, 4]
    assert result.table.column(S.SHARD).to_pylist() == [3, 3]
    assert sorted(result.quarantine.column("reason").to_pylist()) == [R.EMPTY_TEXT, R.MISSING_TEXT]


def test_parquet_binary_text_with_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "text": pa.array([b"fine", b"\xff\xfe bad"], pa.binary())}),
        path,
    )
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.table.column("text").to_pylist() == ["fine"]
    assert result.quarantine.column("reason").to_pylist() == [R.INVALID_UTF8]


def test_missing_text_column_quarantines_every_row(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "content": ["x", "y"]}), path)
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.table.num_rows == 0
    assert result.quarantine.column("reason").to_pylist() == [R.MISSING_TEXT_COLUMN] * 2
    assert "content" in result.quarantine.column("detail")[0].as_py()


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"id": [10, 11], "text": ["a", "b"]}), path)
    assert ingest_shard(_shard(path), SchemaConfig()).table.column("id").to_pylist() == ["10", "11"]


def test_truncated_parquet_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["a"] * 100, "text": ["some text"] * 100}), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match=r"t\.parquet: unreadable Parquet file"):
        ingest_shard(_shard(path), SchemaConfig())


def test_passthrough_collision_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"doc": ["a"], "text": ["x"], "id": ["other"]}), path)
    with pytest.raises(InputError, match="collides"):
        ingest_shard(_shard(path), SchemaConfig(id="doc"))


def test_sample_corpus_bad_rows_land_in_quarantine(small_corpus: Path) -> None:
    files = sorted(small_corpus.glob("shard-*"))
    shards = numbered_shards(files, small_corpus)
    reasons: dict[str, int] = {}
    total_in = total_out = 0
    for shard in shards:
        result = ingest_shard(shard, SchemaConfig(label="topic"))
        total_in += result.rows_in
        total_out += result.table.num_rows + result.quarantine.num_rows
        for reason, count in result.quarantine_counts().items():
            reasons[reason] = reasons.get(reason, 0) + count
        ids = result.quarantine.column("id").to_pylist()
        assert all(i is None or i.startswith("bad-") for i in ids)
    assert total_in == total_out
    # 2 Parquet shards x (empty, null text, null id) + 2 JSONL shards x (utf8, broken, empty, no text)
    assert reasons == {
        R.EMPTY_TEXT: 4,
        R.MISSING_TEXT: 4,
        R.MISSING_ID: 2,
        R.INVALID_UTF8: 2,
        R.MALFORMED_JSON: 2,
    }
