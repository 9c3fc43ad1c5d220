"""MinHash dedup: signature speed, pair precision/recall, local memory, Spark against local.

On one generated corpus of 4 KB documents (random words from a 100k-word
vocabulary, so unrelated documents share no 5-gram) with planted families:
a base document and copies that replace 0 to 40 of its words (exact Jaccard
about 1.0 down to 0.6 on word 5-grams):

1. ``signatures``: documents per second on one core of the ``minhash``
   kernel (text to signature) against datasketch's ``MinHash.update_batch``
   (default SHA-1 hash) and ``MinHash.bulk`` with xxh32, same num_perm (128)
   and same shingles (checked: the xxh32 signatures are identical). The
   datasketch timings include shingling the text in Python (a regex and a
   join, as users write it); the hashing-only ratios are reported too.
   Targets: >= 10x ``update_batch``, >= 2x ``bulk``.
2. ``accuracy``: precision and recall of the duplicate pairs (two documents
   in one cluster) against exact Jaccard at threshold 0.8: pairs at J >=
   0.85 must be found, flagged pairs must have J >= 0.7. Targets: precision
   and recall >= 0.95. The strict figures (J >= 0.8 both ways) are shown too.
3. ``engines``: wall time of the dedup stage on the local engine and on
   Spark (``local[N]``, N = cores) over the same score shards, warm (second
   run) and cold; the clusters must be identical. Target: Spark < 2x local.
4. ``memory``: peak RSS of a child process that runs only the local
   clustering on precomputed signatures of 1M documents (synthetic
   signatures with planted near-duplicate and exact families), measured
   with ``resource.getrusage``. Target: < 4 GiB. The same shards then go
   through the Spark engine, for the engine ratio at a size where Spark's
   fixed cost per job no longer dominates.

Full scale (50,000 documents, 1M signatures; about 10-15 minutes on 2
quiet cores)::

    python -m benchmarks.minhash

Development scale (5,000 documents, 100k signatures; a minute or two)::

    python -m benchmarks.minhash --quick      # or THRESHER_BENCH_QUICK=1

The full-scale output is also written to ``benchmarks/results/minhash.md``.

Part 4 alone at other sizes (the dedup stage on synthetic signatures, local
in a child process, then Spark on the same shards; written to
``benchmarks/results/minhash_scale.md``)::

    python -m benchmarks.minhash --dedup-sizes 1000000,4000000

The Spark stage alone (no local child: at 10M the local engine needs about
33 GiB), each size in a fresh child process (a new driver and JVM), with
the driver's peak resident memory (``ru_maxrss`` of the Python driver), the
JVM's and the process tree's (sampled every 0.2 s), and their ratio to the
smallest size (written to ``benchmarks/results/minhash_spark_alone.md``)::

    python -m benchmarks.minhash --spark-alone-sizes 1000000,10000000
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

NUM_PERM = 128
NGRAM = 5
THRESHOLD = 0.8
BATCH_ROWS = 1024


@dataclass(frozen=True)
class Scale:
    documents: int  # text corpus of 4 KB documents
    speed_documents: int  # documents timed per signature method (datasketch is slow)
    memory_documents: int  # synthetic signatures for the memory run
    shards: int


FULL = Scale(50_000, 10_000, 1_000_000, 10)
QUICK = Scale(5_000, 1_000, 100_000, 4)


# -- the corpus ---------------------------------------------------------------------


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    families: list[list[int]]  # positions of a base and its copies


def make_corpus(n_documents: int, seed: int = 0) -> Corpus:
    """4 KB documents of random words; a third of them in planted near-duplicate families."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = np.array(
        ["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(100_000)]
    )
    decorated = np.char.add(np.char.capitalize(vocabulary), ",")  # normalisation has work to do

    def document() -> list[str]:
        words = rng.integers(0, vocabulary.size, size=900)
        chosen = np.where(rng.random(900) < 0.05, decorated[words], vocabulary[words])
        lengths = np.cumsum(np.char.str_len(chosen) + 1)
        return list(chosen[: int(np.searchsorted(lengths, 4096)) + 1])

    texts: list[str] = []
    families: list[list[int]] = []
    while len(texts) < n_documents:
        base = document()
        if rng.random() < 0.15:  # a family: the base and 1-3 copies, 0-40 words replaced
            family = [len(texts)]
            texts.append(" ".join(base))
            for _ in range(int(rng.integers(1, 4))):
                copy = list(base)
                for position in rng.choice(len(copy), size=int(rng.integers(0, 41)), replace=False):
                    copy[position] = str(vocabulary[rng.integers(0, vocabulary.size)])
                family.append(len(texts))
                texts.append(" ".join(copy))
            families.append(family)
        else:
            texts.append(" ".join(base))
    texts = texts[:n_documents]
    order = rng.permutation(len(texts))
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    shuffled = [texts[i] for i in order]
    families = [[int(position[i]) for i in f if i < n_documents] for f in families]
    ids = [f"doc-{i:07d}" for i in range(len(shuffled))]
    return Corpus(ids, shuffled, [f for f in families if len(f) >= 2])


