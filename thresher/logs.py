"""The log of one command: every record in a file under the run directory, and a clean console.

A user error (a :class:`~thresher.errors.ThresherError`) raised inside a
Prefect flow is logged by Prefect with its whole traceback, several times
(task run, flow run, final state). On the console that buries the one line
that says what to fix, so :func:`run_log` keeps those records off the
console and writes everything, tracebacks included, to
``<run_dir>/logs/<UTC time>.log``, which the error line then names.

The file gets every record at INFO and above, whatever the console shows:
for the command's duration the logged loggers are lowered to INFO, and the
console handlers keep showing only what they showed before (``--quiet``:
warnings and errors only).

The file is written locally first and copied into the run directory when
the command ends: the run directory may be on an object store, and
``--fresh`` deletes it while the command runs.

Every record that reaches that file, the console or Prefect's database (the
flow and task run loggers) passes :class:`Redacting` first
(:func:`redact_logs`): the user information and secret parameters of every
URI in it, and every secret of the run's configuration quoted elsewhere
(:func:`thresher.redact.remember_secrets`), are removed, and a name passed as an argument (a file name with
a newline) is shown escaped, so that it cannot forge a line.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from thresher.errors import ThresherError
from thresher.io.fs import Location
from thresher.redact import printable, redact_known

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: The loggers whose records the file gets (Spark's driver log goes there through py4j's).
_LOGGED = ("prefect", "thresher", "py4j")


class _UserErrorsOffConsole(logging.Filter):
    """Drops a user error's records from a console handler: its traceback and every echo of it.

    Prefect reports a failed task or flow in several records (with and
    without the traceback); each names the exception's class, which is how
    they are recognised.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ThresherError):
            return False
        if not record.name.startswith("prefect"):
            return True
        text = record.getMessage()
        return not any(f"{name}: " in text or f"{name}(" in text for name in _user_error_names())


class _ConsoleLevel(logging.Filter):
    """Keeps a console handler at the levels it had before :func:`run_log` lowered the loggers.

    ``saved`` holds the levels the lowered loggers had; a record passes when
    its logger's effective level then allowed it, and when it is at least
    ``minimum`` (WARNING under ``--quiet``).
    """

    def __init__(self, saved: dict[str, int], minimum: int) -> None:
        super().__init__()
        self.saved = saved
        self.minimum = minimum

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= max(self.minimum, self._level_before(record.name))

    def _level_before(self, name: str) -> int:
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            level = self.saved.get(logger.name, logger.level)
            if level:
                return level
            logger = logger.parent
        return logging.WARNING


def _user_error_names() -> set[str]:
    names, pending = set(), [ThresherError]
    while pending:
        kind = pending.pop()
        names.add(kind.__name__)
        pending.extend(kind.__subclasses__())
    return names


class Redacting(logging.Filter):
    """Makes a record safe to keep: names in its arguments escaped, secrets of URIs removed.

    The message is formatted once, here, and stored in place of the
    template and its arguments (a traceback likewise), so that every
    handler after it (console, file, Prefect's API) writes the same safe
    text. Only the arguments are escaped: a message's own line breaks stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "thresher_redacted", False):
            return True
        if isinstance(record.args, Mapping):
            record.args = {key: _safe_argument(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_safe_argument(value) for value in record.args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad template: leave it to the handler's report
            return True
        record.msg, record.args = redact_known(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_known(logging.Formatter().formatException(record.exc_info))
        record.thresher_redacted = True
        return True


def _safe_argument(value: Any) -> Any:
    if isinstance(value, str | PurePath | Location):
        return printable(value)
    return value


_REDACTING = Redacting()
#: Loggers whose records Prefect stores (flow and task run logs, printed lines).
_STORED = ("prefect.flow_runs", "prefect.task_runs", "prefect.extra")


def redact_logs() -> None:
    """Put :class:`Redacting` before every handler that keeps thresher's or a flow run's records.

    On Prefect's flow and task run loggers (what its database stores) and
    on the handlers of those, of ``thresher`` and of the root logger (the
    console); idempotent, called at the start of every flow run.
    """
    for name in _STORED:
        logger = logging.getLogger(name)
        if _REDACTING not in logger.filters:
            logger.addFilter(_REDACTING)
    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in (*_STORED, *_LOGGED))]:
        for handler in logger.handlers:
            if _REDACTING not in handler.filters:
                handler.addFilter(_REDACTING)


class RunLog:
    """Where a command's log goes; ``path`` is final once the command has ended."""

    def __init__(self, run_dir: Location) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self.target = run_dir / "logs" / f"{stamp}.log"
        handle, local = tempfile.mkstemp(prefix="thresher-", suffix=".log")
        os.close(handle)
        self.local = local
        self.path = local

    def finish(self) -> None:
        """Copy the log into the run directory (it stays in the temp file when that fails)."""
        if not self.target.parent.parent.exists():
            return  # no run directory was made: keep the temp file
        try:
            with open(self.local, "rb") as handle:
                self.target.write_bytes(handle.read())
        except (OSError, ThresherError):
            return
        os.unlink(self.local)
        self.path = self.target.uri


@contextmanager
def run_log(run_dir: Location, quiet: bool = False) -> Iterator[RunLog]:
    """Log every record to a file for the duration of a command (see module docstring).

    ``quiet`` keeps records below WARNING off the console (the file still
    gets them). A ThresherError leaving the block gets ``log`` set to the
    file's path.
    """
    log = RunLog(run_dir)
    file_handler = logging.FileHandler(log.local, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    file_handler.setLevel(logging.INFO)
    file_handler.addFilter(_REDACTING)
    loggers = [logging.getLogger(name) for name in _LOGGED]
    saved = {logger.name: logger.level for logger in loggers}
    console_filters = [
        _UserErrorsOffConsole(),
        _ConsoleLevel(saved, logging.WARNING if quiet else logging.NOTSET),
    ]
    consoles = [
        h
        for logger in [logging.getLogger(), *loggers]
        for h in logger.handlers
        if type(h) is not logging.FileHandler and isinstance(h, logging.StreamHandler)
    ]
    for handler in consoles:
        for console_filter in console_filters:
            handler.addFilter(console_filter)
    for logger in loggers:
        logger.addHandler(file_handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)

    def close() -> None:
        for logger in loggers:
            logger.removeHandler(file_handler)
            logger.setLevel(saved[logger.name])
        file_handler.close()
        for handler in consoles:
            for console_filter in console_filters:
                handler.removeFilter(console_filter)
        log.finish()

    try:
        yield log
    except ThresherError as error:
        logging.getLogger("thresher").error("%s", error, exc_info=error)
        close()
        error.log = log.path  # type: ignore[attr-defined]
        raise
    except BaseException:
        logging.getLogger("thresher").exception("the command failed")
        close()
        raise
    close()
