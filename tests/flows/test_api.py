"""The Python API: run -> load_run tables -> try a selector -> select -> report, round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

import thresher
from tests.helpers.curated_run import (
    collect_flow_log,
    copy_run,
    curated_run,
    hostile_corpus,
    run_config,
)
from thresher.errors import ConfigError, RunStateError


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> Path:
    return curated_run(tmp_path_factory, small_corpus)  # made by thresher.run(...)


def test_import_is_lazy() -> None:
    code = (
        "import sys, thresher; heavy = {'pyarrow', 'prefect', 'pyspark', 'torch', 'matplotlib'}; "
        "print(sorted(heavy & set(sys.modules))); print(callable(thresher.load_run))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_load_run_tables_agree_with_the_manifest(run_dir: Path) -> None:
    run = thresher.load_run(run_dir)
    counts = run.manifest["counts"]
    assert run.scores.num_rows == counts["ingested"]
    assert {"word_count", "alpha_fraction", "id", "label"} <= set(run.scores.column_names)
    assert run.selection.num_rows == counts["ingested"]
    assert pc.sum(run.selection.column("keep")).as_py() == counts["kept"]
    assert run.dropped.num_rows == counts["dropped"]["total"]
    assert run.quarantine.num_rows == counts["quarantined"]["total"]
    assert run.data.num_rows == counts["kept"]
    assert run.clusters is not None and run.eval_results is None
    duplicates = counts["dropped"]["by_reason"]["duplicate"]
    assert pc.sum(pc.invert(run.clusters.column("keeper"))).as_py() == duplicates
    joined = run.to_pandas("scored_selection")
    assert len(joined) == counts["ingested"] and int(joined["keep"].sum()) == counts["kept"]
    assert (
        run.to_pandas("dropped")["reason"].value_counts().to_dict()
        == (counts["dropped"]["by_reason"])
    )
    with pytest.raises(ValueError, match="table must be one of"):
        run.to_pandas("everything")


def test_try_selector_meets_the_budget_and_writes_nothing(run_dir: Path) -> None:
    run = thresher.load_run(run_dir)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    band = run.try_selector("quantile_band", 50, {"score": "word_count", "band": "high"})
    assert band.keep.sum() == 50 and len(band.kept_ids) == 50
    frame = band.to_pandas().assign(words=run.to_pandas("scores")["word_count"])
    assert frame.loc[band.keep, "reason"].isna().all()
    not_selected = frame["reason"].fillna("").str.startswith("not_selected:")
    assert frame.loc[band.keep, "words"].min() >= frame.loc[not_selected, "words"].max()
    unfiltered = run.try_selector("random", 0.5, filters=False)
    assert not unfiltered.to_pandas()["reason"].fillna("").str.startswith("filter:").any()
    step = run.config.selector
    same = run.try_selector(step.name, step.budget, step.params, seed=run.config.seed)
    assert same.kept_ids == set(run.data.column("id").to_pylist())  # = the run's selection
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(ConfigError, match="unknown selector 'nope'"):
        run.try_selector("nope", 0.5)


def test_select_from_a_config_with_another_selector_then_report(
    run_dir: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    small_corpus: Path,
) -> None:
    copy = copy_run(run_dir, tmp_path / "run")
    corpus = hostile_corpus(tmp_path_factory.getbasetemp() / "thresher-curated", small_corpus)
    scores = {p: p.stat().st_mtime_ns for p in (copy / "scores").rglob("*.parquet")}
    with collect_flow_log() as flow_log:
        run = thresher.select(
            run_config(corpus, copy),
            selector="quantile_band",
            params={"score": "word_count", "band": "low"},
            budget=40,
            quiet=True,
        )
    assert run.path.as_path() == copy.resolve()
    assert run.manifest["counts"]["kept"] == 40 and run.data.num_rows == 40
    assert run.manifest["selection_steps"][-1]["step"] == "quantile_band(word_count)"
    assert {p: p.stat().st_mtime_ns for p in (copy / "scores").rglob("*.parquet")} == scores
    assert run.config.selector.name == "quantile_band"  # recorded for the next `select RUN_DIR`
    assert any(line.startswith("selected 40 of") for line in flow_log)
    assert not any(line.startswith("materialize:") for line in flow_log)  # quiet: no progress

    (copy / "report.html").unlink()
    path = thresher.report(copy).as_path()
    assert path == copy.resolve() / "report.html" and path.read_text().startswith("<!DOCTYPE html>")


def test_api_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RunStateError, match="not a thresher run directory"):
        thresher.load_run(tmp_path)
    with pytest.raises(RunStateError, match="not a thresher run directory"):
        thresher.select(tmp_path, budget=0.5)
    with pytest.raises(ConfigError, match="config file not found"):
        thresher.run(tmp_path / "missing.yaml")