_NON_WORD = re.compile(r"[^\w\s]")


def python_shingles(text: str) -> list[bytes]:
    """Shingles as a datasketch user computes them (equal to thresher's on this corpus)."""
    words = _NON_WORD.sub("", text.lower()).split()
    return [" ".join(words[i : i + NGRAM]).encode() for i in range(max(1, len(words) - NGRAM + 1))]


def shingle_set(text: str) -> set[bytes]:
    return set(python_shingles(text))


# -- 1. signatures ----------------------------------------------------------------------


def bench_signatures(corpus: Corpus, n: int) -> list[str]:
    import xxhash
    from datasketch import MinHash

    from thresher.dedup.shingles import signature_matrix

    texts = corpus.texts[:n]
    array = pa.array(texts, pa.large_string())
    signature_matrix(array.slice(0, 8), num_perm=NUM_PERM)  # compile or load the kernel

    def ours() -> np.ndarray:
        parts = [
            signature_matrix(array.slice(start, BATCH_ROWS), num_perm=NUM_PERM)[0]
            for start in range(0, n, BATCH_ROWS)
        ]
        return np.concatenate(parts)

    def update_batch(shingled: list[list[bytes]] | None = None) -> None:
        for i, text in enumerate(texts):
            minhash = MinHash(num_perm=NUM_PERM, seed=1)
            minhash.update_batch(python_shingles(text) if shingled is None else shingled[i])

    def bulk(shingled: list[list[bytes]] | None = None) -> list[Any]:
        sets = (python_shingles(t) for t in texts) if shingled is None else shingled
        return MinHash.bulk(sets, num_perm=NUM_PERM, seed=1, hashfunc=xxhash.xxh32_intdigest)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    signatures = ours()
    timings["ours"] = time.perf_counter() - start
    start = time.perf_counter()
    update_batch()
    timings["update_batch"] = time.perf_counter() - start
    start = time.perf_counter()
    reference = bulk()
    timings["bulk"] = time.perf_counter() - start
    start = time.perf_counter()
    shingled = [python_shingles(t) for t in texts]
    timings["shingling"] = time.perf_counter() - start
    start = time.perf_counter()
    update_batch(shingled)
    timings["update_batch_hash"] = time.perf_counter() - start
    start = time.perf_counter()
    bulk(shingled)
    timings["bulk_hash"] = time.perf_counter() - start
    identical = all(
        np.array_equal(m.hashvalues, s) for m, s in zip(reference, signatures, strict=True)
    )

    def rate(key: str) -> str:
        return f"{n / timings[key]:,.0f}"

    ours_rate = n / timings["ours"]
    lines = [
        "### 1. Signatures per second, one core",
        "",
        f"{n:,} documents of {np.mean([len(t) for t in texts]) / 1024:.1f} KiB, word {NGRAM}-grams, "
        f"num_perm {NUM_PERM}. Signatures identical to datasketch's (xxh32): "
        f"{'yes' if identical else 'NO'}.",
        "",
        "| method | docs/s (text to signature) | thresher is | docs/s (hashing only) | thresher is | target |",
        "|---|---:|---:|---:|---:|---|",
        f"| thresher `minhash` (numba kernel) | {rate('ours')} | 1x | - | - | |",
        f"| datasketch `update_batch` (SHA-1) | {rate('update_batch')} | "
        f"{timings['update_batch'] / timings['ours']:.1f}x | {rate('update_batch_hash')} | "
        f"{ours_rate / (n / timings['update_batch_hash']):.1f}x | >= 10x "
        f"{_mark(timings['update_batch'] / timings['ours'] >= 10)} |",
        f"| datasketch `bulk` (xxh32) | {rate('bulk')} | {timings['bulk'] / timings['ours']:.1f}x | "
        f"{rate('bulk_hash')} | {ours_rate / (n / timings['bulk_hash']):.1f}x | >= 2x "
        f"{_mark(timings['bulk'] / timings['ours'] >= 2)} |",
        "",
        f"Python shingling alone (regex + join): {rate('shingling')} docs/s. The hashing-only "
        "columns give datasketch its shingles for free and still time thresher from text.",
        "",
    ]
    return lines


