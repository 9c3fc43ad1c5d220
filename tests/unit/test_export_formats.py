"""The export formats, read back by the trainers' own libraries.

Megatron-LM files are read with megatron-core's ``IndexedDataset`` and
compared byte for byte with its ``IndexedDatasetBuilder``; MDS shards are
read with mosaicml-streaming's ``StreamingDataset`` and compared byte for
byte with its ``MDSWriter``. A writer that fails publishes nothing.
"""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.readers import (
    deltalake_in_child,
    megatron_indexed_dataset,
    read_delta,
    streaming_without_torchvision,
)
from thresher.errors import StorageError
from thresher.export.mds import MDSWriter, mds_encodings, write_mds_index
from thresher.export.megatron import MegatronFiles, MegatronWriter, megatron_dtype
from thresher.io.fs import Location

EOD = 0


# -- Megatron-LM ---------------------------------------------------------------------------


def _documents(vocab_size: int, seed: int) -> list[np.ndarray]:
    """Documents with known ids, EOD appended: a normal one, an EOD-only one, an empty one..."""
    rng = np.random.default_rng(seed)
    docs = [np.append(rng.integers(1, vocab_size, size=n), EOD) for n in (5, 0, 17, 1, 300)]
    docs.insert(2, np.array([], dtype=np.int64))  # a document without even its EOD
    docs.append(np.array([vocab_size - 1, EOD]))  # the largest id survives the dtype
    return docs


@pytest.mark.parametrize(("vocab_size", "dtype"), [(50_000, np.uint16), (100_000, np.int32)])
def test_megatron_files_read_back_by_megatron(
    tmp_path: Path, vocab_size: int, dtype: type[np.number]
) -> None:
    indexed = megatron_indexed_dataset()
    files: list[tuple[str, list[np.ndarray], MegatronFiles]] = []
    for part in range(3):
        prefix = str(tmp_path / "out" / f"part-{part:05d}")
        docs = _documents(vocab_size, seed=part)
        with MegatronWriter(Location.of(prefix), vocab_size) as writer:
            for doc in docs:
                writer.add_document(doc)
        assert writer.files is not None
        files.append((prefix, docs, writer.files))

    for prefix, docs, result in files:
        dataset = indexed.IndexedDataset(prefix)
        assert len(dataset) == len(docs)
        for i, doc in enumerate(docs):
            assert dataset[i].dtype == dtype
            assert dataset[i].tolist() == doc.tolist()
        assert dataset.sequence_lengths.tolist() == [len(d) for d in docs]
        assert dataset.document_indices.tolist() == list(range(len(docs) + 1))
        tokens = sum(len(d) for d in docs)
        assert result == MegatronFiles(
            bin=Location.of(prefix + ".bin"),
            idx=Location.of(prefix + ".idx"),
            documents=len(docs),
            tokens=tokens,
            bin_bytes=tokens * np.dtype(dtype).itemsize,
            idx_bytes=os.path.getsize(prefix + ".idx"),
        )
        assert result.bin_bytes == os.path.getsize(prefix + ".bin")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        f"part-{p:05d}.{ext}" for p in range(3) for ext in ("bin", "idx")
    )


