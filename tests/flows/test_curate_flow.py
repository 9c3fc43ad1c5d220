"""End to end: the curate flow on both engines, through real Prefect and real Spark."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from tests.helpers.runs import local_kept_ids
from thresher.config import RunConfig, parse_config
from thresher.errors import ConfigError, RunStateError
from thresher.flows.curate import curate
from thresher.runs import load_run

pytestmark = pytest.mark.usefixtures("prefect_server")

# 600 documents + 2 Parquet shards x 3 bad rows + 2 JSONL shards x 4 bad rows.
SMALL_CORPUS_RECORDS = 614


def kept_ids(run_dir: Path) -> list[str]:
    ids = sorted(load_run(run_dir).data.column("id").to_pylist())
    assert ids == local_kept_ids(run_dir)  # the local data/ link shows the same version
    return ids


@pytest.mark.spark
def test_engines_agree_and_counts_reconcile(
    make_config: Callable[..., RunConfig], tmp_path: Path, spark: Any
) -> None:
    local = make_config(run_dir=str(tmp_path / "local"))
    on_spark = make_config(run_dir=str(tmp_path / "spark"), engine={"kind": "spark"})
    manifest_local = curate(local)
    manifest_spark = curate(on_spark)

    ids = kept_ids(tmp_path / "local")
    assert ids == kept_ids(tmp_path / "spark")
    assert len(ids) > 100

    for manifest, run_dir in (
        (manifest_local, tmp_path / "local"),
        (manifest_spark, tmp_path / "spark"),
    ):
        counts = manifest["counts"]
        assert counts["input"] == SMALL_CORPUS_RECORDS
        assert counts["reconciles"]
        assert (
            counts["input"]
            == counts["kept"] + counts["dropped"]["total"] + counts["quarantined"]["total"]
        )
        assert counts["kept"] == len(ids)
        assert counts["quarantined"]["total"] == 14
        run = load_run(run_dir)
        dropped = run.dropped
        assert dropped.num_rows == counts["dropped"]["total"]
        assert set(dropped.column("id").to_pylist()).isdisjoint(ids)
        assert run.quarantine.num_rows == counts["quarantined"]["total"]
        assert (run_dir / "data" / "_SUCCESS").exists()
        assert (
            json.loads((run_dir / "manifest.json").read_text())["config_hash"]
            == manifest["config_hash"]
        )
        card = (run_dir / "README.md").read_text()
        assert card.startswith("---\nconfigs:") and manifest["config_hash"] in card

    data = ds.dataset(tmp_path / "spark" / "data", format="parquet").to_table()
    assert set(data.column_names) == {"id", "text", "topic", "url"}


def test_same_config_twice_gives_same_ids(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    first = make_config(run_dir=str(tmp_path / "a"))
    second = make_config(run_dir=str(tmp_path / "b"))
    curate(first)
    curate(second)
    assert kept_ids(tmp_path / "a") == kept_ids(tmp_path / "b")


def test_rerun_resumes_and_changed_scorers_are_refused(
    make_config: Callable[..., RunConfig],
) -> None:
    config = make_config()
    first = curate(config)
    scores = config.run_path.as_path() / "scores"
    marker_times = {p: p.stat().st_mtime_ns for p in scores.iterdir()}
    second = curate(config)
    assert second["counts"] == first["counts"]
    assert {p: p.stat().st_mtime_ns for p in scores.iterdir()} == marker_times

    changed = make_config(
        scorers=[{"name": "word_count"}, {"name": "alpha_fraction"}, {"name": "mean_word_length"}]
    )
    with pytest.raises(RunStateError, match="different scorers"):
        curate(changed)
    assert curate(changed, fresh=True)["counts"]["reconciles"]


def test_new_budget_reuses_scores(make_config: Callable[..., RunConfig]) -> None:
    curate(make_config())
    smaller = curate(make_config(selector={"name": "random", "budget": 0.25}))
    assert smaller["counts"]["reconciles"]


def test_bad_config_fails_before_any_work(tmp_path: Path, small_corpus: Path) -> None:
    config_file = tmp_path / "job.yaml"
    config_file.write_text(
        f"run_dir: {tmp_path / 'run'}\ninput:\n  paths: ['{small_corpus}/shard-*']\n"
        "scorers:\n  - name: no_such_scorer\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="unknown scorer 'no_such_scorer'"):
        curate(str(config_file))
    missing = parse_config(
        {"run_dir": str(tmp_path / "run"), "input": {"paths": ["nowhere/*.jsonl"]}},
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="nowhere"):
        curate(missing)
    assert not (tmp_path / "run").exists()