def _mark(ok: bool) -> str:
    return "(met)" if ok else "(MISSED)"


# -- score shards of the corpus ---------------------------------------------------------


def write_text_scores(corpus: Corpus, root: Path, shards: int) -> list[int]:
    """Score the corpus with the ``minhash`` scorer into ``root/scores`` (no ingest needed)."""
    from thresher.io.files import write_parquet_atomic
    from thresher.run_dir import RunDir
    from thresher.scorers import make_scorer

    scorer = make_scorer("minhash", {"num_perm": NUM_PERM, "ngram": NGRAM})
    scorer.setup()
    bounds = np.linspace(0, len(corpus.texts), shards + 1).astype(int)
    for index in range(shards):
        low, high = int(bounds[index]), int(bounds[index + 1])
        parts = []
        for start in range(low, high, BATCH_ROWS):
            stop = min(high, start + BATCH_ROWS)
            texts = pa.array(corpus.texts[start:stop], pa.string())
            scored = scorer.score(pa.RecordBatch.from_arrays([texts], names=["text"]))
            parts.append(
                pa.table(
                    {
                        "id": pa.array(corpus.ids[start:stop], pa.string()),
                        "thresher_shard": pa.array([index] * (stop - start), pa.int32()),
                        "thresher_row": pa.array(range(start - low, stop - low), pa.int64()),
                        "minhash": scored.field(0),
                        "minhash_exact": scored.field(1),
                        "minhash_length": scored.field(2),
                    }
                )
            )
        write_parquet_atomic(pa.concat_tables(parts), RunDir(root).scores_shard(index))
    return register_shards(root, shards)


def register_shards(root: Path, shards: int) -> list[int]:
    """Record shard keys ``0 .. shards-1`` in the run's registry (input order is by name)."""
    from thresher.io.files import write_json_atomic
    from thresher.run_dir import RunDir

    names = [{"index": i, "name": f"shard-{i:05d}"} for i in range(shards)]
    write_json_atomic({"shards": names}, RunDir(root).shard_registry)
    return list(range(shards))


def run_dedup(engine: Any, root: Path, indices: list[int], out: Path) -> dict[str, Any]:
    """The dedup stage on ``engine`` over the score shards under ``root``; clusters under ``out``."""
    from thresher.io.fs import Location
    from thresher.run_dir import RunDir
    from thresher.stages.dedup import deduplicate

    return deduplicate(engine, RunDir(root), indices, dedup_spec(), Location.of(out))


def clusters_of(out: Path, summary: dict[str, Any]) -> pa.Table:
    """The clusters table a dedup run wrote under ``out`` (the files its summary names)."""
    from thresher.dedup.spec import read_clusters
    from thresher.io.fs import Location

    return read_clusters(files=[Location.of(out) / name for name in summary["files"]])


