"""The `features` schema role: feature vectors instead of (or beside) text.

Every record either becomes a canonical row with ``features: list<float32>``
or is quarantined with reason ``invalid_features`` (or
``missing_features_column``) and a detail that says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher import reasons as R
from thresher.config import SchemaConfig, parse_config
from thresher.errors import ConfigError
from thresher.io import ingest
from thresher.io import schema as S
from thresher.io.formats import detect_format
from thresher.io.ingest import ingest_shard
from thresher.io.shards import Shard
from thresher.stages.materialize import output_columns, output_names

FEATURES_ONLY = SchemaConfig(id="id", text=None, label="y", features="pixels")


def _shard(path: Path) -> Shard:
    return Shard(0, str(path), path.name, detect_format(path))


def _reasons(result: ingest.IngestResult) -> dict[int, tuple[str, str]]:
    q = result.quarantine
    return {
        row: (reason, detail)
        for row, reason, detail in zip(
            q.column("row").to_pylist(),
            q.column("reason").to_pylist(),
            q.column("detail").to_pylist(),
            strict=True,
        )
    }


@pytest.mark.parametrize(
    "vector_type",
    [pa.list_(pa.float64()), pa.large_list(pa.int32()), pa.list_(pa.float32(), 3)],
    ids=["list", "large_list", "fixed_size_list"],
)
def test_parquet_vectors_of_any_list_type_become_float32_lists(
    tmp_path: Path, vector_type: pa.DataType
) -> None:
    vectors = [[1, 2, 3], [4, 5, 6], None, [7, 8, 9]]
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "pixels": pa.array(vectors, vector_type),
            "y": [0, 1, 0, 1],
        }
    )
    pq.write_table(table, tmp_path / "s.parquet")
    result = ingest_shard(_shard(tmp_path / "s.parquet"), FEATURES_ONLY)
    out = result.table
    assert out.column_names == ["id", S.FEATURES, S.LABEL, S.SHARD, S.ROW]
    assert out.schema.field(S.FEATURES).type == pa.list_(pa.float32())
    assert out.column(S.FEATURES).to_pylist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert _reasons(result) == {2: (R.INVALID_FEATURES, "null or absent")}
    assert result.rows_in == out.num_rows + result.quarantine.num_rows


def test_parquet_bad_vectors_are_quarantined_with_reasons(tmp_path: Path) -> None:
    vectors = [
        [0.5, 1.5],  # 0: fixes the shard's length (2)
        [],  # 1: empty
        [1.0, float("nan")],  # 2: NaN
        [float("inf"), 0.0],  # 3: inf
        [1e300, 0.0],  # 4: finite in float64, not in float32
        [1.0, 2.0, 3.0],  # 5: wrong length
        [1.0, None],  # 6: null element
        None,  # 7: null vector
        [3.0, 4.0],  # 8: fine
    ]
    table = pa.table({"id": [str(i) for i in range(len(vectors))], "pixels": vectors})
    pq.write_table(table, tmp_path / "s.parquet")
    result = ingest_shard(_shard(tmp_path / "s.parquet"), FEATURES_ONLY)
    assert result.table.column("id").to_pylist() == ["0", "8"]
    reasons = _reasons(result)
    assert {row: reason for row, (reason, _) in reasons.items()} == dict.fromkeys(
        range(1, 8), R.INVALID_FEATURES
    )
    assert reasons[1][1] == "empty vector"
    assert "length 3" in reasons[5][1] and "length 2" in reasons[5][1]
    for row in (2, 3, 4, 6):
        assert "NaN" in reasons[row][1]
    # the quarantine keeps the offending record's id and a preview of the vector
    quarantined_ids = result.quarantine.column("id").to_pylist()
    assert quarantined_ids == [str(i) for i in range(1, 8)]
    assert result.quarantine.column("raw")[0].as_py() == "[]"


def test_parquet_non_numeric_vectors_and_missing_column(tmp_path: Path) -> None:
    strings = pa.table({"id": ["a", "b"], "pixels": [["1", "2"], ["3", "4"]]})
    pq.write_table(strings, tmp_path / "strings.parquet")
    result = ingest_shard(_shard(tmp_path / "strings.parquet"), FEATURES_ONLY)
    assert result.table.num_rows == 0
    assert {r for r, _ in _reasons(result).values()} == {R.INVALID_FEATURES}
    assert "not a list of numbers" in next(iter(_reasons(result).values()))[1]

    scalars = pa.table({"id": ["a"], "pixels": [3.0]})
    pq.write_table(scalars, tmp_path / "scalars.parquet")
    assert _reasons(ingest_shard(_shard(tmp_path / "scalars.parquet"), FEATURES_ONLY))[0][0] == (
        R.INVALID_FEATURES
    )

    missing = pa.table({"id": ["a", "b"], "other": [1, 2]})
    pq.write_table(missing, tmp_path / "missing.parquet")
    result = ingest_shard(_shard(tmp_path / "missing.parquet"), FEATURES_ONLY)
    assert result.rows_in == 2 and result.table.num_rows == 0
    assert {r for r, _ in _reasons(result).values()} == {R.MISSING_FEATURES_COLUMN}


def test_jsonl_bad_vectors_are_quarantined_with_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of two lines: the first valid length must hold across chunks.
    monkeypatch.setattr(ingest, "JSONL_CHUNK_LINES", 2)
    records = [
        {"id": "0", "pixels": None},  # 0: null: does not fix the length
        {"id": "1", "pixels": [1, 2.5, 3]},  # 1: fixes length 3 (ints are fine)
        {"id": "2", "pixels": "1,2,3"},  # 2: a string
        {"id": "3", "pixels": [1, "x", 3]},  # 3: non-numeric element
        {"id": "4", "pixels": [1, True, 3]},  # 4: booleans are not numbers
        {"id": "5"},  # 5: absent
        {"id": "6", "pixels": [1, 2]},  # 6: wrong length (later chunk)
        {"id": "7", "pixels": [4, 5, 6], "extra": "kept"},  # 7: fine
    ]
    lines = [json.dumps(r) for r in records] + ['{"id": "8", "pixels": [1, NaN, 2]}']
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = ingest_shard(_shard(path), FEATURES_ONLY)
    assert result.table.column("id").to_pylist() == ["1", "7"]
    assert result.table.column(S.FEATURES).to_pylist() == [[1.0, 2.5, 3.0], [4.0, 5.0, 6.0]]
    assert result.table.column("extra").to_pylist() == [None, "kept"]
    reasons = _reasons(result)
    assert {row: reason for row, (reason, _) in reasons.items()} == dict.fromkeys(
        [0, 2, 3, 4, 5, 6, 8], R.INVALID_FEATURES
    )
    assert "not a list of numbers" in reasons[2][1]
    assert "non-numeric" in reasons[3][1] and "non-numeric" in reasons[4][1]
    assert "length 2" in reasons[6][1]
    assert "non-finite" in reasons[8][1]
    quarantined = result.quarantine
    assert dict(
        zip(
            quarantined.column("row").to_pylist(), quarantined.column("id").to_pylist(), strict=True
        )
    ) == {row: str(row) for row in (0, 2, 3, 4, 5, 6, 8)}
    assert result.rows_in == result.table.num_rows + result.quarantine.num_rows


def test_text_and_features_together_need_both(tmp_path: Path) -> None:
    schema = SchemaConfig(text="body", features="vec")
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "body": ["some text", "  ", "more text"],
            "vec": [[1.0, 2.0], [1.0, 2.0], None],
        }
    )
    pq.write_table(table, tmp_path / "s.parquet")
    result = ingest_shard(_shard(tmp_path / "s.parquet"), schema)
    assert result.table.column_names[:3] == ["id", S.TEXT, S.FEATURES]
    assert result.table.column("id").to_pylist() == ["a"]
    assert {r: reason for r, (reason, _) in _reasons(result).items()} == {
        1: R.EMPTY_TEXT,
        2: R.INVALID_FEATURES,
    }


def test_config_needs_text_or_features() -> None:
    with pytest.raises(ConfigError, match="set `text` or `features`"):
        parse_config({"run_dir": "r", "input": {"paths": ["x"]}, "schema": {"text": None}})
    with pytest.raises(ConfigError, match=r"schema\.features"):
        parse_config(
            {"run_dir": "r", "input": {"paths": ["x"]}, "schema": {"text": "t", "features": "t"}}
        )
    assert SchemaConfig(text=None, features="pixels").features == "pixels"


def test_output_names_restore_the_features_column() -> None:
    assert output_names(FEATURES_ONLY) == {S.ID: "id", S.LABEL: "y", S.FEATURES: "pixels"}
    table = pa.table(
        {
            S.ID: ["a"],
            S.FEATURES: pa.array([[1.0]], pa.list_(pa.float32())),
            S.SHARD: pa.array([0], pa.int32()),
            S.ROW: [0],
        }
    )
    assert output_columns(table, FEATURES_ONLY).column_names == ["id", "pixels"]


def test_empty_shard_has_the_canonical_features_column(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    result = ingest_shard(_shard(path), FEATURES_ONLY)
    assert result.table.schema.field(S.FEATURES).type == pa.list_(pa.float32())
    assert S.TEXT not in result.table.column_names
    assert result.rows_in == 0
