"""A third engine from the tests alone: one module and one registry line give the same ids.

The ``serial`` engine (:mod:`tests.helpers.serial_engine`) runs every
per-shard task in the driver's process and whole-table work on Arrow
tables; its registry row names the local engine's dedup kernels. The demo
job (``examples/curate.yaml``: scorers, dedup, filters, a selector) on the
sample corpus selects the same ids on it as on the local and Spark engines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.runs import kept_ids
from tests.helpers.serial_engine import SerialEngine
from thresher.config import RunConfig, parse_config
from thresher.dedup.spec import read_clusters
from thresher.engines.registry import register_engine, unregister_engine
from thresher.flows.curate import curate
from thresher.run_dir import RunDir

pytestmark = pytest.mark.usefixtures("prefect_server")

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def serial_engine() -> Iterator[None]:
    """The ``serial`` engine, registered for this test only."""
    register_engine("serial", "tests.helpers.serial_engine:SerialEngine", dedup="local")
    try:
        yield
    finally:
        unregister_engine("serial")


def example_job(corpus: Path, run_dir: Path, kind: str) -> RunConfig:
    """``examples/curate.yaml`` on ``corpus``, run on engine ``kind``."""
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "curate.yaml").read_text(encoding="utf-8"))
    data["input"]["paths"] = [str(corpus / Path(p).name) for p in data["input"]["paths"]]
    data["run_dir"] = str(run_dir)
    data["engine"] = {**data["engine"], "kind": kind, "workers": 2}
    return parse_config(data, base_dir=EXAMPLES)


@pytest.mark.spark
def test_an_engine_of_one_module_and_one_line_selects_what_the_others_select(
    small_corpus: Path, tmp_path: Path, spark: Any, serial_engine: None
) -> None:
    manifests = {
        kind: curate(example_job(small_corpus, tmp_path / kind, kind))
        for kind in ("serial", "local", "spark")
    }
    engine = SerialEngine.made[-1]  # the run's work ran on it, in this process
    n_shards = len(RunDir(tmp_path / "serial").shard_names())
    assert n_shards >= 4 and engine.items_run >= 3 * n_shards and engine.frames_read > 0

    ids = kept_ids(tmp_path / "serial")
    assert len(ids) > 100
    assert ids == kept_ids(tmp_path / "local") == kept_ids(tmp_path / "spark")
    clusters = read_clusters(RunDir(tmp_path / "serial"))
    assert clusters.num_rows > 0  # dedup ran on the serial engine, with the local kernels
    assert clusters.equals(read_clusters(RunDir(tmp_path / "local")))
    assert clusters.equals(read_clusters(RunDir(tmp_path / "spark")))
    counts = manifests["serial"]["counts"]
    assert counts["reconciles"] and counts["dropped"]["by_reason"]["duplicate"] > 0
    assert counts == manifests["local"]["counts"]
