"""A corpus that grows between scheduled runs: new shards alone are ingested and scored.

Shards are identified by name. Three files added whose names sort before,
between and after the existing ones are ingested and scored alone (their
ingested and score files are new, every other one untouched), dedup and
selection then run over the union, and the result equals a fresh run over
all thirteen. A removed file and a changed file are refused by name. A run over an
unchanged corpus reads one index and publishes nothing new.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.runs import kept_ids
from thresher.config import parse_config
from thresher.errors import RunStateError
from thresher.examples.sample_corpus import write_sample_corpus
from thresher.flows.curate import curate
from thresher.runs import load_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def config(corpus: Path, run_dir: Path) -> Any:
    return parse_config(
        {
            "run_dir": str(run_dir),
            "seed": 4,
            "input": {"paths": ["corpus"]},  # a directory: every shard file in it
            "schema": {"id": "id", "text": "text", "label": "topic"},
            "scorers": [
                {"name": "word_count"},
                {"name": "alpha_fraction"},
                {"name": "minhash", "params": {"num_perm": 64}},
            ],
            "dedup": {"threshold": 0.5},
            "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}}],
            "selector": {"name": "ccs", "params": {"score": "word_count"}, "budget": 0.5},
            "engine": {"kind": "local", "workers": 2},
        },
        base_dir=corpus.parent,
    )


def stamps(directory: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.glob(pattern))}


def test_new_shards_anywhere_in_the_order_are_processed_alone(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_sample_corpus(corpus, n_documents=1000, n_shards=10, seed=3)
    (corpus / "_truth.parquet").unlink()
    extra = tmp_path / "extra"
    write_sample_corpus(extra, n_documents=300, n_shards=3, seed=8)  # ids overlap the corpus's
    run_dir = tmp_path / "run"
    first = curate(config(corpus, run_dir))
    ingested = stamps(run_dir / "ingested", "shard-*.parquet")
    scores = stamps(run_dir / "scores", "shard-*.parquet")
    assert len(ingested) == len(scores) == 10

    for source, name in zip(
        sorted(extra.glob("shard-*")), ("a-first", "shard-04b", "z-last"), strict=True
    ):
        suffix = source.name.split(".", 1)[1]  # parquet, jsonl, jsonl.gz
        shutil.copy(source, corpus / f"{name}.{suffix}")
    second = curate(config(corpus, run_dir))
    ingested_after = stamps(run_dir / "ingested", "shard-*.parquet")
    scores_after = stamps(run_dir / "scores", "shard-*.parquet")
    assert len(ingested_after) == len(scores_after) == 13
    assert {k: ingested_after[k] for k in ingested} == ingested  # old shards: not ingested again
    assert {k: scores_after[k] for k in scores} == scores  # nor scored again
    new = set(scores_after) - set(scores)
    assert len(new) == 3  # the three new shards, and only they, were processed
    runs = {i["added_by"] for i in second["inputs"]}
    assert len(runs) == 2  # the manifest names the run that added each shard
    by_name = {i["path"]: i["added_by"] for i in second["inputs"]}
    first_new = next(name for name in by_name if name.startswith("corpus/a-first."))
    assert by_name[first_new] != by_name["corpus/shard-00.parquet"]
    assert second["counts"]["input"] > first["counts"]["input"]

    fresh_dir = tmp_path / "fresh"
    fresh = curate(config(corpus, fresh_dir))
    assert kept_ids(run_dir) == kept_ids(fresh_dir)  # the same as a fresh run on all 13
    assert load_run(run_dir).data.sort_by("id").equals(load_run(fresh_dir).data.sort_by("id"))
    assert second["counts"] == fresh["counts"]

    (corpus / "shard-05.parquet").rename(tmp_path / "aside.parquet")
    with pytest.raises(RunStateError, match=r"corpus/shard-05\.parquet .*missing now"):
        curate(config(corpus, run_dir))
    (tmp_path / "aside.parquet").rename(corpus / "shard-05.parquet")

    data = bytearray((corpus / "shard-08.jsonl.gz").read_bytes())
    data[-9] ^= 1  # one byte of the gzip trailer
    (corpus / "shard-08.jsonl.gz").write_bytes(bytes(data))
    with pytest.raises(RunStateError, match=r"corpus/shard-08\.jsonl\.gz changed since"):
        curate(config(corpus, run_dir))


def test_a_checkout_that_moves_resumes_with_everything_reused(tmp_path: Path) -> None:
    """Config, corpus and run directory moved together: nothing is refused or redone."""
    before = tmp_path / "before"
    write_sample_corpus(before / "corpus", n_documents=400, n_shards=4, seed=5)
    (before / "corpus" / "_truth.parquet").unlink()
    curate(config(before / "corpus", before / "run"))
    kept = kept_ids(before / "run")

    after = tmp_path / "elsewhere" / "after"
    after.parent.mkdir()
    shutil.move(before, after)
    ingested = stamps(after / "run" / "ingested", "shard-*.parquet")
    scores = stamps(after / "run" / "scores", "shard-*.parquet")
    assert len(ingested) == len(scores) == 4
    manifest = curate(config(after / "corpus", after / "run"))
    assert stamps(after / "run" / "ingested", "shard-*.parquet") == ingested
    assert stamps(after / "run" / "scores", "shard-*.parquet") == scores
    assert kept_ids(after / "run") == kept
    assert all(str(after) in i["path"] or not i["path"].startswith("/") for i in manifest["inputs"])


def test_a_rerun_with_nothing_changed_publishes_nothing_new(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_sample_corpus(corpus, n_documents=400, n_shards=4, seed=6)
    (corpus / "_truth.parquet").unlink()
    run_dir = tmp_path / "run"
    first = curate(config(corpus, run_dir))
    # every shard's statistics in one index: no marker per shard is left to read
    assert sorted(p.name for p in (run_dir / "_state" / "ingest").iterdir()) == ["index.parquet"]
    pointer = (run_dir / "CURRENT").read_text()
    versions = sorted(p.name for p in (run_dir / "versions").iterdir())

    again = curate(config(corpus, run_dir))
    assert again["unchanged"] is True and again["version"] == first["version"]
    assert (run_dir / "CURRENT").read_text() == pointer
    assert sorted(p.name for p in (run_dir / "versions").iterdir()) == versions

    data = config(corpus, run_dir).config_dict()
    data["selector"] = {**data["selector"], "budget": 0.4}
    changed = parse_config(data, base_dir=corpus.parent)
    third = curate(changed)  # another budget: a new selection, published
    assert "unchanged" not in third and third["version"] != first["version"]
    fresh = curate(changed, fresh=True)  # --fresh recomputes and publishes whatever it finds
    assert "unchanged" not in fresh and fresh["version"] != third["version"]
    assert len(kept_ids(run_dir)) == fresh["counts"]["kept"] == third["counts"]["kept"]
