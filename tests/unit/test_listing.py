"""Listing input files and keeping the run directory apart, from plain values (no config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.errors import ConfigError
from thresher.io.fs import Location
from thresher.io.listing import check_input_apart, list_files, list_sets


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "deep").mkdir(parents=True)
    for name in ("b.parquet", "a.jsonl", "notes.md", "deep/c.parquet"):
        (data / name).write_bytes(b"")
    return tmp_path


def _names(entries: list) -> list[str]:
    return [e.location.uri.rpartition("/data/")[2] for e in entries]


def test_patterns_are_listed_sorted_once_relative_to_the_base(corpus: Path) -> None:
    base = Location.of(corpus)
    listed = list_files(["data", "data/*.parquet", "data/**/*.parquet"], base)
    # The directory stands for its shard files (not notes.md); overlapping patterns count once.
    assert _names(listed) == ["a.jsonl", "b.parquet", "deep/c.parquet"]
    # A file named alone is taken whatever its suffix.
    assert _names(list_files(["data/notes.md"], base)) == ["notes.md"]


def test_a_pattern_matching_nothing_is_refused_naming_its_field(corpus: Path) -> None:
    base = Location.of(corpus)
    with pytest.raises(ConfigError, match=r"^input\.paths: 'data/\*\.csv' matches no file"):
        list_files(["data", "data/*.csv"], base)
    sets = {"ok": ["data/a.jsonl"], "bad": ["data", "missing/*.jsonl"]}
    with pytest.raises(ConfigError, match=r"^evals\.bad\.paths\[1\]: 'missing/\*\.jsonl'"):
        list_sets(sets, base, field="evals")
    assert {k: _names(v) for k, v in list_sets({"ok": ["data/a.jsonl"]}, base).items()} == {
        "ok": ["a.jsonl"]
    }


def test_the_run_directory_and_the_input_may_not_overlap(corpus: Path) -> None:
    base = Location.of(corpus)
    files = list_files(["data"], base)
    check_input_apart(Location.of(corpus / "run"), ["data"], files, base)  # apart: accepted
    with pytest.raises(ConfigError, match=r"^run_dir: .*/data/run lies inside the input 'data'"):
        check_input_apart(Location.of(corpus / "data" / "run"), ["data"], files, base)
    recursive = ["data/**/*.parquet"]
    with pytest.raises(ConfigError, match=r"lies inside the input 'data/\*\*/\*\.parquet'"):
        check_input_apart(Location.of(corpus / "data" / "deep" / "run"), recursive, [], base)
    # A one-level glob does not read back what a run directory below it writes.
    check_input_apart(Location.of(corpus / "data" / "deep"), ["data/*.parquet"], [], base)
    with pytest.raises(ConfigError, match=r"^input\.paths: .*/deep/c\.parquet lies inside run_dir"):
        check_input_apart(Location.of(corpus / "data" / "deep"), [], files, base)
