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
from urllib.parse import unquote, urlsplit

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


class _FrozenMapping(tuple[tuple[str, Any], ...]):
    """A nested mapping of options, as sorted ``(key, value)`` pairs: hashable, picklable."""

    __slots__ = ()


class _FrozenList(tuple[Any, ...]):
    """A list of options, as a tuple (hashable, picklable)."""

    __slots__ = ()


def _freeze(value: Any) -> Any:
    """Nested mappings and lists as hashable tuples (stores are cached by their options)."""
    if isinstance(value, Mapping):
        return _FrozenMapping(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return _FrozenList(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """What :func:`_freeze` made, as the mappings and lists it was made from."""
    if isinstance(value, _FrozenMapping):
        return {key: _thaw(item) for key, item in value}
    if isinstance(value, _FrozenList):
        return [_thaw(item) for item in value]
    return value


@dataclass(frozen=True)
class StorageOptions:
    """Options per URI scheme (endpoint, region, credentials by reference).

    Stored as given: ``${VAR}`` references stay references until
    :meth:`resolved` reads the environment of the process that opens a store.
    Options may nest (``client_kwargs: {region_name: ...}``); nested
    mappings and lists are held as tuples, so that the options stay
    hashable (stores are cached per options, :func:`thresher.io.stores.store_for`).
    """

    by_scheme: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    @classmethod
    def from_mapping(cls, options: Mapping[str, Mapping[str, Any]] | None) -> StorageOptions:
        if not options:
            return cls()
        return cls(
            tuple(
                (scheme, tuple(sorted((str(k), _freeze(v)) for k, v in values.items())))
                for scheme, values in sorted(options.items())
            )
        )

    def raw(self, scheme: str) -> dict[str, Any]:
        """The options of ``scheme`` as written (``s3a`` shares ``s3``'s, ``gcs`` ``gs``'s)."""
        family = NATIVE_SCHEMES.get(scheme, scheme)
        found: dict[str, Any] = {}
        for name, values in self.by_scheme:
            if name == scheme or NATIVE_SCHEMES.get(name, name) == family:
                found.update({key: _thaw(value) for key, value in values})
        return found

    def resolved(self, scheme: str) -> dict[str, Any]:
        """The options of ``scheme`` with every ``${VAR}`` replaced by the environment's value.

        An S3 ``endpoint_url`` holding user information
        (``http://KEY:SECRET@host:9000``) gives the access key and secret
        (unless the options name them), and is used without it: S3 signs
        requests with the key, it never sends it in the URL.
        """
        options = {key: _resolve_reference(key, value) for key, value in self.raw(scheme).items()}
        if NATIVE_SCHEMES.get(scheme) == "s3":
            options = _endpoint_credentials(options)
        return options


def _endpoint_credentials(options: dict[str, Any]) -> dict[str, Any]:
    endpoint = options.get("endpoint_url")
    if not isinstance(endpoint, str) or "@" not in endpoint:
        return options
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.username is None:
        return options
    found = {
        **options,
        "endpoint_url": parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(),
    }
    found.setdefault("access_key_id", unquote(parts.username))
    if parts.password is not None:
        found.setdefault("secret_access_key", unquote(parts.password))
    return found


def _resolve_reference(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _resolve_reference(f"{key}.{name}", item) for name, item in value.items()}
    if isinstance(value, list):
        return [_resolve_reference(key, item) for item in value]
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
    """Refuse a secret written into a config: a credential option must be a ``${VAR}`` reference.

    Nested options (``client_kwargs: {...}``, lists of mappings) are checked
    at every depth.
    """
    for scheme, values in (options or {}).items():
        if not isinstance(values, Mapping):
            raise ValueError(f"storage_options.{scheme}: must be a mapping of option to value")
        _check_options(values, f"storage_options.{scheme}")


def _check_options(values: Mapping[str, Any], where: str) -> None:
    for key, value in values.items():
        if SECRET_KEYS.search(str(key)) and not (
            isinstance(value, str) and _ENV_REFERENCE.fullmatch(value.strip())
        ):
            raise ValueError(
                f"{where}.{key}: write a secret as an environment "
                f"reference such as '${{{str(key).upper()}}}', never as its value (configs "
                "and manifests are shared)"
            )
        items = [value] if isinstance(value, Mapping) else value
        if isinstance(items, list | tuple):
            for number, item in enumerate(items):
                if isinstance(item, Mapping):
                    suffix = "" if items is not value else f"[{number}]"
                    _check_options(item, f"{where}.{key}{suffix}")
