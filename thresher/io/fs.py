"""One filesystem layer for every read and write thresher makes: local paths and URIs.

A :class:`Location` is a path on some store: a local path (``/data/x``,
``file:///data/x``) or a URI (``s3://bucket/key``, ``gs://``, ``hdfs://``,
and any scheme an installed fsspec backend provides, such as ``az://``).
Data goes through :mod:`pyarrow.fs` (S3, GCS, HDFS, local), fsspec through
``PyFileSystem(FSSpecHandler(...))`` for other schemes. What pyarrow does
not offer and thresher needs (version tags in listings, a create that fails
when the object exists, a write that succeeds only over a known version)
comes from the store's own SDK (:mod:`thresher.io.stores`).

Object stores have no rename and no directories. The only primitive that
is atomic everywhere is writing one object: :meth:`Location.write_bytes`
makes the object visible complete or not at all (a local file is written
under a temporary name and renamed; an object is uploaded in one request,
or a multipart upload completed at the end). Everything that spans several
objects becomes visible through a small object written last (see
:mod:`thresher.io.publish`).

Endpoints and credentials come from the standard places: the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), the SDKs' config files
and instance roles, and the config's ``storage_options`` (per scheme),
whose values may be ``${ENV_VAR}`` references resolved in the process that
opens the store, so a secret is never written into the config, a manifest
or a pickled task.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from thresher.errors import StorageError
from thresher.io.options import NATIVE_SCHEMES, StorageOptions
from thresher.io.stores import FileEntry, Store, store_for


@dataclass(frozen=True)
class Location:
    """A path on a store, as a normalised URI (local paths stay plain absolute paths).

    Picklable and small, so that it travels to worker processes and Spark
    executors, which open the store themselves.
    """

    uri: str
    options: StorageOptions = field(default_factory=StorageOptions, compare=False, repr=False)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def of(
        cls,
        target: str | os.PathLike[str] | Location,
        options: StorageOptions | None = None,
        base: Location | None = None,
    ) -> Location:
        """A Location from a URI or a path; a relative path is taken against ``base``."""
        if isinstance(target, Location):
            return target if options is None else Location(target.uri, options)
        text = os.fspath(target)
        options = options if options is not None else (base.options if base else StorageOptions())
        scheme = _scheme_of(text)
        if scheme == "file":
            return cls(_local_uri(urlsplit(text).path), options)
        if scheme:
            parts = urlsplit(text)
            key = re.sub(r"/+", "/", parts.path).rstrip("/")
            query = f"?{parts.query}" if parts.query else ""
            return cls(f"{scheme}://{parts.netloc}{key}{query}", options)
        path = Path(text).expanduser()
        if not path.is_absolute() and base is not None:
            return base / text
        return cls(_local_uri(str(path)), options)

    # -- parts --------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return _scheme_of(self.uri) or "file"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def path(self) -> str:
        """The path inside the store's filesystem (``bucket/key`` for object stores)."""
        if self.is_local:
            return self.uri
        parts = urlsplit(self.uri)
        if NATIVE_SCHEMES.get(self.scheme) == "hdfs":
            return parts.path or "/"
        return f"{parts.netloc}{parts.path}"

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head, _, _ = self.uri.rstrip("/").rpartition("/")
        if self.is_local:
            return Location(head or "/", self.options)
        if head.endswith(":/"):  # the root of a bucket
            return self
        return Location(head, self.options)

    def __truediv__(self, name: str) -> Location:
        name = str(name).strip("/")
        if not name:
            return self
        return Location(f"{self.uri.rstrip('/')}/{name}", self.options)

    def relative_to(self, other: Location) -> str:
        """This location's path below ``other`` (ValueError when it is not below it)."""
        prefix = other.uri.rstrip("/") + "/"
        if not self.uri.startswith(prefix):
            raise ValueError(f"{self} is not inside {other}")
        return self.uri[len(prefix) :]

    def is_relative_to(self, other: Location) -> bool:
        return self.uri == other.uri or self.uri.startswith(other.uri.rstrip("/") + "/")

    def as_path(self) -> Path:
        """The local path (only for local locations)."""
        if not self.is_local:
            raise StorageError(f"{self} is not on a local file system")
        return Path(self.uri)

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:  # lets local locations be given to open(), pathlib...
        if not self.is_local:
            raise TypeError(f"{self} is not a local path")
        return self.uri

    # -- the store ----------------------------------------------------------------------
    @property
    def fs(self) -> pafs.FileSystem:
        return self.store.fs

    @property
    def store(self) -> Store:
        try:
            return store_for(self.scheme, self._authority, self.options)
        except StorageError as error:
            if str(error).startswith(self.uri):
                raise
            raise StorageError(f"{self.uri}: {error}") from None

    @property
    def _authority(self) -> str:
        return "" if self.is_local else urlsplit(self.uri).netloc

    # -- queries ------------------------------------------------------------------------
    def info(self) -> FileEntry | None:
        """Size, time and version of the object or file here (None when absent)."""
        return self.store.info(self)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_file(self) -> bool:
        return self.store.file_type(self) == pafs.FileType.File

    def is_dir(self) -> bool:
        """True for a directory, or an object-store prefix holding at least one object."""
        return self.store.file_type(self) == pafs.FileType.Directory

    def list_files(self, recursive: bool = True) -> list[FileEntry]:
        """Every file below this location, sorted by URI (empty when there is none)."""
        return sorted(self.store.list_files(self, recursive), key=lambda e: e.location.uri)

    def children(self) -> list[Location]:
        """Files and directories directly below this location, sorted by URI."""
        return sorted(self.store.children(self), key=lambda loc: loc.uri)

    # -- reads --------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        with self.open_input_stream() as stream:
            return bytes(stream.read())

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open_input_stream(self) -> pa.NativeFile:
        return self.store.guard(
            self, lambda: self.fs.open_input_stream(self.path, compression=None)
        )

    def open_input_file(self) -> pa.NativeFile:
        """A seekable handle (what the Parquet reader needs)."""
        return self.store.guard(self, lambda: self.fs.open_input_file(self.path))

    # -- writes -------------------------------------------------------------------------
    def write_bytes(self, data: bytes | pa.Buffer) -> None:
        """Write the whole object atomically: readers see the old content or the new, never a part."""
        self.store.write_atomic(self, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self) -> None:
        """Create this directory (local file systems; object stores have none to create)."""
        if self.is_local:
            os.makedirs(self.uri, exist_ok=True)

    def delete(self, missing_ok: bool = True) -> None:
        self.store.delete_file(self, missing_ok)

    def delete_tree(self) -> None:
        """Delete this directory or prefix and everything below it (nothing if absent)."""
        self.store.delete_tree(self)

    def temporary_sibling(self) -> Location:
        return self.parent / f".{self.name}.tmp-{uuid.uuid4().hex[:8]}"


def _scheme_of(text: str) -> str:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match is None or len(match.group(1)) == 1:  # a Windows drive letter is not a scheme
        return ""
    return match.group(1).lower()


def _local_uri(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


# -- globs ------------------------------------------------------------------------------


def has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand(pattern: Location) -> list[FileEntry]:
    """Files matching a location that may hold ``*``, ``?``, ``[...]`` and ``**``.

    A location without a wildcard names a file or a directory (every file
    below it). The store is listed once, from the longest prefix without a
    wildcard, so a glob over a bucket costs one listing, not a request per file.
    """
    if not has_magic(pattern.uri):
        entry = pattern.info()
        if entry is not None:
            return [entry]
        return pattern.list_files(recursive=True)
    prefix, _, _ = pattern.uri.partition(_first_magic(pattern.uri))
    base = Location(prefix.rsplit("/", 1)[0] or "/", pattern.options)
    regex = _glob_regex(pattern.uri)
    return [e for e in base.list_files(recursive=True) if regex.fullmatch(e.location.uri)]


def _first_magic(text: str) -> str:
    return next(c for c in text if c in "*?[")


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob with ``**`` (any number of directories) and per-segment wildcards."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i : end + 1])[4:-3])
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))
