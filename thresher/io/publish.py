"""Publishing a run's selection and pruned dataset: immutable versions and one pointer.

One protocol for every store, rename or not:

1. a new version is written under ``RUN_DIR/versions/<name>/`` (``data/``,
   ``selection/``, ``dropped/``, ``steps.json``, ``manifest.json``...), a
   name no reader has ever been given, so half-written files are invisible
   to them. The name ends with the first 8 hex digits of the writing run's
   lock token, which tells the run that takes over a dead writer's lock
   which unpublished version that writer left;
2. the run checks that it still holds the run lock (:meth:`RunLock.check`):
   a run that lost it raises and publishes nothing;
3. the pointer ``RUN_DIR/CURRENT`` (one small JSON object, whose write is
   atomic on every store) is replaced to name it: this is the publication.
   It also names the earlier versions still kept (``retained``);
4. on a local file system, the link ``RUN_DIR/data`` is moved to the new
   version's ``data/`` (a rename of a link over a link is atomic), so that
   ``pandas.read_parquet("RUN_DIR/data")`` reads the current version;
5. earlier versions beyond the retention (:class:`Retention`: by default the
   previous one only, so that a reader who followed the pointer just before
   it moved can finish reading) are deleted, and so are versions no pointer
   ever named, once they are older than the lock's stale limit.

A published version's files never change while it exists; it is deleted
when it falls out of the retention. A process killed anywhere leaves the
pointer on a complete version (the old or the new). The next run (holding
the run lock) deletes what the pointer does not name (:func:`recover`),
except a version written during the last ``keep_younger_than`` seconds of
the store's clock by a writer not proven dead: a run that lost its lock
and still writes is never deleted under its feet (it then stops at its
lock check).

The root ``manifest.json``, ``README.md`` and ``report.html`` are written
after the pointer moves, from the version's own ``manifest.json``: readers
trust ``CURRENT`` (and ``versions/<v>/manifest.json``); a root copy that
names another version than ``CURRENT`` (a run killed in between) is
rewritten by the next run's start-up (:func:`root_is_stale`).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from thresher import faults
from thresher.io.files import read_json_or, write_json_atomic
from thresher.io.fs import Location
from thresher.io.lock import STALE_SECONDS, RunLock

POINTER = "CURRENT"
VERSIONS = "versions"
DATA_LINK = "data"
_NAME = re.compile(r"^v-(\d{6})-([0-9a-f]{8})$")


@dataclass(frozen=True)
class Retention:
    """How long published versions outlive the pointer moving past them.

    ``versions`` earlier versions are kept beside the current one (at least
    one, for readers who followed the pointer just before it moved), and
    any earlier version replaced less than ``hours`` ago.
    """

    versions: int = 1
    hours: float = 0.0

    def __post_init__(self) -> None:
        if self.versions < 1 or self.hours < 0:
            raise ValueError(f"retention needs versions >= 1 and hours >= 0, not {self}")

    def split(
        self, retained: list[dict[str, Any]], now: datetime
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """(entries kept, names to delete) of earlier versions, newest first."""
        kept, dropped = [], []
        for number, entry in enumerate(retained):
            replaced = _parse_time(entry.get("replaced"))
            recent = replaced is not None and now - replaced < timedelta(hours=self.hours)
            if number < self.versions or recent:
                kept.append(entry)
            else:
                dropped.append(str(entry["version"]))
        return kept, dropped


@dataclass(frozen=True)
class Version:
    """One published (or being written) version of a run's outputs."""

    name: str
    root: Location

    @property
    def data(self) -> Location:
        return self.root / "data"

    @property
    def selection(self) -> Location:
        return self.root / "selection"

    @property
    def dropped(self) -> Location:
        return self.root / "dropped"

    @property
    def steps(self) -> Location:
        return self.root / "steps.json"

    @property
    def stats(self) -> Location:
        return self.root / "stats.json"

    @property
    def manifest(self) -> Location:
        return self.root / "manifest.json"

    @property
    def sequence(self) -> int:
        match = _NAME.match(self.name)
        return int(match.group(1)) if match else 0


def writer_of(name: str) -> str | None:
    """The writer's mark in a version's name (8 hex digits of its lock token), if any."""
    match = _NAME.match(name)
    return match.group(2) if match else None


def pointer(run_root: Location) -> dict[str, Any] | None:
    """What ``CURRENT`` says (None before the first publication)."""
    value = read_json_or(run_root / POINTER, None)
    return value if isinstance(value, dict) else None


def current_version(run_root: Location) -> Version | None:
    """The published version (None before the first publication)."""
    named = pointer(run_root)
    if named is None:
        return None
    return Version(str(named["version"]), run_root / VERSIONS / str(named["version"]))


def new_version(run_root: Location, writer: str | None = None) -> Version:
    """A fresh version to write into: the next sequence number and the writer's mark.

    ``writer`` is the writing run's lock token (its first 8 hex digits end
    the name); a random mark without one.
    """
    current = current_version(run_root)
    sequence = (current.sequence if current else 0) + 1
    mark = (writer or uuid.uuid4().hex)[:8]
    name = f"v-{sequence:06d}-{mark}"
    return Version(name, run_root / VERSIONS / name)


