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
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import pytest
from hypothesis import settings

from thresher.config import RunConfig, parse_config
from thresher.examples.sample_corpus import write_sample_corpus

# Property tests draw the same examples on every run (a failure in CI reproduces on a
# laptop); `HYPOTHESIS_PROFILE=explore` draws new ones and remembers failures.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def spark(s3: Any) -> Iterator[Any]:
    """A local Spark session shared by the whole test run (starting one takes seconds).

    It starts after the S3 test server, so that its Python workers inherit
    the server's endpoint and credentials from the environment.
    """
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
def spark_engine(spark: Any) -> Any:
    """A Spark engine on the shared session (it never stops the session it did not start)."""
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    engine = SparkEngine(SparkConfig(master="local[2]"))
    assert engine.spark is spark
    return engine


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3-protocol server (moto) on 127.0.0.1 for the whole session, in its own process.

    Its endpoint and credentials are set the standard way (``AWS_ENDPOINT_URL``...)
    in this process's environment, so every store thresher opens reaches it.
    """
    from tests.helpers.s3 import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        before = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def s3_bucket(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the session's S3 server, and a model cache of this test's own."""
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    return str(s3.bucket())


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
