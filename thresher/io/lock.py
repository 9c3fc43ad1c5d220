"""One writer per run directory: a lock object naming its holder, kept alive by a heartbeat.

The lock is ``RUN_DIR/_state/lock``, created with a write that fails when it
already exists: ``O_CREAT | O_EXCL`` on a local file system, ``If-None-Match:
*`` on S3 (and S3-compatible stores), a generation precondition on GCS. It
holds the holder's pid, host, start time and a heartbeat the holder renews
every ``heartbeat_seconds`` with a write conditional on the version it last
wrote (so that a holder whose lock was taken over learns it).

A second run is refused with the holder's pid and host. A lock is stale,
and is taken over (by a conditional write over the version that was read,
so that of two runs taking over at once exactly one wins), when its holder
runs on this host and its pid is gone, or when its heartbeat is older than
``stale_seconds`` (a holder on another machine, say a Kubernetes pod that
was killed). The takeover is logged with the dead holder's pid and host.

Stores without conditional writes (HDFS, most fsspec backends) get a
best-effort lock: create if absent, then read back; two runs started in the
same instant could both proceed, and the refusal message says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from thresher.errors import RunStateError
from thresher.io.fs import Location
from thresher.io.stores import ConditionalWriteUnsupportedError

logger = logging.getLogger("thresher.lock")

#: A heartbeat older than this means the holder is dead (seconds).
STALE_SECONDS = 600.0
HEARTBEAT_SECONDS = 30.0


def _pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this host.

    A zombie (a killed process its parent has not reaped yet, such as the
    flow run of a Prefect worker that was SIGKILLed with it) counts as dead.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """True when ``/proc`` says ``pid`` is a zombie (False where there is no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunLock:
    """Context manager holding the lock at ``location`` for this process (see module docstring).

    A lock in use is refused at once, or, with ``wait_seconds``, after
    waiting that long for it to be released or to go stale: what a retry of
    a crashed run on another machine needs, whose dead predecessor's lock
    goes stale only ``stale_seconds`` after its last heartbeat.
    """

    def __init__(
        self,
        location: Location | str | os.PathLike[str],
        *,
        stale_seconds: float = STALE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        wait_seconds: float = 0.0,
    ) -> None:
        self.location = Location.of(location)
        self.stale_seconds = stale_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.wait_seconds = wait_seconds
        self.taken_over: dict[str, Any] | None = None
        self.lost = False
        self._record: dict[str, Any] = {}
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def run_root(self) -> Location:
        return self.location.parent.parent

    def holder(self) -> dict[str, Any] | None:
        """The recorded holder, or None when the lock is free or unreadable."""
        found = self._read()
        return None if found is None else found[0]

    def _read(self) -> tuple[dict[str, Any] | None, str | None] | None:
        """(holder, version) of the lock object; None when there is none."""
        found = self.location.store.read_versioned(self.location)
        if found is None:
            return None
        data, version = found
        try:
            holder = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, version
        return (holder if isinstance(holder, dict) else None), version

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        holder = self._try_acquire()
        if holder is not None and self.wait_seconds > 0:
            logger.warning(
                "%s is in use (pid %s on %s, last heartbeat %s); waiting up to %.0f s for it "
                "to be released or go stale",
                self.run_root,
                holder.get("pid"),
                holder.get("host"),
                holder.get("heartbeat"),
                self.wait_seconds,
            )
        while holder is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunStateError(self._in_use_message(holder))
            time.sleep(min(self.heartbeat_seconds, remaining))
            holder = self._try_acquire()

    def _try_acquire(self) -> dict[str, Any] | None:
        """Take the lock (None), or return its live holder."""
        store = self.location.store
        self._record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _now(),
            "heartbeat": _now(),
            "token": uuid.uuid4().hex,
        }
        body = json.dumps(self._record).encode()
        for _ in range(3):
            try:
                created = store.create_exclusive(self.location, body)
            except ConditionalWriteUnsupportedError:
                created = self._create_best_effort(body)
            if created is not None:
                self._held(created)
                return None
            found = self._read()
            if found is None:
                continue  # released meanwhile: try again
            holder, version = found
            if holder is None or self._is_stale(holder):
                try:
                    replaced = store.replace_if(self.location, body, version)
                except ConditionalWriteUnsupportedError:
                    self.location.delete()
                    replaced = self._create_best_effort(body)
                if replaced is not None:
                    self.taken_over = holder or {"pid": None, "host": None}
                    logger.warning(
                        "%s: took over the lock of a dead run (pid %s on %s, since %s, last "
                        "heartbeat %s)",
                        self.run_root,
                        self.taken_over.get("pid"),
                        self.taken_over.get("host"),
                        self.taken_over.get("since"),
                        self.taken_over.get("heartbeat"),
                    )
                    self._held(replaced)
                    return None
                continue  # someone else changed it first
            return holder
        raise RunStateError(f"could not take the lock {self.location}")

    def _create_best_effort(self, body: bytes) -> str | None:
        """Create-if-absent without a conditional write, then check that the lock is ours."""
        if self.location.is_file():
            return None
        self.location.write_bytes(body)
        found = self._read()
        if found is None or found[0] is None or found[0].get("token") != self._record["token"]:
            return None
        return found[1] or "best-effort"

    def _in_use_message(self, holder: dict[str, Any]) -> str:
        best_effort = (
            ""
            if self.location.store.conditional_writes
            else f" ({self.location.scheme}:// has no conditional writes: this lock is best "
            "effort, so never start two runs on one directory at the same moment)"
        )
        return (
            f"{self.run_root} is in use by another thresher run (pid {holder.get('pid')} on "
            f"{holder.get('host')} since {holder.get('since')}, last heartbeat "
            f"{holder.get('heartbeat')}); wait for it to finish, or delete {self.location} if "
            f"that run is dead (a lock whose heartbeat stops is taken over after "
            f"{self.stale_seconds:.0f} s){best_effort}"
        )

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") == socket.gethostname():
            return not isinstance(pid, int) or not _pid_alive(pid)
        try:  # a holder elsewhere: only its heartbeat can tell (none recorded: assume alive)
            beat = datetime.fromisoformat(str(holder.get("heartbeat") or holder.get("since")))
        except ValueError:
            return False
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        return (datetime.now(UTC) - beat).total_seconds() > self.stale_seconds

    def _held(self, version: str) -> None:
        self._version = version
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="thresher-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self._record["heartbeat"] = _now()
            body = json.dumps(self._record).encode()
            try:
                version = self.location.store.replace_if(self.location, body, self._version)
            except ConditionalWriteUnsupportedError:
                self.location.write_bytes(body)
                version = self._version
            except Exception as error:  # a store hiccup: try again at the next beat
                logger.warning("%s: could not renew the lock (%s)", self.location, error)
                continue
            if version is None:
                self.lost = True
                logger.error("%s: the lock was taken over by another run", self.location)
                return
            self._version = version

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=self.heartbeat_seconds + 5)
        self._thread = None
        if not self.lost:
            holder = self.holder()
            if holder is not None and holder.get("token") == self._record.get("token"):
                self.location.delete()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
