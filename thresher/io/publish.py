"""Publishing a run's selection and pruned dataset: immutable versions and one pointer.

One protocol for every store, rename or not:

1. a new version is written under ``RUN_DIR/versions/<name>/`` (``data/``,
   ``selection/``, ``dropped/``, ``steps.json``...), a name no reader has
   ever been given, so half-written files are invisible to them;
2. the pointer ``RUN_DIR/CURRENT`` (one small JSON object, whose write is
   atomic on every store) is replaced to name it: this is the publication;
3. on a local file system, the link ``RUN_DIR/data`` is moved to the new
   version's ``data/`` (a rename of a link over a link is atomic), so that
   ``pandas.read_parquet("RUN_DIR/data")`` reads the current version;
4. versions other than the current and the previous one are deleted. The
   previous one is kept, so that a reader who followed the pointer just
   before it moved can finish reading.

A process killed anywhere leaves the pointer on a complete version (the
old or the new). The next run (holding the run lock) deletes the versions
the pointer does not name, so only two versions, at most, outlive a run.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from thresher import faults
from thresher.io.files import read_json_or, write_json_atomic
from thresher.io.fs import Location

POINTER = "CURRENT"
VERSIONS = "versions"
DATA_LINK = "data"
_NAME = re.compile(r"^v-(\d{6})-[0-9a-f]{8}$")


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
    def sequence(self) -> int:
        match = _NAME.match(self.name)
        return int(match.group(1)) if match else 0


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


def new_version(run_root: Location) -> Version:
    """A fresh version to write into: the next sequence number and a random suffix."""
    current = current_version(run_root)
    sequence = (current.sequence if current else 0) + 1
    name = f"v-{sequence:06d}-{uuid.uuid4().hex[:8]}"
    return Version(name, run_root / VERSIONS / name)


def publish(run_root: Location, version: Version, summary: dict[str, Any]) -> None:
    """Make ``version`` the current one (see module docstring); ``summary`` goes in the pointer."""
    faults.point("publish:after-data")
    previous = current_version(run_root)
    write_json_atomic(
        {
            "version": version.name,
            "data": f"{VERSIONS}/{version.name}/data/",
            "previous": previous.name if previous else None,
            "published": datetime.now(UTC).isoformat(timespec="seconds"),
            **summary,
        },
        run_root / POINTER,
    )
    faults.point("publish:after-pointer")
    link_data(run_root)
    faults.point("publish:after-link")
    retire_versions(run_root)


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


def retire_versions(run_root: Location) -> list[str]:
    """Delete every version but the current and the previous one; return their names."""
    named = pointer(run_root)
    keep = {named.get("version"), named.get("previous")} if named else set()
    retired = []
    for child in (run_root / VERSIONS).children():
        if child.name not in keep:
            child.delete_tree()
            retired.append(child.name)
    return sorted(retired)


def recover(run_root: Location) -> list[str]:
    """After a killed run (under the lock): fix the data link, delete unnamed versions."""
    link_data(run_root)
    return retire_versions(run_root)
