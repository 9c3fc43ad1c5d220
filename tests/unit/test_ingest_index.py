"""The ingest index: one file holds every shard's statistics, markers written since win.

A re-run over many unchanged inputs must read one file, not a marker per
input; a run killed after some shards committed leaves markers that the
next run must still see.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.config import SchemaConfig
from thresher.io import ingest_index
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.stages.ingest import ingest_to_run, pending_shards


def _inputs(tmp_path: Path, n: int) -> list[Shard]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shards = []
    for index in range(n):
        path = corpus / f"part-{index}.jsonl"
        path.write_text(json.dumps({"id": f"d{index}", "text": f"document {index}"}) + "\n")
        shards.append(Shard(index, str(path), path.name, "jsonl", {"size": path.stat().st_size}))
    return shards


def test_markers_fold_into_one_index_and_later_markers_win(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    shards = _inputs(tmp_path, 5)
    stats = [ingest_to_run(shard, SchemaConfig(), run) for shard in shards[:3]]
    assert len(list((tmp_path / "run" / "_state" / "ingest").glob("shard-*.json"))) == 3
    ingest_index.save(run.ingest_markers, stats)
    files = sorted(p.name for p in (tmp_path / "run" / "_state" / "ingest").iterdir())
    assert files == ["index.parquet"]
    # a run killed after two more shards committed: their markers are read with the index
    for shard in shards[3:]:
        ingest_to_run(shard, SchemaConfig(), run)
    found = ingest_index.load(run.ingest_markers)
    assert sorted(found) == [0, 1, 2, 3, 4]
    assert all("reused" not in s for s in found.values())
    assert [s["name"] for s in run.stored_ingest_stats()] == [s.name for s in shards]
    pending, done = pending_shards(shards, run)
    assert pending == [] and [d["index"] for d in done] == [0, 1, 2, 3, 4]


def test_a_pending_check_reads_the_index_not_the_markers(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    shards = _inputs(tmp_path, 4)
    stats = [ingest_to_run(shard, SchemaConfig(), run) for shard in shards]
    ingest_index.save(run.ingest_markers, stats)
    index = tmp_path / "run" / "_state" / "ingest" / "index.parquet"
    table = pq.read_table(index)
    assert table.column("index").to_pylist() == [0, 1, 2, 3]
    # The index alone decides: drop shard 2 from it, and shard 2 is pending again.
    kept = table.filter(pa.array([True, True, False, True]))
    pq.write_table(kept, index)
    pending, done = pending_shards(shards, run)
    assert [s.index for s in pending] == [2] and len(done) == 3


def test_stats_carry_the_ingested_schema_for_harmonize(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    (shard,) = _inputs(tmp_path, 1)
    stats = ingest_to_run(shard, SchemaConfig(), run)
    schema = ingest_index.decode_schema(stats["schema"])
    footer = pq.read_schema(tmp_path / "run" / "ingested" / "shard-00000.parquet")
    assert schema.equals(footer)
    assert set(stats["valued"]) == {"id", "text", "thresher_shard", "thresher_row"}