def dedup_spec() -> Any:
    from thresher.dedup.lsh import choose_bands_rows
    from thresher.dedup.spec import DedupSpec, KeeperKey

    lsh = choose_bands_rows(THRESHOLD, NUM_PERM)
    return DedupSpec(
        signature="minhash",
        num_perm=NUM_PERM,
        threshold=THRESHOLD,
        bands=lsh.bands,
        rows=lsh.rows,
        keeper=(KeeperKey("minhash_length"),),
    )


# -- 2. accuracy and 3. engines -----------------------------------------------------------


def make_spark_engine() -> Any:
    """A Spark engine on all cores of this machine, session started (not timed)."""
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    cores = os.cpu_count() or 1
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(2 * cores),
        "spark.driver.memory": "6g",
    }
    engine = SparkEngine(SparkConfig(master=f"local[{cores}]", conf=conf))
    engine.spark.range(10).count()
    engine.spark.sparkContext.setLogLevel("ERROR")
    return engine


def bench_accuracy_and_engines(corpus: Corpus, work: Path, scale: Scale, engine: Any) -> list[str]:
    from thresher.engines.local import LocalEngine

    root = work / "run"
    start = time.perf_counter()
    indices = write_text_scores(corpus, root, scale.shards)
    scoring = time.perf_counter() - start

    local_engine = LocalEngine(workers=1)  # the stage runs on the driver: no worker pool
    local_times = []
    for attempt in range(2):
        out = work / f"local-{attempt}"
        start = time.perf_counter()
        summary = run_dedup(local_engine, root, indices, out)
        local_times.append(time.perf_counter() - start)
    local = clusters_of(work / "local-1", summary)

    cores = os.cpu_count() or 1
    spark_times = []
    for attempt in range(2):
        out = work / f"spark-{attempt}"
        start = time.perf_counter()
        spark_summary = run_dedup(engine, root, indices, out)
        spark_times.append(time.perf_counter() - start)
    identical = clusters_of(work / "spark-1", spark_summary).equals(local)

    # Precision / recall of duplicate pairs against exact Jaccard.
    cluster_of = dict(
        zip(local.column("id").to_pylist(), local.column("cluster").to_pylist(), strict=True)
    )
    position = {doc: i for i, doc in enumerate(corpus.ids)}
    sets: dict[int, set[bytes]] = {}

    def jaccard(a: int, b: int) -> float:
        for i in (a, b):
            if i not in sets:
                sets[i] = shingle_set(corpus.texts[i])
        return len(sets[a] & sets[b]) / len(sets[a] | sets[b])

    def linked(a: int, b: int) -> bool:
        first, second = cluster_of.get(corpus.ids[a]), cluster_of.get(corpus.ids[b])
        return first is not None and first == second

    true_pairs = [
        (a, b, jaccard(a, b))
        for family in corpus.families
        for a, b in itertools.combinations(family, 2)
    ]
    members: dict[int, list[int]] = {}
    for doc, cluster in cluster_of.items():
        members.setdefault(cluster, []).append(position[doc])
    flagged = [
        (a, b, jaccard(a, b))
        for group in members.values()
        for a, b in itertools.combinations(sorted(group), 2)
    ]
    must = [linked(a, b) for a, b, j in true_pairs if j >= 0.85]
    strict = [linked(a, b) for a, b, j in true_pairs if j >= THRESHOLD]
    recall = sum(must) / max(len(must), 1)
    recall_strict = sum(strict) / max(len(strict), 1)
    precision = sum(j >= 0.7 for _, _, j in flagged) / max(len(flagged), 1)
    precision_strict = sum(j >= THRESHOLD for _, _, j in flagged) / max(len(flagged), 1)
    ratio = spark_times[1] / local_times[1]
    lsh = summary["lsh"]
    return [
        f"### 2. Duplicate pairs against exact Jaccard (threshold {THRESHOLD})",
        "",
        f"{len(corpus.texts):,} documents, {len(corpus.families):,} planted families, "
        f"{len(true_pairs):,} within-family pairs. LSH {lsh['bands']} bands x {lsh['rows']} rows, "
        f"P(candidate | J = {THRESHOLD}) = {lsh['probability_at_threshold']:.3f}; candidates "
        f"verified by estimated Jaccard. {summary['clusters']:,} clusters, "
        f"{summary['duplicates']:,} duplicates dropped, {summary['comparisons']:,} signature comparisons.",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| recall: pairs at J >= 0.85 in one cluster ({len(must):,}) | {recall:.4f} | >= 0.95 {_mark(recall >= 0.95)} |",
        f"| precision: flagged pairs with J >= 0.7 ({len(flagged):,} flagged) | {precision:.4f} | >= 0.95 {_mark(precision >= 0.95)} |",
        f"| recall, strict: pairs at J >= 0.8 found ({len(strict):,}) | {recall_strict:.4f} | |",
        f"| precision, strict: flagged pairs with J >= 0.8 | {precision_strict:.4f} | |",
        "",
        "### 3. Dedup stage: Spark against local, same score shards",
        "",
        f"Scoring the corpus into {scale.shards} shards took {scoring:.1f} s (not part of the stage). "
        f"Spark `local[{cores}]`, session started before timing. Clusters identical on both "
        f"engines: {'yes' if identical else 'NO'}.",
        "",
        "| engine | warm run (s) | cold run (s) |",
        "|---|---:|---:|",
        f"| local | {local_times[1]:.2f} | {local_times[0]:.2f} |",
        f"| spark | {spark_times[1]:.2f} | {spark_times[0]:.2f} |",
        "",
        f"Spark / local (warm): {ratio:.1f}x; target < 2x {_mark(ratio < 2)}.",
        "",
    ]


