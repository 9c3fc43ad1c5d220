"""When a failed Prefect task is worth retrying: not when the user must fix something first."""

from __future__ import annotations

from typing import Any

from thresher.errors import ThresherError


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: retry transient failures, never a ThresherError.

    A bad config, a damaged input under ``on_unreadable: fail`` or a held
    lock fails the same way every time; retrying it only repeats the traceback.
    """
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result could not be read: treat the failure as transient
        return True
    return not isinstance(error, ThresherError)
