"""One writer per run directory: exclusive on every store with conditional writes.

A holder is judged dead only by proof (its pid, when it provably shares
this process's pid namespace) or by a heartbeat older than the stale limit
on the store's own clock (the lock's modification time), never by the
clock time written in the lock.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.lock_race import dead_pid, holder_record, race, write_record
from thresher.errors import RunStateError
from thresher.io.fs import Location
from thresher.io.lock import RunLock, process_identity


def backdate(path: Path, seconds: float) -> None:
    """Make the store's time of the lock's last write ``seconds`` older (a heartbeat that stopped)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


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
    # in our pid namespace (the lock records it), with a fresh heartbeat: taken over at once
    path = tmp_path / "lock"
    path.write_text(json.dumps(holder_record(dead_pid())))
    with RunLock(path) as lock:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert lock.taken_from_dead
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
        path.write_text(json.dumps(holder_record(zombie.pid)))
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
    # The clock time the holder wrote is not trusted (its clock, or ours, may be off):
    # an hour-old written heartbeat on a lock the store wrote just now is alive.
    path.write_text(json.dumps({"pid": 7, "host": "pod-a", "since": old, "heartbeat": old}))
    with pytest.raises(RunStateError, match="pod-a"):
        RunLock(path, stale_seconds=600).acquire()
    # What counts is the store's time of the lock's last write.
    path.write_text(json.dumps({"pid": 7, "host": "pod-a", "since": old, "heartbeat": recent}))
    backdate(path, 3600)
    lock = RunLock(path, stale_seconds=600)
    with caplog.at_level("WARNING", logger="thresher.lock"):
        lock.acquire()
    try:
        assert lock.taken_over is not None and lock.taken_over["host"] == "pod-a"
        assert not lock.taken_from_dead  # silent, not proven dead
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


# -- exclusive: many processes at the same instant --------------------------------------------

RACERS = 8
TRIALS = 50


def test_racing_processes_never_both_hold_a_local_lock(tmp_path: Path) -> None:
    """8 processes x 50 trials each: a fresh lock, a dead holder's, a silent holder's."""
    fresh = [str(tmp_path / f"fresh-{i}" / "_state" / "lock") for i in range(TRIALS)]
    pid = dead_pid()
    dead, silent = [], []
    for i in range(TRIALS):
        dead.append(tmp_path / f"dead-{i}" / "_state" / "lock")
        write_record(Location.of(dead[-1]), holder_record(pid))
        silent.append(tmp_path / f"silent-{i}" / "_state" / "lock")
        write_record(Location.of(silent[-1]), holder_record(1, host="pod-a", pid_ns="pid:[1]"))
        backdate(silent[-1], 3600)
    holders = race(fresh + [str(p) for p in dead + silent], RACERS)
    assert holders == [1] * (3 * TRIALS), [(i, n) for i, n in enumerate(holders) if n != 1]
    for path in dead + silent:  # every takeover happened (and was released)
        assert not path.exists()


def test_racing_processes_never_both_hold_an_s3_lock(s3: Any) -> None:
    """The same race on S3 (conditional writes: If-None-Match, If-Match), fewer trials.

    Each attempt is a few requests to the one test server, which makes a trial
    slow but its window wide: a takeover that read, compared and wrote without
    If-Match gives two holders in most trials.
    """
    bucket = s3.bucket()
    trials = 6
    fresh = [f"s3://{bucket}/fresh-{i}/_state/lock" for i in range(trials)]
    dead = [f"s3://{bucket}/dead-{i}/_state/lock" for i in range(trials)]
    record = holder_record(dead_pid())
    for uri in dead:
        write_record(Location.of(uri), record)
    holders = race(fresh + dead, RACERS)
    assert holders == [1] * (2 * trials), [(i, n) for i, n in enumerate(holders) if n != 1]
    assert s3.keys(bucket) == []  # every dead holder's lock was taken over, then released


# -- who is dead: pid only with proof, otherwise the store's clock ------------------------------


@pytest.mark.parametrize(
    "foreign",
    [{"pid_ns": "pid:[4026500000]"}, {"boot_id": "another-boot"}, {"boot_id": None}],
    ids=["another-pid-namespace", "another-boot", "nothing-recorded"],
)
def test_a_dead_pid_proves_nothing_outside_our_pid_namespace(
    tmp_path: Path, foreign: dict[str, Any]
) -> None:
    # Same host name (two containers of one pod, a re-created driver pod), a pid that is
    # not running here, a live heartbeat: that holder may well be alive.
    path = tmp_path / "lock"
    path.write_text(json.dumps(holder_record(dead_pid(), **foreign)))
    with pytest.raises(RunStateError, match="in use by another thresher run"):
        RunLock(path).acquire()
    assert json.loads(path.read_text())["pid"] != os.getpid()
    backdate(path, 700)  # its heartbeat stopped on the store's clock: now it is stale
    with RunLock(path, stale_seconds=600) as lock:
        assert lock.taken_over is not None and not lock.taken_from_dead


