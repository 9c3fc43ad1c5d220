"""Named points at which a test may have this process killed, to prove a commit protocol.

Set ``THRESHER_KILL_AT`` to a point's name (for example ``publish:after-pointer``)
and the process SIGKILLs itself when it reaches that point: no clean-up
handler runs, as when a machine is lost (the test then kills what the
process had started).
Every point is listed in :data:`POINTS`, so that a test can go through all of them.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "THRESHER_KILL_AT"

#: The points, in the order a run reaches them.
POINTS = (
    "publish:after-data",  # the new version's files are written, no pointer yet
    "publish:after-pointer",  # the pointer names the new version; old versions still there
    "publish:after-link",  # the local ``data`` link moved; old versions not yet retired
)


def point(name: str) -> None:
    """Die here if the environment asks for it (a no-op otherwise)."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
