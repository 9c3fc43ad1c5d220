"""Object storage: the curate flow with its inputs and run directory on S3, against the local disk.

The bundled sample corpus (:func:`thresher.examples.sample_corpus.write_sample_corpus`:
Parquet, JSONL and JSONL.gz shards of 10,000 documents, with near-duplicates
and bad rows) is written once to the local disk and uploaded once to a
bucket of an S3-protocol server (moto's, started by the benchmark on
127.0.0.1, the one the tests use: ``tests/helpers/s3.py``). The job of
``examples/curate.yaml`` (heuristic scorers and MinHash signatures, dedup at
threshold 0.5, four Gopher thresholds, random 60%) then runs four times,
each in a child process (as ``thresher run`` would, the flow module of
:mod:`benchmarks.curate_1m`):

=============  ======  ===================================================
run            engine  inputs and run directory
=============  ======  ===================================================
local-disk     local   local paths
local-s3       local   ``s3://`` inputs and an ``s3://`` run directory
spark-disk     spark   local paths
spark-s3       spark   ``s3://`` inputs and an ``s3://`` run directory
=============  ======  ===================================================

For each run it reports the wall time of the flow (Prefect's temporary
server started before the clock), the ratio S3 / local disk on the same
engine (the reference, measured in the same run), seconds per stage, the
peak resident memory of the driver process (``getrusage`` in the child) and
of its whole process tree (with the Spark JVM), and the requests the S3
server logged during the flow: in total, by type (GET, PUT, HEAD, LIST:
a GET on a bucket, other: POST and DELETE), those on the input bucket, and
per input shard. Every run must keep the same ids: the SHA-256 of the
sorted kept ids is compared across the four.

The endpoint and credentials reach thresher the way a user's MinIO or R2
would: ``AWS_ENDPOINT_URL`` and the standard credential variables, no
change to the config. The server runs on the same cores as the flow, so
the wall times include its work; the request counts do not depend on the
machine.

Full scale (200,000 documents in 20 shards; run it on a quiet machine)::

    python -m benchmarks.object_storage

Development scale (20,000 documents in 3 shards)::

    python -m benchmarks.object_storage --quick      # or THRESHER_BENCH_QUICK=1

Before the four runs, an untimed flow on a 600-document corpus compiles and
caches the numba kernels, so that no run pays for it. Other options:
``--documents N``; ``--keep`` keeps the work directory (the local runs and
the server's request log). The output is printed and written to
``benchmarks/results/object_storage.md`` at full scale
(``object_storage_N.md`` at any other size, ``--quick`` included).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "curate.yaml"
RESULTS = ROOT / "benchmarks" / "results"
FULL_DOCUMENTS = 200_000
QUICK_DOCUMENTS = 20_000
SHARD_DOCUMENTS = 10_000
#: Request types reported apart; any other method counts as ``other``.
REQUEST_TYPES = ("GET", "PUT", "HEAD", "LIST")
STAGES = ("ingest", "fit", "score", "dedup", "select", "materialize")


@dataclass(frozen=True)
class Case:
    """One run: the engine, and whether its inputs and run directory are on S3."""

    label: str
    engine: str
    on_s3: bool


CASES = (
    Case("local-disk", "local", False),
    Case("local-s3", "local", True),
    Case("spark-disk", "spark", False),
    Case("spark-s3", "spark", True),
)


# -- the job and the corpus -------------------------------------------------------------


def job_template() -> dict[str, Any]:
    """``examples/curate.yaml`` without its paths, with the engine settings of ``curate_1m``."""
    import yaml

    from benchmarks.curate_1m import DEFAULT_JOB

    template: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    template.pop("run_dir", None)
    template.pop("input", None)
    template["engine"] = copy.deepcopy(DEFAULT_JOB["engine"])
    return template


def write_corpus(directory: Path, n_documents: int) -> int:
    """The sample corpus of ``n_documents`` in shards of about 10,000; returns the shard count."""
    from thresher.examples.sample_corpus import write_sample_corpus

    n_shards = max(3, round(n_documents / SHARD_DOCUMENTS))
    write_sample_corpus(directory, n_documents=n_documents, n_shards=n_shards, seed=0)
    return n_shards


def warm_up(work: Path, template: dict[str, Any]) -> None:
    """One untimed flow on a small local corpus: numba compiles and caches its kernels here."""
    from benchmarks.curate_1m import run_flow
    from thresher.examples.sample_corpus import write_sample_corpus

    corpus = work / "warm-up-corpus"
    write_sample_corpus(corpus, n_documents=600, n_shards=3, seed=1)
    run_flow("warm-up", "local", str(corpus / "shard-*"), str(work / "run-warm-up"), work, template)


def results_file(n_documents: int) -> Path:
    """Where the markdown goes: ``object_storage.md`` at full scale only."""
    if n_documents == FULL_DOCUMENTS:
        return RESULTS / "object_storage.md"
    return RESULTS / f"object_storage_{n_documents}.md"


@contextmanager
def s3_environment(server: Any) -> Iterator[None]:
    """The server's endpoint and credentials in this process's environment (children inherit it)."""
    before = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- the server's request log -----------------------------------------------------------


def request_kind(line: str) -> tuple[str, str]:
    """``(type, bucket)`` of a logged request line such as ``GET /bucket/key?x HTTP/1.1``.

    Requests are path-style (an IP endpoint): a GET on a bucket itself is a
    listing (``LIST``); POST (multipart uploads, batch deletes) and DELETE
    count as ``other``.
    """
    method, target = line.split()[:2]
    path = target.split("?", 1)[0].lstrip("/")
    bucket, _, key = path.partition("/")
    if method == "GET" and not key:
        return "LIST", bucket
    return (method if method in REQUEST_TYPES else "other"), bucket


def count_requests(lines: list[str], input_bucket: str) -> dict[str, int]:
    """Requests by type, their total, how many went to the input bucket (and of which type),
    and the most requests any one input object received (``input_object_max``)."""
    counts: Counter[str] = Counter()
    per_object: Counter[str] = Counter()
    for line in lines:
        kind, bucket = request_kind(line)
        counts[kind] += 1
        counts["total"] += 1
        if bucket == input_bucket:
            counts["inputs"] += 1
            counts[f"inputs_{kind}"] += 1
            if kind != "LIST":
                per_object[line.split()[1].split("?", 1)[0]] += 1
    counts["input_object_max"] = max(per_object.values(), default=0)
    by_type = (f"inputs_{t}" for t in (*REQUEST_TYPES, "other"))
    keys = ("total", *REQUEST_TYPES, "other", "inputs", *by_type, "input_object_max")
    return {key: counts[key] for key in keys}


def settled_requests(server: Any, wait: float = 0.5) -> list[str]:
    """The server's request lines, once the last response has had time to be logged."""
    time.sleep(wait)
    lines: list[str] = server.requests()
    return lines


