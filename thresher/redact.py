"""Secrets kept out of everything thresher records or shows, and names shown as they are.

A run records its configuration (``manifest.json``, ``_state/config.json``,
the parameters of Prefect's flow runs) and shows paths and names (logs, the
command line's messages, the card, the report). None of those may hold a
secret, and a name taken from a corpus (a file or column name) may not
forge a line or a link there. This module says what is removed and how a
name is shown; the writers call it.

What :func:`redact_config` removes from a configuration's plain data:

- ``storage_options`` (at any depth, recursively): the value of every key
  that names a secret (``key``, ``secret``, ``token``, ``password``,
  ``connection_string``, ``sas``, ``credential``, ``account_key``,
  ``session_token``...), and every literal string of an option that is not
  known to be harmless (:data:`PLAIN_OPTIONS`: endpoints, regions,
  timeouts...). A ``${ENV_VAR}`` reference is kept: it names where a
  secret is, it is none.
- ``engine.spark.conf``: the value of every key that names a secret
  (``spark.hadoop.fs.s3a.secret.key``, ``spark.ssl.keyStorePassword``...),
  as Spark's own ``spark.redaction.regex`` does for its UI.
- every string anywhere (input paths, ``run_dir``, endpoints, model paths,
  Spark master URLs, parameters): the user information of a URI
  (``scheme://user:password@host`` becomes ``scheme://<redacted>@host``)
  and the value of every ``name=value`` pair whose name names a secret
  (a URI's ``?X-Amz-Signature=``, an Azure connection string's
  ``AccountKey=``, a JDBC ``password=``).

A configuration without secrets (and without literal storage options
outside :data:`PLAIN_OPTIONS`) comes out unchanged, so its hash (the
manifest's lineage key) does not change.

Free text (log records, error messages, the card's and the report's
paths) goes through :func:`redact_known`: the secrets of URIs, and every
secret of a configuration this process ran (:func:`remember_secrets`),
wherever a library quoted it. Names from a corpus or a store are shown
with their line breaks and control characters escaped (:func:`printable`,
:func:`shown`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What stands where a secret was.
REDACTED = "<redacted>"

_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
#: An option or setting name that names a secret (matched anywhere in the name).
SECRET_NAME = re.compile(
    r"key|secret|token|passw(?:or)?d|pwd|credential|sas(?!l)|signature|connection.?string"
    r"|conn.?str|cookie|^sig$",
    re.IGNORECASE,
)
#: Storage options whose literal values are recorded (they configure where and how, never who).
PLAIN_OPTIONS = frozenset(
    {
        "account_name",
        "account_url",
        "anon",
        "anonymous",
        "block_size",
        "cache_regions",
        "client_kwargs",
        "config_kwargs",
        "connect_timeout",
        "default_block_size",
        "default_cache_type",
        "default_fill_cache",
        "endpoint",
        "endpoint_override",
        "endpoint_url",
        "host",
        "max_attempts",
        "port",
        "profile",
        "project",
        "project_id",
        "region",
        "region_name",
        "request_timeout",
        "requester_pays",
        "retries",
        "scheme",
        "use_listings_cache",
        "use_ssl",
        "user",
        "verify",
        "version_aware",
    }
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]*")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s\"'<>`]*@")
_LISTS_SETTINGS = re.compile(r"[;&?\s]")
_ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z0-9_.-]+)(?P<sep>\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s;&,\"']+)"
)
#: Characters that end or hide a line (C0/C1 controls, line and paragraph separators,
#: bidirectional overrides): shown escaped wherever a name is printed or logged.
_HIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_reference(value: Any) -> bool:
    """True for a string that is one ``${ENV_VAR}`` reference (no secret in it)."""
    return isinstance(value, str) and _ENV_REFERENCE.fullmatch(value.strip()) is not None


def names_secret(name: Any) -> bool:
    """True when an option or setting called ``name`` holds a secret."""
    return SECRET_NAME.search(str(name)) is not None


def redact_uris(text: str) -> str:
    """``text`` with the user information and secret query values of every URI in it removed.

    For free text (log lines, messages, paths shown in the card and the
    report): only what lies inside a URI is touched.
    """
    if "://" not in text:
        return text
    text = _URI.sub(lambda match: _redact_query(match.group(0)), text)
    return _USERINFO.sub(lambda match: f"{match.group(1)}{REDACTED}@", text)


def _redact_query(uri: str) -> str:
    """The values of a URI's secret parameters (after ``?``, or ``;`` as in JDBC) removed."""
    cut = min((i for i in (uri.find("?"), uri.find(";")) if i >= 0), default=-1)
    if cut < 0:
        return uri
    return uri[: cut + 1] + _redact_assignments(uri[cut + 1 :])


