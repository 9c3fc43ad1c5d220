"""A task holds a batch, never a file: peak memory of ingest is bounded whatever the shard size.

Each case ingests one large shard into a run directory in a child process
(``ingest_to_run``, what every engine runs per shard) and reads the child's
peak resident memory (``VmHWM``): a 1 GiB Parquet shard, a ``.jsonl.zst``
shard of 2 GiB of lines once decompressed, and a file of a million bad
lines. The bound (600 MiB) is far below the data and far above what a
batch costs; reading a file whole, keeping every chunk of a shard or a
Python object per quarantined row would pass it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

BOUND = 600 << 20
_CHILD = r"""
import json, sys
from thresher.config import InputConfig, SchemaConfig
from thresher.io.formats import detect_format
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.stages.ingest import ingest_to_run

path, run_dir, batch_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
shard = Shard(0, path, path.rsplit("/", 1)[-1], detect_format(path))
limits = InputConfig(paths=[path], batch_bytes=batch_bytes).read_limits()
stats = ingest_to_run(shard, SchemaConfig(), RunDir(run_dir), limits=limits)
peak = 0
with open("/proc/self/status") as handle:
    for line in handle:
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
print(json.dumps({"peak": peak, "stats": stats}))
"""


def _ingest_in_child(path: Path, run_dir: Path, batch_bytes: int = 16 << 20) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(run_dir), str(batch_bytes)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _texts(n_rows: int, length: int, seed: int) -> list[str]:
    """Unique texts of ``length`` characters cut from a base of random words."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i:03d}x" for i in range(1000)], dtype=object)
    base = " ".join(vocabulary[rng.integers(0, 1000, size=3_000_000)].tolist())
    starts = rng.integers(0, len(base) - length, size=n_rows)
    return [f"{i}:{base[start : start + length]}" for i, start in enumerate(starts)]


def test_a_one_gib_parquet_shard_is_ingested_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    length, per_group, groups = 64 << 10, 2048, 8  # 8 row groups of 128 MiB of text
    with pq.ParquetWriter(
        path, pa.schema([("id", pa.string()), ("text", pa.string())]), compression="none"
    ) as writer:
        for group in range(groups):
            texts = _texts(per_group, length, seed=group)
            ids = [f"g{group}-{i}" for i in range(per_group)]
            writer.write_table(pa.table({"id": ids, "text": texts}))
    assert path.stat().st_size >= 1 << 30
    found = _ingest_in_child(path, tmp_path / "run")
    assert found["stats"]["ingested"] == per_group * groups
    assert found["peak"] < BOUND, f"peak RSS {found['peak'] / 2**20:.0f} MiB"


def test_two_gib_of_compressed_json_lines_are_ingested_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.zst"
    block = b"".join(
        json.dumps({"id": f"d{i}", "text": text}).encode() + b"\n"
        for i, text in enumerate(_texts(512, 256 << 10, seed=100))
    )
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(block)
    frame = sink.getvalue().to_pybytes()
    repeats = -(-(2 << 30) // len(block))
    with open(path, "wb") as handle:  # one zstd frame after another: one stream of lines
        for _ in range(repeats):
            handle.write(frame)
    assert len(block) * repeats >= 2 << 30 and path.stat().st_size < len(block) * repeats // 2
    found = _ingest_in_child(path, tmp_path / "run")
    assert found["stats"]["ingested"] == 512 * repeats
    assert found["peak"] < BOUND, f"peak RSS {found['peak'] / 2**20:.0f} MiB"


def test_a_million_bad_lines_are_quarantined_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"not json\n" * 1_000_000)
    found = _ingest_in_child(path, tmp_path / "run")
    assert found["stats"]["quarantined_by_reason"] == {"malformed_json": 1_000_000}
    quarantine = pq.ParquetFile(tmp_path / "run" / "quarantine" / "shard-00000.parquet")
    assert quarantine.metadata.num_rows == 1_000_000
    assert found["peak"] < 400 << 20, f"peak RSS {found['peak'] / 2**20:.0f} MiB"


def test_a_line_of_a_gib_is_quarantined_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "one-line.jsonl.zst"
    chunk = b"x" * (64 << 20)

    def frame(data: bytes) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:
            out.write(data)
        return sink.getvalue().to_pybytes()

    body = frame(chunk)
    after = json.dumps({"id": "after", "text": "a normal document"}).encode() + b"\n"
    with open(path, "wb") as handle:  # one JSON line of 1 GiB, then a normal one
        handle.write(frame(b'{"id": "huge", "text": "'))
        for _ in range(16):
            handle.write(body)
        handle.write(frame(b'"}\n' + after))
    assert path.stat().st_size < 1 << 20
    found = _ingest_in_child(path, tmp_path / "run")
    assert found["stats"]["quarantined_by_reason"] == {"record_too_large": 1}
    assert found["stats"]["ingested"] == 1
    assert found["peak"] < BOUND, f"peak RSS {found['peak'] / 2**20:.0f} MiB"