# -- the runs ---------------------------------------------------------------------------


def run_case(
    case: Case,
    server: Any,
    corpus: Path,
    buckets: dict[str, str],
    work: Path,
    template: dict[str, Any],
) -> dict[str, Any]:
    """Run the flow for ``case``; its measurements, the S3 requests of the flow and the kept ids."""
    from benchmarks.curate_1m import kept_ids_digest, run_flow

    if case.on_s3:
        inputs = f"s3://{buckets['inputs']}/corpus/shard-*"
        run_dir = f"s3://{buckets['runs']}/{case.label}"
    else:
        inputs, run_dir = str(corpus / "shard-*"), str(work / f"run-{case.label}")
    before = len(settled_requests(server))
    result = run_flow(
        case.label, case.engine, inputs, run_dir, work, template, kept_ids=False
    )  # the digest reads the store: done here, after the flow's requests are counted
    result["requests"] = count_requests(settled_requests(server)[before:], buckets["inputs"])
    result["kept_ids_sha256"] = kept_ids_digest(run_dir, result["id_column"])
    return result


# -- the report -------------------------------------------------------------------------


def describe_job(template: dict[str, Any]) -> str:
    """One line naming the job's scorers, dedup, filters and selector."""
    scorers = ", ".join(s["name"] for s in template.get("scorers", []))
    dedup = template.get("dedup")
    selector = template["selector"]
    return (
        f"the job of `examples/curate.yaml`: scorers {scorers}; "
        + (f"dedup at threshold {dedup['threshold']}; " if dedup else "")
        + f"{len(template.get('filters', []))} filters; "
        + f"selector {selector['name']} (budget {selector.get('budget')})"
    )


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def _ratio(results: dict[str, dict[str, Any]], case: Case) -> str:
    if not case.on_s3:
        return "1 (reference)"
    reference = results[f"{case.engine}-disk"]["wall"]
    return f"{results[case.label]['wall'] / reference:.2f}x"


