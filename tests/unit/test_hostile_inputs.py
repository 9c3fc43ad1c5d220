"""Hostile inputs: what a file is comes from its content, and no record can exhaust a task.

A data lake's files are written by many producers and retried jobs: gzip
content under a ``.jsonl`` name, a plain file named ``.gz``, a line of
gigabytes, JSON nested past any stack, free-form keys by the thousand, a
Parquet column whose one dictionary value is repeated a million times, a
small file that decompresses to terabytes. Each is a class of input with
one rule, checked here on small files with known answers.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher import reasons as R
from thresher.config import SchemaConfig
from thresher.errors import InputError
from thresher.io import ingest as ingest_module
from thresher.io.formats import detect_format
from thresher.io.ingest import ingest_shard
from thresher.io.readers import ReadLimits, ShardTooLargeError, sniff
from thresher.io.shards import Shard

RECORDS = [{"id": f"r{i}", "text": f"record {i} about boats and rivers"} for i in range(30)]


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


def _shard(path: Path) -> Shard:
    return Shard(0, str(path), path.name, detect_format(path.name))


CODECS = {"gzip": gzip.compress, "zstd": _zstd, "bz2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compressed_content_under_a_plain_name_is_decompressed_and_counted(
    tmp_path: Path, codec: str
) -> None:
    path = tmp_path / "shard.jsonl"
    path.write_bytes(CODECS[codec](_jsonl(RECORDS)))
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.rows_in == len(RECORDS) == result.table.num_rows
    assert result.quarantine.num_rows == 0
    assert result.table.column("id").to_pylist() == [r["id"] for r in RECORDS]


@pytest.mark.parametrize("name", ["shard.jsonl.gz", "shard.jsonl.zst", "shard.jsonl.xz"])
def test_plain_content_under_a_compressed_name_is_read_as_it_is(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_jsonl(RECORDS))
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.rows_in == len(RECORDS) == result.table.num_rows
    assert result.unreadable is None


def test_another_codec_than_the_name_says_is_read_by_its_content(tmp_path: Path) -> None:
    path = tmp_path / "shard.jsonl.zst"
    path.write_bytes(gzip.compress(_jsonl(RECORDS)))
    assert ingest_shard(_shard(path), SchemaConfig()).table.num_rows == len(RECORDS)


def test_a_parquet_file_under_a_text_name_is_read_as_parquet(tmp_path: Path) -> None:
    path = tmp_path / "shard.jsonl"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.table.num_rows == len(RECORDS) and result.quarantine.num_rows == 0


def test_sniffing_tells_containers_and_codecs_and_nothing_for_text() -> None:
    assert sniff(b"PAR1\x15\x04") == ("parquet", None)
    assert sniff(b"ARROW1\x00\x00") == ("arrow", None)
    assert sniff(b"\xff\xff\xff\xff\x10\x00") == ("arrow", None)
    assert sniff(gzip.compress(b"x")[:16]) == (None, "gzip")
    assert sniff(_zstd(b"x")[:16]) == (None, "zstd")
    assert sniff(bz2.compress(b"x")[:16]) == (None, "bz2")
    assert sniff(lzma.compress(b"x")[:16]) == (None, "xz")
    assert sniff(b'{"id": 1}') == (None, None)
    assert sniff(b"BZh is how this CSV header starts") == (None, None)


def test_an_overlong_line_is_quarantined_without_being_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "shard.jsonl"
    huge = {"id": "huge", "text": "x" * 50_000}
    lines = [RECORDS[0], huge, RECORDS[1], huge, RECORDS[2]]
    path.write_bytes(_jsonl(lines))
    limits = ReadLimits(max_record_bytes=10_000)
    result = ingest_shard(_shard(path), SchemaConfig(), limits=limits)
    assert result.rows_in == 5
    assert result.table.column("id").to_pylist() == ["r0", "r1", "r2"]
    rows = result.quarantine.to_pylist()
    assert [r["reason"] for r in rows] == [R.RECORD_TOO_LARGE] * 2
    assert [r["row"] for r in rows] == [1, 3]
    assert "max_record_bytes (10,000)" in rows[0]["detail"]
    assert rows[0]["raw"].startswith('{"id": "huge"') and len(rows[0]["raw"]) <= 2001


def test_a_line_of_exactly_the_limit_is_a_record(tmp_path: Path) -> None:
    line = json.dumps({"id": "a", "text": "y" * 100}).encode()
    path = tmp_path / "shard.jsonl"
    path.write_bytes(line + b"\n" + line)  # the last line without its newline
    limits = ReadLimits(max_record_bytes=len(line))
    result = ingest_shard(_shard(path), SchemaConfig(), limits=limits)
    assert result.table.num_rows == 2 and result.quarantine.num_rows == 0
    tight = ReadLimits(max_record_bytes=len(line) - 1)
    assert ingest_shard(_shard(path), SchemaConfig(), limits=tight).quarantine.num_rows == 2


@pytest.mark.parametrize("depth", [65, 200, 100_000])
def test_json_nested_too_deep_is_quarantined(tmp_path: Path, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    deep = f'{{"id": "deep", "text": "t", "meta": {nested}}}'
    path = tmp_path / "shard.jsonl"
    path.write_bytes(_jsonl(RECORDS[:2]) + deep.encode() + b"\n" + _jsonl(RECORDS[2:4]))
    for on_unreadable in ("fail", "skip"):
        result = ingest_shard(_shard(path), SchemaConfig(), on_unreadable=on_unreadable)
        assert result.rows_in == 5 and result.table.num_rows == 4
        (row,) = result.quarantine.to_pylist()
        assert row["reason"] == R.MALFORMED_JSON and "nested deeper than 64" in row["detail"]


def test_json_nested_to_the_limit_is_kept(tmp_path: Path) -> None:
    nested = "[" * 63 + "]" * 63  # with the record itself: 64 levels
    path = tmp_path / "shard.jsonl"
    path.write_bytes(f'{{"id": "a", "text": "t", "meta": {nested}}}\n'.encode())
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.table.num_rows == 1 and result.quarantine.num_rows == 0


def _sparse_keys(path: Path, n: int) -> None:
    """``n`` records, each with a key of its own besides id and text (free-form metadata)."""
    path.write_bytes(
        _jsonl([{"id": f"d{i}", "text": f"document {i}", f"key_{i}": i} for i in range(n)])
    )


def test_thousands_of_distinct_keys_cost_each_value_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.jsonl"
    n = 20_000
    _sparse_keys(path, n)
    converted = []
    real = ingest_module._to_arrow

    def counting(values: list) -> pa.Array:
        converted.append(len(values))
        return real(values)

    monkeypatch.setattr(ingest_module, "_to_arrow", counting)
    schema = SchemaConfig(passthrough=["key_7", "key_19999"], max_passthrough_columns=None)
    result = ingest_shard(_shard(path), schema)
    assert result.table.num_rows == n
    assert result.table.column("key_7").to_pylist()[:9] == [None] * 7 + [7, None]
    assert result.table.column("key_19999").to_pylist()[-1] == 19_999
    # Every present value converted once: not a value per record and key (n * keys).
    assert sum(converted) <= 2 * n
    converted.clear()
    _sparse_keys(tmp_path / "wide.jsonl", 1_500)  # every key kept: a column per key
    wide = SchemaConfig(max_passthrough_columns=None)
    assert ingest_shard(_shard(tmp_path / "wide.jsonl"), wide).table.num_columns == 1_500 + 4
    assert sum(converted) <= 2 * 1_500


def test_a_shard_past_the_passthrough_cap_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    _sparse_keys(path, 3_000)
    with pytest.raises(
        InputError, match=r"keys.jsonl: holds more than 1,000 distinct pass-through"
    ):
        ingest_shard(_shard(path), SchemaConfig())


def test_a_bomb_is_refused_naming_the_file_and_the_setting(tmp_path: Path) -> None:
    line = json.dumps({"id": "x", "text": "boom " * 200}).encode() + b"\n"
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(_zstd(line * 20_000))  # about 20 MB of lines in a few KB
    assert path.stat().st_size < 100_000
    limits = ReadLimits(max_shard_bytes=1_000_000)
    with pytest.raises(ShardTooLargeError, match=r"bomb.jsonl.zst: .*input.max_shard_bytes"):
        ingest_shard(_shard(path), SchemaConfig(), limits=limits)
    rows = ReadLimits(max_rows=100)
    with pytest.raises(ShardTooLargeError, match=r"bomb.jsonl.zst: .*input.max_rows \(100\)"):
        ingest_shard(_shard(path), SchemaConfig(), limits=rows)


def test_a_parquet_file_past_the_limits_is_refused_from_its_footer(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    with pytest.raises(ShardTooLargeError, match=r"big.parquet: has 30 rows"):
        ingest_shard(_shard(path), SchemaConfig(), limits=ReadLimits(max_rows=10))
    with pytest.raises(ShardTooLargeError, match=r"big.parquet: holds .* bytes of data"):
        ingest_shard(_shard(path), SchemaConfig(), limits=ReadLimits(max_shard_bytes=100))


def _dictionary_parquet(path: Path, values: list[str], indices: np.ndarray) -> None:
    text = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values))
    ids = pa.array([f"d{i}" for i in range(len(indices))])
    pq.write_table(pa.table({"id": ids, "text": text}), path)


def test_a_repeated_dictionary_value_is_measured_before_it_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.parquet"
    big = "word " * 40_000  # 200 KB, stored once however many rows repeat it
    indices = np.zeros(2_000, dtype=np.int32)
    indices[::7] = 1
    _dictionary_parquet(path, [big, "a short document"], indices)
    assert path.stat().st_size < 200_000
    limits = ReadLimits(max_record_bytes=100_000, batch_bytes=1 << 20)
    result = ingest_shard(_shard(path), SchemaConfig(), limits=limits)
    short = int((indices == 1).sum())
    assert result.table.num_rows == short
    assert set(result.table.column("text").to_pylist()) == {"a short document"}
    reasons = result.quarantine.column("reason").to_pylist()
    assert reasons == [R.RECORD_TOO_LARGE] * (len(indices) - short)
    first = result.quarantine.to_pylist()[0]
    assert (
        first["id"] == "d1" and first["raw"].startswith("word word") and len(first["raw"]) <= 2001
    )


def test_a_batch_of_large_rows_is_sliced_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    texts = [f"{i} " + "z" * 100_000 for i in range(40)]
    pq.write_table(pa.table({"id": [str(i) for i in range(40)], "text": texts}), path)
    sizes = []

    class Sizes:
        def write(self, table: pa.Table) -> None:
            sizes.append(table.get_total_buffer_size())

    from thresher.io.ingest import ingest_stream

    limits = ReadLimits(batch_bytes=500_000)
    counts = ingest_stream(_shard(path), SchemaConfig(), Sizes(), Sizes(), limits=limits)
    assert counts.ingested == 40 and len(sizes) >= 8
    assert max(sizes) < 2 * 500_000
