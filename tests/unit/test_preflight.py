"""Checks before any work (role columns the input lacks) and the loss limit after ingest."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.config import parse_config
from thresher.errors import ConfigError, InputError
from thresher.io.columns import PROBE_BYTES, file_columns
from thresher.io.fs import Location
from thresher.preflight import (
    check_input_columns,
    check_losses,
    require_input_columns,
    sample_files,
    validate_run_file,
)

ROWS = [{"id": f"d{i}", "body": f"document number {i}", "topic": "news"} for i in range(3)]


def write_input(directory: Path, fmt: str, rows: list[dict[str, Any]] = ROWS) -> Path:
    """One input file of ``fmt`` (parquet, jsonl, jsonl.gz, csv, tsv) holding ``rows``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"part.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt.startswith("jsonl"):
        payload = "".join(json.dumps(row) + "\n" for row in rows).encode()
        path.write_bytes(gzip.compress(payload) if fmt.endswith(".gz") else payload)
    else:
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(rows[0])] + [sep.join(str(v) for v in row.values()) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(tmp_path: Path, paths: list[str], **schema: Any) -> Any:
    data = {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": paths},
        "schema": {"id": "id", "text": "body", **schema},
        "engine": {"kind": "local"},
    }
    return parse_config(data, base_dir=tmp_path)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz", "csv", "tsv"])
def test_the_columns_of_each_format_are_read(tmp_path: Path, fmt: str) -> None:
    path = write_input(tmp_path, fmt)
    detected = "jsonl" if fmt.startswith("jsonl") else fmt
    assert file_columns(Location.of(path), detected) == ["id", "body", "topic"]


def test_a_large_compressed_file_is_read_only_at_its_start(tmp_path: Path) -> None:
    """A gzip file much larger than the probe: its keys come from the first records alone."""
    path = tmp_path / "big.jsonl.gz"
    first = [json.dumps({"id": str(i), "body": "x" * 100}) for i in range(300)]
    later = json.dumps({"id": "late", "body": "y", "only_later": 1})
    filler = [
        json.dumps({"id": str(i), "body": "z" * 1000}) for i in range(3 * PROBE_BYTES // 1000)
    ]
    path.write_bytes(gzip.compress(("\n".join([*first, *filler, later]) + "\n").encode()))
    assert file_columns(Location.of(path), "jsonl") == ["id", "body"]


def test_damaged_or_unknown_files_give_no_columns(tmp_path: Path) -> None:
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(b"PAR1 this file was cut")
    assert file_columns(Location.of(cut), "parquet") is None
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "cut here\n', encoding="utf-8")
    assert file_columns(Location.of(broken), "jsonl") is None


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz", "csv"])
def test_a_text_column_no_input_has_is_refused_naming_the_columns(tmp_path: Path, fmt: str) -> None:
    write_input(tmp_path / "corpus", fmt)
    cfg = config(tmp_path, ["corpus/*"], text="txt")
    with pytest.raises(ConfigError) as error:
        require_input_columns(cfg, cfg.input_files())
    message = str(error.value)
    assert "schema.text: no input file has a column 'txt'" in message
    assert f"corpus/part.{fmt}" in message
    assert "their columns: id, body, topic" in message


def test_each_role_column_is_checked(tmp_path: Path) -> None:
    write_input(tmp_path / "corpus", "parquet")
    files = config(tmp_path, ["corpus/*"]).input_files()
    cases = [
        ({"label": "topc"}, "schema.label: no input file has a column 'topc'", "'topic'"),
        ({"id": "doc_id"}, "schema.id: no input file has a column 'doc_id'", None),
        ({"text": None, "features": "pixels"}, "schema.features: no input file has", None),
    ]
    for schema, expected, hint in cases:
        (problem,) = check_input_columns(config(tmp_path, ["corpus/*"], **schema), files).problems
        assert problem.startswith(expected), problem
        assert hint is None or f"did you mean {hint}?" in problem
    valid = check_input_columns(config(tmp_path, ["corpus/*"], label="topic"), files)
    assert valid.problems == [] and valid.warnings == [] and valid.checked == 1


def test_the_default_id_may_be_absent_and_ids_are_then_derived(tmp_path: Path) -> None:
    rows = [{"body": "a text without id"}]
    write_input(tmp_path / "corpus", "parquet", rows)
    cfg = config(tmp_path, ["corpus/*"])
    assert cfg.schema_.id == "id"
    assert require_input_columns(cfg, cfg.input_files()) == []


def test_a_file_lacking_a_column_the_others_have_is_warned_about(tmp_path: Path) -> None:
    write_input(tmp_path / "corpus" / "a", "parquet")
    write_input(tmp_path / "corpus" / "b", "jsonl", [{"id": "x", "content": "other field"}])
    cfg = config(tmp_path, ["corpus/*/*"], label="topic")
    warnings = require_input_columns(cfg, cfg.input_files())
    assert len(warnings) == 2
    assert warnings[0].startswith("input corpus/b/part.jsonl has no column 'body' (schema.text")
    assert "quarantined as missing_text_column" in warnings[0]
    assert "'topic'" in warnings[1] and "no label" in warnings[1]


def test_the_sample_is_bounded_and_spread_to_the_last_file() -> None:
    files: list[Any] = list(range(100))
    picked = sample_files(files)
    assert picked[:4] == [0, 1, 2, 3] and picked[-1] == 99 and len(picked) == 8
    assert sample_files(files[:5]) == files[:5]


def test_validate_reports_every_mistake_at_once(tmp_path: Path) -> None:
    write_input(tmp_path / "corpus", "parquet")
    job = tmp_path / "job.yaml"
    job.write_text(
        "run_dir: run\ninput: {paths: [corpus/*]}\nschema: {text: txt}\n"
        "scorers: [{name: perplexityy}]\nselector: {name: random, budget: 1.5}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as error:
        validate_run_file(job)
    lines = str(error.value).splitlines()
    assert lines[0] == "invalid run configuration:"
    assert len(lines) == 4, lines
    assert lines[1].startswith("  selector.budget: a fraction budget must be in (0, 1]")
    assert lines[2].startswith("  scorers[0].name: unknown scorer 'perplexityy'")
    assert lines[3].startswith("  schema.text: no input file has a column 'txt'")


def _stats(name: str, rows_in: int, quarantined: dict[str, int], **extra: Any) -> dict[str, Any]:
    count = sum(quarantined.values())
    return {
        "name": name,
        "rows_in": rows_in,
        "quarantined": count,
        "quarantined_by_reason": quarantined,
        **extra,
    }


def test_losses_over_the_limit_stop_the_run_naming_reasons_and_setting(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["corpus/*"])
    under = [_stats("a", 10, {"empty_text": 5})]
    check_losses(cfg.input.max_quarantined_fraction, under)  # 50% is not more than the default 0.5
    over = [_stats("a", 10, {"empty_text": 4, "missing_id": 1}), _stats("b", 2, {"empty_text": 2})]
    with pytest.raises(InputError) as error:
        check_losses(cfg.input.max_quarantined_fraction, over)
    message = str(error.value)
    assert "7 of 12 input records (58.3%) were quarantined" in message
    assert "input.max_quarantined_fraction (0.5)" in message
    assert "top reasons: empty_text (6), missing_id (1)" in message
    assert "Nothing was published" in message
    relaxed = parse_config(
        {**cfg.config_dict(), "input": {"paths": ["corpus/*"], "max_quarantined_fraction": 0.6}},
        base_dir=tmp_path,
    )
    check_losses(relaxed.input.max_quarantined_fraction, over)


def test_skipped_inputs_count_against_the_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["corpus/*"])
    damaged = {"unreadable": {"error": "cut", "rows_read": 0}}
    stats = [_stats("a", 5, {}), _stats("b", 0, {}, **damaged), _stats("c", 0, {}, **damaged)]
    with pytest.raises(InputError, match=r"2 of 3 input file\(s\) \(66.7%\) were skipped"):
        check_losses(cfg.input.max_quarantined_fraction, stats)
    check_losses(cfg.input.max_quarantined_fraction, stats[:2])  # one in two: not more than half
