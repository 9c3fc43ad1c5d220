"""A real Spark standalone cluster on 127.0.0.1, started from the pyspark installation.

The master and each worker are separate process groups with their own pids,
so a test can kill one worker (and the executors it launched) to simulate a
lost node, and everything is stopped by pid at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyspark


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StandaloneCluster:
    master_url: str
    ui_url: str
    master: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path = Path(".")

    def alive_workers(self) -> int:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:
            state = json.load(response)
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker and its executors (its whole process group): a lost node."""
        process = self.workers[index]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _spark_class() -> str:
    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(work / "logs"),
            "SPARK_WORKER_DIR": str(work / "work"),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }
    )
    return env


@contextmanager
def standalone_cluster(
    n_workers: int = 2, cores: int = 1, memory: str = "1g", timeout: float = 120.0
) -> Iterator[StandaloneCluster]:
    """Start a master and ``n_workers`` workers; stop them all (by pid) on exit."""
    work = Path(tempfile.mkdtemp(prefix="thresher-spark-cluster-"))
    env = _environment(work)
    port, ui_port = _free_port(), _free_port()
    master_log = open(work / "master.log", "wb")  # noqa: SIM115 - closed below
    master = subprocess.Popen(
        [
            _spark_class(),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        env=env,
        stdout=master_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster = StandaloneCluster(
        f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", master, log_dir=work
    )
    logs = [master_log]
    try:
        _wait(lambda: _ui_up(cluster), timeout, "the Spark master did not start", work)
        for index in range(n_workers):
            log = open(work / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            cluster.workers.append(
                subprocess.Popen(
                    [
                        _spark_class(),
                        "org.apache.spark.deploy.worker.Worker",
                        cluster.master_url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        str(cores),
                        "--memory",
                        memory,
                        "--webui-port",
                        str(_free_port()),
                        "--work-dir",
                        str(work / f"work-{index}"),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait(
            lambda: cluster.alive_workers() == n_workers,
            timeout,
            f"{n_workers} Spark workers did not register",
            work,
        )
        yield cluster
    finally:
        for process in [*cluster.workers, master]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*cluster.workers, master]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs:
            log.close()
        shutil.rmtree(work, ignore_errors=True)


def _ui_up(cluster: StandaloneCluster) -> bool:
    try:
        cluster.alive_workers()
    except OSError:
        return False
    return True


def _wait(condition: object, timeout: float, message: str, work: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in work.glob("*.log"))
    raise RuntimeError(f"{message} within {timeout:.0f}s; logs:\n{logs}")
