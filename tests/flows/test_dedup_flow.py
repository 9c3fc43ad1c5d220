"""Dedup in the curate flow: both engines, the dropped audit, re-runs, and config checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.helpers.runs import kept_ids
from thresher.config import RunConfig
from thresher.dedup.spec import read_clusters
from thresher.engines.local import LocalEngine
from thresher.errors import ConfigError
from thresher.flows.curate import curate
from thresher.io.files import read_json
from thresher.run_dir import RunDir
from thresher.runs import load_run
from thresher.stages.dedup import dedup_to_run

SCORERS = [{"name": "word_count"}, {"name": "alpha_fraction"}, {"name": "minhash"}]
DEDUP = {"threshold": 0.5, "keeper": [{"score": "minhash_length"}, {"score": "word_count"}]}


def dedup_config(make_config: Callable[..., RunConfig], **overrides: Any) -> RunConfig:
    values: dict[str, Any] = {"scorers": SCORERS, "dedup": DEDUP}
    values.update(overrides)
    return make_config(**values)


def check_audit(run_dir: Path, small_corpus: Path) -> None:
    """Every duplicate names its keeper; planted copies sit in their source's cluster."""
    clusters = read_clusters(RunDir(run_dir)).to_pylist()
    by_id = {row["id"]: row for row in clusters}
    dropped = load_run(run_dir).dropped.to_pylist()
    duplicates = [row for row in dropped if row["reason"] == "duplicate"]
    assert duplicates and len(duplicates) == sum(not row["keeper"] for row in clusters)
    threshold = DEDUP["threshold"]
    for row in duplicates:
        keeper, similarity = row["detail"].removeprefix("keeper=").split("; similarity=")
        mine = by_id[row["id"]]
        assert mine["keeper_id"] == keeper and by_id[keeper]["keeper"]
        assert float(similarity) == pytest.approx(mine["similarity"], abs=5e-4)
        # keeper-centred: a near-duplicate is dropped only as a verified neighbour of its keeper
        assert mine["kind"] == "exact" or mine["similarity"] >= threshold
    truth = pq.read_table(small_corpus / "_truth.parquet").to_pylist()
    exact = [r for r in truth if r["kind"] == "exact_duplicate"]
    near = [r for r in truth if r["kind"] == "near_duplicate"]
    assert exact and near

    def together(row: dict[str, Any]) -> bool:
        mine, source = by_id.get(row["id"]), by_id.get(row["source_id"])
        return mine is not None and source is not None and mine["cluster"] == source["cluster"]

    assert all(together(r) for r in exact)
    assert sum(together(r) for r in near) >= 0.9 * len(near)


@pytest.mark.spark
@pytest.mark.usefixtures("prefect_server")
def test_curate_with_dedup_on_both_engines(
    make_config: Callable[..., RunConfig], tmp_path: Path, small_corpus: Path, spark: Any
) -> None:
    local = dedup_config(make_config, run_dir=str(tmp_path / "local"))
    on_spark = dedup_config(make_config, run_dir=str(tmp_path / "spark"), engine={"kind": "spark"})
    manifests = [curate(local), curate(on_spark)]
    assert kept_ids(tmp_path / "local") == kept_ids(tmp_path / "spark")
    assert read_clusters(RunDir(tmp_path / "local")).equals(
        read_clusters(RunDir(tmp_path / "spark"))
    )
    for manifest, name in zip(manifests, ("local", "spark"), strict=True):
        counts = manifest["counts"]
        assert counts["reconciles"] and counts["dropped"]["by_reason"]["duplicate"] > 0
        check_audit(tmp_path / name, small_corpus)
    steps = read_json(tmp_path / "local" / "dedup" / "summary.json")
    assert steps["lsh"]["probability_at_threshold"] >= 0.95


@pytest.mark.usefixtures("prefect_server")
def test_changed_dedup_reruns_dedup_but_not_scoring(make_config: Callable[..., RunConfig]) -> None:
    config = dedup_config(make_config)
    first = curate(config)
    scores = {
        p: p.stat().st_mtime_ns for p in (config.run_path.as_path() / "scores").glob("*.parquet")
    }
    summary = read_json(config.run_path / "dedup" / "summary.json")

    stricter = dedup_config(make_config, dedup={**DEDUP, "threshold": 0.9})
    second = curate(stricter)  # not refused: dedup is keyed apart from the scores
    assert {p: p.stat().st_mtime_ns for p in scores} == scores
    assert read_json(config.run_path / "dedup" / "summary.json")["key"] != summary["key"]
    by_reason = [m["counts"]["dropped"]["by_reason"]["duplicate"] for m in (first, second)]
    assert by_reason[1] < by_reason[0]

    with LocalEngine(workers=1) as engine:  # the same dedup section again: reused as it is
        indices = sorted(RunDir(config.run_path).shard_names())
        assert dedup_to_run(stricter, engine, indices)["reused"]
    without = curate(dedup_config(make_config, dedup=None))
    assert "duplicate" not in without["counts"]["dropped"]["by_reason"]
    assert not (config.run_path.as_path() / "dedup").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scorers": SCORERS[:2]}, "dedup.signature: 'minhash' is not the column"),
        ({"dedup": {"bands": 8}}, "set both `bands` and `rows`"),
        ({"dedup": {"bands": 20, "rows": 8}}, "20 bands x 8 rows need more than the 128"),
        ({"dedup": {"keeper": [{"score": "nope"}]}}, r"dedup.keeper\[0\].score: 'nope' is not"),
        ({"dedup": {"keeper": [{"score": "minhash"}]}}, "is not numeric"),
        ({"dedup": {"threshold": 1.0}}, "dedup.threshold"),
    ],
)
def test_bad_dedup_config_names_the_field(
    make_config: Callable[..., RunConfig], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        dedup_config(make_config, **overrides)


@pytest.mark.usefixtures("prefect_server")
def test_the_clusters_table_is_at_its_documented_path(
    make_config: Callable[..., RunConfig],
) -> None:
    """``RUN_DIR/dedup/clusters/`` (README) reads as the table the summary names, and follows it."""
    import pyarrow.dataset as ds

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "`dedup/clusters/`" in readme and "dedup/clusters.parquet" not in readme
    config = dedup_config(make_config)
    curate(config)
    run_dir = config.run_path.as_path()
    link = run_dir / "dedup" / "clusters"

    def published() -> tuple[str, Any]:
        summary = read_json(run_dir / "dedup" / "summary.json")
        table = (
            ds.dataset(link, format="parquet")
            .to_table()
            .cast(read_clusters(RunDir(run_dir)).schema)
        )
        order = [
            ("cluster", "ascending"),
            ("thresher_shard", "ascending"),
            ("thresher_row", "ascending"),
        ]
        assert table.sort_by(order).equals(read_clusters(RunDir(run_dir)))
        return summary["clusters_dir"], table

    first, table = published()
    assert table.num_rows > 0 and link.is_symlink()
    assert "(`dedup/clusters/`)" in (run_dir / "README.md").read_text(encoding="utf-8")  # the card
    assert str(link.resolve()) == str((run_dir / "dedup" / first).resolve())

    curate(dedup_config(make_config, dedup={**DEDUP, "threshold": 0.9}))
    second, changed = published()
    assert second != first and changed.num_rows < table.num_rows
    assert not (run_dir / "dedup" / first.split("/")[0]).exists()  # the old result is gone
    assert sorted(p.name for p in (run_dir / "dedup").iterdir()) == [
        "clusters",
        second.split("/")[0],
        "summary.json",
    ]
