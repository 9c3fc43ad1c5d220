"""One writer per run directory: a lock object naming its holder, kept alive by a heartbeat.

The lock is ``RUN_DIR/_state/lock``, one small JSON object naming its
holder (pid, host, boot id, pid namespace, start time, a random token). It
is created whole in one step that fails when it already exists: a hard
link of a fully written temporary file on a local file system,
``If-None-Match: *`` on S3 (and S3-compatible stores), a generation
precondition on GCS. Every later change is a compare and swap on the
version that was read (``flock`` on a sibling file locally, ``If-Match`` on
S3, the generation on GCS): the holder's heartbeat every
``heartbeat_seconds``, a takeover, and the release, which deletes the lock
only while it is still the holder's. Of several runs starting or taking
over at once, exactly one holds the lock.

A second run is refused with the holder's pid and host. A lock is stale,
and is taken over (the dead holder is logged), when

- its holder provably runs in this process's pid namespace (same boot id
  and pid-namespace inode, recorded in the lock) and its pid is gone, a
  zombie, or now another process (another start time): at once;
- or its heartbeat is older than ``stale_seconds`` on the store's clock:
  the lock's modification time against that of a probe object written now
  (where the store keeps no times, the lock's version unchanged for
  ``stale_seconds`` of this process's clock while it waits). The holder's
  own clock, and the taker's, are never compared.

The same host name proves nothing: two containers, or a re-created pod,
share host names but not pids.

A holder learns that it lost the lock when its conditional heartbeat
fails; :meth:`RunLock.check`, called by the flow before each stage and by
publication, renews the heartbeat and raises :class:`RunStateError` when
the lock is no longer this run's, so that a run that lost its lock stops
and publishes nothing.

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
from thresher.io.stores import ConditionalWriteUnsupportedError, Versioned

logger = logging.getLogger("thresher.lock")

#: A heartbeat older than this means the holder is dead (seconds).
STALE_SECONDS = 600.0
HEARTBEAT_SECONDS = 30.0


def process_identity() -> dict[str, Any]:
    """What proves that another process shares this one's pids: boot id and pid namespace.

    Also this process's start time (clock ticks after boot), which tells a
    recorded pid from a later process given the same number. None values
    where ``/proc`` does not say (such a holder is judged by its heartbeat).
    """
    return {
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_ns": _readlink("/proc/self/ns/pid"),
        "pid_start": _start_time(os.getpid()),
    }


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (None where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs in this pid namespace.

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
    fields = _stat_fields(pid)
    return fields is not None and fields[:1] == ["Z"]


def holder_is_dead(holder: dict[str, Any]) -> bool:
    """True only when ``holder`` provably ran in this pid namespace and its process is gone.

    The boot id and pid-namespace inode recorded in the lock must be this
    process's; then the pid is checked (gone, a zombie, or reused by a
    process that started at another time). Anything else is not proof.
    """
    ours = process_identity()
    pid = holder.get("pid")
    if (
        not isinstance(pid, int)
        or ours["boot_id"] is None
        or ours["pid_ns"] is None
        or holder.get("boot_id") != ours["boot_id"]
        or holder.get("pid_ns") != ours["pid_ns"]
    ):
        return False
    if not _pid_alive(pid):
        return True
    started = holder.get("pid_start")
    return started is not None and _start_time(pid) not in (None, started)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunLock:
    """Context manager holding the lock at ``location`` for this process (see module docstring).

    A lock in use is refused at once, or, with ``wait_seconds``, after
    waiting that long for it to be released or to go stale: what a retry of
    a crashed run on another machine needs, whose dead predecessor's lock
    goes stale only ``stale_seconds`` after its last heartbeat.

    Attributes
    ----------
    taken_over : dict or None
        The record of the dead holder whose lock this one replaced.
    taken_from_dead : bool
        True when that holder was proven dead (its pid, in this namespace),
        not only silent: what it left behind cannot be in use.
    lost : bool
        True once another run holds the lock (see :meth:`check`).
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
        self.taken_from_dead = False
        self.lost = False
        self._record: dict[str, Any] = {}
        self._version: str | None = None
        self._seen: tuple[str | None, float] | None = None  # (version, first seen): no store times
        self._mutex = threading.Lock()  # one write of the lock at a time in this process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def run_root(self) -> Location:
        return self.location.parent.parent

    @property
    def token(self) -> str | None:
        """This holder's random token (None before the lock is taken)."""
        token = self._record.get("token")
        return str(token) if token else None

    def holder(self) -> dict[str, Any] | None:
        """The recorded holder, or None when the lock is free or unreadable."""
        found = self._read()
        return None if found is None else found[0]

    def _read(self) -> tuple[dict[str, Any] | None, Versioned] | None:
        """(holder, versioned object) of the lock; None when there is none."""
        found = self.location.store.read_versioned(self.location)
        if found is None:
            return None
        try:
            holder = json.loads(found.data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, found
        return (holder if isinstance(holder, dict) else None), found

    # -- taking the lock ---------------------------------------------------------------
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

    def _new_record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **process_identity(),
            "since": _now(),
            "heartbeat": _now(),
            "beat": 0,
            "token": uuid.uuid4().hex,
        }

    def _try_acquire(self) -> dict[str, Any] | None:
        """Take the lock (None), or return its live holder."""
        store = self.location.store
        self._record = self._new_record()
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
            holder, current = found
            dead = holder is not None and holder_is_dead(holder)
            if not dead and not self._heartbeat_stopped(current):
                return holder or {"pid": None, "host": None, "note": "unreadable lock"}
            try:
                replaced = store.replace_if(self.location, body, current.version)
            except ConditionalWriteUnsupportedError:
                replaced = self._replace_best_effort(body, current)
            if replaced is not None:
                self._took_over(holder, dead)
                self._held(replaced)
                return None
            # someone else changed it first: look again
        raise RunStateError(f"could not take the lock {self.location}: it keeps changing")

    def _heartbeat_stopped(self, current: Versioned) -> bool:
        """True when the lock was last written more than ``stale_seconds`` ago, by the store's clock."""
        if current.mtime_ns is not None:
            now = self.location.store.clock_ns(self.location.parent)
            if now is not None:
                return (now - current.mtime_ns) / 1e9 > self.stale_seconds
        # no store times: the version must stay the same for stale_seconds of our own clock
        if self._seen is None or self._seen[0] != current.version:
            self._seen = (current.version, time.monotonic())
            return False
        return time.monotonic() - self._seen[1] > self.stale_seconds

    def _took_over(self, holder: dict[str, Any] | None, dead: bool) -> None:
        self.taken_over = holder or {"pid": None, "host": None}
        self.taken_from_dead = dead
        logger.warning(
            "%s: took over the lock of a dead run (pid %s on %s, since %s, last heartbeat %s; %s)",
            self.run_root,
            self.taken_over.get("pid"),
            self.taken_over.get("host"),
            self.taken_over.get("since"),
            self.taken_over.get("heartbeat"),
            "its process is gone" if dead else f"no heartbeat for {self.stale_seconds:.0f} s",
        )

    def _create_best_effort(self, body: bytes) -> str | None:
        """Create-if-absent without a conditional write, then check that the lock is ours."""
        if self.location.is_file():
            return None
        self.location.write_bytes(body)
        return self._ours_best_effort()

    def _replace_best_effort(self, body: bytes, current: Versioned) -> str | None:
        """Replace without a conditional write: only if unchanged when read again, then check."""
        again = self.location.store.read_versioned(self.location)
        if again is None or again.data != current.data:
            return None
        self.location.write_bytes(body)
        return self._ours_best_effort()

    def _ours_best_effort(self) -> str | None:
        found = self._read()
        if found is None or found[0] is None or found[0].get("token") != self._record["token"]:
            return None
        return found[1].version or "best-effort"

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

    # -- holding it ----------------------------------------------------------------------
    def _held(self, version: str) -> None:
        self._version = version
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="thresher-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        """Write a new heartbeat over the version this holder last wrote (under ``_mutex``).

        Sets :attr:`lost` when the lock is no longer this holder's.
        """
        self._record["heartbeat"] = _now()
        self._record["beat"] = int(self._record.get("beat", 0)) + 1
        body = json.dumps(self._record).encode()
        try:
            version = self.location.store.replace_if(self.location, body, self._version)
        except ConditionalWriteUnsupportedError:
            found = self._read()
            if found is None or found[0] is None or found[0].get("token") != self.token:
                version = None
            else:
                self.location.write_bytes(body)
                version = self._version
        if version is None:
            self.lost = True
        else:
            self._version = version

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._mutex:
                if self.lost:
                    return
                try:
                    self._renew()
                except Exception as error:  # a store hiccup: try again at the next beat
                    logger.warning("%s: could not renew the lock (%s)", self.location, error)
                    continue
            if self.lost:
                logger.error("%s: the lock was taken over by another run", self.location)
                return

    def check(self) -> None:
        """Renew the heartbeat now; RunStateError when this run no longer holds the lock.

        Called before each stage and before publication: a run whose lock
        was taken over (its heartbeat stalled longer than the stale limit,
        or someone deleted the lock) must stop and publish nothing, because
        another run now owns the directory.
        """
        if self._version is None:
            raise RunStateError(f"{self.location}: this run does not hold the lock")
        with self._mutex:
            if not self.lost:
                self._renew()
        if self.lost:
            holder = self.holder()
            now = (
                f"pid {holder.get('pid')} on {holder.get('host')} holds it now"
                if holder is not None
                else "it was deleted"
            )
            raise RunStateError(
                f"{self.run_root}: this run lost its lock {self.location} ({now}); it stops "
                "without publishing anything, and the published version is left as it was. "
                "Only one run may write a run directory: check that no other run uses it, "
                "then run again"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this holder's."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=self.heartbeat_seconds + 5)
        self._thread = None
        with self._mutex:
            version, self._version = self._version, None
            if self.lost or version is None:
                return
            try:
                self.location.store.delete_if(self.location, version)
            except ConditionalWriteUnsupportedError:
                holder = self.holder()
                if holder is not None and holder.get("token") == self.token:
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
