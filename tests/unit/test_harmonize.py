"""Harmonize: one type per column, and no drift reported where no value disagrees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.config import SchemaConfig
from thresher.engines.local import LocalEngine
from thresher.io import schema as S
from thresher.io.files import read_schema
from thresher.io.formats import detect_format
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.stages.harmonize import harmonize_ingested, read_common_schema
from thresher.stages.ingest import ingest_to_run


def _ingest(run: RunDir, paths: list[Path]) -> list[dict[str, Any]]:
    """Ingest ``paths`` into ``run``; return each shard's ingest statistics."""
    schema = SchemaConfig(id="id", text="text", label="topic")
    return [
        ingest_to_run(Shard(index, str(path), path.name, detect_format(path)), schema, run)
        for index, path in enumerate(paths)
    ]


def test_a_single_all_quarantined_input_reports_no_drift(tmp_path: Path) -> None:
    """Every record quarantined: the empty ingested shard keeps its own column types."""
    path = tmp_path / "blank.jsonl"
    rows = [{"id": f"b{i}", "text": " ", "topic": "news", "views": i} for i in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    run = RunDir(tmp_path / "run")
    stats = _ingest(run, [path])
    ingested = read_schema(run.ingested_shard(0))
    assert pq.read_metadata(run.ingested_shard(0).uri).num_rows == 0  # the fault: no row votes
    assert ingested.field(S.SHARD).type == pa.int32()
    with LocalEngine(workers=1) as engine:
        assert harmonize_ingested(run, stats, engine) == {}
    common = read_common_schema(run)
    assert common is not None
    assert common.field(S.SHARD).type == pa.int32() and common.field(S.ROW).type == pa.int64()
    assert read_schema(run.ingested_shard(0)) == ingested  # nothing rewritten


def test_a_real_type_conflict_is_still_converted(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    pq.write_table(
        pa.table({"id": ["a"], "text": ["one text"], "topic": ["x"], "views": [3]}),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table({"id": ["b"], "text": ["two text"], "topic": ["y"], "views": ["many"]}),
        tmp_path / "b.parquet",
    )
    blank = tmp_path / "c.jsonl"  # all quarantined: votes for nothing, changes nothing
    blank.write_text(json.dumps({"id": "c", "text": "", "topic": "z"}) + "\n", encoding="utf-8")
    stats = _ingest(run, [tmp_path / "a.parquet", tmp_path / "b.parquet", blank])
    with LocalEngine(workers=1) as engine:
        assert harmonize_ingested(run, stats, engine) == {0: ["views"]}
    assert read_schema(run.ingested_shard(0)).field("views").type == pa.string()
