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
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Literal

from thresher.errors import ConfigError
from thresher.io.fs import Location
from thresher.keys import json_digest

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


def _copy_down(files: dict[str, Location], local: Path) -> None:
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
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(location.read_bytes())
        os.replace(tmp, target)
        index[relative] = tag
        changed = True
    if changed:
        local.mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps(index))
        _mark_pushed(local, list(files))


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
    index_path.write_text(json.dumps(pushed))


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
        index_path.write_text(json.dumps(pushed))
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
            raise ConfigError(f"{what}: {uri!r} is not a file")
        _copy_down({location.name: location}, local)
        return local / location.name
    files = {e.location.relative_to(location): e.location for e in location.list_files()}
    if not files:
        raise ConfigError(f"{what}: {uri!r} is not a directory (no object below it)")
    _copy_down(files, local)
    return local
