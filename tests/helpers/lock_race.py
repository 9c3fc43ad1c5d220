"""Many processes racing for run locks: how many of them hold one lock at the same time.

:func:`race` starts ``processes`` worker processes once; for each lock
location (one per trial) every worker waits at a barrier, then tries to
take the lock at the same instant. After the attempt every worker reports
whether it holds the lock, a second barrier makes sure nobody releases
before all have reported, then the holders release. The answer is the
number of holders of each trial: a lock is exclusive when it is always 1.

Workers are forked from multiprocessing's fork server (a clean process
that imported thresher and boto3 once: the test process may hold threads,
and eight interpreters importing pyarrow and boto3 side by side would take
most of the test's time). Each worker takes the test process's environment,
so an S3 lock reaches the test's S3 server.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from typing import Any

from thresher.errors import RunStateError
from thresher.io.fs import Location
from thresher.io.lock import RunLock


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def holder_record(pid: int, **fields: Any) -> dict[str, Any]:
    """A lock record naming ``pid`` in this process's boot and pid namespace (``fields`` override)."""
    from thresher.io.lock import process_identity

    record = {
        "pid": pid,
        "host": socket.gethostname(),
        "since": "2020-01-01T00:00:00+00:00",
        "heartbeat": "2020-01-01T00:00:00+00:00",
        "token": "dead" + os.urandom(6).hex(),
        **process_identity(),
    }
    record.update(fields)
    return record


def write_record(location: Location, record: dict[str, Any]) -> None:
    location.write_bytes(json.dumps(record).encode())


def _worker(
    uris: list[str],
    stale_seconds: float,
    environment: dict[str, str],
    start: Any,
    done: Any,
    results: Any,
) -> None:
    os.environ.update(environment)
    held: list[tuple[int, bool]] = []
    for trial, uri in enumerate(uris):
        lock = RunLock(uri, stale_seconds=stale_seconds, heartbeat_seconds=3600)
        start.wait()
        try:
            lock.acquire()
        except RunStateError:
            won = False
        else:
            won = True
        held.append((trial, won))
        done.wait()  # nobody releases before every worker has tried
        if won:
            lock.release()
    results.put(held)


def race(uris: list[str], processes: int, stale_seconds: float = 600.0) -> list[int]:
    """For each lock location, how many of ``processes`` racing workers ended up holding it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "boto3", "botocore.session"])
    start = context.Barrier(processes)
    done = context.Barrier(processes)
    results = context.Queue()
    arguments = (uris, stale_seconds, dict(os.environ), start, done, results)
    workers = [context.Process(target=_worker, args=arguments) for _ in range(processes)]
    for worker in workers:
        worker.start()
    holders = [0] * len(uris)
    try:
        for _ in workers:
            for trial, won in results.get(timeout=300):
                holders[trial] += int(won)
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return holders