@pytest.mark.parametrize("vocab_size", [50_000, 100_000])
def test_megatron_files_equal_megatrons_builder_byte_for_byte(
    tmp_path: Path, vocab_size: int
) -> None:
    indexed = megatron_indexed_dataset()
    docs = _documents(vocab_size, seed=5)
    with MegatronWriter(Location.of(str(tmp_path / "ours")), vocab_size) as writer:
        for doc in docs:
            writer.add_document(doc)
    builder = indexed.IndexedDatasetBuilder(
        str(tmp_path / "theirs.bin"), dtype=indexed.DType.optimal_dtype(vocab_size)
    )
    for doc in docs:
        builder.add_document(doc, [len(doc)])  # any array: it calls numpy.array on it
    builder.finalize(str(tmp_path / "theirs.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"theirs.{ext}").read_bytes()


def test_megatron_dtype_follows_megatrons_choice() -> None:
    indexed = megatron_indexed_dataset()
    for vocab_size in (2, 50_257, 65_499, 65_500, 100_277, 256_000):
        theirs = indexed.DType.optimal_dtype(vocab_size)
        assert megatron_dtype(vocab_size) == np.dtype(theirs), vocab_size


def test_megatron_writer_refuses_ids_outside_the_vocabulary(tmp_path: Path) -> None:
    with MegatronWriter(Location.of(str(tmp_path / "x")), 1000) as writer:
        writer.add_document(np.array([999, 0]))
        with pytest.raises(ValueError, match=r"\[0, 1000\)"):
            writer.add_document(np.array([1000, 0]))
        with pytest.raises(ValueError, match=r"\[0, 1000\)"):
            writer.add_document(np.array([-1, 0]))
        with pytest.raises(ValueError, match="integers"):
            writer.add_document(np.array([1.5, 0.0]))
    assert writer.files is not None
    assert writer.files.documents == 1


def test_megatron_writer_that_fails_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with (
        pytest.raises(RuntimeError, match="midway"),
        MegatronWriter(Location.of(str(out / "part")), 50_000) as writer,
    ):
        writer.add_document(np.arange(100))
        raise RuntimeError("midway")
    assert os.listdir(out) == []  # neither file, nor the temporary .bin


def test_megatron_files_on_object_storage(s3_bucket: str, tmp_path: Path) -> None:
    docs = _documents(50_000, seed=9)
    for root in (f"s3://{s3_bucket}/export", str(tmp_path)):
        with MegatronWriter(Location.of(f"{root}/part"), 50_000) as writer:
            for doc in docs:
                writer.add_document(doc)
    for ext in ("bin", "idx"):
        remote = Location.of(f"s3://{s3_bucket}/export/part.{ext}").read_bytes()
        assert remote == (tmp_path / f"part.{ext}").read_bytes()


# -- MosaicML Streaming (MDS) ----------------------------------------------------------------


def _table(n: int) -> pa.Table:
    """Rows with every kind of column: required id/text, numbers, nulls, lists, structs."""
    return pa.table(
        {
            "text": [("héllo wörld " * (i % 7)) + f"#{i}" for i in range(n)],
            "id": [f"doc-{i:04d}" for i in range(n)],
            "tokens": pa.array(range(n), pa.int32()),
            "score": [i / 7 for i in range(n)],
            "label": [None if i % 3 == 0 else f"l{i % 4}" for i in range(n)],
            "weight": [None if i % 5 == 0 else i * 0.5 for i in range(n)],
            "tags": [[f"t{j}" for j in range(i % 4)] if i % 6 else None for i in range(n)],
            "meta": [{"source": f"s{i % 2}", "pos": i} for i in range(n)],
        }
    )


REQUIRED = ("id", "text")


def test_mds_encodings_keep_required_columns_native_and_the_rest_json() -> None:
    encodings = mds_encodings(_table(3).schema, {"id", "text", "tokens", "score"})
    assert encodings == {
        "text": "str",
        "id": "str",
        "tokens": "int64",
        "score": "float64",
        "label": "json",
        "weight": "json",
        "tags": "json",
        "meta": "json",
    }


@pytest.mark.parametrize(
    ("column", "encoding"),
    [
        (pa.array(["a", None]), "str"),
        (pa.array([1, None]), "int64"),
        (pa.array([0.5, None]), "float64"),
    ],
)
def test_mds_writer_refuses_a_null_in_a_native_column(
    tmp_path: Path, column: pa.Array, encoding: str
) -> None:
    table = pa.table({"id": ["a", "b"], "broken": column})
    writer = MDSWriter(Location.of(str(tmp_path)), "p", {"id": "str", "broken": encoding})
    with pytest.raises(ValueError, match="column 'broken' holds nulls"):
        writer.write(table)
    assert writer.close() == []
    assert os.listdir(tmp_path) == []


def _write_mds(directory: Path, table: pa.Table, encodings: dict[str, str], writers: int) -> int:
    """Write ``table`` in ``writers`` consecutive slices (one writer each); return the shards."""
    shards: list[dict[str, Any]] = []
    bounds = np.linspace(0, table.num_rows, writers + 1).astype(int)
    for w, (lo, hi) in enumerate(pairwise(bounds)):
        with MDSWriter(Location.of(str(directory)), f"part-{w:05d}", encodings, 2_000) as writer:
            for start in range(lo, hi, 7):  # several batches per writer
                writer.write(table.slice(start, min(7, hi - start)))
        shards.extend(writer.shards)
    write_mds_index(Location.of(str(directory)), shards)
    return len(shards)


def test_mds_shards_read_back_by_streaming_dataset(tmp_path: Path) -> None:
    streaming = streaming_without_torchvision()
    table = _table(120)
    encodings = mds_encodings(table.schema, REQUIRED) | {"tokens": "int32", "score": "float64"}
    shards = _write_mds(tmp_path / "mds", table, encodings, writers=2)
    assert shards >= 4  # the size limit split each writer's rows

    dataset = streaming.StreamingDataset(local=str(tmp_path / "mds"), shuffle=False, batch_size=1)
    samples = list(dataset)
    assert len(dataset) == len(samples) == table.num_rows
    for sample, row in zip(samples, table.to_pylist(), strict=True):
        assert {k: v.item() if isinstance(v, np.generic) else v for k, v in sample.items()} == row
    index = json.loads((tmp_path / "mds" / "index.json").read_text())
    for shard in index["shards"]:
        size = (tmp_path / "mds" / shard["raw_data"]["basename"]).stat().st_size
        assert size == shard["raw_data"]["bytes"]
        assert size <= 2_000 or shard["samples"] == 1


@pytest.mark.parametrize(
    "encodings",
    [
        None,  # what mds_encodings picks
        {"tokens": "int64", "score": "float32", "id": "bytes", "text": "str", "label": "json"},
    ],
)
def test_mds_shards_equal_streamings_writer_byte_for_byte(
    tmp_path: Path, encodings: dict[str, str] | None
) -> None:
    streaming = streaming_without_torchvision()
    table = _table(60)
    if encodings is None:
        encodings = mds_encodings(table.schema, {*REQUIRED, "tokens", "score"})
    else:
        table = table.select(sorted(encodings))
        ids = table.column("id").cast(pa.binary())
        table = table.set_column(table.schema.get_field_index("id"), "id", ids)
    with MDSWriter(Location.of(str(tmp_path / "ours")), "shard", encodings, 1_500) as writer:
        writer.write(table.slice(0, 25))
        writer.write(table.slice(25))
    write_mds_index(Location.of(str(tmp_path / "ours")), writer.shards)
    with streaming.MDSWriter(
        columns=encodings, out=str(tmp_path / "theirs"), size_limit=1_500
    ) as theirs:
        for row in table.to_pylist():
            theirs.write(row)

    names = sorted(os.listdir(tmp_path / "theirs"))
    assert len(names) > 3  # index.json and several shards
    assert sorted(os.listdir(tmp_path / "ours")) == names
    for name in names:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes()


def test_mds_writer_that_fails_publishes_nothing(tmp_path: Path) -> None:
    table = _table(100)
    encodings = mds_encodings(table.schema, REQUIRED)
    with (
        pytest.raises(RuntimeError, match="midway"),
        MDSWriter(Location.of(str(tmp_path)), "part", encodings, 1_000) as writer,
    ):
        writer.write(table)  # publishes the complete shards
        assert len(writer.shards) > 1
        raise RuntimeError("midway")
    assert os.listdir(tmp_path) == []


def test_mds_shards_on_object_storage(s3_bucket: str, tmp_path: Path) -> None:
    table = _table(40)
    encodings = mds_encodings(table.schema, REQUIRED)
    for root in (f"s3://{s3_bucket}/mds", str(tmp_path)):
        with MDSWriter(Location.of(root), "part", encodings, 1_000) as writer:
            writer.write(table)
        write_mds_index(Location.of(root), writer.shards)
    names = sorted(os.listdir(tmp_path))
    remote = Location.of(f"s3://{s3_bucket}/mds")
    assert [entry.location.name for entry in remote.list_files()] == names
    for name in names:
        assert (remote / name).read_bytes() == (tmp_path / name).read_bytes()


# -- Delta Lake ------------------------------------------------------------------------------


def _parquet_bytes(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue()


def _parquet_files(directory: Path, tables: list[pa.Table]) -> list[Location]:
    directory.mkdir(parents=True)
    files = []
    for i, table in enumerate(tables):
        path = directory / f"part-{i:05d}.parquet"
        pq.write_table(table, path)
        files.append(Location.of(str(path)))
    return files


def test_delta_publications_are_versions_readers_can_travel_back_to(tmp_path: Path) -> None:
    deltalake_in_child()
    from thresher.export.delta import publish_table, table_state

    table = Location.of(str(tmp_path / "delta"))
    assert table_state(table) is None
    first = _table(30).select(["id", "text", "score"])
    files = _parquet_files(tmp_path / "v1", [first.slice(0, 12), first.slice(12)])
    assert publish_table(table, files, "v-one") == 0
    assert table_state(table) == (0, "v-one")

    second = _table(50).slice(30).select(["id", "text", "tags"])  # other rows, other schema
    files = _parquet_files(tmp_path / "v2", [second])
    assert publish_table(table, files, "v-two") == 1
    assert table_state(table) == (1, "v-two")

    latest = read_delta(table.uri, tmp_path / "latest.arrow")
    assert latest.sort_by("id").to_pylist() == second.to_pylist()
    old = read_delta(table.uri, tmp_path / "old.arrow", version=0)
    assert old.sort_by("id").to_pylist() == first.to_pylist()


def test_delta_table_on_object_storage(s3_bucket: str, tmp_path: Path) -> None:
    deltalake_in_child()
    from thresher.export.delta import delta_storage_options, publish_table, table_state

    rows = _table(20).select(["id", "text"])
    source = Location.of(f"s3://{s3_bucket}/export/part-00000.parquet")
    source.write_bytes(_parquet_bytes(rows))
    table = Location.of(f"s3://{s3_bucket}/delta")
    assert table_state(table) is None
    assert publish_table(table, [source], "v-one") == 0
    assert publish_table(table, [source], "v-two") == 1
    assert table_state(table) == (1, "v-two")
    options = delta_storage_options(table)
    read = read_delta(f"s3://{s3_bucket}/delta", tmp_path / "old.arrow", 0, options)
    assert read.sort_by("id").to_pylist() == rows.to_pylist()


def test_a_delta_failure_is_reported_with_its_reason(tmp_path: Path) -> None:
    deltalake_in_child()
    from thresher.export.delta import publish_table

    missing = Location.of(str(tmp_path / "absent.parquet"))
    with pytest.raises(StorageError, match=r"absent\.parquet"):
        publish_table(Location.of(str(tmp_path / "delta")), [missing], "v-one")
