"""The Spark engine on a real standalone cluster (master + 2 workers on 127.0.0.1).

Each run is a separate `thresher run` process, as a user would start it, so
the test's own local Spark session does not interfere. The processes report
to the test session's Prefect server, so that none starts its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml

from tests.helpers.spark_cluster import standalone_cluster

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def child_env(prefect_server: None) -> dict[str, str]:
    """Environment for `thresher run` subprocesses: the test session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def _write_config(path: Path, corpus: Path, run_dir: Path, master: str, **extra: Any) -> Path:
    config = {
        "run_dir": str(run_dir),
        "seed": 11,
        "input": {"paths": [str(corpus / "shard-*")]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [
            {"name": "word_count"},
            {"name": "alpha_fraction"},
            {"name": "repeated_line_fraction"},
        ],
        "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}}],
        "selector": {
            "name": "quantile_band",
            "params": {"score": "word_count", "band": "medium"},
            "budget": 0.5,
        },
        "engine": {
            "kind": "spark",
            "batch_size": 64,
            "spark": {
                "master": master,
                "conf": {
                    "spark.ui.enabled": "false",
                    "spark.executor.memory": "1g",
                    "spark.executor.cores": "1",
                    "spark.cores.max": "2",
                    "spark.sql.shuffle.partitions": "4",
                    "spark.task.maxFailures": "4",
                },
            },
        },
        **extra,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _event_log(directory: Path) -> list[dict[str, Any]]:
    (path,) = [p for p in directory.iterdir() if not p.name.endswith(".inprogress")]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _lost_and_rerun(events: list[dict[str, Any]], lost_executors: set[str]) -> list[Any]:
    """(stage, partition) of tasks that failed with ExecutorLostFailure on a lost executor
    and later succeeded on another: the proof that Spark re-ran work the kill cost."""
    lost, rerun = {}, []
    for event in events:
        if event.get("Event") != "SparkListenerTaskEnd":
            continue
        info, reason = event["Task Info"], event["Task End Reason"]
        key = (event["Stage ID"], info["Index"])
        if reason.get("Reason") == "ExecutorLostFailure" and info["Executor ID"] in lost_executors:
            lost[key] = info["Executor ID"]
        elif reason.get("Reason") == "Success" and key in lost and info["Executor ID"] != lost[key]:
            rerun.append(key)
    return rerun


def _run(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "thresher", "run", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 400) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _kept(run_dir: Path) -> list[str]:
    return sorted(
        ds.dataset(run_dir / "data", format="parquet")
        .to_table(columns=["id"])
        .column("id")
        .to_pylist()
    )


@pytest.fixture(scope="module")
def reference_ids(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, child_env: dict[str, str]
) -> list[str]:
    """Kept ids of the same job on Spark in local[*] mode."""
    work = tmp_path_factory.mktemp("local")
    job = _write_config(work / "job.yaml", small_corpus, work / "run", "local[*]")
    _finish(_run(job, child_env))
    return _kept(work / "run")


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether process ``pid`` (alive) is ``ancestor`` or one of its descendants."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: ppid
    return False


def test_cluster_run_matches_local_mode_and_survives_a_lost_worker(
    tmp_path: Path, small_corpus: Path, reference_ids: list[str], child_env: dict[str, str]
) -> None:
    """The job on the cluster keeps the ids of ``local[*]``, although a worker dies mid-stage.

    Every scoring task first holds for a few seconds (a fault point); once a
    task is held on worker 0, that worker and its executors are killed, so
    the task it runs is lost and must be re-run elsewhere.
    """
    with standalone_cluster(n_workers=2, cores=1) as cluster:
        events, paused = tmp_path / "events", tmp_path / "paused"
        events.mkdir()
        fresh = _write_config(
            tmp_path / "job2.yaml", small_corpus, tmp_path / "run2", cluster.master_url
        )
        conf = yaml.safe_load(fresh.read_text())
        conf["engine"]["spark"]["conf"].update(
            {
                "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": events.as_uri(),
                "spark.eventLog.rolling.enabled": "false",  # one plain JSON-lines file
                "spark.eventLog.compress": "false",
                "spark.executorEnv.THRESHER_PAUSE_AT": f"score:shard:2:{paused}",
            }
        )
        fresh.write_text(yaml.safe_dump(conf))
        process = _run(fresh, child_env)
        victim = cluster.workers[0].pid
        deadline = time.monotonic() + 300
        held: list[int] = []
        while not held and time.monotonic() < deadline and process.poll() is None:
            if paused.is_dir():
                held = [
                    int(p.name) for p in paused.iterdir() if _descends_from(int(p.name), victim)
                ]
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before a task was held on worker 0"
        assert held, "no scoring task was held on worker 0"
        cluster.kill_worker(0)
        output = _finish(process)
        assert cluster.alive_workers() == 1
        log = _event_log(events)
        removed = {
            e["Executor ID"] for e in log if e.get("Event") == "SparkListenerExecutorRemoved"
        }
        assert removed, "no executor was lost"
        assert _lost_and_rerun(log, removed), "no task lost with the worker was re-run"
        assert _kept(tmp_path / "run2") == reference_ids, output[-2000:]
