"""Opt-in timing of scorer and selector code, to measure orchestration overhead.

Benchmarks need the time spent *inside* scorers and selectors, wherever
they run: in local worker processes, in Spark's Python workers, on the
driver. With the environment variable ``THRESHER_PROFILE_DIR`` set to a
directory, each timed section appends one JSON line (kind, seconds, pid)
to a file of that directory named after the kind and the process, and
:func:`summarize` adds them up. Unset (the default), a section costs one
dictionary lookup.

The switch is an environment variable rather than a config field because
it must reach every worker process without changing what is pickled or
hashed: worker processes and Spark executors in local mode inherit the
driver's environment (on a cluster, set ``spark.executorEnv.THRESHER_PROFILE_DIR``
to a shared path).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROFILE_ENV = "THRESHER_PROFILE_DIR"


def enabled() -> str | None:
    """The profile directory, or None when profiling is off."""
    return os.environ.get(PROFILE_ENV) or None


def record(kind: str, seconds: float, directory: str | None = None) -> None:
    """Append one timing of ``kind`` (when profiling is on)."""
    directory = directory or enabled()
    if directory is None:
        return
    path = Path(directory) / f"{kind}-{os.getpid()}.jsonl"
    line = json.dumps({"kind": kind, "seconds": seconds, "pid": os.getpid()}) + "\n"
    with open(path, "a", encoding="utf-8") as handle:  # one short append per section
        handle.write(line)


@contextmanager
def timed(kind: str) -> Iterator[None]:
    """Time the ``with`` body as ``kind`` when profiling is on; do nothing otherwise."""
    directory = enabled()
    if directory is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        record(kind, time.perf_counter() - start, directory)


def summarize(directory: str | Path) -> dict[str, dict[str, float]]:
    """Per kind: total seconds, number of sections and of processes that recorded them."""
    totals: dict[str, dict[str, float]] = {}
    pids: dict[str, set[int]] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            entry = totals.setdefault(item["kind"], {"seconds": 0.0, "sections": 0})
            entry["seconds"] += float(item["seconds"])
            entry["sections"] += 1
            pids.setdefault(item["kind"], set()).add(int(item["pid"]))
    for kind, entry in totals.items():
        entry["processes"] = len(pids[kind])
    return totals
