"""The whole local dedup job against its signature kernel: where a dedup run's time goes.

A run of ``benchmarks/dedup_job.yaml`` (ingest, MinHash signatures, dedup,
selection of every remaining row, publication) on the generated corpus of
:mod:`benchmarks.curate_1m`, on the local engine in a child process, against
the signature kernel alone on the same texts (one core, the scorer's
``score`` on record batches of the same size). Reports the documents per
second per core of both, their ratio (target: the whole job at least 50% of
the kernel) and the seconds of every stage::

    python -m benchmarks.dedup_job --documents 1000000
    python -m benchmarks.dedup_job --quick           # 50,000 documents

Writes ``benchmarks/results/dedup_job.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "dedup_job.yaml"
KERNEL_DOCUMENTS = 50_000


def kernel_rate(corpus: Path, batch_size: int) -> tuple[float, int]:
    """Documents per second of the ``minhash`` scorer alone on one core, and the documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thresher.scorers import make_scorer

    texts: list[str] = []
    for path in sorted(corpus.glob("shard-*.parquet")):
        texts += [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
        if len(texts) >= KERNEL_DOCUMENTS:
            break
    texts = texts[:KERNEL_DOCUMENTS]
    scorer = make_scorer("minhash", {"ngram": 5, "num_perm": 128})
    scorer.setup()
    batches = [
        pa.RecordBatch.from_arrays([pa.array(texts[i : i + batch_size])], names=["text"])
        for i in range(0, len(texts), batch_size)
    ]
    scorer.score(batches[0])  # compile outside the measurement
    start = time.perf_counter()
    for batch in batches:
        scorer.score(batch)
    return len(texts) / (time.perf_counter() - start), len(texts)


def main(argv: list[str] | None = None) -> None:
    from benchmarks.curate_1m import ensure_corpus, run_flow

    parser = argparse.ArgumentParser(prog="python -m benchmarks.dedup_job")
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "thresher" / "bench"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    n = 50_000 if args.quick else args.documents
    corpus = ensure_corpus(Path(args.cache), n)
    template: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    cores = os.cpu_count() or 1
    before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rate, sampled = kernel_rate(corpus, int(template["engine"]["batch_size"]))
    with tempfile.TemporaryDirectory(prefix="thresher-bench-dedup-job-") as directory:
        result = run_flow(
            "local",
            "local",
            str(corpus / "shard-*"),
            str(Path(directory) / "run"),
            Path(directory),
            template,
            kept_ids=False,
        )
    after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    documents = int(result["counts"]["input"])
    job_rate = documents / result["wall"] / result["parallelism"]
    stages = result.get("seconds_per_stage", {})
    lines = [
        f"## The whole local dedup job at {n:,} documents",
        "",
        f"Machine: {cores} cores; load average before / after: {before} / {after}. "
        f"Command: `python -m benchmarks.dedup_job --documents {n}`.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| signature kernel alone, 1 core ({sampled:,} documents) | {rate:,.0f} docs/s |",
        f"| whole job, wall | {result['wall']:.1f} s on {result['parallelism']} worker(s) |",
        f"| whole job per core | {job_rate:,.0f} docs/s |",
        f"| whole job / kernel, per core | {job_rate / rate:.1%} (target >= 50%) |",
        f"| driver peak RSS | {result['driver_peak_rss'] / 2**30:.2f} GiB |",
        f"| kept / input | {result['counts']['kept']:,} / {documents:,} |",
        "",
        "| stage | seconds | share of the wall |",
        "|---|---:|---:|",
        *[f"| {name} | {sec:.1f} | {sec / result['wall']:.0%} |" for name, sec in stages.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (ROOT / "benchmarks" / "results" / "dedup_job.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