def test_a_pid_reused_by_another_process_does_not_keep_a_dead_holder_alive(
    tmp_path: Path,
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # the recorded holder had this pid once, but started at another time
        path = tmp_path / "lock"
        path.write_text(json.dumps(holder_record(other.pid, pid_start="1")))
        with RunLock(path) as lock:
            assert lock.taken_from_dead and lock.taken_over is not None
            assert lock.taken_over["pid"] == other.pid
        # the same pid with its own start time is the live holder
        live = process_identity()["pid_start"]
        path.write_text(json.dumps(holder_record(os.getpid(), pid_start=live)))
        with pytest.raises(RunStateError, match=f"pid {os.getpid()}"):
            RunLock(path).acquire()
    finally:
        other.kill()
        other.wait()


HOLDER = """
import sys, time
from thresher.io.lock import RunLock
lock = RunLock(sys.argv[1], heartbeat_seconds=0.2)
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def _unshare_works() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare --pid` (root or user namespaces)")
def test_a_holder_in_a_real_other_pid_namespace_is_judged_by_its_heartbeat(
    tmp_path: Path,
) -> None:
    """A live holder in another pid namespace whose pid number is dead in ours: not taken over.

    The holder runs under ``unshare --pid``, and is given (through the new
    namespace's ``ns_last_pid``) the number of a process that has exited here:
    judged by host name and pid, it would look dead.
    """
    path = tmp_path / "_state" / "lock"
    pid = dead_pid()
    script = (
        f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid; "
        f"{shlex.quote(sys.executable)} -c {shlex.quote(HOLDER)} {shlex.quote(str(path))}; true"
    )
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        record = json.loads(path.read_text())
        assert record["pid_ns"] != process_identity()["pid_ns"]  # really another namespace
        assert record["host"] == socket.gethostname() and record["pid"] == pid
        with pytest.raises(ProcessLookupError):  # that pid is dead in ours
            os.kill(pid, 0)
        with pytest.raises(RunStateError, match="in use by another thresher run"):
            RunLock(path, stale_seconds=1, heartbeat_seconds=0.2).acquire()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    # Killed, it is taken over once its heartbeat is older than the stale limit.
    with RunLock(path, stale_seconds=1, heartbeat_seconds=0.2, wait_seconds=30) as lock:
        assert lock.taken_over is not None and lock.taken_over["pid_ns"] == record["pid_ns"]
        assert not lock.taken_from_dead


def test_a_silent_s3_holder_is_taken_over_by_the_store_clock(s3: Any) -> None:
    uri = f"s3://{s3.bucket()}/run/_state/lock"
    # alive by pid (this very process), and no clock time written at all: only the
    # object's LastModified against a probe's tells that its heartbeat stopped
    write_record(Location.of(uri), holder_record(os.getpid(), heartbeat=None, since=None))
    with pytest.raises(RunStateError, match="in use by another thresher run"):
        RunLock(uri, stale_seconds=2).acquire()
    with RunLock(uri, stale_seconds=2, heartbeat_seconds=0.5, wait_seconds=30) as lock:
        assert lock.taken_over is not None and lock.taken_over["pid"] == os.getpid()
        assert not lock.taken_from_dead
    assert s3.keys(uri.split("/")[2]) == []


# -- a holder that lost its lock learns it, and never deletes the new holder's ----------------


def test_a_run_that_lost_its_lock_is_stopped_by_check_and_leaves_the_new_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "_state" / "lock"
    first = RunLock(path, heartbeat_seconds=3600)  # no heartbeat would tell it in time
    first.acquire()
    try:
        first.check()  # holds it: passes, and renews the heartbeat
        backdate(path, 700)  # its heartbeat stalls (a paused machine)
        second = RunLock(path, stale_seconds=600)
        second.acquire()
        assert second.taken_over is not None and second.taken_over["token"] == first.token
        with pytest.raises(RunStateError, match=f"lost its lock .*pid {os.getpid()}"):
            first.check()
        assert first.lost
    finally:
        first.release()
    assert json.loads(path.read_text())["token"] == second.token  # not deleted by the loser
    second.release()
    assert not path.exists()


def test_release_deletes_only_the_lock_it_holds(tmp_path: Path, s3: Any) -> None:
    for where in (str(tmp_path / "lock"), f"s3://{s3.bucket()}/run/_state/lock"):
        lock = RunLock(where, heartbeat_seconds=3600)
        lock.acquire()
        replaced = holder_record(1, host="elsewhere")  # taken over; the holder does not know yet
        write_record(Location.of(where), replaced)
        assert not lock.lost
        lock.release()
        found = Location.of(where).read_bytes()
        assert json.loads(found)["token"] == replaced["token"]
