"""Stores behind :class:`~thresher.io.fs.Location`: one per kind of storage system.

Each store gives a pyarrow ``FileSystem`` for the data and the few things
pyarrow does not: listings with version tags (so that a nightly run learns
that an input is unchanged without reading it), what the run lock needs (a
create that fails when the object already exists, a replace and a delete
that succeed only over a known version, and the store's own clock, read
from a probe object's modification time), and errors that say what to do.

- :class:`LocalStore`: the local file system (``os`` calls; rename makes writes atomic;
  the lock is created by a hard link and swapped under ``flock``);
- :class:`S3Store`: S3 and S3-compatible stores (MinIO, Ceph, R2): pyarrow's
  ``S3FileSystem`` for data, boto3 for ETags and conditional writes
  (``If-None-Match``, ``If-Match``);
- :class:`GcsStore`: pyarrow's ``GcsFileSystem``; generations and conditional
  creates through ``google-cloud-storage`` when it is installed;
- :class:`PyArrowStore`: HDFS and every fsspec scheme (``PyFileSystem(FSSpecHandler)``),
  without conditional writes (the run lock says so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from thresher.errors import StorageError
from thresher.io.options import EXTRAS, NATIVE_SCHEMES, StorageOptions

try:  # advisory file locks (POSIX); without them the local lock is best effort
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from thresher.io.fs import Location

T = TypeVar("T")


@dataclass(frozen=True)
class FileEntry:
    """One object or file found by a listing: where, how big, and its version.

    ``version`` is what changes whenever the bytes change without reading
    them: the ETag on S3, the generation on GCS, and None where the store
    gives neither (local files use size and modification time).
    """

    location: Location
    size: int
    mtime_ns: int | None
    version: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What tells a later run that this input did not change (no byte is read)."""
        if self.version is not None:
            return {"size": self.size, "version": self.version}
        return {"size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Versioned:
    """One small object read whole: its bytes, its version and when the store last wrote it.

    ``mtime_ns`` is the store's own time of the last write (the server's
    clock on an object store), None where the store gives none.
    """

    data: bytes
    version: str | None
    mtime_ns: int | None


def iter_chunks(data: bytes | pa.Buffer, size: int = 1 << 24) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


class ConditionalWriteUnsupportedError(StorageError):
    """The store cannot create an object only if it is absent (no safe run lock there)."""


def _missing_extra(scheme: str, package: str) -> StorageError:
    extra = EXTRAS.get(scheme)
    install = f"pip install 'thresher[{extra}]'" if extra else f"pip install {package}"
    return StorageError(
        f"{scheme}:// needs the package {package!r}, which is not installed: {install}"
    )


class Store:
    """What thresher needs from one storage system (see module docstring)."""

    scheme: str
    #: True when :meth:`create_exclusive` is atomic on this store.
    conditional_writes: bool = False

    def __init__(self, scheme: str, fs: pafs.FileSystem) -> None:
        self.scheme = scheme
        self.fs = fs

    # -- errors -------------------------------------------------------------------------
    def guard(self, location: Location, call: Callable[[], T]) -> T:
        """Run ``call``, turning the store's errors into a StorageError that names ``location``."""
        try:
            return call()
        except FileNotFoundError:
            raise
        except (StorageError, PermissionError):
            raise
        except OSError as error:
            raise self.explain(location, error) from error

    def explain(self, location: Location, error: BaseException) -> BaseException:
        text = str(error)
        if "Path does not exist" in text or "NoSuchKey" in text or "does not exist" in text:
            return FileNotFoundError(f"{location}: not found")
        return StorageError(f"{location}: {text.splitlines()[0] if text else error!r}")

    def check(self, location: Location) -> None:
        """Fail now, with a message, when ``location``'s store cannot be used at all."""
        self.guard(location, lambda: self.fs.get_file_info(location.path))

    # -- queries ------------------------------------------------------------------------
    def file_type(self, location: Location) -> pafs.FileType:
        return self.guard(location, lambda: self.fs.get_file_info(location.path).type)

    def info(self, location: Location) -> FileEntry | None:
        info = self.guard(location, lambda: self.fs.get_file_info(location.path))
        if info.type != pafs.FileType.File:
            return None
        return FileEntry(location, int(info.size or 0), info.mtime_ns, None)

    def list_files(self, location: Location, recursive: bool) -> list[FileEntry]:
        def listing() -> list[pafs.FileInfo]:
            return self.fs.get_file_info(
                pafs.FileSelector(location.path, recursive=recursive, allow_not_found=True)
            )

        found = []
        for info in self.guard(location, listing):
            if info.type == pafs.FileType.File:
                child = location / info.path[len(location.path.rstrip("/")) + 1 :]
                found.append(FileEntry(child, int(info.size or 0), info.mtime_ns, None))
        return found

    def children(self, location: Location) -> list[Location]:
        def listing() -> list[pafs.FileInfo]:
            return self.fs.get_file_info(
                pafs.FileSelector(location.path, recursive=False, allow_not_found=True)
            )

        return [
            location / info.path[len(location.path.rstrip("/")) + 1 :]
            for info in self.guard(location, listing)
        ]

    # -- writes -------------------------------------------------------------------------
    def write_atomic(self, location: Location, data: bytes | pa.Buffer) -> None:
        """One object, uploaded whole: visible only once the upload completes."""

        def upload() -> None:
            with self.fs.open_output_stream(location.path, compression=None) as stream:
                for chunk in iter_chunks(data):
                    stream.write(chunk)

        self.guard(location, upload)

    def delete_file(self, location: Location, missing_ok: bool = True) -> None:
        try:
            self.guard(location, lambda: self.fs.delete_file(location.path))
        except FileNotFoundError:
            if not missing_ok:
                raise

    def delete_tree(self, location: Location) -> None:
        if self.file_type(location) == pafs.FileType.Directory:
            self.guard(location, lambda: self.fs.delete_dir(location.path))

    def read_versioned(self, location: Location) -> Versioned | None:
        """The bytes of ``location``, their version and the store's time of the write.

        None when the object is absent.
        """
        entry = self.info(location)
        if entry is None:
            return None
        try:
            data = location.read_bytes()
        except FileNotFoundError:
            return None
        return Versioned(data, entry.version, entry.mtime_ns)

    def create_exclusive(self, location: Location, data: bytes) -> str | None:
        """Create ``location`` holding ``data`` unless it exists, in one atomic step.

        No reader ever sees the object empty or half written. Returns the
        new object's version, or None when it already existed.
        """
        raise ConditionalWriteUnsupportedError(
            f"{location}: {self.scheme}:// offers no write that fails when the object exists"
        )

    def replace_if(self, location: Location, data: bytes, version: str | None) -> str | None:
        """Overwrite ``location`` only if its version is still ``version`` (compare and swap).

        Of several writers replacing the same version at once, exactly one
        succeeds. Returns the new version, or None when the object changed
        (or vanished) meanwhile.
        """
        raise ConditionalWriteUnsupportedError(
            f"{location}: {self.scheme}:// offers no write conditional on a version"
        )

    def delete_if(self, location: Location, version: str | None) -> bool:
        """Delete ``location`` only if its version is still ``version``; True when deleted."""
        raise ConditionalWriteUnsupportedError(
            f"{location}: {self.scheme}:// offers no delete conditional on a version"
        )

    def clock_ns(self, directory: Location) -> int | None:
        """The store's own clock now (ns since the epoch), read from a probe object it timestamps.

        What the times of :meth:`read_versioned` and listings are compared
        with, so that a machine whose clock is off never judges them. The
        probe is written below ``directory`` and deleted. None when the store
        records no modification times.
        """
        probe = directory / f".clock-probe-{uuid.uuid4().hex[:12]}"
        self.write_atomic(probe, b"")
        try:
            entry = self.info(probe)
        finally:
            self.delete_file(probe)
        return None if entry is None else entry.mtime_ns


class LocalStore(Store):
    """The local file system: writes to a temporary name, then one rename."""

    conditional_writes = fcntl is not None

    def __init__(self) -> None:
        super().__init__("file", pafs.LocalFileSystem())

    def file_type(self, location: Location) -> pafs.FileType:
        path = location.uri
        if os.path.isfile(path):
            return pafs.FileType.File
        if os.path.isdir(path):
            return pafs.FileType.Directory
        return pafs.FileType.NotFound

    def list_files(self, location: Location, recursive: bool) -> list[FileEntry]:
        root = location.uri
        if not os.path.isdir(root):
            return []
        found = []
        for directory, _, files in os.walk(root) if recursive else [next(os.walk(root))]:
            for name in files:
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    stat = os.stat(path)
                    found.append(
                        FileEntry(
                            dataclasses.replace(location, uri=path), stat.st_size, stat.st_mtime_ns
                        )
                    )
        return found

    def children(self, location: Location) -> list[Location]:
        if not os.path.isdir(location.uri):
            return []
        return [location / name for name in os.listdir(location.uri)]

    def write_atomic(self, location: Location, data: bytes | pa.Buffer) -> None:
        os.makedirs(os.path.dirname(location.uri), exist_ok=True)
        tmp = location.temporary_sibling().uri
        try:
            with open(tmp, "wb") as handle:
                handle.write(memoryview(data))
            os.replace(tmp, location.uri)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def delete_file(self, location: Location, missing_ok: bool = True) -> None:
        try:
            os.unlink(location.uri)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def delete_tree(self, location: Location) -> None:
        path = location.uri
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)

    def info(self, location: Location) -> FileEntry | None:
        try:
            stat = os.stat(location.uri)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(location.uri):
            return None
        return FileEntry(location, stat.st_size, stat.st_mtime_ns, None)

    def read_versioned(self, location: Location) -> Versioned | None:
        try:
            with open(location.uri, "rb") as handle:
                data = handle.read()
                stat = os.fstat(handle.fileno())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return Versioned(data, _local_version(stat.st_ino, data), stat.st_mtime_ns)

    def create_exclusive(self, location: Location, data: bytes) -> str | None:
        """Write a temporary file whole, then hard-link it to the name (fails if taken).

        A link is atomic and fails when the name exists, so the object is
        never seen empty or half written, and of several creators exactly
        one wins. A file system without hard links gets the best-effort lock.
        """
        os.makedirs(os.path.dirname(location.uri), exist_ok=True)
        tmp = location.temporary_sibling().uri
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                inode = os.fstat(handle.fileno()).st_ino
            try:
                os.link(tmp, location.uri)
            except FileExistsError:
                return None
            except OSError as error:  # no hard links here (some FUSE and SMB mounts)
                raise ConditionalWriteUnsupportedError(
                    f"{location}: this file system cannot hard-link ({error.strerror})"
                ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return _local_version(inode, data)

    def replace_if(self, location: Location, data: bytes, version: str | None) -> str | None:
        """Compare and swap under an advisory lock on a sibling file (one winner).

        Every conditional replace and delete of ``location`` takes the lock
        (``flock`` on ``.<name>.guard``), so the comparison and the rename
        that follows are one step for them; a create needs none (the link
        fails while the file exists).
        """
        with self._guarded(location):
            current = self.read_versioned(location)
            if current is None or current.version != version:
                return None
            self.write_atomic(location, data)
            found = self.read_versioned(location)
        return None if found is None else found.version

    def delete_if(self, location: Location, version: str | None) -> bool:
        with self._guarded(location):
            current = self.read_versioned(location)
            if current is None or current.version != version:
                return False
            os.unlink(location.uri)
        return True

    @contextlib.contextmanager
    def _guarded(self, location: Location) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConditionalWriteUnsupportedError(f"{location}: no advisory file locks here")
        guard = os.path.join(os.path.dirname(location.uri), f".{location.name}.guard")
        descriptor = os.open(guard, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the flock


def _local_version(inode: int, data: bytes) -> str:
    """A local file's version: its inode and a digest of its bytes.

    The inode alone could be reused by a file created after a delete; the
    bytes of a lock hold a random token and a counter, so a version names
    one write.
    """
    return f"{inode}-{hashlib.sha256(data).hexdigest()[:16]}"


class S3Store(Store):
    """S3 and S3-compatible stores: pyarrow for data, boto3 for versions and conditional writes."""

    conditional_writes = True

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.endpoint = (
            options.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = (
            options.get("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or ("us-east-1" if self.endpoint else None)
        )
        self.region = region
        kwargs: dict[str, Any] = {}
        if self.endpoint:
            parts = urlsplit(
                self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}"
            )
            kwargs["endpoint_override"] = parts.netloc
            kwargs["scheme"] = parts.scheme
        if region:
            kwargs["region"] = region
        for ours, theirs in (
            ("access_key_id", "access_key"),
            ("secret_access_key", "secret_key"),
            ("session_token", "session_token"),
        ):
            if options.get(ours):
                kwargs[theirs] = options[ours]
        if options.get("anonymous"):
            kwargs["anonymous"] = True
        kwargs["connect_timeout"] = float(options.get("connect_timeout", 10))
        kwargs["request_timeout"] = float(options.get("request_timeout", 60))
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(
            max_attempts=int(options.get("max_attempts", 3))
        )
        super().__init__("s3", pafs.S3FileSystem(**kwargs))

    @functools.cached_property
    def client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise _missing_extra("s3", "boto3") from None
        config = Config(
            connect_timeout=float(self.options.get("connect_timeout", 10)),
            read_timeout=float(self.options.get("request_timeout", 60)),
            retries={"max_attempts": int(self.options.get("max_attempts", 3)), "mode": "standard"},
        )
        credentials = {
            key: self.options[key]
            for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
            if self.options.get(key)
        }
        for ours, theirs in (
            ("access_key_id", "aws_access_key_id"),
            ("secret_access_key", "aws_secret_access_key"),
            ("session_token", "aws_session_token"),
        ):
            if self.options.get(ours):
                credentials[theirs] = self.options[ours]
        return boto3.session.Session(profile_name=self.options.get("profile")).client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, config=config, **credentials
        )

    @staticmethod
    def _split(location: Location) -> tuple[str, str]:
        parts = urlsplit(location.uri)
        return parts.netloc, parts.path.lstrip("/")

    def explain(self, location: Location, error: BaseException) -> BaseException:
        code, status = _s3_error_code(error)
        bucket, _ = self._split(location)
        where = f"endpoint {self.endpoint}" if self.endpoint else "AWS S3"
        text = str(error)
        if code in ("NoSuchKey", "404", "NotFound") or (
            status == 404 and code not in ("NoSuchBucket",)
        ):
            return FileNotFoundError(f"{location}: not found")
        if code == "NoSuchBucket" or "NoSuchBucket" in text or "bucket does not exist" in text:
            return StorageError(
                f"{location}: bucket {bucket!r} does not exist on {where}; create it, or fix the URI"
            )
        if (
            code
            in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403",
                "Forbidden",
                "ExpiredToken",
                "InvalidToken",
            )
            or (status == 403)
            or "ACCESS_DENIED" in text
            or "AccessDenied" in text
        ):
            return StorageError(
                f"{location}: {where} refused the credentials ({code or 'access denied'}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role"
            )
        if _is_connection_error(error):
            return StorageError(
                f"{location}: cannot reach {where} ({_first_line(error)}); check AWS_ENDPOINT_URL "
                "or storage_options.s3.endpoint_url, and that the server is running"
            )
        return StorageError(f"{location}: S3 error on {where}: {_first_line(error)}")

    def guard(self, location: Location, call: Callable[[], T]) -> T:
        try:
            return call()
        except (FileNotFoundError, StorageError):
            raise
        except Exception as error:  # botocore and pyarrow raise their own types
            if type(error).__module__.startswith(("botocore", "boto3")) or isinstance(
                error, OSError
            ):
                raise self.explain(location, error) from error
            raise

    def check(self, location: Location) -> None:
        """The bucket exists and the credentials are accepted (one HEAD request)."""
        bucket, _ = self._split(location)
        where = f"endpoint {self.endpoint}" if self.endpoint else "AWS S3"
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as error:
            _, status = _s3_error_code(error)
            if status == 404:
                raise StorageError(
                    f"{location}: bucket {bucket!r} does not exist on {where}; create it, or fix "
                    "the URI"
                ) from None
            raise self.explain(location, error) from error

    def info(self, location: Location) -> FileEntry | None:
        bucket, key = self._split(location)
        if not key:
            return None
        try:
            head = self.guard(location, lambda: self.client.head_object(Bucket=bucket, Key=key))
        except FileNotFoundError:
            return None
        return FileEntry(
            location,
            int(head["ContentLength"]),
            int(head["LastModified"].timestamp() * 1e9),
            head["ETag"].strip('"'),
        )

    def file_type(self, location: Location) -> pafs.FileType:
        if self.info(location) is not None:
            return pafs.FileType.File
        bucket, key = self._split(location)
        prefix = f"{key.rstrip('/')}/" if key else ""
        listed = self.guard(
            location, lambda: self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        )
        return pafs.FileType.Directory if listed.get("KeyCount", 0) else pafs.FileType.NotFound

    def _pages(self, location: Location, recursive: bool) -> list[dict[str, Any]]:
        bucket, key = self._split(location)
        prefix = f"{key.rstrip('/')}/" if key else ""
        arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if not recursive:
            arguments["Delimiter"] = "/"
        paginator = self.client.get_paginator("list_objects_v2")
        return self.guard(location, lambda: list(paginator.paginate(**arguments)))

    def list_files(self, location: Location, recursive: bool) -> list[FileEntry]:
        bucket, _ = self._split(location)
        found = []
        for page in self._pages(location, recursive):
            for item in page.get("Contents", []):
                found.append(
                    FileEntry(
                        dataclasses.replace(location, uri=f"s3://{bucket}/{item['Key']}"),
                        int(item["Size"]),
                        int(item["LastModified"].timestamp() * 1e9),
                        item["ETag"].strip('"'),
                    )
                )
        return found

    def children(self, location: Location) -> list[Location]:
        bucket, _ = self._split(location)
        names = []
        for page in self._pages(location, recursive=False):
            names += [item["Key"] for item in page.get("Contents", [])]
            names += [item["Prefix"].rstrip("/") for item in page.get("CommonPrefixes", [])]
        return [dataclasses.replace(location, uri=f"s3://{bucket}/{name}") for name in names]

    def write_atomic(self, location: Location, data: bytes | pa.Buffer) -> None:
        bucket, key = self._split(location)
        if len(data) <= 64 << 20:  # one PUT; larger objects go as one multipart upload
            body = bytes(data) if isinstance(data, pa.Buffer) else data
            self.guard(location, lambda: self.client.put_object(Bucket=bucket, Key=key, Body=body))
        else:
            super().write_atomic(location, data)

    def delete_file(self, location: Location, missing_ok: bool = True) -> None:
        bucket, key = self._split(location)
        self.guard(location, lambda: self.client.delete_object(Bucket=bucket, Key=key))

    def delete_tree(self, location: Location) -> None:
        bucket, _ = self._split(location)
        keys = [self._split(e.location)[1] for e in self.list_files(location, recursive=True)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.guard(location, functools.partial(self._delete_batch, bucket, batch))

    def _delete_batch(self, bucket: str, batch: list[dict[str, str]]) -> Any:
        """One DeleteObjects request (at most 1,000 keys)."""
        return self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def read_versioned(self, location: Location) -> Versioned | None:
        bucket, key = self._split(location)
        try:
            reply = self.guard(location, lambda: self.client.get_object(Bucket=bucket, Key=key))
        except FileNotFoundError:
            return None
        return Versioned(
            reply["Body"].read(),
            reply["ETag"].strip('"'),
            int(reply["LastModified"].timestamp() * 1e9),
        )

    def _conditional_put(self, location: Location, data: bytes, **condition: str) -> str | None:
        bucket, key = self._split(location)
        try:
            reply = self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as error:
            if self._condition_failed(location, error, f"writes ({', '.join(condition)})"):
                return None
            raise  # unreachable: _condition_failed raises every other error
        return str(reply["ETag"]).strip('"')

    def _condition_failed(self, location: Location, error: Exception, what: str) -> bool:
        """True when a conditional request failed on its condition; raise on any other error."""
        code, status = _s3_error_code(error)
        if status in (404, 409, 412) or code in (
            "PreconditionFailed",
            "ConditionalRequestConflict",
            "NoSuchKey",
        ):
            return True
        if status == 501 or code == "NotImplemented":
            raise ConditionalWriteUnsupportedError(
                f"{location}: this S3 endpoint does not support conditional {what}"
            ) from None
        raise self.explain(location, error) from error

    def create_exclusive(self, location: Location, data: bytes) -> str | None:
        return self._conditional_put(location, data, IfNoneMatch="*")

    def replace_if(self, location: Location, data: bytes, version: str | None) -> str | None:
        if version is None:
            return None
        return self._conditional_put(location, data, IfMatch=f'"{version}"')

    def delete_if(self, location: Location, version: str | None) -> bool:
        """``DeleteObject`` with ``If-Match`` (an endpoint without it: read, compare, delete)."""
        if version is None:
            return False
        bucket, key = self._split(location)
        try:
            self.client.delete_object(Bucket=bucket, Key=key, IfMatch=f'"{version}"')
        except Exception as error:
            if self._condition_failed(location, error, "deletes"):
                return False
            raise  # unreachable: _condition_failed raises every other error
        return True


def _s3_error_code(error: BaseException) -> tuple[str, int | None]:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code, int(status) if status is not None else None
    text = str(error)
    for code in ("NoSuchBucket", "NoSuchKey", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        if code in text:
            return code, None
    return "", None


def _is_connection_error(error: BaseException) -> bool:
    name = type(error).__name__
    text = str(error)
    return (
        "EndpointConnectionError" in name
        or "ConnectTimeout" in name
        or "ConnectionClosed" in name
        or "NETWORK_CONNECTION" in text
        or "Couldn't connect" in text
        or "Connection refused" in text
        or "curlCode: 7" in text
        or "curlCode: 28" in text
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class GcsStore(Store):
    """Google Cloud Storage: pyarrow for data; generations and preconditions via google-cloud-storage."""

    def __init__(self, options: dict[str, Any]) -> None:
        kwargs = {
            k: v
            for k, v in options.items()
            if k
            in ("anonymous", "project_id", "endpoint_override", "scheme", "default_bucket_location")
        }
        super().__init__("gs", pafs.GcsFileSystem(**kwargs))
        try:
            from google.cloud import storage  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            self.client = None
        else:
            self.client = storage.Client(project=options.get("project_id"))
            self.conditional_writes = True

    def _blob(self, location: Location) -> Any:
        parts = urlsplit(location.uri)
        assert self.client is not None
        return self.client.bucket(parts.netloc).blob(parts.path.lstrip("/"))

    def info(self, location: Location) -> FileEntry | None:
        entry = super().info(location)
        if entry is None or self.client is None:
            return entry
        blob = self._blob(location)
        blob.reload()
        return FileEntry(location, entry.size, entry.mtime_ns, str(blob.generation))

    def create_exclusive(self, location: Location, data: bytes) -> str | None:
        return self._upload_if(location, data, 0)

    def replace_if(self, location: Location, data: bytes, version: str | None) -> str | None:
        return None if version is None else self._upload_if(location, data, int(version))

    def read_versioned(self, location: Location) -> Versioned | None:
        if self.client is None:
            return super().read_versioned(location)
        from google.api_core import exceptions  # type: ignore[import-not-found,unused-ignore]

        blob = self._blob(location)
        for _ in range(3):  # the bytes of the generation whose time was read
            try:
                blob.reload()
                data = blob.download_as_bytes(if_generation_match=blob.generation)
            except exceptions.NotFound:
                return None
            except exceptions.PreconditionFailed:
                continue
            updated = blob.updated
            return Versioned(
                data,
                str(blob.generation),
                int(updated.timestamp() * 1e9) if updated is not None else None,
            )
        raise StorageError(f"{location}: changed three times while being read")

    def delete_if(self, location: Location, version: str | None) -> bool:
        if self.client is None:
            raise _missing_extra("gs", "google-cloud-storage")
        from google.api_core import exceptions  # type: ignore[import-not-found,unused-ignore]

        if version is None:
            return False
        try:
            self._blob(location).delete(if_generation_match=int(version))
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            return False
        return True

    def _upload_if(self, location: Location, data: bytes, generation: int) -> str | None:
        if self.client is None:
            raise _missing_extra("gs", "google-cloud-storage")
        from google.api_core import exceptions  # type: ignore[import-not-found,unused-ignore]

        blob = self._blob(location)
        try:
            blob.upload_from_string(data, if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return None
        return str(blob.generation)


class PyArrowStore(Store):
    """HDFS and fsspec schemes through pyarrow: data and listings, no conditional writes."""


@functools.lru_cache(maxsize=64)
def store_for(scheme: str, authority: str, options: StorageOptions) -> Store:
    """The store of ``scheme`` (one per process, scheme family and options)."""
    if scheme == "file":
        return LocalStore()
    resolved = options.resolved(scheme)
    family = NATIVE_SCHEMES.get(scheme)
    if family == "s3":
        return S3Store(resolved)
    if family == "gs":
        return GcsStore(resolved)
    if family == "hdfs":
        try:
            fs = pafs.HadoopFileSystem(
                host=authority.split(":")[0] or "default",
                port=int(authority.split(":")[1]) if ":" in authority else 0,
                **resolved,
            )
        except (OSError, pa.ArrowException) as error:
            raise StorageError(
                f"{scheme}://{authority}: cannot open HDFS ({_first_line(error)})"
            ) from error
        return PyArrowStore(scheme, fs)
    return PyArrowStore(scheme, _fsspec_filesystem(scheme, resolved))


def _fsspec_filesystem(scheme: str, options: dict[str, Any]) -> pafs.FileSystem:
    """A pyarrow view of the fsspec backend for ``scheme``; a clear error when none is installed."""
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise _missing_extra(scheme, "fsspec") from None
    if scheme not in known_implementations and scheme not in fsspec.available_protocols():
        extra = EXTRAS.get(scheme)
        hint = f"pip install 'thresher[{extra}]'" if extra else "install an fsspec backend for it"
        raise StorageError(f"{scheme}:// is not a storage scheme thresher knows; {hint}")
    try:
        fs = fsspec.filesystem(scheme, **options)
    except ImportError as error:
        package = known_implementations.get(scheme, {}).get("class", scheme).split(".")[0]
        raise _missing_extra(scheme, package) from error
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
