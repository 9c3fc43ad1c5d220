"""A Delta Lake table whose versions are thresher's published exports.

Each publication commits one new table version holding exactly the rows of
the export's Parquet files (an overwrite: the schema may change between
versions), tagged with thresher's version name in the commit's metadata
(``thresher.version``). Readers time-travel to any earlier version while
its files are kept (``DeltaTable(uri, version=n)``). Writing goes through
``deltalake`` (delta-rs, no JVM), from a reader over the files that holds
one batch at a time.

Storage: local paths need nothing. For ``s3://`` tables, the endpoint,
region and credentials come from the location's storage options
(``endpoint_url``, ``region``, ``access_key_id``, ``secret_access_key``,
``session_token``), then from the environment (``AWS_*``), which delta-rs
reads itself. delta-rs's own settings (for concurrent commits on S3:
``aws_conditional_put``, a DynamoDB lock, ``AWS_S3_ALLOW_UNSAFE_RENAME``)
go in ``storage_options``, passed as given.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from typing import Any

import pyarrow.dataset as ds

from thresher.errors import StorageError
from thresher.io.fs import Location
from thresher.io.options import NATIVE_SCHEMES

#: The commit-metadata key naming the thresher version a table version holds.
VERSION_KEY = "thresher.version"
#: Rows per batch read from the files (memory holds one batch, per column chunk).
BATCH_ROWS = 64 << 10
#: thresher's S3 option -> delta-rs's storage option.
_S3_OPTIONS = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region": "AWS_REGION",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}


def _deltalake() -> Any:
    try:
        import deltalake
    except ModuleNotFoundError:
        raise StorageError(
            "Delta Lake tables need the deltalake package: pip install 'thresher[delta]'"
        ) from None
    return deltalake


def delta_storage_options(
    table: Location, extra: dict[str, str] | None = None
) -> dict[str, str] | None:
    """delta-rs's storage options for ``table``: its store's, then ``extra`` over them."""
    options: dict[str, str] = {}
    if table.is_local:
        pass
    elif NATIVE_SCHEMES.get(table.scheme) == "s3":
        resolved = table.options.resolved(table.scheme)
        for ours, theirs in _S3_OPTIONS.items():
            if resolved.get(ours):
                options[theirs] = str(resolved[ours])
        endpoint = options.get("AWS_ENDPOINT_URL") or os.environ.get(
            "AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:  # as thresher's S3 store: a custom endpoint defaults to us-east-1
            options["AWS_ENDPOINT_URL"] = endpoint
            options.setdefault("AWS_REGION", os.environ.get("AWS_REGION", "us-east-1"))
            if endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
    else:
        raise StorageError(f"{table}: Delta Lake tables are written to local paths or s3:// only")
    options.update(extra or {})
    return options or None


def _table_uri(table: Location) -> str:
    return table.uri if table.is_local else f"s3://{table.path}"


def publish_delta(
    table: Location,
    files: list[Location],
    version_name: str,
    storage_options: dict[str, str] | None = None,
) -> int:
    """Commit the table's next version: exactly the rows of ``files``; return its number.

    ``files`` are Parquet files of one schema, on one store; the version is
    tagged ``thresher.version = version_name``. The table is created by the
    first publication (version 0).
    """
    if not files:
        raise ValueError("publish_delta needs at least one Parquet file (it may hold no row)")
    if len({(f.scheme, f.fs.type_name) for f in files}) > 1:
        raise ValueError("publish_delta reads its files from one store")
    deltalake = _deltalake()
    dataset = ds.dataset([f.path for f in files], format="parquet", filesystem=files[0].fs)
    reader = dataset.scanner(batch_size=BATCH_ROWS).to_reader()
    uri = _table_uri(table)
    options = delta_storage_options(table, storage_options)
    deltalake.write_deltalake(
        uri,
        reader,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=options,
        commit_properties=deltalake.CommitProperties(custom_metadata={VERSION_KEY: version_name}),
    )
    return int(deltalake.DeltaTable(uri, storage_options=options).version())


def delta_state(
    table: Location, storage_options: dict[str, str] | None = None
) -> tuple[int, str | None] | None:
    """The table's latest version and the thresher version it holds; None when there is no table."""
    deltalake = _deltalake()
    uri = _table_uri(table)
    options = delta_storage_options(table, storage_options)
    if not deltalake.DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    delta_table = deltalake.DeltaTable(uri, storage_options=options)
    history = delta_table.history(1)
    name = history[0].get(VERSION_KEY) if history else None
    return int(delta_table.version()), None if name is None else str(name)


# -- in a child process -----------------------------------------------------------------------
#
# delta-rs's runtime can abort the process at interpreter exit ("terminate called without an
# active exception"), after its work is done: a run, a test session or a CLI would end with
# status 134 for nothing. thresher therefore talks to deltalake only in a child process, which
# reports its result on its standard output before it exits; the request (with the store's
# credentials) travels on its standard input, never on a command line.


def publish_table(
    table: Location,
    files: list[Location],
    version_name: str,
    storage_options: dict[str, str] | None = None,
) -> int:
    """:func:`publish_delta` in a child process (see above); the new table version."""
    return int(_in_child("publish", table, files, version_name, storage_options))


def table_state(
    table: Location, storage_options: dict[str, str] | None = None
) -> tuple[int, str | None] | None:
    """:func:`delta_state` in a child process (see above)."""
    state = _in_child("state", table, [], "", storage_options)
    return None if state is None else (int(state[0]), state[1])


def _in_child(
    action: str,
    table: Location,
    files: list[Location],
    version_name: str,
    storage_options: dict[str, str] | None,
) -> Any:
    request = pickle.dumps((action, table, files, version_name, storage_options))
    done = subprocess.run(
        [sys.executable, "-m", "thresher.export.delta"],
        input=request,
        capture_output=True,
        check=False,
        timeout=_CHILD_SECONDS,
    )
    lines = done.stdout.decode("utf-8", errors="replace").strip().splitlines()
    reply = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if reply is None:
        tail = done.stderr.decode("utf-8", errors="replace").strip()[-2000:]
        raise StorageError(
            f"{table}: the Delta Lake child process failed ({done.returncode}): {tail}"
        )
    if "error" in reply:
        raise StorageError(f"{table}: {reply['error']}")
    return reply["result"]


#: How long a Delta commit may take (a large export over a slow store).
_CHILD_SECONDS = 6 * 3600


def _serve() -> None:
    """The child's side: one request from standard input, its reply as the last output line."""
    action, table, files, version_name, storage_options = pickle.loads(sys.stdin.buffer.read())
    try:
        if action == "publish":
            result: Any = publish_delta(table, files, version_name, storage_options)
        else:
            result = delta_state(table, storage_options)
        reply = {"result": result}
    except (StorageError, ValueError, OSError) as error:
        reply = {"error": str(error)}
    except Exception as error:  # delta-rs raises its own exception types
        reply = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _serve()
