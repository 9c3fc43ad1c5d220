"""Named points at which a test may have this process killed or held, to prove a guarantee.

Set ``THRESHER_KILL_AT`` to a point's name (for example ``publish:after-pointer``)
and the process SIGKILLs itself when it reaches that point: no clean-up
handler runs, as when a machine is lost (the test then kills what the
process had started).
Every point is listed in :data:`POINTS`, so that a test can go through all of them.

Set ``THRESHER_PAUSE_AT`` to ``<point>:<seconds>:<directory>`` and a task
reaching that point writes a file named after its process group into the
directory and sleeps: a test then knows which machine is busy with a task
when it takes that machine away (a lost worker must cost a running task).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KILL_AT_ENV = "THRESHER_KILL_AT"
PAUSE_AT_ENV = "THRESHER_PAUSE_AT"

#: The points, in the order a run reaches them.
POINTS = (
    "publish:after-data",  # the new version's files are written, no pointer yet
    "publish:after-pointer",  # the pointer names the new version; old versions still there
    "publish:after-link",  # the local ``data`` link moved; old versions not yet retired
)
#: Points inside stages, reached only by runs that have the stage (killed as above).
STAGE_POINTS = ("export:after-file",)  # one hand-off file written, the version unpublished
#: Points inside tasks where a test may hold the task (``THRESHER_PAUSE_AT``).
PAUSE_POINTS = ("score:shard",)


def point(name: str) -> None:
    """Die here if the environment asks for it (a no-op otherwise)."""
    if name not in POINTS and name not in STAGE_POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pause(name: str) -> None:
    """Hold the task here if the environment asks for it (a no-op otherwise)."""
    if name not in PAUSE_POINTS:
        raise ValueError(f"unknown pause point {name!r}")
    parts = os.environ.get(PAUSE_AT_ENV, "").split(":", 3)  # every point name holds one colon
    if len(parts) != 4 or f"{parts[0]}:{parts[1]}" != name:
        return
    seconds, directory = parts[2], parts[3]
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / str(os.getpid())).write_text(name)
    time.sleep(float(seconds))