# -- 4. memory --------------------------------------------------------------------------


def write_synthetic_signatures(root: Path, n: int, shards: int, seed: int = 0) -> list[int]:
    """Score shards of ``n`` random signatures: 10% in near-duplicate families, 1% exact copies."""
    from thresher.dedup.columns import signature_column
    from thresher.io.files import write_parquet_atomic
    from thresher.run_dir import RunDir

    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for index in range(shards):
        low, high = int(bounds[index]), int(bounds[index + 1])
        size = high - low
        signatures = rng.integers(0, 2**32, size=(size, NUM_PERM), dtype=np.uint64).astype(
            np.uint32
        )
        exact = rng.integers(0, 2**63, size=(size, 2), dtype=np.int64)
        near = np.flatnonzero(rng.random(size) < 0.10)
        sources = rng.integers(0, size, size=near.size)
        keep = rng.random((near.size, NUM_PERM)) < rng.uniform(0.6, 1.0, size=(near.size, 1))
        signatures[near] = np.where(keep, signatures[sources], signatures[near])
        copies = np.flatnonzero(rng.random(size) < 0.01)
        originals = rng.integers(0, size, size=copies.size)
        signatures[copies] = signatures[originals]
        exact[copies] = exact[originals]
        table = pa.table(
            {
                "id": pa.array([f"s{index:03d}-{i:07d}" for i in range(size)]),
                "thresher_shard": pa.array(np.full(size, index, dtype=np.int32)),
                "thresher_row": pa.array(np.arange(size, dtype=np.int64)),
                "minhash": signature_column(signatures, np.ones(size, dtype=bool)),
                "minhash_exact": pa.array([row.tobytes() for row in exact], pa.binary()),
                "minhash_length": pa.array(rng.integers(1000, 5000, size=size)),
            }
        )
        write_parquet_atomic(table, RunDir(root).scores_shard(index))
    return register_shards(root, shards)


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from thresher.engines.local import LocalEngine
from benchmarks.minhash import run_dedup
start = time.perf_counter()
summary = run_dedup(LocalEngine(workers=1), Path(sys.argv[2]), json.loads(sys.argv[1]), Path(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - start,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "summary": summary}))
"""


def bench_memory(work: Path, scale: Scale, engine: Any) -> list[str]:
    root = work / "synthetic"
    n = scale.memory_documents
    shards = max(scale.shards, n // 50_000)
    start = time.perf_counter()
    indices = write_synthetic_signatures(root, n, shards)
    generation = time.perf_counter() - start
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(indices), str(root), str(work / "synthetic-out")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    peak = measured["maxrss_kib"] / 1024**2
    summary = measured["summary"]
    start = time.perf_counter()
    spark_summary = run_dedup(engine, root, indices, work / "synthetic-spark")
    spark_seconds = time.perf_counter() - start
    identical = clusters_of(work / "synthetic-spark", spark_summary).equals(
        clusters_of(work / "synthetic-out", summary)
    )
    ratio = spark_seconds / measured["seconds"]
    return [
        f"### 4. Peak memory of the local clustering, {n:,} documents",
        "",
        f"Synthetic signatures in {shards} score shards (written in {generation:.0f} s, outside "
        "the measurement): 10% near-duplicates of a random source (each value kept with "
        "probability 0.6-1.0), 1% exact copies. A child process runs only the dedup stage "
        "(`deduplicate` on the local engine).",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| peak RSS (`ru_maxrss`) | {peak:.2f} GiB | < 4 GiB {_mark(peak < 4)} |",
        f"| wall time | {measured['seconds']:.1f} s | |",
        f"| clusters / duplicates | {summary['clusters']:,} / {summary['duplicates']:,} | |",
        "",
        f"The same shards on Spark (`local[{os.cpu_count()}]`, JVM warm): {spark_seconds:.1f} s, "
        f"{ratio:.1f}x the local clustering; clusters identical: {'yes' if identical else 'NO'}.",
        "",
    ]


def dedup_at_sizes(sizes: list[int]) -> None:
    """Part 4 alone at each size: local clustering (child process) against Spark, same shards."""
    lines = [
        "## MinHash dedup stage alone, local against Spark",
        "",
        f"Machine: {os.cpu_count()} cores. Command: `python -m benchmarks.minhash "
        f"--dedup-sizes {','.join(str(n) for n in sizes)}`.",
        "",
    ]
    engine = make_spark_engine()
    try:
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="thresher-bench-minhash-") as directory:
                before = " ".join(f"{x:.2f}" for x in os.getloadavg())
                part = bench_memory(Path(directory), Scale(0, 0, n, FULL.shards), engine)
                after = " ".join(f"{x:.2f}" for x in os.getloadavg())
            part.append(f"Load average before / after: {before} / {after}.")
            part.append("")
            print("\n".join(part), flush=True)
            lines += part
    finally:
        engine.close()
    target = Path(__file__).parent / "results" / "minhash_scale.md"
    target.write_text("\n".join(lines), encoding="utf-8")


_SPARK_CHILD = """
import json, os, resource, sys, threading, time
from pathlib import Path
from benchmarks.curate_1m import _tree_rss_split
from benchmarks.minhash import make_spark_engine, run_dedup
engine = make_spark_engine()
peak = {"tree": 0, "jvm": 0}
stop = threading.Event()
def sample():
    while not stop.is_set():
        tree, jvm = _tree_rss_split(os.getpid())
        peak["tree"], peak["jvm"] = max(peak["tree"], tree), max(peak["jvm"], jvm)
        stop.wait(0.2)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
