"""Publication: only the lock's holder moves ``CURRENT``; clean-up spares a live writer's version.

Versions here are small directories written by hand (a ``_SUCCESS`` file in
``data/``); the end-to-end versions of these guarantees, with real runs
and real signals, are in ``tests/flows/test_faults.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from thresher.errors import RunStateError
from thresher.io import publish
from thresher.io.fs import Location
from thresher.io.lock import RunLock


def write_version(root: Location, writer: str | None = None) -> publish.Version:
    version = publish.new_version(root, writer)
    (version.data / "_SUCCESS").write_text(version.name)
    return version


def publish_one(root: Location, **options: Any) -> publish.Version:
    version = write_version(root)
    publish.publish(root, version, {}, **options)
    return version


def backdate_tree(path: Path, seconds: float) -> None:
    """Make every file and directory below ``path`` look written ``seconds`` ago."""
    then = time.time() - seconds
    for item in [path, *path.rglob("*")]:
        os.utime(item, (then, then))


def on_disk(root: Path) -> set[str]:
    return {p.name for p in (root / "versions").iterdir()}


# -- only the holder publishes ---------------------------------------------------------------


def test_a_run_that_lost_its_lock_publishes_nothing(tmp_path: Path) -> None:
    root = Location.of(tmp_path)
    old = publish_one(root)
    pointer = (tmp_path / "CURRENT").read_bytes()

    ours = RunLock(root / "_state" / "lock", heartbeat_seconds=3600)
    ours.acquire()
    try:
        assert ours.token is not None
        version = write_version(root, ours.token)
        assert version.name.endswith(f"-{ours.token[:8]}")  # the writer's mark
        os.utime(ours.location.uri, (time.time() - 700,) * 2)  # our heartbeat stalled...
        other = RunLock(root / "_state" / "lock")  # ...and another run took the directory
        other.acquire()
        assert other.taken_over is not None
        with pytest.raises(RunStateError, match="lost its lock"):
            publish.publish(root, version, {}, lock=ours)
    finally:
        ours.release()
    assert (tmp_path / "CURRENT").read_bytes() == pointer  # nothing moved
    assert publish.current_version(root) == old
    assert os.readlink(tmp_path / "data") == f"versions/{old.name}/data"
    other.release()


def test_the_holder_publishes_and_the_pointer_names_what_is_kept(tmp_path: Path) -> None:
    root = Location.of(tmp_path)
    first = publish_one(root)
    with RunLock(root / "_state" / "lock") as lock:
        second = publish_one(root, lock=lock)
    named = publish.pointer(root)
    assert named is not None and named["version"] == second.name
    assert named["previous"] == first.name
    assert [e["version"] for e in named["retained"]] == [first.name]
    assert on_disk(tmp_path) == {first.name, second.name}


# -- retention ---------------------------------------------------------------------------------


def test_default_retention_keeps_the_current_and_the_previous_version(tmp_path: Path) -> None:
    root = Location.of(tmp_path)
    published = [publish_one(root) for _ in range(4)]
    assert on_disk(tmp_path) == {published[-1].name, published[-2].name}


def test_retention_by_count_and_by_age(tmp_path: Path) -> None:
    root = Location.of(tmp_path / "count")
    published = [publish_one(root, retention=publish.Retention(versions=3)) for _ in range(6)]
    assert on_disk(tmp_path / "count") == {v.name for v in published[-4:]}
    named = publish.pointer(root)
    assert named is not None
    assert [e["version"] for e in named["retained"]] == [v.name for v in published[-2::-1][:3]]

    root = Location.of(tmp_path / "hours")
    published = [publish_one(root, retention=publish.Retention(hours=1)) for _ in range(4)]
    assert on_disk(tmp_path / "hours") == {v.name for v in published}  # all replaced just now
    publish_one(root)  # default retention again: the ones replaced earlier go
    assert len(on_disk(tmp_path / "hours")) == 2

    with pytest.raises(ValueError, match="versions >= 1"):
        publish.Retention(versions=0)


def test_a_pointer_written_before_retention_existed_keeps_its_previous(tmp_path: Path) -> None:
    root = Location.of(tmp_path)
    older, old = write_version(root), write_version(root)
    (tmp_path / "CURRENT").write_text(json.dumps({"version": old.name, "previous": older.name}))
    new = publish_one(root)
    assert on_disk(tmp_path) == {old.name, new.name}


# -- start-up clean-up ---------------------------------------------------------------------------


def test_clean_up_keeps_a_young_unpublished_version_and_deletes_an_old_one(
    tmp_path: Path,
) -> None:
    root = Location.of(tmp_path)
    current = publish_one(root)
    live = write_version(root, "aaaaaaaa")  # a live writer's version in progress
    abandoned = write_version(root, "bbbbbbbb")  # left by a run killed long ago
    backdate_tree(tmp_path / "versions" / abandoned.name, 3600)
    assert publish.recover(root, keep_younger_than=600) == [abandoned.name]
    assert on_disk(tmp_path) == {current.name, live.name}
    # the same young version, written by a run proven dead (the one whose lock was taken over)
    assert publish.recover(root, keep_younger_than=600, dead_writers=frozenset({"aaaaaaaa"})) == [
        live.name
    ]
    assert on_disk(tmp_path) == {current.name}


def test_clean_up_judges_age_on_the_store_clock_on_s3(s3: Any) -> None:
    root = Location.of(f"s3://{s3.bucket()}/run")
    current = publish_one(root)
    young = write_version(root, "cccccccc")
    assert publish.recover(root, keep_younger_than=600) == []
    time.sleep(2.1)  # S3 times have one-second steps
    assert publish.recover(root, keep_younger_than=1) == [young.name]
    assert publish.current_version(root) == current


# -- root files follow CURRENT -----------------------------------------------------------------------


def test_root_files_that_describe_another_version_are_found(tmp_path: Path) -> None:
    root = Location.of(tmp_path)
    manifest = root / "manifest.json"
    assert publish.root_is_stale(root, manifest) is None  # nothing published
    first = publish_one(root)
    first.manifest.write_text(json.dumps({"version": first.name}))
    assert publish.root_is_stale(root, manifest) == first  # no root copy yet
    manifest.write_text(json.dumps({"version": first.name}))
    assert publish.root_is_stale(root, manifest) is None
    second = publish_one(root)
    second.manifest.write_text(json.dumps({"version": second.name}))
    assert publish.root_is_stale(root, manifest) == second  # killed before the root copies


# -- the dataset card says how long a version lasts, truthfully ---------------------------------

ORDINALS = {"second": 2, "third": 3, "fourth": 4}


@pytest.mark.parametrize("versions", [1, 2, 3])
def test_the_card_says_which_publication_deletes_a_version(tmp_path: Path, versions: int) -> None:
    from thresher.reporting.card import _retention

    sentence = _retention({"config": {"retention": {"versions": versions, "hours": 0}}})
    assert "never change" not in sentence.replace("never changes, but", "")
    match = re.search(
        r"the run that publishes the (\w+) version after this one deletes them", sentence
    )
    assert match is not None, sentence
    deleted_by = ORDINALS[match.group(1)]

    root = Location.of(tmp_path)
    retention = publish.Retention(versions=versions)
    this = publish_one(root, retention=retention)
    for _ in range(deleted_by):
        assert this.name in on_disk(tmp_path)  # readable before that publication
        publish_one(root, retention=retention)
    assert this.name not in on_disk(tmp_path)  # and deleted by it
