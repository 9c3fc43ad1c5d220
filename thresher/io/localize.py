"""Local copies of remote files, for the libraries that only read local paths.

torch, safetensors, fastText and Hugging Face load models from local files.
When a run's ``models/`` directory lives on an object store, it is copied to
a cache directory first: ``$THRESHER_CACHE`` (default ``~/.cache/thresher``),
under a name derived from its URI, and copied again only when a file's size
or version changed.

A run directory on an object store fits its models in a local mirror of
``RUN_DIR/models/`` (:func:`models_mirror`) and pushes them back
(:func:`push`); every worker pulls them before loading (:func:`pull`).

A model a user names (``model_path: s3://bucket/lm/``, a fastText ``.bin``)
is read through :func:`local_model` wherever it is loaded, on the driver
and on every worker: a local path is returned as it is, a URI is copied
once per process into the same cache. Fitted state keeps the URI, never a
cache path, so a worker on another machine makes its own copy.

Nothing from a store is written outside its copy: every key is checked
before the first byte is written (:func:`safe_relative`: no absolute key,
no ``..``, ``.`` or empty segment, no backslash or NUL), and the real
directory of each file must lie inside the copy (a link planted in a
shared cache is refused). Files are first written under a temporary name
created exclusively (``O_EXCL``) with a random part, in the file's own
directory, then renamed: another user of a shared cache cannot guess the
name or put a link there.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from thresher.errors import ConfigError, StorageError
from thresher.io.fs import Location
from thresher.keys import json_digest
from thresher.redact import shown

_INDEX = ".thresher-copy.json"
_PUSHED = ".thresher-pushed.json"


def cache_root() -> Path:
    return Path(os.environ.get("THRESHER_CACHE", "~/.cache/thresher")).expanduser()


def models_mirror(models: Location) -> Path:
    """Where this machine keeps the models of a run: the directory itself when local."""
    if models.is_local:
        return Path(models.uri)
    return cache_root() / "models" / json_digest(models.uri)


def pull(remote: Location, local: Path) -> Path:
    """Copy every file below ``remote`` to ``local`` unless an identical copy is there."""
    if remote.is_local:
        return Path(remote.uri)
    files = {e.location.relative_to(remote): e.location for e in remote.list_files()}
    _copy_down(files, local)
    return local


def safe_relative(relative: str, where: Location | str) -> str:
    """``relative`` (a key below ``where``) when it names a file inside a local copy.

    Raises StorageError for a key that would leave the copy or is ambiguous
    on disk: absolute, a ``..`` or ``.`` segment, an empty segment (``a//b``,
    a trailing ``/``), a backslash, a NUL, a drive (``C:``), or the name of
    the copy's own index.
    """
    parts = relative.split("/")
    problem = None
    if not relative or relative.startswith("/"):
        problem = "is absolute" if relative else "is empty"
    elif "\\" in relative or "\0" in relative:
        problem = "holds a backslash or a NUL"
    elif any(part in ("", ".", "..") for part in parts):
        problem = "has an empty, '.' or '..' segment"
    elif relative in (_INDEX, _PUSHED):
        problem = "names a file the copy keeps for itself"
    elif relative[1:2] == ":" and relative[0].isalpha():
        problem = "starts with a drive"
    if problem is not None:
        raise StorageError(
            f"{shown(where)}: the object {shown(relative)!r} {problem}; thresher copies no "
            "such object to a local directory (rename it on the store)"
        )
    return relative


def _copy_down(files: dict[str, Location], local: Path) -> None:
    for relative in files:  # every key, before anything is written
        safe_relative(relative, files[relative].parent)
    index_path = local / _INDEX
    try:
        index = json.loads(index_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        index = {}
    changed = False
    for relative, location in sorted(files.items()):
        entry = location.info()
        tag = None if entry is None else [entry.size, entry.version or entry.mtime_ns]
        target = local / relative
        if index.get(relative) == tag and target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_inside(target, local)
        _write_new(target, location.read_bytes())
        index[relative] = tag
        changed = True
    if changed:
        local.mkdir(parents=True, exist_ok=True)
        _write_new(index_path, json.dumps(index).encode())
        _mark_pushed(local, list(files))


def _check_inside(target: Path, local: Path) -> None:
    """Refuse a file whose real directory is not inside the copy (a link in the cache)."""
    real_local = os.path.realpath(local)
    real_parent = os.path.realpath(target.parent)
    if real_parent != real_local and not real_parent.startswith(real_local + os.sep):
        raise StorageError(
            f"{shown(target)}: its directory leads to {shown(real_parent)}, outside the local "
            f"copy {shown(local)}; remove the link from the cache"
        )


def _write_new(target: Path, data: bytes) -> None:
    """Write ``target`` whole: a new file of unpredictable name (O_EXCL) beside it, renamed."""
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o644)  # readable as a plainly written file is
            stream.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mark_pushed(local: Path, relatives: list[str]) -> None:
    """Record copies made from the remote as already there (nothing to push back)."""
    index_path = local / _PUSHED
    try:
        pushed = json.loads(index_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        pushed = {}
    for relative in relatives:
        stat = (local / relative).stat()
        pushed[relative] = [stat.st_size, stat.st_mtime_ns]
    _write_new(index_path, json.dumps(pushed).encode())


def push(local: Path, remote: Location) -> int:
    """Upload the files below ``local`` that changed since they were last pushed (or pulled)."""
    if remote.is_local or not local.is_dir():
        return 0
    index_path = local / _PUSHED
    try:
        pushed = json.loads(index_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        pushed = {}
    sent = 0
    for path in sorted(local.rglob("*")):
        if not path.is_file() or path.name in (_INDEX, _PUSHED) or path.name.endswith(".part"):
            continue
        relative = path.relative_to(local).as_posix()
        stat = path.stat()
        tag = [stat.st_size, stat.st_mtime_ns]
        if pushed.get(relative) != tag:
            (remote / relative).write_bytes(path.read_bytes())
            pushed[relative] = tag
            sent += 1
    if sent:
        _write_new(index_path, json.dumps(pushed).encode())
    return sent


def local_model(path: str, what: str, kind: Literal["file", "dir"] = "dir") -> Path:
    """A local path to the model file or directory ``path`` names (a local path or a URI).

    A URI's files are copied into ``$THRESHER_CACHE/inputs/`` (again only
    when one changed), once per process. ``what`` names the parameter in
    the ConfigError raised when nothing is there, e.g. ``"perplexity:
    model_path"``.
    """
    location = Location.of(str(path))
    if location.is_local:
        local = Path(location.uri).expanduser()
        if not (local.is_dir() if kind == "dir" else local.is_file()):
            raise ConfigError(f"{what}: {path!r} is not a {_KIND[kind]} ({local})")
        return local
    return _remote_copy(location.uri, what, kind, location)


_KIND = {"file": "file", "dir": "directory"}


@functools.lru_cache(maxsize=64)
def _remote_copy(uri: str, what: str, kind: str, location: Location) -> Path:
    local = cache_root() / "inputs" / json_digest(uri)
    if kind == "file":
        if not location.is_file():
            raise ConfigError(f"{what}: {shown(uri)!r} is not a file")
        _copy_down({location.name: location}, local)
        return local / location.name
    files = {e.location.relative_to(location): e.location for e in location.list_files()}
    if not files:
        raise ConfigError(f"{what}: {shown(uri)!r} is not a directory (no object below it)")
    _copy_down(files, local)
    return local
