"""Scale: the curate flow at growing corpus sizes, driver memory and time per million documents.

The corpus is :mod:`benchmarks.curate_1m`'s (the sample-corpus generator in
shards of 10,000 documents, Parquet, JSONL and JSONL.gz with bad rows); the
job is ``benchmarks/scale.yaml``: heuristic scorers and MinHash signatures,
dedup at threshold 0.5, two threshold filters, class-balanced ``ccs`` on a
scalar score (``mean_word_length``) at 50%. Each (size, engine) runs in a
child process as :func:`benchmarks.curate_1m.run_flow` does, and records:

- the wall time of the flow, and the wall time per million input documents
  (target: flat within 20% from 1M to 10M);
- the driver's peak resident memory (the Python process that runs the flow,
  ``getrusage``; target: at 10M no more than 1.2x the figure at 1M), the
  JVM's (the Spark driver in ``local[*]`` mode: the ``java`` processes of
  the tree, sampled every 0.2 s) and the whole process tree's;
- seconds per stage (the manifest's ``seconds_per_stage``);
- what the driver holds of the run directory: the sizes of the shard
  registry, the manifest and the recorded config, per shard.

Sizes and engines are given on the command line, one process per call, so
that the largest size runs alone once the smaller ones are written down::

    python -m benchmarks.scale --documents 1000000,4000000 --engines local,spark
    python -m benchmarks.scale --documents 10000000 --engines spark

Each (size, engine) writes ``benchmarks/results/scale/<size>-<engine>.json``
(with the load average before and after the run); the markdown table of
every JSON present is printed and written to ``benchmarks/results/scale.md``.
``--delete-corpus`` removes each generated corpus after its runs;
``--report`` only rewrites the table. ``--quick``: 50,000 documents.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "scale.yaml"
RESULTS = ROOT / "benchmarks" / "results"
RAW = RESULTS / "scale"
STAGES = ("ingest", "fit", "score", "dedup", "select", "materialize")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_dir_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes of the small files the driver reads whole, and how many files the run wrote."""
    state = run_dir / "_state"
    sizes = {
        "shard_registry": (state / "shards.json").stat().st_size,
        "manifest": (run_dir / "manifest.json").stat().st_size,
        "recorded_config": (state / "config.json").stat().st_size,
        "state_bytes": sum(p.stat().st_size for p in state.rglob("*") if p.is_file()),
        "files": sum(1 for p in run_dir.rglob("*") if p.is_file()),
    }
    return sizes


def run_one(
    n_documents: int, engine: str, cache: Path, template: dict[str, Any], config_name: str
) -> dict[str, Any]:
    from benchmarks.curate_1m import ensure_corpus, run_flow

    corpus = ensure_corpus(cache, n_documents)
    n_shards = sum(1 for _ in corpus.glob("shard-*"))
    work = Path(tempfile.mkdtemp(prefix=f"thresher-bench-scale-{n_documents}-{engine}-"))
    try:
        before = load_average()
        start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        run_dir = work / f"run-{engine}"
        result = run_flow(engine, engine, str(corpus / "shard-*"), str(run_dir), work, template)
        result["run_dir_sizes"] = run_dir_sizes(run_dir)
        result.update(
            documents=n_documents,
            engine=engine,
            shards=n_shards,
            config=config_name,
            started=start,
            load_before=before,
            load_after=load_average(),
            cores=os.cpu_count(),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"{n_documents}-{engine}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def report() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(RAW.glob("*.json"))]
    rows.sort(key=lambda r: (r["engine"], r["documents"]))
    lines = [
        "## Scale: the curate flow from 1M documents up",
        "",
        "Job `benchmarks/scale.yaml` (heuristic scorers and MinHash signatures, dedup at "
        "threshold 0.5, two threshold filters, class-balanced `ccs` on `mean_word_length` at "
        "50%); generated corpus of `benchmarks/curate_1m.py` in shards of 10,000 documents. "
        "Per million = wall / (input records / 10^6); ratios against the same engine at the "
        "smallest size.",
        "",
        "| engine | documents | shards | wall s | s per million | vs smallest | driver peak RSS "
        "| vs smallest | JVM peak RSS | tree peak RSS | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | kept / input | load before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---:|---|",
    ]
    smallest: dict[str, dict[str, Any]] = {}
    for r in rows:
        base = smallest.setdefault(r["engine"], r)
        per_million = r["wall"] / (r["counts"]["input"] / 1e6)
        base_per_million = base["wall"] / (base["counts"]["input"] / 1e6)
        stages = r["seconds_per_stage"]
        lines.append(
            f"| {r['engine']} | {r['documents']:,} | {r['shards']} | {r['wall']:.0f} | "
            f"{per_million:.1f} | {per_million / base_per_million:.2f}x | "
            f"{_gib(r['driver_peak_rss'])} | {r['driver_peak_rss'] / base['driver_peak_rss']:.2f}x | "
            f"{_gib(r.get('jvm_peak_rss', 0))} | {_gib(r['tree_peak_rss'])} | "
            + " | ".join(f"{stages.get(s, 0.0):.1f}" for s in STAGES)
            + f" | {r['counts']['kept']:,} / {r['counts']['input']:,} | "
            f"{r['load_before']} / {r['load_after']} |"
        )
    lines += [
        "",
        "What the driver reads whole from the run directory (bytes, and per shard):",
        "",
        "| engine | documents | shards | shard registry | per shard | manifest | per shard "
        "| _state/ in all | files written |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["run_dir_sizes"]
        lines.append(
            f"| {r['engine']} | {r['documents']:,} | {r['shards']} | {s['shard_registry']:,} | "
            f"{s['shard_registry'] / r['shards']:.0f} | {s['manifest']:,} | "
            f"{s['manifest'] / r['shards']:.0f} | {s['state_bytes']:,} | {s['files']:,} |"
        )
    by_size: dict[int, set[str]] = {}
    for r in rows:
        by_size.setdefault(r["documents"], set()).add(r.get("kept_ids_sha256", ""))
    lines += [
        "",
        "Kept ids (SHA-256 of the sorted kept ids) equal on every engine run at a size: "
        + "; ".join(
            f"{n:,}: {'yes' if len(d) == 1 else 'NO'} (`{sorted(d)[0][:16]}...`)"
            for n, d in sorted(by_size.items())
        )
        + ".",
    ]
    lines += [
        "",
        "Started (UTC): "
        + "; ".join(f"{r['engine']} {r['documents']:,}: {r['started']}" for r in rows)
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import yaml

    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--documents", default="1000000", help="comma-separated sizes")
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--quick", action="store_true", help="50,000 documents")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "thresher" / "bench")
    parser.add_argument("--delete-corpus", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite the table")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not args.report:
        sizes = [50_000] if args.quick else [int(x) for x in args.documents.split(",")]
        template = yaml.safe_load(args.config.read_text(encoding="utf-8"))
        name = os.path.relpath(args.config, ROOT)
        for n_documents in sizes:
            for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
                result = run_one(n_documents, engine, args.cache, template, name)
                print(
                    f"{n_documents:,} {engine}: wall {result['wall']:.1f} s, driver "
                    f"{_gib(result['driver_peak_rss'])}, jvm {_gib(result['jvm_peak_rss'])}",
                    file=sys.stderr,
                    flush=True,
                )
            if args.delete_corpus:
                shutil.rmtree(args.cache / f"corpus-{n_documents}-seed0", ignore_errors=True)
    text = report()
    print(text)
    (RESULTS / "scale.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
