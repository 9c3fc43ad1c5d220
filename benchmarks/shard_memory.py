"""Peak memory per worker against the size of one input shard, and ingest throughput.

A data lake's files are gigabytes: a task must hold a batch, not a file.
This benchmark writes one Parquet shard of each size asked for (documents of
a few KB of random words: unique text, compressed about 2x like web text),
runs ``thresher run`` on it (one scorer, ``word_count``; a random 50%
selection; ingest, score, select, materialise and publish) in a child
process on each engine, and samples the peak resident memory (``VmHWM``)
of every process of the child's tree every 0.1 s:

- **worker**: the largest peak among the processes that read shards (the
  local engine's pool processes, Spark's Python workers);
- **driver**: the ``thresher run`` process itself;
- **JVM**: the Spark driver JVM (``local[*]``), for reference.

It also writes a ``.jsonl.zst`` shard of a given decompressed size (the
same documents as JSON lines) and measures it the same way.

Usage::

    python -m benchmarks.shard_memory --sizes 100M,1G,5G --engines local,spark
    python -m benchmarks.shard_memory --quick          # 20M and 100M, both engines
    python -m benchmarks.shard_memory --jsonl-zst 2G --engines local

Each measurement is written to ``benchmarks/results/shard_memory/<label>.json``
(``--label`` names the code measured, e.g. ``before`` or ``after``); the
markdown table of every JSON present is printed and written to
``benchmarks/results/shard_memory.md``. Generated shards are kept under
``--cache`` (default: a directory in the system's temporary directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RAW = RESULTS / "shard_memory"
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(text: str) -> int:
    """``100M`` -> bytes."""
    text = text.strip().upper().removesuffix("B")
    if text[-1:] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def _human(n_bytes: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes:.0f} B"


# -- corpus ----------------------------------------------------------------------------------


def _vocabulary(rng: np.random.Generator, size: int = 50_000) -> np.ndarray:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lengths = rng.integers(2, 11, size=size)
    return np.array([bytes(letters[rng.integers(0, 26, size=n)]) for n in lengths], dtype=object)


def _base_text(rng: np.random.Generator, n_bytes: int = 256 << 20) -> bytes:
    """``n_bytes`` of Zipf-distributed random words (made once: documents are cut from it)."""
    vocabulary = _vocabulary(rng)
    ranks = np.minimum(rng.zipf(1.2, size=n_bytes // 6), len(vocabulary)) - 1
    return b" ".join(vocabulary[ranks].tolist())


def _documents(rng: np.random.Generator, base: bytes) -> list[str]:
    """Documents of 1-6 KB cut from ``base`` rotated at a random offset: unique, uncorrelated."""
    offset = int(rng.integers(0, len(base)))
    text = base[offset:] + b" " + base[:offset]
    out = []
    start = 0
    while start < len(text):
        end = min(len(text), start + int(rng.integers(1000, 6000)))
        cut = text.rfind(b" ", start, end) if end < len(text) else end
        cut = end if cut <= start else cut
        out.append(text[start:cut].decode("ascii"))
        start = cut + 1
    return out


def ensure_parquet(cache: Path, size: int, seed: int = 0) -> Path:
    """A Parquet shard of about ``size`` bytes on disk (zstd, a row group per 256 MiB of text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cache / f"shard-{size}.parquet"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = _base_text(rng)
    tmp = path.with_suffix(".tmp")
    written = 0
    row = 0
    start = time.perf_counter()
    with pq.ParquetWriter(
        tmp, pa.schema([("id", pa.string()), ("text", pa.string())]), compression="zstd"
    ) as writer:
        while written < size:
            texts = _documents(rng, base)
            ids = [f"doc-{row + i}" for i in range(len(texts))]
            row += len(texts)
            writer.write_table(pa.table({"id": ids, "text": texts}))
            written = tmp.stat().st_size
    os.replace(tmp, path)
    print(
        f"wrote {path} ({_human(path.stat().st_size)}, {row:,} documents) in "
        f"{time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    return path


def ensure_jsonl_zst(cache: Path, size: int, seed: int = 1) -> Path:
    """A ``.jsonl.zst`` shard holding about ``size`` bytes of JSON lines once decompressed."""
    import pyarrow as pa

    path = cache / f"shard-{size}.jsonl.zst"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = _base_text(rng)
    tmp = path.with_suffix(".tmp")
    written = row = 0
    with pa.CompressedOutputStream(str(tmp), "zstd") as out:
        while written < size:
            for text in _documents(rng, base):
                line = json.dumps({"id": f"doc-{row}", "text": text}).encode() + b"\n"
                out.write(line)
                written += len(line)
                row += 1
    os.replace(tmp, path)
    return path


# -- one run -----------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "PPid"):
                    fields[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return fields


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            status = _status(int(entry))
            if "PPid" in status:
                parents.setdefault(status["PPid"], []).append(int(entry))
    out, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        out.append(pid)
        frontier.extend(parents.get(pid, []))
    return out


def _role(pid: int, root: int, cmdline: str) -> str:
    if pid == root:
        return "driver"
    if "java" in cmdline.split(" ", 1)[0]:
        return "jvm"
    if "pyspark.daemon" in cmdline or "pyspark.worker" in cmdline:
        return "worker"
    if "multiprocessing" in cmdline or "spawn_main" in cmdline:
        return "worker"
    return "other"


def _tree_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        total += _status(pid).get("VmRSS", 0) * 1024
    return total


def run_once(
    shard: Path, engine: str, work: Path, batch_size: int, kill_above: int | None = None
) -> dict[str, Any]:
    """``thresher run`` on one shard in a child process; peak memory per process role."""
    import yaml

    run_dir = work / f"run-{engine}"
    config = {
        "run_dir": str(run_dir),
        "seed": 0,
        "input": {"paths": [str(shard)]},
        "schema": {"id": "id", "text": "text"},
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": 0.5},
        "engine": {
            "kind": engine,
            # the local engine's driver holds the whole-table steps: let it (this measures workers)
            "driver_max_rows": 100_000_000,
            "batch_size": batch_size,
            "spark": {"master": "local[*]", "conf": {}},
        },
    }
    config_file = work / f"config-{engine}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    peaks: dict[int, tuple[str, int]] = {}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "thresher", "run", str(config_file), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    stop = threading.Event()
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(child.stdout.read()), daemon=True)
    reader.start()
    killed = False
    while child.poll() is None:
        tree = _descendants(child.pid)
        if kill_above is not None and _tree_rss(tree) > kill_above:
            for pid in reversed(tree):  # the machine would run out of memory: stop it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed = True
        for pid in tree:
            status = _status(pid)
            if "VmHWM" not in status:
                continue
            role = peaks.get(pid, ("", 0))[0] or _role(pid, child.pid, _cmdline(pid))
            peaks[pid] = (role, max(peaks.get(pid, ("", 0))[1], status["VmHWM"] * 1024))
        stop.wait(0.1)
    wall = time.perf_counter() - start
    reader.join()
    text = b"".join(output).decode("utf-8", "replace")
    result: dict[str, Any] = {"engine": engine, "wall": wall, "returncode": child.returncode}
    if killed:
        result["error"] = f"stopped: the process tree passed {_human(kill_above or 0)}"
    elif child.returncode != 0:
        result["error"] = text[-3000:]
    for role in ("worker", "driver", "jvm"):
        result[f"{role}_peak_rss"] = max((p for r, p in peaks.values() if r == role), default=0)
    manifest_file = run_dir / "manifest.json"
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text())
        result["seconds_per_stage"] = manifest.get("seconds_per_stage")
        result["counts"] = {k: manifest["counts"][k] for k in ("input", "kept")}
    return result


# -- report ------------------------------------------------------------------------------------


def report() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(RAW.glob("*.json"))]
    rows.sort(key=lambda r: (r["format"], r["shard_bytes"], r["engine"], r["label"]))
    lines = [
        "| code | format | shard | decompressed | engine | worker peak RSS | x shard | "
        "driver peak RSS | JVM peak RSS | ingest s | ingest MB/s | wall s | rows |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ingest = (r.get("seconds_per_stage") or {}).get("ingest")
        rate = f"{r['data_bytes'] / 2**20 / ingest:.0f}" if ingest else "-"
        failed = r.get("returncode", 0) != 0
        lines.append(
            f"| {r['label']} | {r['format']} | {_human(r['shard_bytes'])} | "
            f"{_human(r['data_bytes'])} | {r['engine']} | "
            f"{_human(r['worker_peak_rss'])} | {r['worker_peak_rss'] / r['shard_bytes']:.2f} | "
            f"{_human(r['driver_peak_rss'])} | {_human(r['jvm_peak_rss'])} | "
            f"{ingest if ingest is None else round(ingest, 1)} | {rate} | {r['wall']:.0f} | "
            f"{'failed: ' + r.get('error', '')[-120:].replace(chr(10), ' ') if failed else (r.get('counts') or {}).get('input')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100M,1G,5G", help="Parquet shard sizes on disk")
    parser.add_argument("--jsonl-zst", default="", help="decompressed sizes of .jsonl.zst shards")
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--label", default="current", help="names the code measured")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "thresher-shards"))
    parser.add_argument("--quick", action="store_true", help="20M and 100M Parquet shards")
    parser.add_argument("--report", action="store_true", help="only rewrite the table")
    parser.add_argument(
        "--kill-above", default="20G", help="stop a run whose process tree passes this RSS"
    )
    args = parser.parse_args(argv)
    if not args.report:
        cache = Path(args.cache)
        sizes = "20M,100M" if args.quick else args.sizes
        shards = [
            ("parquet", ensure_parquet(cache, parse_size(s)), None) for s in sizes.split(",") if s
        ]
        shards += [
            ("jsonl.zst", ensure_jsonl_zst(cache, parse_size(s)), parse_size(s))
            for s in args.jsonl_zst.split(",")
            if s
        ]
        for fmt, shard, decompressed in shards:
            data_bytes = decompressed or shard.stat().st_size
            for engine in args.engines.split(","):
                with tempfile.TemporaryDirectory(prefix="thresher-bench-memory-") as work:
                    result = run_once(
                        shard, engine, Path(work), args.batch_size, parse_size(args.kill_above)
                    )
                result.update(
                    label=args.label,
                    format=fmt,
                    shard_bytes=shard.stat().st_size,
                    data_bytes=data_bytes,
                )
                RAW.mkdir(parents=True, exist_ok=True)
                name = f"{args.label}-{fmt}-{shard.stat().st_size}-{engine}.json"
                (RAW / name).write_text(json.dumps(result, indent=1) + "\n")
                print(
                    f"{args.label} {fmt} {_human(shard.stat().st_size)} {engine}: worker "
                    f"{_human(result['worker_peak_rss'])}, driver "
                    f"{_human(result['driver_peak_rss'])}, {result['wall']:.0f} s"
                    f"{' FAILED' if result['returncode'] else ''}",
                    flush=True,
                )
    table = report()
    (RESULTS / "shard_memory.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
