"""Shared fixtures: one Spark session and one Prefect test server per test run.

Environment for tests is set here, before Prefect or Spark are imported, so
tests never touch the user's ~/.prefect and Spark workers run this
interpreter.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="thresher-prefect-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import pyarrow as pa
import pytest

from thresher.config import RunConfig, parse_config
from thresher.sample_corpus import write_sample_corpus


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local Spark session shared by the whole test run (starting one takes seconds)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("thresher-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect API for every flow run in the test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-document sample corpus in 4 shards (parquet, jsonl, jsonl.gz), with bad rows."""
    out = tmp_path_factory.mktemp("corpus")
    write_sample_corpus(out, n_documents=600, n_shards=4, seed=7)
    return out


@pytest.fixture
def make_config(tmp_path: Path, small_corpus: Path) -> Callable[..., RunConfig]:
    """Build a RunConfig over ``small_corpus`` writing into a fresh run directory."""

    def build(**overrides: Any) -> RunConfig:
        data: dict[str, Any] = {
            "run_dir": str(tmp_path / "run"),
            "seed": 3,
            "input": {"paths": [str(small_corpus / "shard-*")]},
            "schema": {"id": "id", "text": "text", "label": "topic"},
            "scorers": [{"name": "word_count"}, {"name": "alpha_fraction"}],
            "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}}],
            "selector": {"name": "random", "budget": 0.5},
            "engine": {"kind": "local", "workers": 2},
        }
        data.update(overrides)
        return parse_config(data, base_dir=tmp_path)

    return build


def text_batch(texts: list[str | None], labels: list[str] | None = None) -> pa.RecordBatch:
    """A canonical batch (id, text[, label]) for scorer tests."""
    columns = {
        "id": pa.array([f"d{i}" for i in range(len(texts))]),
        "text": pa.array(texts, pa.string()),
    }
    if labels is not None:
        columns["label"] = pa.array(labels)
    return pa.RecordBatch.from_pydict(columns)
