"""prefect.yaml's deployments on a real Prefect server, as a user runs them on one machine.

One server per module (``prefect server start`` on 127.0.0.1, its own
PREFECT_HOME), one ``process`` work pool, the automations of
``infra/prefect/automations.yaml`` created with the documented command,
every deployment of prefect.yaml deployed with ``prefect deploy --name N
--pool POOL`` and run by ``prefect worker start``: the runs complete and
publish datasets whose counts reconcile, the schedule has upcoming runs,
Spark's driver log goes to the file the run's log names, and a run whose
worker and processes are SIGKILLed mid-scoring is marked Crashed and
retried without anyone asking, ending with the kept ids of an
uninterrupted run. Flow runs import thresher from this checkout
(``THRESHER_HOME`` and ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.prefect_server import (
    ROOT,
    PrefectServer,
    Worker,
    prefect_server,
    stop,
    wait_for,
)
from tests.helpers.runs import kept_ids
from thresher.examples.sample_corpus import write_sample_corpus
from thresher.runs import load_run

pytestmark = [pytest.mark.slow]

POOL = "thresher-test"
AUTOMATIONS = ROOT / "infra" / "prefect" / "automations.yaml"
N_SHARDS = 24
#: How long a crashed run may stay Crashed before the test says it was not retried.
RETRY_GRACE_SECONDS = 60
#: A line of Spark's default console log ("26/12/01 22:24:16 WARN Utils: ...").
LOG4J_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?:INFO|WARN|ERROR) .*$", re.M)


def deployment_names() -> list[str]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return [d["name"] for d in spec["deployments"]]


@dataclass
class Deployed:
    """The server with every deployment of prefect.yaml on :data:`POOL`, and its workers."""

    server: PrefectServer
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self) -> Worker:
        # Workers poll every 2 s instead of 10, so that a test waits less for a pickup.
        env = {**self.server.env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
        log = self.logs / f"worker-{len(self.workers)}.log"
        worker = self.server.start_worker(POOL, log, env=env)
        self.workers.append(worker)
        return worker

    def run(self, deployment: str, **parameters: Any) -> Any:
        """Ask for a run of ``curate/<deployment>`` now (what ``prefect deployment run`` does)."""
        with self.server.client() as client:
            found = client.read_deployment_by_name(f"curate/{deployment}")
            return client.create_flow_run_from_deployment(found.id, parameters=parameters).id

    def flow_run(self, flow_run_id: Any) -> Any:
        with self.server.client() as client:
            return client.read_flow_run(flow_run_id)

    def wait_final(self, flow_run_id: Any, timeout: float = 300) -> Any:
        return wait_for(
            lambda: (run := self.flow_run(flow_run_id)).state.is_final() and run,
            timeout,
            f"flow run {flow_run_id} to finish",
            interval=1,
        )

    def run_logs(self, flow_run_id: Any) -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with self.server.client() as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return [log.message for log in logs]

    def states(self, flow_run_id: Any) -> list[Any]:
        with self.server.client() as client:
            return sorted(client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)

    def worker_output(self) -> str:
        return "\n".join(w.output() for w in self.workers)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A server, a process pool, the automations, every deployment, one worker."""
    work = tmp_path_factory.mktemp("prefect-world")
    with prefect_server(work / "home") as server:
        server.cli("work-pool", "create", POOL, "--type", "process")
        server.cli("automation", "create", "--from-file", str(AUTOMATIONS))
        env = {**server.env, "THRESHER_HOME": str(ROOT)}
        for name in deployment_names():
            server.cli("deploy", "--name", name, "--pool", POOL, env=env)
        world = Deployed(server, work)
        try:
            world.start_worker()
            yield world
        finally:
            for worker in world.workers:
                stop(worker.process)