def _redact_assignments(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if not names_secret(match.group("name")) or is_reference(match.group("value")):
            return match.group(0)
        return f"{match.group('name')}{match.group('sep')}{REDACTED}"

    return _ASSIGNMENT.sub(replace, text)


def redact_value(text: str) -> str:
    """A configuration string with URI user information and secret ``name=value`` values removed.

    ``name=value`` pairs are looked for in a string that lists settings (a
    connection string's ``;``, a query's ``&``, options separated by
    spaces, a ``-Dname=value`` flag), not in a plain path, whose
    ``column=value`` directories are partitions.
    """
    text = redact_uris(text)
    if "=" in text and (_LISTS_SETTINGS.search(text) or text.startswith("-")):
        text = _redact_assignments(text)
    return text


def redact_config(data: Any) -> Any:
    """A copy of a configuration's plain data with every secret replaced (module docstring)."""
    return _walk(data, ())


def _walk(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            where = (*path, str(key))
            if key == "storage_options":
                out[key] = _options(item)
            elif where[-2:] == ("spark", "conf") and isinstance(item, Mapping):
                out[key] = {name: _setting(name, setting) for name, setting in item.items()}
            else:
                out[key] = _walk(item, where)
        return out
    if isinstance(value, list | tuple):
        return [_walk(item, path) for item in value]
    if isinstance(value, str):
        return redact_value(value)
    return value


def _setting(name: Any, value: Any) -> Any:
    """One Spark setting: a secret's value goes, a reference stays."""
    if names_secret(name) and not is_reference(value):
        return REDACTED
    return redact_value(value) if isinstance(value, str) else value


def _options(value: Any, name: str | None = None) -> Any:
    """Storage options (any depth): secrets and unknown literal strings go, references stay."""
    if name is not None and names_secret(name) and not is_reference(value):
        return REDACTED
    if isinstance(value, Mapping):
        return {key: _options(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_options(item, name) for item in value]
    if isinstance(value, str) and not is_reference(value):
        if name is not None and name not in PLAIN_OPTIONS:
            return REDACTED
        return redact_value(value)
    return value


#: Secrets of the configurations this process ran, to be found in free text (see remember_secrets).
_KNOWN: set[str] = set()
#: Shorter values are not looked for in free text: they would blank out ordinary words.
MIN_KNOWN_LENGTH = 6


def remember_secrets(data: Any) -> None:
    """Remember the secret values of a configuration's plain data, for :func:`redact_known`.

    A store's or library's error can quote a secret outside any URI (a bucket
    name ``user:password@bucket`` in a botocore message, a traceback's chained
    cause); what :func:`redact_config` removes from ``data`` is looked for,
    literally, in every log record and error message of the process.
    """
    for raw, redacted in _differences(data, redact_config(data)):
        found = {raw} if redacted == REDACTED else set()
        for match in re.finditer(r"://([^/?#\s]*)@", raw):
            userinfo = match.group(1)
            found |= {userinfo, userinfo.partition(":")[2]}
        for match in _ASSIGNMENT.finditer(raw):
            if names_secret(match.group("name")):
                found.add(match.group("value").strip("\"'"))
        _KNOWN.update(item for item in found if len(item) >= MIN_KNOWN_LENGTH)


def _differences(raw: Any, redacted: Any) -> list[tuple[str, Any]]:
    if isinstance(raw, Mapping) and isinstance(redacted, Mapping):
        return [pair for key in raw for pair in _differences(raw[key], redacted.get(key))]
    if isinstance(raw, list | tuple) and isinstance(redacted, list | tuple):
        return [pair for a, b in zip(raw, redacted, strict=False) for pair in _differences(a, b)]
    if isinstance(raw, Mapping | list | tuple):
        return [(text, REDACTED) for text in _strings(raw)]
    if isinstance(raw, str) and raw != redacted:
        return [(raw, redacted)]
    return []


def _strings(data: Any) -> list[str]:
    if isinstance(data, Mapping):
        return [text for item in data.values() for text in _strings(item)]
    if isinstance(data, list | tuple):
        return [text for item in data for text in _strings(item)]
    return [data] if isinstance(data, str) else []


def redact_known(text: str) -> str:
    """``text`` with every remembered secret (:func:`remember_secrets`) and URI secret removed."""
    text = redact_uris(text)
    for secret in sorted(_KNOWN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redactions(data: Any, path: str = "") -> list[str]:
    """Where :data:`REDACTED` stands in recorded plain data (dotted paths), for messages."""
    if isinstance(data, Mapping):
        return [
            found
            for key, item in data.items()
            for found in redactions(item, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(data, list | tuple):
        return [found for i, item in enumerate(data) for found in redactions(item, f"{path}[{i}]")]
    return [path] if isinstance(data, str) and REDACTED in data else []


def printable(text: Any) -> str:
    """``text`` with every character that ends or hides a line escaped (``\\n``, ``\\x1b``...).

    For names taken from a corpus or a store (file names, keys) in messages
    and log lines: a name holding a newline shows as one line, and cannot
    forge another.
    """
    text = str(text)
    if not _HIDDEN.search(text):
        return text
    return _HIDDEN.sub(lambda match: _escape(match.group(0)), text)


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: Any) -> str:
    """A path or name as messages and logs show it: no secret, no line break (both above)."""
    return printable(redact_known(str(text)))
