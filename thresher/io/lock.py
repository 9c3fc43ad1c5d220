"""One writer per run directory: a lock file naming its holder.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on POSIX file
systems) holding the holder's pid, host and start time. A second run on the
same directory is refused with a message that names the holder. A lock
left by a process that no longer exists on this host is stale and is taken
over; a lock held from another host cannot be checked from here, so the
message says how to remove it once that run is known to be dead.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from thresher.errors import RunStateError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Context manager holding ``path`` for this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held = False

    def holder(self) -> dict[str, Any] | None:
        """The recorded holder, or None when the lock is free or unreadable."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None or self._is_stale(holder):
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunStateError(
                    f"{self.path.parent.parent} is in use by another thresher run "
                    f"(pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}); "
                    f"wait for it to finish, or delete {self.path} if that run is dead"
                ) from None
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(me, handle)
            self._held = True
            return
        raise RunStateError(f"could not take the lock {self.path}")

    @staticmethod
    def _is_stale(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return not isinstance(pid, int) or not _pid_alive(pid)

    def release(self) -> None:
        if self._held:
            holder = self.holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self._held = False

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