def report(
    results: dict[str, dict[str, Any]], n_documents: int, n_shards: int, command: str
) -> str:
    """The markdown section: runs, requests, and whether every run kept the same ids."""
    scale = "" if n_documents == FULL_DOCUMENTS else f" ({n_documents:,} documents)"
    lines = [
        f"## Object storage: local disk against S3{scale}",
        "",
        f"Sample corpus of {n_documents:,} documents in {n_shards} input shards; "
        f"{describe_job(job_template())}. {os.cpu_count()} cores, shared with the S3 server "
        f"(moto, 127.0.0.1). Command: `{command}`.",
        "",
        "| run | engine | storage | wall s | S3 / local disk | driver peak RSS "
        "| process tree peak RSS | " + " | ".join(f"{s} s" for s in STAGES) + " | kept / input |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---:|",
    ]
    for case in CASES:
        r = results[case.label]
        stages = r["seconds_per_stage"]
        lines.append(
            f"| {case.label} | {case.engine} | {'S3' if case.on_s3 else 'local disk'} | "
            f"{r['wall']:.1f} | {_ratio(results, case)} | {_gib(r['driver_peak_rss'])} | "
            f"{_gib(r['tree_peak_rss'])} | "
            + " | ".join(f"{stages.get(s, 0.0):.1f}" for s in STAGES)
            + f" | {r['counts']['kept']:,} / {r['counts']['input']:,} |"
        )
    lines += [
        "",
        "S3 requests logged by the server during each flow (LIST: a GET on a bucket; other: "
        f"POST and DELETE), in total and per input shard ({n_shards} shards):",
        "",
        "| run | requests | GET | PUT | HEAD | LIST | other | on the input bucket "
        "| per shard: all | GET | PUT | HEAD | LIST |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        n = results[case.label]["requests"]
        lines.append(
            f"| {case.label} | {n['total']:,} | "
            + " | ".join(f"{n[t]:,}" for t in (*REQUEST_TYPES, "other", "inputs"))
            + f" | {n['total'] / n_shards:.1f} | "
            + " | ".join(f"{n[t] / n_shards:.1f}" for t in REQUEST_TYPES)
            + " |"
        )
    lines += [
        "",
        "Requests on the input bucket alone, by type, and the most requests any one input "
        "object received (a per-row request would make it grow with the shard's rows):",
        "",
        "| run | GET | HEAD | LIST | other | most on one object |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        n = results[case.label]["requests"]
        if case.on_s3 and "inputs_GET" in n:
            lines.append(
                f"| {case.label} | "
                + " | ".join(f"{n[f'inputs_{t}']:,}" for t in ("GET", "HEAD", "LIST", "other"))
                + f" | {n['input_object_max']:,} |"
            )
    digests = {results[c.label]["kept_ids_sha256"] for c in CASES}
    same = "yes" if len(digests) == 1 else "NO"
    lines += [
        "",
        f"Same kept ids in all four runs (SHA-256 of the sorted kept ids): {same}"
        + (f" (`{next(iter(digests))[:16]}...`)." if len(digests) == 1 else "."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.object_storage")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DOCUMENTS:,} documents")
    parser.add_argument("--documents", type=int, default=None, help="corpus size")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    n_documents = args.documents or (QUICK_DOCUMENTS if quick else FULL_DOCUMENTS)

    from tests.helpers.s3 import s3_server

    work = Path(tempfile.mkdtemp(prefix="thresher-bench-s3-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        corpus = work / "corpus"
        n_shards = write_corpus(corpus, n_documents)
        template = job_template()
        warm_up(work, template)
        with s3_server(work) as server, s3_environment(server):
            buckets = {"inputs": server.bucket("corpus"), "runs": server.bucket("runs")}
            start = time.perf_counter()
            server.upload(corpus, buckets["inputs"], "corpus")
            print(
                f"corpus of {n_documents:,} documents in {n_shards} shards uploaded in "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            for case in CASES:
                results[case.label] = run_case(case, server, corpus, buckets, work, template)
                summary = {k: results[case.label][k] for k in ("wall", "requests")}
                print(f"{case.label}: {summary}", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    command = "python -m benchmarks.object_storage" + (" --quick" if args.quick else "")
    command += f" --documents {args.documents}" if args.documents else ""
    text = report(results, n_documents, n_shards, command)
    print(text)
    target = results_file(n_documents)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
