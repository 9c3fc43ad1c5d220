"""A real Prefect server, work pool and worker on 127.0.0.1, driven through Prefect's CLI.

What a user does on one machine (``prefect server start``, ``prefect
work-pool create``, ``prefect deploy``, ``prefect worker start``,
``prefect deployment run``), with a ``PREFECT_HOME`` of its own so that
nothing touches the user's profile. Every process is started in its own
process group and stopped through its pid (the group it leads), never by
name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group ``process`` leads, SIGKILL it after ``grace`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # what is left of the group
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@dataclass
class PrefectServer:
    """A running ``prefect server start``: its API URL, and the environment to reach it."""

    url: str
    home: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
        """Run ``prefect ARGS`` from the repository root against this server; return its output."""
        result = subprocess.run(
            [PREFECT, "--no-prompt", *args],
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{output}")
        return output

    def client(self) -> Any:
        """A synchronous Prefect client of this server (use it as a context manager)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(api=self.url)

    def start_worker(self, pool: str, log: Path, env: dict[str, str] | None = None) -> Worker:
        """``prefect worker start`` on ``pool`` in its own process group, output to ``log``."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
                cwd=ROOT,
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Worker(process, log)


@dataclass
class Worker:
    """A running ``prefect worker start`` and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(home: Path, url: str) -> dict[str, str]:
    """The environment of every process of this server's world: its own home, its API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            "PREFECT_LOGGING_LEVEL": "INFO",
            # flow runs import thresher from this checkout
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 180) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free port of 127.0.0.1, with ``home`` as PREFECT_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = server_env(home, url)
    with open(home / "server.log", "ab") as out:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = PrefectServer(url, home, process, env)
    try:
        wait_for(lambda: _healthy(url) or process.poll() is not None, timeout, "the Prefect server")
        if process.poll() is not None:
            log = (home / "server.log").read_text(errors="replace")
            raise RuntimeError(f"prefect server start exited ({process.returncode}):\n{log}")
        yield server
    finally:
        stop(process)