def retained(named: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The earlier versions a pointer keeps, newest first (``previous`` for older pointers)."""
    if named is None:
        return []
    entries = named.get("retained")
    if isinstance(entries, list):
        return [e for e in entries if isinstance(e, dict) and e.get("version")]
    return [{"version": named["previous"]}] if named.get("previous") else []


def publish(
    run_root: Location,
    version: Version,
    summary: dict[str, Any],
    *,
    lock: RunLock | None = None,
    retention: Retention | None = None,
) -> None:
    """Make ``version`` the current one (see module docstring); ``summary`` goes in the pointer.

    With ``lock``, the lock is checked first: RunStateError, and nothing
    published, when this run no longer holds it.
    """
    retention = retention or Retention()
    faults.point("publish:after-data")
    if lock is not None:
        lock.check()
    before = pointer(run_root)
    now = datetime.now(UTC)
    earlier = retained(before)
    if before is not None:
        earlier.insert(0, {"version": before["version"], "replaced": _format_time(now)})
    kept, dropped = retention.split(earlier, now)
    write_json_atomic(
        {
            "version": version.name,
            "data": f"{VERSIONS}/{version.name}/data/",
            "previous": before["version"] if before else None,
            "retained": kept,
            "published": _format_time(now),
            **summary,
        },
        run_root / POINTER,
    )
    faults.point("publish:after-pointer")
    link_data(run_root)
    faults.point("publish:after-link")
    for name in dropped:  # published, then replaced: nobody is writing them
        (run_root / VERSIONS / name).delete_tree()
    retire_versions(
        run_root, keep_younger_than=lock.stale_seconds if lock is not None else STALE_SECONDS
    )


def link_data(run_root: Location) -> None:
    """Point the local ``RUN_DIR/data`` link at the current version's data (local stores only)."""
    if not run_root.is_local:
        return
    current = current_version(run_root)
    link = os.path.join(run_root.uri, DATA_LINK)
    if current is None:
        return
    target = os.path.join(VERSIONS, current.name, "data")
    if os.path.islink(link) and os.readlink(link) == target:
        return
    if os.path.isdir(link) and not os.path.islink(link):  # a directory left by thresher 0.1
        Location(link).delete_tree()
    tmp = os.path.join(run_root.uri, f".{DATA_LINK}.tmp-{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def retire_versions(
    run_root: Location,
    *,
    keep_younger_than: float = STALE_SECONDS,
    dead_writers: frozenset[str] = frozenset(),
) -> list[str]:
    """Delete the versions the pointer does not name; return their names.

    A version not named is deleted when its writer's mark is in
    ``dead_writers`` (proven dead), or when its newest file is older than
    ``keep_younger_than`` seconds on the store's clock; a younger one may be
    a live writer's and is kept.
    """
    named = pointer(run_root)
    keep = (
        {str(named["version"]), *(str(e["version"]) for e in retained(named))} if named else set()
    )
    candidates = [c for c in (run_root / VERSIONS).children() if c.name not in keep]
    if not candidates:
        return []
    now: int | None = None
    retired = []
    for child in candidates:
        if writer_of(child.name) not in dead_writers:
            if now is None:
                now = run_root.store.clock_ns(run_root / VERSIONS)
            written = _last_written(child)
            if now is None or written is None or (now - written) / 1e9 <= keep_younger_than:
                continue
        child.delete_tree()
        retired.append(child.name)
    return sorted(retired)


def _last_written(version_root: Location) -> int | None:
    """The store's time of the newest write below ``version_root`` (ns; None when unknown)."""
    times = [e.mtime_ns for e in version_root.list_files(recursive=True)]
    if version_root.is_local:  # a directory created, nothing written yet
        with contextlib.suppress(FileNotFoundError):
            times.append(os.stat(version_root.uri).st_mtime_ns)
    if not times or any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def recover(
    run_root: Location,
    *,
    keep_younger_than: float = STALE_SECONDS,
    dead_writers: frozenset[str] = frozenset(),
) -> list[str]:
    """After a killed run (under the lock): fix the data link, delete unnamed versions.

    See :func:`retire_versions` for which are kept.
    """
    link_data(run_root)
    return retire_versions(run_root, keep_younger_than=keep_younger_than, dead_writers=dead_writers)


def root_is_stale(run_root: Location, root_manifest: Location) -> Version | None:
    """The current version when the root ``manifest.json`` describes another one, else None.

    The root manifest, card and report are written after the pointer
    moves; a run killed in between leaves them describing the old version
    until they are rewritten from the current version's manifest.
    """
    current = current_version(run_root)
    if current is None or not current.manifest.is_file():
        return None
    described = read_json_or(root_manifest, {})
    if isinstance(described, dict) and described.get("version") == current.name:
        return None
    return current


def _format_time(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _parse_time(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
