"""The curate flow on a 1,000,000-document generated corpus, on both engines.

For each engine, the flow runs in a child process (as `thresher run` would)
and the benchmark records:

- wall time of the flow (a warm-up flow first starts Prefect's temporary
  server, which is not counted);
- peak memory of the driver: the maximum resident set of the Python process
  that runs the flow (``getrusage``), and, sampled every 0.2 s, the largest
  total resident memory of the whole process tree (worker processes, and the
  Spark JVM, which is the Spark driver in ``local[*]`` mode);
- seconds per stage (the manifest's ``seconds_per_stage``);
- time spent inside scorer and selector code, measured by thresher's
  opt-in instrumentation (:mod:`thresher.profiling`: ``Scorer.score`` calls
  per batch in every worker process, ``Selector.select`` on the driver);
- the orchestration overhead, the fraction of the wall time spent outside
  scorer and selector code::

      overhead = 1 - (scorer_seconds / parallelism + selector_seconds) / wall

  where ``scorer_seconds`` is summed over the worker processes that ran in
  parallel (``parallelism`` = the local engine's workers, or Spark's default
  parallelism). Target: under 30%.

The corpus is the sample-corpus generator (:mod:`thresher.examples.sample_corpus`)
scaled up: shards of 10,000 documents (60% Parquet, 20% JSONL, 20%
JSONL.gz, with the same kinds of bad rows), written once to a cache
directory (``--cache``, default ``~/.cache/thresher/bench``).

Full scale (about 1.3 GB of text; run it on a quiet machine)::

    python -m benchmarks.curate_1m

Development scale (50,000 documents)::

    python -m benchmarks.curate_1m --quick      # or THRESHER_BENCH_QUICK=1

Other options: ``--engines local,spark``; ``--config FILE`` (a YAML run
configuration: its scorers, filters, selector, dedup... are used, while
``input``, ``run_dir`` and ``engine.kind`` are set by the benchmark), e.g.
to add dedup once it lands; ``--documents N``; ``--keep`` keeps the run
directories.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SHARD_DOCUMENTS = 10_000
FULL_DOCUMENTS = 1_000_000
QUICK_DOCUMENTS = 50_000

DEFAULT_JOB: dict[str, Any] = {
    "seed": 0,
    "schema": {"id": "id", "text": "text", "label": "topic", "passthrough": "all"},
    "scorers": [
        {"name": "word_count"},
        {"name": "alpha_fraction"},
        {"name": "mean_word_length"},
        {"name": "repeated_line_fraction"},
    ],
    "filters": [
        {"name": "threshold", "params": {"score": "word_count", "min": 50, "max": 100000}},
        {"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}},
        {"name": "threshold", "params": {"score": "mean_word_length", "min": 3, "max": 10}},
        {"name": "threshold", "params": {"score": "repeated_line_fraction", "max": 0.3}},
    ],
    "selector": {"name": "random", "budget": 0.6},
    "engine": {
        "batch_size": 1024,
        "spark": {
            "master": "local[*]",
            "conf": {
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.driver.memory": "4g",
                "spark.sql.shuffle.partitions": "8",
            },
        },
    },
}


# -- corpus -------------------------------------------------------------------------------


def _write_shard(out: Path, shard: int, seed: int) -> int:
    """One shard of the scaled-up sample corpus; returns its number of records."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from thresher.examples.sample_corpus import generate_records

    records = generate_records(SHARD_DOCUMENTS, seed * 100_003 + shard)
    prefix = f"s{shard:05d}-"
    rows = [
        {
            "id": prefix + r["id"],
            "text": r["text"],
            "topic": r["topic"],
            "url": r["url"].replace("/articles/", f"/articles/{shard}-"),
        }
        for r in records
    ]
    kind = shard % 5
    if kind < 3:  # Parquet, with a blank text, a null text and a null id
        rows += [
            {"id": f"{prefix}bad-empty", "text": "   ", "topic": "science", "url": None},
            {"id": f"{prefix}bad-null", "text": None, "topic": "travel", "url": None},
            {"id": None, "text": "A document that has no id at all.", "topic": "sports"},
        ]
        tmp = out / f".shard-{shard:05d}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.rename(out / f"shard-{shard:05d}.parquet")
        return len(rows)
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in rows]
    lines.insert(
        len(lines) // 3, b'{"id": "%sbroken", "text": "this line was cut' % prefix.encode()
    )
    lines.insert(len(lines) // 2, b'{"id": "%sutf8", "text": "caf\xe9 \xff"}' % prefix.encode())
    lines.insert(2 * len(lines) // 3, b'{"id": "%sempty", "text": ""}' % prefix.encode())
    payload = b"\n".join(lines) + b"\n"
    name = f"shard-{shard:05d}.jsonl" + (".gz" if kind == 4 else "")
    tmp = out / f".{name}.tmp"
    if kind == 4:
        with gzip.open(tmp, "wb", compresslevel=1) as handle:
            handle.write(payload)
    else:
        tmp.write_bytes(payload)
    tmp.rename(out / name)
    return len(lines)


def ensure_corpus(cache: Path, n_documents: int, seed: int = 0) -> Path:
    """Write the corpus under ``cache`` unless a complete copy is there; return its directory."""
    out = cache / f"corpus-{n_documents}-seed{seed}"
    done = out / "_COMPLETE"
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-n_documents // SHARD_DOCUMENTS))
    missing = [shard for shard in range(n_shards) if not any(out.glob(f"shard-{shard:05d}.*"))]
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=os.cpu_count() or 1) as pool:
        pool.starmap(_write_shard, [(out, shard, seed) for shard in missing])
    done.write_text(json.dumps({"documents": n_shards * SHARD_DOCUMENTS, "shards": n_shards}))
    print(
        f"generated {n_shards} shards ({n_shards * SHARD_DOCUMENTS:,} documents) in "
        f"{time.perf_counter() - start:.0f} s under {out}",
        file=sys.stderr,
    )
    return out


# -- one engine, in a child process ---------------------------------------------------------


def _tree_rss(root: int) -> int:
    """Resident memory (bytes) of ``root`` and all its descendants, from /proc."""
    return _tree_rss_split(root)[0]


def _tree_rss_split(root: int) -> tuple[int, int]:
    """Resident memory (bytes) of ``root``'s process tree, and of the JVMs (``java``) in it."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    java: set[int] = set()
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                head, tail = handle.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * page
        if head.partition("(")[2] == "java":
            java.add(int(entry))
    total, jvm, frontier = 0, 0, [root]
    while frontier:
        pid = frontier.pop()
        total += rss.get(pid, 0)
        jvm += rss.get(pid, 0) if pid in java else 0
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return total, jvm


def _child(job_file: str, result_file: str) -> None:
    """Run the flow once and write measurements (the child side of :func:`run_engine`)."""
    from prefect import flow

    from thresher.config import parse_config
    from thresher.flows.curate import curate
    from thresher.io import schema as S
    from thresher.stages.materialize import output_names

    job = json.loads(Path(job_file).read_text())
    config = parse_config(job["config"], base_dir=job["base_dir"])

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start Prefect's temporary server before the clock starts."""

    warm_up()
    peak_tree = peak_jvm = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree, peak_jvm
        while not stop.is_set():
            tree, jvm = _tree_rss_split(os.getpid())
            peak_tree, peak_jvm = max(peak_tree, tree), max(peak_jvm, jvm)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    manifest = curate(config)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    parallelism = config.engine.workers or os.cpu_count() or 1
    if config.engine.kind == "spark":
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        parallelism = int(active.sparkContext.defaultParallelism) if active else parallelism
    result = {
        "wall": wall,
        "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tree_peak_rss": peak_tree,
        "jvm_peak_rss": peak_jvm,
        "parallelism": parallelism,
        "counts": manifest["counts"],
        "seconds_per_stage": manifest["seconds_per_stage"],
        "id_column": output_names(config.schema_)[S.ID],
    }
    if job.get("kept_ids", True):  # off when the caller must read the store itself afterwards
        result["kept_ids_sha256"] = kept_ids_digest(config.run_path, result["id_column"])
    Path(result_file).write_text(json.dumps(result))


def kept_ids_digest(run_dir: Any, id_column: str) -> str:
    """SHA-256 of the sorted kept ids (outside the timed part): equal digests, same selection.

    Reads the published dataset through the version pointer, so a run
    directory on any store (a local path or an object-store URI) works.
    """
    import hashlib

    import pyarrow.compute as pc

    from thresher.io.files import read_parquet_dir
    from thresher.run_dir import RunDir

    ids = read_parquet_dir(RunDir(run_dir).data, columns=[id_column]).column(id_column)
    ordered = pc.sort_indices(ids)
    return hashlib.sha256("\n".join(ids.take(ordered).to_pylist()).encode()).hexdigest()


def run_engine(engine: str, corpus: Path, work: Path, template: dict[str, Any]) -> dict[str, Any]:
    """Run the flow on ``engine`` over the local corpus in a child process; its measurements."""
    return run_flow(
        engine, engine, str(corpus / "shard-*"), str(work / f"run-{engine}"), work, template
    )


def run_flow(
    label: str,
    engine: str,
    inputs: str,
    run_dir: str,
    work: Path,
    template: dict[str, Any],
    *,
    kept_ids: bool = True,
) -> dict[str, Any]:
    """Run the flow of ``template`` on ``engine`` in a child process; return its measurements.

    ``inputs`` (a glob) and ``run_dir`` may be local paths or object-store
    URIs; the child inherits this process's environment (endpoints,
    credentials). ``label`` names the run's files under ``work``.
    ``kept_ids=False`` leaves out the digest of the kept ids, which reads
    the published dataset after the flow.
    """
    from thresher.profiling import PROFILE_ENV, summarize

    profile = work / f"profile-{label}"
    profile.mkdir(parents=True)
    config = json.loads(json.dumps(template))
    config["run_dir"] = run_dir
    config["input"] = {"paths": [inputs]}
    config.setdefault("engine", {})["kind"] = engine
    job_file, result_file = work / f"job-{label}.json", work / f"result-{label}.json"
    job = {"config": config, "base_dir": str(work), "kept_ids": kept_ids}
    job_file.write_text(json.dumps(job))
    env = {
        **os.environ,
        PROFILE_ENV: str(profile),
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    env.pop("PREFECT_API_URL", None)
    subprocess.run(
        [sys.executable, "-m", "benchmarks.curate_1m", "--child", str(job_file), str(result_file)],
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, Any] = json.loads(result_file.read_text())
    profiled = summarize(profile)
    result["scorer_seconds"] = profiled.get("scorer", {}).get("seconds", 0.0)
    result["scorer_processes"] = int(profiled.get("scorer", {}).get("processes", 0))
    result["selector_seconds"] = profiled.get("selector", {}).get("seconds", 0.0)
    useful = result["scorer_seconds"] / result["parallelism"] + result["selector_seconds"]
    result["overhead"] = 1.0 - useful / result["wall"]
    return result


# -- report ---------------------------------------------------------------------------------


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def report(results: dict[str, dict[str, Any]], n_documents: int, template_name: str) -> str:
    lines = [
        f"## curate on {n_documents:,} generated documents ({os.cpu_count()} cores)",
        "",
        f"Config: {template_name}. Overhead = 1 - (scorer s / parallelism + selector s) / wall; "
        "target < 30%.",
        "",
        "| engine | wall s | driver peak RSS | process tree peak RSS | ingest s | fit s | score s "
        "| select s | materialize s | scorer s (sum over workers) | parallelism | selector s "
        "| overhead | kept / input |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in results.items():
        stages = r["seconds_per_stage"]
        lines.append(
            f"| {engine} | {r['wall']:.1f} | {_gib(r['driver_peak_rss'])} | "
            f"{_gib(r['tree_peak_rss'])} | {stages.get('ingest', 0):.1f} | "
            f"{stages.get('fit', 0):.1f} | {stages.get('score', 0):.1f} | "
            f"{stages.get('select', 0):.1f} | {stages.get('materialize', 0):.1f} | "
            f"{r['scorer_seconds']:.1f} | {r['parallelism']} | {r['selector_seconds']:.2f} | "
            f"{r['overhead']:.0%} | {r['counts']['kept']:,} / {r['counts']['input']:,} |"
        )
    digests = {r.get("kept_ids_sha256") for r in results.values()}
    if len(results) > 1:
        same = "yes" if len(digests) == 1 and None not in digests else "NO"
        lines += ["", f"Same kept ids on every engine (SHA-256 of the sorted ids): {same}."]
    other = {k for r in results.values() for k in r["seconds_per_stage"]} - {
        "ingest",
        "fit",
        "score",
        "select",
        "materialize",
    }
    if other:
        lines += [
            "",
            f"Other stages (seconds): {json.dumps({e: {k: r['seconds_per_stage'][k] for k in sorted(other) if k in r['seconds_per_stage']} for e, r in results.items()})}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DOCUMENTS:,} documents")
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--config", type=Path, default=None, help="YAML run config template")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "thresher" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        _child(*args.child)
        return
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    n_documents = args.documents or (QUICK_DOCUMENTS if quick else FULL_DOCUMENTS)
    template = DEFAULT_JOB
    template_name = "heuristic scorers, four Gopher thresholds, random 60%"
    if args.config is not None:
        import yaml

        template = yaml.safe_load(args.config.read_text(encoding="utf-8"))
        template_name = str(args.config)
    corpus = ensure_corpus(args.cache, n_documents)
    work = Path(tempfile.mkdtemp(prefix="thresher-bench-1m-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            results[engine] = run_engine(engine, corpus, work, template)
            print(f"{engine}: {json.dumps(results[engine])}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"run directories kept under {work}", file=sys.stderr)
    print(report(results, n_documents, template_name))


if __name__ == "__main__":
    main()
