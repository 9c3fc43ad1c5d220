"""A real S3-protocol server on 127.0.0.1 for the tests: moto's server, in its own process.

The fixture in ``conftest.py`` starts one per test session and stops it by
pid. Tests reach it the way a user reaches MinIO: through ``AWS_ENDPOINT_URL``
and the standard credential variables, with no change to thresher's code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Credentials of the test server (moto accepts any; the tests grep run outputs for the secret).
ACCESS_KEY = "thresher-test-access"
SECRET_KEY = "thresher-secret-Q2F5bG9yZQ"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server: its endpoint, pid and log file."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use the server (the standard AWS variables)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def bucket(self, prefix: str = "thresher") -> str:
        """A new empty bucket."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, directory: Path, bucket: str, prefix: str) -> list[str]:
        """Upload every file of ``directory`` under ``s3://bucket/prefix/``; return the keys."""
        client = self.client()
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        )

    def requests(self) -> list[str]:
        """The request lines the server logged so far (method and path)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line.split('"')[1] for line in lines if line.count('"') >= 2 and "HTTP/1.1" in line]


@contextmanager
def s3_server(log_dir: Path, *, authenticate: bool = False) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free port of 127.0.0.1; stop it (by pid) at the end.

    ``authenticate``: the server checks credentials (moto's IAM mode), so
    that any key it did not issue is refused, as a real store refuses it.
    """
    port = free_port()
    log = log_dir / f"moto-{port}.log"
    handle = log.open("wb")
    env = {**os.environ}
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start; see {log}") from None
                time.sleep(0.1)
        yield S3Server(endpoint, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        handle.close()
