"""One writer per run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from thresher.errors import RunStateError
from thresher.io.lock import RunLock


def test_second_holder_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    path = tmp_path / "_state" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "t"}))
        with pytest.raises(
            RunStateError, match=f"in use by another thresher run \\(pid {holder.pid}"
        ):
            RunLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path / "lock"
    path.write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": "t"})
    )
    with RunLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_lock_of_a_killed_process_not_yet_reaped_is_taken_over(tmp_path: Path) -> None:
    # A worker SIGKILLed with its flow run leaves the flow run a zombie until someone reaps it.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        path = tmp_path / "lock"
        path.write_text(json.dumps({"pid": zombie.pid, "host": socket.gethostname()}))
        with RunLock(path) as lock:
            assert lock.taken_over is not None and lock.taken_over["pid"] == zombie.pid
    finally:
        zombie.wait()


def test_lock_from_another_host_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": "t"}))
    with pytest.raises(RunStateError, match=r"elsewhere\.example"):
        RunLock(path).acquire()


def test_lock_whose_heartbeat_stopped_is_taken_over_and_the_dead_holder_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lock"
    recent = datetime.now(UTC).isoformat(timespec="seconds")
    old = (datetime.now(UTC) - timedelta(seconds=3600)).isoformat(timespec="seconds")
    path.write_text(json.dumps({"pid": 7, "host": "pod-a", "since": old, "heartbeat": recent}))
    with pytest.raises(RunStateError, match="pod-a"):
        RunLock(path, stale_seconds=600).acquire()
    path.write_text(json.dumps({"pid": 7, "host": "pod-a", "since": old, "heartbeat": old}))
    lock = RunLock(path, stale_seconds=600)
    with caplog.at_level("WARNING", logger="thresher.lock"):
        lock.acquire()
    try:
        assert lock.taken_over is not None and lock.taken_over["host"] == "pod-a"
        assert "pid 7 on pod-a" in caplog.text
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not path.exists()


def test_a_waiting_run_takes_over_a_lock_from_another_host_once_it_goes_stale(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lock"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": now, "heartbeat": now}))
    with pytest.raises(RunStateError, match="in use by another thresher run"):
        RunLock(path, stale_seconds=3, heartbeat_seconds=0.2, wait_seconds=0.5).acquire()
    start = time.monotonic()
    with RunLock(path, stale_seconds=3, heartbeat_seconds=0.2, wait_seconds=30) as lock:
        assert lock.taken_over is not None and lock.taken_over["host"] == "elsewhere"
    assert 1 < time.monotonic() - start < 10


def test_heartbeat_renews_the_lock_and_a_taken_lock_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    lock = RunLock(path, heartbeat_seconds=0.05)
    lock.acquire()
    try:
        first = json.loads(path.read_text())["heartbeat"]
        deadline = time.monotonic() + 5
        while json.loads(path.read_text())["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(path.read_text())["heartbeat"] != first  # renewed
        path.write_text(json.dumps({"pid": 1, "host": "other", "token": "x"}))  # taken over
        deadline = time.monotonic() + 5
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.lost
    finally:
        lock.release()
    assert json.loads(path.read_text())["host"] == "other"  # a lost lock is not deleted


def test_lock_is_reentrant_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with RunLock(path):
        pass
    with RunLock(path):
        assert path.exists()


@pytest.mark.usefixtures("prefect_server")
def test_concurrent_run_on_the_same_directory_is_refused(make_config) -> None:  # type: ignore[no-untyped-def]
    from thresher.flows.curate import curate
    from thresher.run_dir import RunDir

    config = make_config()
    run = RunDir(config.run_path)
    with RunLock(run.lock), pytest.raises(RunStateError, match="in use by another thresher run"):
        curate(config)
    assert not (config.run_path / "data").exists()
