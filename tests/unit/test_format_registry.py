"""A new input format is one reader function and one registry call: config, listing and ingest know it.

The ``lines`` format lives in this file alone: one document per line of a
``.txt`` file, its id the line number. Registered, it is accepted by
``input.format``, told by its suffix (also compressed: ``.txt.gz``), listed
in input directories, read by ingest through the rules every format shares,
and read the same in an engine's worker process.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from thresher import reasons as R
from thresher.config import SchemaConfig, parse_config
from thresher.engines.local import LocalEngine
from thresher.errors import ConfigError, InputError
from thresher.io.formats import (
    FORMATS,
    detect_format,
    is_shard_name,
    register_format,
    split_name,
    unregister_format,
)
from thresher.io.ingest import RecordLog, ingest_shard
from thresher.io.readers import OverlongLine, Source, iter_lines
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.stages.ingest import IngestShard

#: Lines per table handed to ingest's checks.
BATCH_LINES = 4
LINES = ["first document", "", "third \u00e9t\u00e9 line", "fourth", "fifth", "sixth and last"]


def read_lines(source: Source, schema: SchemaConfig, log: RecordLog) -> Iterator[pa.Table]:
    """The ``lines`` format: one document per line, its id the line number (from 1)."""
    ids: list[str] = []
    texts: list[str] = []
    for number, line in enumerate(iter_lines(source), 1):
        if isinstance(line, OverlongLine):
            log.skip(number, R.RECORD_TOO_LARGE, f"a line of {line.size:,} bytes")
            continue
        try:
            texts.append(line.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as error:
            log.skip(number, R.INVALID_UTF8, str(error), repr(line[:80]))
            continue
        ids.append(str(number))
        if len(ids) == BATCH_LINES:
            yield from log.check(pa.table({schema.id or "id": ids, schema.text or "text": texts}))
            ids, texts = [], []
    if ids:
        yield from log.check(pa.table({schema.id or "id": ids, schema.text or "text": texts}))


@pytest.fixture
def lines_format() -> Iterator[None]:
    """The ``lines`` format, registered for one test."""
    register_format("lines", [".txt"], read_lines)
    try:
        yield
    finally:
        unregister_format("lines")


def _write(directory: Path) -> dict[str, Path]:
    directory.mkdir()
    data = ("\n".join(LINES) + "\n").encode() + b"bad \xff byte\n"
    paths = {"plain": directory / "a.txt", "gzip": directory / "b.txt.gz"}
    paths["plain"].write_bytes(data)
    paths["gzip"].write_bytes(gzip.compress(data))
    (directory / "NOTES").write_text("no shard: no suffix", encoding="utf-8")
    return paths


def _config(directory: Path, fmt: str) -> dict[str, object]:
    return {
        "run_dir": str(directory.parent / "run"),
        "input": {"paths": [str(directory)], "format": fmt},
    }


def test_an_unregistered_format_is_refused_by_config_and_listing(tmp_path: Path) -> None:
    _write(tmp_path / "corpus")
    with pytest.raises(
        ConfigError, match=r"input\.format: unknown input format 'lines'; available"
    ):
        parse_config(_config(tmp_path / "corpus", "lines"), base_dir=tmp_path)
    assert split_name("a.txt") == (None, None) and not is_shard_name("a.txt")
    config = parse_config(_config(tmp_path / "corpus", "auto"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="matches no file"):
        config.input_files()


def test_a_registered_format_is_validated_detected_and_read(
    tmp_path: Path, lines_format: None
) -> None:
    paths = _write(tmp_path / "corpus")
    assert (
        parse_config(_config(tmp_path / "corpus", "lines"), base_dir=tmp_path).input.format
        == "lines"
    )
    config = parse_config(_config(tmp_path / "corpus", "auto"), base_dir=tmp_path)
    assert [e.location.name for e in config.input_files()] == ["a.txt", "b.txt.gz"]
    assert split_name("b.txt.gz") == ("lines", "gzip") and detect_format("a.TXT") == "lines"

    for kind, path in paths.items():
        result = ingest_shard(
            Shard(0, str(path), path.name, detect_format(path.name)), SchemaConfig()
        )
        assert result.rows_in == len(LINES) + 1, kind  # every line is a record
        kept = [line for line in LINES if line]
        assert result.table.column("text").to_pylist() == kept, kind
        assert result.table.column("id").to_pylist() == ["1", "3", "4", "5", "6"], kind
        reasons = {row["reason"]: row for row in result.quarantine.to_pylist()}
        assert set(reasons) == {R.EMPTY_TEXT, R.INVALID_UTF8}, kind  # the shared rules and skip()
        assert reasons[R.EMPTY_TEXT]["id"] == "2"
        assert result.content["size"] == path.stat().st_size  # every byte read and hashed


def test_a_worker_process_reads_a_format_registered_in_the_driver(
    tmp_path: Path, lines_format: None
) -> None:
    """The local engine's workers are fresh processes: the registration travels with the work."""
    paths = _write(tmp_path / "corpus")
    run = RunDir(tmp_path / "run")
    shards = [Shard(i, str(p), p.name, detect_format(p.name)) for i, p in enumerate(paths.values())]
    with LocalEngine(workers=1) as engine:
        stats = engine.map_shards(IngestShard(SchemaConfig(), run), shards)
        (worker_formats,) = engine.map_shards(_registered_formats, [None])
    assert "lines" in worker_formats  # the fault: a spawned worker starts without it
    assert [s["format"] for s in stats] == ["lines", "lines"]
    assert [s["ingested"] for s in stats] == [5, 5]
    assert [s["quarantined"] for s in stats] == [2, 2]


def _registered_formats(_: object) -> list[str]:
    return list(FORMATS)


def test_registration_refuses_what_would_be_ambiguous(lines_format: None) -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_format("lines", [".lines"], read_lines)
    with pytest.raises(ValueError, match=r"'\.csv' already tells format 'csv'"):
        register_format("other", [".csv"], read_lines)
    with pytest.raises(ValueError, match="no container suffix"):
        register_format("other", [".gz"], read_lines)
    with pytest.raises(ValueError, match="registered already"):
        register_format("auto", [".auto"], read_lines)
    with pytest.raises(ValueError, match="built in"):
        unregister_format("jsonl")
    assert "other" not in FORMATS


def test_every_built_in_row_names_importable_functions() -> None:
    for entry in FORMATS.values():
        assert callable(entry.read_function()), entry.name
        probe = entry.columns_function()
        assert probe is not None and callable(probe), entry.name


def test_a_shard_of_no_registered_format_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.txt: unsupported format 'lines'; available: parquet"):
        ingest_shard(Shard(0, str(path), path.name, "lines"), SchemaConfig())