@pytest.fixture(scope="module")
def fault_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Many small shards, so that a run can be killed between two of them."""
    out = tmp_path_factory.mktemp("deployment-corpus")
    write_sample_corpus(out, n_documents=150 * N_SHARDS, n_shards=N_SHARDS, seed=13)
    return out


def job(corpus: Path, engine: str) -> dict[str, Any]:
    """A small curation job (its run directory comes from the deployment's ``run_dir``)."""
    config: dict[str, Any] = {
        "run_dir": "unused",
        "seed": 21,
        "input": {"paths": [str(corpus / "shard-*")]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [
            {"name": "word_count"},
            {"name": "alpha_fraction"},
            {"name": "mean_word_length"},
            {"name": "repeated_line_fraction"},
        ],
        "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.7}}],
        "selector": {"name": "random", "budget": 0.5},
        "engine": {"kind": engine, "workers": 1, "batch_size": 8},
    }
    if engine == "spark":
        config["engine"]["spark"] = {"master": "local[1]", "conf": {"spark.ui.enabled": "false"}}
    return config


def write_job(path: Path, config: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


@dataclass
class FinishedRun:
    flow_run: Any
    run_dir: Path
    config: str


@pytest.fixture(scope="module")
def finished(
    deployed: Deployed,
    small_corpus: Path,
    fault_corpus: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, FinishedRun]:
    """One run of each deployment, asked for at once: Spark on the small corpus, local on many shards.

    The scoring deployment may run on CPU: its GPU is a property of its
    pool, not of the flow.
    """
    work = tmp_path_factory.mktemp("deployment-runs")
    configs = {
        "nightly-curate": write_job(work / "spark.yaml", job(small_corpus, "spark")),
        "score-models-gpu": write_job(work / "local.yaml", job(fault_corpus, "local")),
    }
    assert set(configs) == set(deployment_names()), "every deployment in prefect.yaml runs here"
    started = {
        name: (deployed.run(name, config=config, run_dir=str(work / name)), config)
        for name, config in configs.items()
    }
    return {
        name: FinishedRun(deployed.wait_final(flow_run_id), work / name, config)
        for name, (flow_run_id, config) in started.items()
    }


def test_deploying_without_thresher_home_is_refused_naming_it(deployed: Deployed) -> None:
    env = {k: v for k, v in deployed.server.env.items() if k != "THRESHER_HOME"}
    with pytest.raises(RuntimeError) as failure:
        deployed.server.cli("deploy", "--name", "nightly-curate", "--pool", POOL, env=env)
    assert "THRESHER_HOME is not set" in str(failure.value)


@pytest.mark.spark
def test_every_deployment_runs_and_publishes(
    deployed: Deployed, finished: dict[str, FinishedRun]
) -> None:
    for name, done in finished.items():
        assert done.flow_run.state.is_completed(), (name, done.flow_run.state.message)
        manifest = json.loads((done.run_dir / "manifest.json").read_text())
        counts = manifest["counts"]
        assert counts["reconciles"], name
        assert (
            counts["input"]
            == counts["kept"] + counts["dropped"]["total"] + (counts["quarantined"]["total"])
        )
        assert load_run(done.run_dir).data.num_rows == counts["kept"] > 0, name
        assert done.flow_run.parameters["run_dir"] == str(done.run_dir)


@pytest.mark.spark
def test_spark_logs_go_to_the_file_the_run_log_names(
    deployed: Deployed, finished: dict[str, FinishedRun]
) -> None:
    done = finished["nightly-curate"]
    named = [m for m in deployed.run_logs(done.flow_run.id) if m.startswith("Spark driver log")]
    assert len(named) == 1, named
    log_file = Path(named[0].rsplit(": ", 1)[1])
    assert log_file.parent == done.run_dir / "_state" / "logs"
    assert log_file.is_file()
    output = deployed.worker_output()
    assert "Spark driver log" in output  # the worker does stream the flow run's output...
    assert "[Stage " not in output  # ...but no Spark progress bar
    assert not LOG4J_LINE.findall(output), LOG4J_LINE.findall(output)[:5]


def test_the_schedule_has_upcoming_runs(deployed: Deployed) -> None:
    # the command infra/README.md gives for upcoming runs, as JSON
    output = deployed.server.cli(
        "flow-run", "ls", "--flow-name", "curate", "--state", "Scheduled", "-o", "json"
    )
    upcoming = json.loads(output[output.index("[") :])
    with deployed.server.client() as client:
        nightly = client.read_deployment_by_name("curate/nightly-curate").id
    assert {run["deployment_id"] for run in upcoming} == {str(nightly)}
    now = datetime.now(UTC)
    for run in upcoming:
        start = datetime.fromisoformat(run["expected_start_time"]).astimezone(UTC)
        assert start > now and (start.hour, start.minute) == (2, 0), start


def committed_scores(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted((run_dir / "scores").glob("shard-*.parquet"))
    }


def kill_mid_scoring(worker: Worker, run_dir: Path, flow_run: Any, deployed: Deployed) -> int:
    """SIGKILL the worker and the flow run's process group once 3 score shards are committed.

    The flow run's processes are found through the run lock, which names the
    pid of the process running the flow; its process group holds the
    flow-run process Prefect started and the engine's workers. Returns that pid.
    """
    deadline = time.monotonic() + 300
    while len(committed_scores(run_dir)) < 3:
        if time.monotonic() > deadline or deployed.flow_run(flow_run).state.is_final():
            pytest.fail(f"scoring never reached 3 shards:\n{deployed.worker_output()[-3000:]}")
        time.sleep(0.002)
    holder = json.loads((run_dir / "_state" / "lock").read_text())["pid"]
    group = os.getpgid(holder)
    assert group != worker.process.pid, "Prefect starts each flow run in its own process group"
    os.killpg(worker.process.pid, signal.SIGKILL)
    os.killpg(group, signal.SIGKILL)
    worker.process.wait(timeout=30)
    return int(holder)


def wait_for_retry(deployed: Deployed, flow_run: Any, timeout: float = 360) -> dict[str, float]:
    """Wait for the killed run to complete; fail if it stays Crashed (no retry came).

    Returns when each state was first seen (monotonic seconds); a state that
    lasted less than a poll may be missing.
    """
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = deployed.flow_run(flow_run).state
        seen.setdefault(state.name, time.monotonic())
        if state.is_completed():
            return seen
        if state.is_final() and not state.is_crashed():
            pytest.fail(f"the retried run ended {state.name}: {state.message}")
        if state.is_crashed() and time.monotonic() - seen[state.name] > RETRY_GRACE_SECONDS:
            pytest.fail(f"the run crashed and was not retried within {RETRY_GRACE_SECONDS} s")
        time.sleep(0.5)
    pytest.fail(f"the killed run did not complete within {timeout:.0f} s (states seen: {seen})")


def test_a_run_killed_mid_scoring_is_retried_and_ends_like_an_uninterrupted_one(
    deployed: Deployed,
    finished: dict[str, FinishedRun],
    tmp_path: Path,
    record_property: Any,
) -> None:
    reference = finished["score-models-gpu"]  # the same job, uninterrupted
    run_dir = tmp_path / "run"
    flow_run = deployed.run("nightly-curate", config=reference.config, run_dir=str(run_dir))

    dead_pid = kill_mid_scoring(deployed.workers[-1], run_dir, flow_run, deployed)
    killed_at = time.monotonic()
    before = committed_scores(run_dir)
    assert 3 <= len(before) < N_SHARDS, "the kill must land in the middle of scoring"
    deployed.start_worker()  # the machine is back; nobody asks for a run
    seen = wait_for_retry(deployed, flow_run)

    states = deployed.states(flow_run)
    names = [s.name for s in states]
    crashed = names.index("Crashed")
    assert "Running" in names[:crashed], names
    assert "no heartbeat" in (states[crashed].message or "").lower()
    assert names[crashed + 1] == "AwaitingRetry" and names[-1] == "Completed", names
    assert deployed.flow_run(flow_run).run_count == 2
    messages = deployed.run_logs(flow_run)
    assert any(f"took over the lock of a dead run (pid {dead_pid}" in m for m in messages)

    after = committed_scores(run_dir)
    assert len(after) == N_SHARDS
    assert {name: after[name] for name in before} == before  # committed shards not redone
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["reconciles"]
    assert kept_ids(run_dir) == kept_ids(reference.run_dir)

    timings = {
        # from the server's state history: a poll may miss the short Crashed state
        "crashed_to_completed_s": round(
            (states[-1].timestamp - states[crashed].timestamp).total_seconds(), 1
        ),
        "kill_to_completed_s": round(seen["Completed"] - killed_at, 1),
    }
    record_property("recovery", timings)
    print(f"recovery after the kill: {timings}")
