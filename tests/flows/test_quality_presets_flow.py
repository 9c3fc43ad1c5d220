"""``filters: [{preset: gopher}]`` through ``curate``: the same decisions and reasons on both engines.

The corpus is sample-corpus documents (clean prose, a few short and spam
ones) and documents written to break one Gopher rule each, plus one that
breaks two (too short and hash-heavy, so ``word_count``, checked first, is
its reason). The run adds the signal scorers itself; each dropped row's
reason is its first failed rule; the per-rule counts of ``steps.json`` add
up to the manifest's counts by reason; the report and the card show the
rules table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.config import RunConfig
from thresher.examples.sample_corpus import clean_document, generate_records
from thresher.flows.curate import curate
from thresher.io.files import read_json, read_parquet_dir
from thresher.io.schema import ID
from thresher.run_dir import RunDir

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.spark]


def _broken(rng: random.Random) -> dict[str, str]:
    """Documents made to fail a Gopher rule each (id -> text)."""
    prose = clean_document(rng, "cooking")
    words = prose.split()
    lines = [line for line in prose.splitlines() if line.strip()]
    return {
        "hashes": " ".join(f"#{w}" if i % 3 == 0 else w for i, w in enumerate(words)),
        "bullets": "\n".join(f"- {w} and the rest of it" for w in words[:60]),
        "ellipses": "\n".join(f"{line} ..." for line in lines for _ in range(2)),
        "numbers": " ".join(str(rng.randint(1000, 99999)) for _ in range(120)) + " " + prose[:200],
        "repeated_lines": "\n".join([lines[0]] * 8 + lines[1:]),
        "short_and_hashes": "# # # # # the cat and the dog #",
    }


def _corpus(directory: Path) -> set[str]:
    """Two shards: 50 sample-corpus records and the broken documents; returns their ids."""
    rng = random.Random(21)
    records = [{"id": r["id"], "text": r["text"]} for r in generate_records(50, 8)]
    broken = {f"broken-{name}": text for name, text in _broken(rng).items()}
    records += [{"id": key, "text": text} for key, text in broken.items()]
    rng.shuffle(records)
    directory.mkdir(parents=True)
    half = len(records) // 2
    pq.write_table(pa.Table.from_pylist(records[:half]), directory / "shard-0.parquet")
    pq.write_table(pa.Table.from_pylist(records[half:]), directory / "shard-1.parquet")
    return set(broken)


def _decisions(run_dir: Path) -> pa.Table:
    version = RunDir(run_dir).current()
    assert version is not None
    table = read_parquet_dir(version.selection)
    return table.select([ID, "keep", "reason", "detail"]).sort_by(ID)


def test_the_gopher_preset_decides_alike_on_both_engines(
    make_config: Callable[..., RunConfig], tmp_path: Path, spark: Any
) -> None:
    corpus = tmp_path / "corpus"
    _corpus(corpus)
    decided: dict[str, pa.Table] = {}
    for engine in ("local", "spark"):
        config = make_config(
            run_dir=str(tmp_path / engine),
            input={"paths": [str(corpus / "shard-*")]},
            schema={"id": "id", "text": "text"},
            scorers=[],
            filters=[{"preset": "gopher"}],
            selector={"name": "random", "budget": 1.0},
            engine={"kind": engine, "workers": 1},
        )
        assert [s.name for s in config.scorers] == ["gopher_quality", "gopher_repetition"]
        manifest = curate(config)
        counts = manifest["counts"]
        assert counts["reconciles"]
        (step,) = [s for s in manifest["selection_steps"] if s["role"] == "filter"]
        rules = step["details"]["rules"]
        by_reason = counts["dropped"]["by_reason"]
        for rule in rules:  # the rows a rule dropped are the rows with its reason
            assert by_reason.get(f"filter:{rule['reason']}", 0) == rule["dropped"], rule
            assert rule["failing"] >= rule["dropped"] and rule["failing"] >= rule["only"]
        assert sum(r["dropped"] for r in rules) == step["rows_in"] - step["kept"]
        decided[engine] = _decisions(tmp_path / engine)
        run = RunDir(tmp_path / engine)
        assert "failing only it" in run.report.read_text() and "hash_word_ratio" in (
            run.card.read_text()
        )
        assert read_json(run.manifest)["config"]["filters"][0]["name"] == "rules"

    assert decided["local"].equals(decided["spark"])  # every row: keep, reason, detail
    reasons = dict(
        zip(
            decided["local"].column(ID).to_pylist(),
            decided["local"].column("reason").to_pylist(),
            strict=True,
        )
    )
    assert reasons["broken-hashes"] == "filter:gopher.hash_word_ratio"
    assert reasons["broken-bullets"] == "filter:gopher.bullet_lines"
    assert reasons["broken-ellipses"] == "filter:gopher.ellipsis_lines"
    assert reasons["broken-numbers"] == "filter:gopher.alpha_words"
    assert reasons["broken-repeated_lines"] == "filter:gopher.dup_line_fraction"
    assert reasons["broken-short_and_hashes"] == "filter:gopher.word_count"  # fails two: first
    assert sum(r is None for r in reasons.values()) > 20  # clean prose is kept
