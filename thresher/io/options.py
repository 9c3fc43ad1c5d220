"""Storage options per URI scheme: endpoints, regions and credentials by reference.

What :class:`~thresher.io.fs.Location` and the stores (:mod:`thresher.io.stores`)
both need to know about schemes: which ones pyarrow serves natively, which
extra of thresher installs a scheme's SDK, and the options of each scheme,
whose secrets are ``${ENV_VAR}`` references resolved only in the process
that opens a store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thresher.errors import StorageError

#: Schemes pyarrow serves natively (``s3a`` is Hadoop's name for S3).
NATIVE_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "gcs": "gs",
    "hdfs": "hdfs",
    "viewfs": "hdfs",
}
#: The extra of thresher that installs what a scheme needs.
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Option keys whose value is a secret: only ``${ENV_VAR}`` references are accepted there.
SECRET_KEYS = re.compile(r"(secret|password|token|credential|access_key|account_key|sas)", re.I)


@dataclass(frozen=True)
class StorageOptions:
    """Options per URI scheme (endpoint, region, credentials by reference).

    Stored as given: ``${VAR}`` references stay references until
    :meth:`resolved` reads the environment of the process that opens a store.
    """

    by_scheme: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    @classmethod
    def from_mapping(cls, options: Mapping[str, Mapping[str, Any]] | None) -> StorageOptions:
        if not options:
            return cls()
        return cls(
            tuple(
                (scheme, tuple(sorted((str(k), v) for k, v in values.items())))
                for scheme, values in sorted(options.items())
            )
        )

    def raw(self, scheme: str) -> dict[str, Any]:
        """The options of ``scheme`` as written (``s3a`` shares ``s3``'s, ``gcs`` ``gs``'s)."""
        family = NATIVE_SCHEMES.get(scheme, scheme)
        found: dict[str, Any] = {}
        for name, values in self.by_scheme:
            if name == scheme or NATIVE_SCHEMES.get(name, name) == family:
                found.update(dict(values))
        return found

    def resolved(self, scheme: str) -> dict[str, Any]:
        """The options of ``scheme`` with every ``${VAR}`` replaced by the environment's value."""
        return {key: _resolve_reference(key, value) for key, value in self.raw(scheme).items()}


def _resolve_reference(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise StorageError(
                f"storage_options: {key} refers to ${{{name}}}, which is not set in the environment"
            )
        return os.environ[name]

    return _ENV_REFERENCE.sub(substitute, value)


def check_storage_options(options: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Refuse a secret written into a config: a credential option must be a ``${VAR}`` reference."""
    for scheme, values in (options or {}).items():
        if not isinstance(values, Mapping):
            raise ValueError(f"storage_options.{scheme}: must be a mapping of option to value")
        for key, value in values.items():
            if SECRET_KEYS.search(str(key)) and not (
                isinstance(value, str) and _ENV_REFERENCE.fullmatch(value.strip())
            ):
                raise ValueError(
                    f"storage_options.{scheme}.{key}: write a secret as an environment "
                    f"reference such as '${{{str(key).upper()}}}', never as its value (configs "
                    "and manifests are shared)"
                )
