"""Input formats: the same records read the same from every container and compression.

Every format goes through the same quarantine rules, and a damaged file
either stops with its name or, under ``on_unreadable="skip"``, keeps what
was read before the damage.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import pickle
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from thresher.config import SchemaConfig, parse_config
from thresher.errors import DamagedInputError, InputError
from thresher.io.formats import detect_format, is_shard_name, split_name
from thresher.io.ingest import ingest_shard
from thresher.io.shards import Shard

RECORDS = [
    {"id": f"r{i}", "text": f"Record {i} says something about boats, \u00e9t\u00e9 and 🚤.", "n": i}
    for i in range(40)
]


def _jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


def _csv_bytes(records: list[dict], delimiter: str) -> bytes:
    sink = pa.BufferOutputStream()
    options = pcsv.WriteOptions(delimiter=delimiter)
    pcsv.write_csv(pa.Table.from_pylist(records), sink, write_options=options)
    return sink.getvalue().to_pybytes()


def _arrow_stream(table: pa.Table, path: Path) -> None:
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=7)


WRITERS: dict[str, Callable[[Path], None]] = {
    "a.jsonl": lambda p: p.write_bytes(_jsonl_bytes(RECORDS)),
    "a.jsonl.gz": lambda p: p.write_bytes(gzip.compress(_jsonl_bytes(RECORDS))),
    "a.jsonl.zst": lambda p: p.write_bytes(
        _zstd(_jsonl_bytes(RECORDS[:20])) + _zstd(_jsonl_bytes(RECORDS[20:]))  # two frames
    ),
    "a.json.zst": lambda p: p.write_bytes(_zstd(_jsonl_bytes(RECORDS))),
    "a.jsonl.bz2": lambda p: p.write_bytes(bz2.compress(_jsonl_bytes(RECORDS))),
    "a.jsonl.xz": lambda p: p.write_bytes(lzma.compress(_jsonl_bytes(RECORDS))),
    "a.parquet": lambda p: pq.write_table(pa.Table.from_pylist(RECORDS), p, row_group_size=9),
    "a.feather": lambda p: feather.write_feather(pa.Table.from_pylist(RECORDS), p, chunksize=9),
    "a.arrow": lambda p: _arrow_stream(pa.Table.from_pylist(RECORDS), p),
    "a.csv": lambda p: p.write_bytes(_csv_bytes(RECORDS, ",")),
    "a.tsv": lambda p: p.write_bytes(_csv_bytes(RECORDS, "\t")),
    "a.csv.gz": lambda p: p.write_bytes(gzip.compress(_csv_bytes(RECORDS, ","))),
}


def _shard(path: Path) -> Shard:
    return Shard(0, str(path), path.name, detect_format(path.name))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_format_yields_the_same_rows(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    WRITERS[name](path)
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.rows_in == len(RECORDS) and result.quarantine.num_rows == 0
    rows = result.table.select(["id", "text", "n"]).to_pylist()
    assert [{**r, "n": int(r["n"])} for r in rows] == RECORDS
    assert result.content["size"] == path.stat().st_size  # every byte read and hashed


def test_names_tell_format_and_compression() -> None:
    assert split_name("x/part-0.jsonl.zst") == ("jsonl", "zstd")
    assert split_name("part.CSV.GZ") == ("csv", "gzip")
    assert split_name("shard.feather") == ("arrow", None)
    assert split_name("shard.parquet.gz") == (None, "gzip")  # compressed Parquet is no shard
    assert not is_shard_name("notes.txt") and not is_shard_name("_hidden.jsonl")
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format("shard.parquet.gz")


def test_a_hugging_face_dataset_directory_is_its_arrow_files(tmp_path: Path) -> None:
    """``datasets.save_to_disk``: Arrow stream files plus state.json and dataset_info.json."""
    data = tmp_path / "hf" / "train"
    data.mkdir(parents=True)
    table = pa.Table.from_pylist(RECORDS)
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    _arrow_stream(table.slice(0, 25), data / names[0])
    _arrow_stream(table.slice(25), data / names[1])
    state = {"_data_files": [{"filename": n} for n in names], "_split": "train"}
    (data / "state.json").write_text(json.dumps(state))
    (data / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (tmp_path / "hf" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    config = parse_config(
        {"run_dir": str(tmp_path / "run"), "input": {"paths": [str(tmp_path / "hf")]}},
        base_dir=tmp_path,
    )
    files = [e.location.name for e in config.input_files()]
    assert files == names  # no metadata file is taken for a JSON shard
    tables = [
        ingest_shard(Shard(i, str(data / n), n, "arrow"), SchemaConfig()).table
        for i, n in enumerate(names)
    ]
    ids = [r for t in tables for r in t.column("id").to_pylist()]
    assert ids == [r["id"] for r in RECORDS]


def test_csv_rows_with_the_wrong_number_of_fields_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b'id,text\nx1,"a, quoted, text"\nx2,one,two\nx3,plain text\n')
    result = ingest_shard(_shard(path), SchemaConfig())
    assert result.rows_in == 3
    assert result.table.column("text").to_pylist() == ["a, quoted, text", "plain text"]
    (bad,) = result.quarantine.to_pylist()
    assert bad["reason"] == "malformed_row" and bad["raw"] == "x2,one,two"
    assert bad["row"] == 3 and "row 3 of the file" in bad["detail"]


def test_numbers_in_a_csv_text_column_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,text\n1,42\n2,3.5\n")
    table = ingest_shard(_shard(path), SchemaConfig()).table
    assert table.column("text").to_pylist() == ["42", "3.5"]
    assert table.column("id").to_pylist() == ["1", "2"]


# -- damaged files -----------------------------------------------------------------------


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


MANY = [{"id": f"m{i}", "text": f"Line number {i} of a long shard. " * 8} for i in range(6000)]


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("cut.jsonl.gz", gzip.compress),
        ("cut.jsonl.bz2", bz2.compress),
        ("cut.jsonl.xz", lzma.compress),
    ],
)
def test_a_truncated_stream_keeps_every_complete_line_when_skipped(
    tmp_path: Path, name: str, compress: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / name
    path.write_bytes(compress(_jsonl_bytes(MANY)))
    _cut(path, 0.8)  # (bz2 decodes whole 900 kB blocks: the first one must be complete)
    with pytest.raises(DamagedInputError, match=rf"{name}: unreadable \w+ JSONL file"):
        ingest_shard(_shard(path), SchemaConfig())
    result = ingest_shard(_shard(path), SchemaConfig(), on_unreadable="skip")
    assert result.unreadable is not None and "EOFError" in result.unreadable["error"]
    assert result.unreadable["rows_read"] == result.rows_in == result.table.num_rows
    assert 0 < result.rows_in < len(MANY)
    assert result.table.column("id").to_pylist() == [r["id"] for r in MANY[: result.rows_in]]
    if name.endswith(".gz"):  # exactly the complete lines of the readable prefix
        readable = _readable_gzip_prefix(path.read_bytes())
        assert result.rows_in == readable.count(b"\n")


def _readable_gzip_prefix(data: bytes) -> bytes:
    """Everything zlib can decompress from a cut gzip member (a reference, not thresher's code)."""
    import zlib

    return zlib.decompressobj(wbits=31).decompress(data)


@pytest.mark.parametrize("kind", ["zero", "cut", "garbage"])
def test_unreadable_parquet_and_arrow_files_are_skipped_with_their_error(
    tmp_path: Path, kind: str
) -> None:
    for name, write in (("p.parquet", WRITERS["a.parquet"]), ("f.feather", WRITERS["a.feather"])):
        path = tmp_path / name
        write(path)
        if kind == "zero":
            path.write_bytes(b"")
        elif kind == "cut":
            _cut(path, 0.6)
        else:
            path.write_bytes(b"\x00not a columnar file\xff" * 10)
        with pytest.raises(DamagedInputError, match=rf"{name}: unreadable"):
            ingest_shard(_shard(path), SchemaConfig())
        result = ingest_shard(_shard(path), SchemaConfig(), on_unreadable="skip")
        assert result.unreadable is not None and result.unreadable["error"]
        assert result.rows_in == result.table.num_rows + result.quarantine.num_rows


def test_a_corrupt_zstd_frame_is_damage_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.zst"
    data = bytearray(_zstd(_jsonl_bytes(MANY)))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedInputError, match="unreadable zstd JSONL file"):
        ingest_shard(_shard(path), SchemaConfig())
    result = ingest_shard(_shard(path), SchemaConfig(), on_unreadable="skip")
    assert result.rows_in < len(MANY)
    ids = result.table.column("id").to_pylist()
    assert ids == [r["id"] for r in MANY[: len(ids)]]  # what was read is intact


def test_zero_byte_text_files_are_empty_shards(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.jsonl.gz", "e.csv"):
        path = tmp_path / name
        path.write_bytes(b"")
        result = ingest_shard(_shard(path), SchemaConfig())
        assert (result.rows_in, result.unreadable) == (0, None)


def test_the_damage_error_survives_pickling() -> None:
    error = DamagedInputError("x.parquet: unreadable Parquet file (boom)", "boom")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, InputError)
    assert (str(copy), copy.cause) == (str(error), "boom")
