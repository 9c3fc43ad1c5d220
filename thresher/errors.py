"""Exceptions with messages meant for the person running thresher."""

from __future__ import annotations

from typing import Any


class ThresherError(Exception):
    """Base class: a problem the user can fix, reported without a traceback by the CLI."""


class ConfigError(ThresherError):
    """The run configuration is invalid; the message names the offending field."""


class InputError(ThresherError):
    """An input shard or column cannot be used at all (as opposed to a bad row)."""


class DamagedInputError(InputError):
    """An input file broke off or is corrupt (possibly after some records were read).

    ``cause`` is the underlying error as text. Picklable, so that it crosses
    process pools and Spark tasks intact.
    """

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.cause)


class RunStateError(ThresherError):
    """The run directory holds results that do not match this run (config or input changed)."""


class ScorerError(ThresherError):
    """A scorer broke its contract (wrong length or type) or failed on a batch."""


class StorageError(ThresherError):
    """A store cannot be used: unreachable endpoint, refused credentials, missing bucket or backend."""


class LMError(ThresherError):
    """A reference LM cannot be trained or loaded (the message says which file and why)."""
