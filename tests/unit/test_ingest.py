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


ENCODINGS = {
    "string": lambda a: a,
    "large_string": lambda a: a.cast(pa.large_string()),
    "string_view": lambda a: a.cast(pa.string_view()),
    "dictionary": lambda a: a.dictionary_encode(),
    "binary": lambda a: a.cast(pa.binary()),
    "large_binary": lambda a: a.cast(pa.large_binary()),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_text_id_and_label_in_any_string_encoding_are_read(tmp_path: Path, encoding: str) -> None:
    encode = ENCODINGS[encoding]
    table = pa.table(
        {
            "id": encode(pa.array(["a", "b", "c"])),
            "text": encode(pa.array(["one text", "two texts", "three texts"])),
            "topic": encode(pa.array(["x", "y", "x"])),
            "note": encode(pa.array(["n1", None, "n3"])),
        }
    )
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    result = ingest_shard(_shard(path), SchemaConfig(label="topic"))
    assert result.quarantine.num_rows == 0
    out = result.table
    assert out.schema.field("id").type == out.schema.field("text").type == pa.string()
    assert out.schema.field(S.LABEL).type == pa.string()
    assert out.column("id").to_pylist() == ["a", "b", "c"]
    assert out.column(S.LABEL).to_pylist() == ["x", "y", "x"]
    assert not pa.types.is_dictionary(out.schema.field("note").type)


def test_invalid_utf8_in_id_label_or_passthrough(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array([b"ok", b"\xff\xfe", b"ok3"], pa.binary()),
                "text": ["a good text", "a second text", "a third text"],
                "topic": pa.array([b"x", b"y", b"\xc3"], pa.binary()),
                "note": pa.array([b"caf\xe9", b"fine", None]).view(pa.string()),
            }
        ),
        path,
    )
    result = ingest_shard(_shard(path), SchemaConfig(label="topic"))
    rows = {r["row"]: r for r in result.quarantine.to_pylist()}
    assert rows[1]["reason"] == R.INVALID_UTF8 and "'id'" in rows[1]["detail"]
    assert rows[2]["reason"] == R.INVALID_UTF8 and "'topic'" in rows[2]["detail"]
    assert rows[2]["id"] == "ok3"
    assert result.table.column("id").to_pylist() == ["ok"]
    assert result.table.column("note").to_pylist() == ["caf\ufffd"]  # repaired, never read


def test_a_lone_surrogate_escape_quarantines_its_record_naming_the_field(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "s.jsonl",
        [
            b'{"id": "1", "text": "fine \\ud83d\\ude00"}',
            b'{"id": "2", "text": "fine", "meta": {"tags": ["x", "bad \\udc00"]}}',
            b'{"id": "3", "text": "bad \\uD800 upper-case escape"}',
        ],
    )
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.table.column("text").to_pylist() == ["fine \U0001f600"]
    details = dict(
        zip(
            result.quarantine.column("id").to_pylist(),
            result.quarantine.column("detail").to_pylist(),
            strict=True,
        )
    )
    assert set(details) == {"2", "3"}
    assert "meta.tags[1]" in details["2"] and "'text'" in details["3"]


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path: Path) -> None:
    for name, gz in (("bom.jsonl", False), ("bom.jsonl.gz", True)):
        path = _jsonl(tmp_path / name, [b'\xef\xbb\xbf{"id": "1", "text": "first"}'], gz=gz)
        result = ingest_shard(_shard(path), SchemaConfig())
        assert result.table.column("id").to_pylist() == ["1"], name