summary = run_dedup(engine, Path(sys.argv[2]), json.loads(sys.argv[1]), Path(sys.argv[3]))
seconds = time.perf_counter() - start
stop.set()
sampler.join()
engine.close()
print(json.dumps({"seconds": seconds,
                  "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "jvm_peak_rss": peak["jvm"], "tree_peak_rss": peak["tree"],
                  "summary": summary}))
"""


def spark_alone(sizes: list[int]) -> None:
    """The Spark dedup stage alone at each size, in a fresh child process: time and peak memory."""
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="thresher-bench-minhash-spark-") as directory:
            work = Path(directory)
            shards = max(FULL.shards, n // 50_000)
            start = time.perf_counter()
            indices = write_synthetic_signatures(work / "synthetic", n, shards)
            generation = time.perf_counter() - start
            before = " ".join(f"{x:.2f}" for x in os.getloadavg())
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _SPARK_CHILD,
                    json.dumps(indices),
                    str(work / "synthetic"),
                    str(work / "out"),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            after = " ".join(f"{x:.2f}" for x in os.getloadavg())
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "documents": n,
                "shards": shards,
                "generation": generation,
                "load": f"{before} / {after}",
                **measured,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "summary"}), flush=True)
    base = rows[0]

    def gib(n_bytes: float) -> str:
        return f"{n_bytes / 1024**3:.2f} GiB"

    lines = [
        "## MinHash dedup stage alone on Spark: time and driver memory",
        "",
        f"Machine: {os.cpu_count()} cores; Spark `local[{os.cpu_count()}]`, 6 GiB of driver "
        "memory. Command: `python -m benchmarks.minhash --spark-alone-sizes "
        f"{','.join(str(n) for n in sizes)}`. Each size in a fresh child process (driver and "
        "JVM started before the clock); synthetic signatures as in part 4.",
        "",
        "| documents | shards | wall s | driver peak RSS | vs smallest | JVM peak RSS | tree peak "
        "RSS | duplicates | load before / after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['documents']:,} | {r['shards']} | {r['seconds']:.1f} | "
            f"{gib(r['driver_peak_rss'])} | {r['driver_peak_rss'] / base['driver_peak_rss']:.2f}x | "
            f"{gib(r['jvm_peak_rss'])} | {gib(r['tree_peak_rss'])} | "
            f"{r['summary']['duplicates']:,} | {r['load']} |"
        )
    lines.append("")
    print("\n".join(lines), flush=True)
    target = Path(__file__).parent / "results" / "minhash_spark_alone.md"
    target.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.minhash")
    parser.add_argument("--quick", action="store_true", help="development scale")
    parser.add_argument(
        "--dedup-sizes",
        default=None,
        help="only part 4 (the dedup stage on synthetic signatures, local then Spark) at these "
        "comma-separated sizes; written to results/minhash_scale.md",
    )
    parser.add_argument(
        "--spark-alone-sizes",
        default=None,
        help="only the Spark dedup stage (no local run), each of these comma-separated sizes in "
        "a fresh child process, with the driver's and the JVM's peak memory; written to "
        "results/minhash_spark_alone.md",
    )
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.spark_alone_sizes:
        spark_alone([int(n) for n in args.spark_alone_sizes.split(",")])
        return
    if args.dedup_sizes:
        dedup_at_sizes([int(n) for n in args.dedup_sizes.split(",")])
        return
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    scale = QUICK if quick else FULL
    output = io.StringIO()

    def emit(lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        print(text, end="", flush=True)
        output.write(text)

    emit(
        [
            f"## MinHash dedup{' (quick scale)' if quick else ''}",
            "",
            f"Machine: {os.cpu_count()} cores. Command: `python -m benchmarks.minhash"
            f"{' --quick' if quick else ''}`.",
            "",
        ]
    )
    with tempfile.TemporaryDirectory(prefix="thresher-bench-minhash-") as directory:
        work = Path(directory)
        start = time.perf_counter()
        corpus = make_corpus(scale.documents)
        emit(
            [
                f"Corpus of {scale.documents:,} documents generated in {time.perf_counter() - start:.0f} s.",
                "",
            ]
        )
        emit(bench_signatures(corpus, scale.speed_documents))
        engine = make_spark_engine()
        try:
            emit(bench_accuracy_and_engines(corpus, work, scale, engine))
            emit(bench_memory(work, scale, engine))
        finally:
            engine.close()
    if not quick:
        target = Path(__file__).parent / "results" / "minhash.md"
        target.write_text(output.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
