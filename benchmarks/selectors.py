"""Selector speed against references measured in the same run.

1. ``dpp``: thresher's greedy MAP against a plain numpy implementation of
   the same fast greedy (Chen et al. 2018, kernel rows computed on the fly)
   on N x d embeddings, k items. Target: ratio <= 1.2.
2. ``kmeans_sensitivity``: the whole selector against faiss k-means alone
   (train with the same settings, then assign every row). Target: the
   selection adds under 50%.
3. ``partitioned``: partitioned selection on Spark (executors read the
   vectors) against in-memory selection on the driver, over a score table
   written to disk.

Full scale (DPP on 100,000 x 256 vectors, k-means sensitivity on
1,000,000 x 256, partitioned selection on 1,000,000 rows; needs about
6 GiB of memory and tens of minutes on 2 cores)::

    python -m benchmarks.selectors

Development scale::

    python -m benchmarks.selectors --quick      # or THRESHER_BENCH_QUICK=1

One part only: ``--only dpp`` (or ``kmeans``, ``partitioned``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Scale:
    dpp_n: int
    dpp_d: int
    dpp_k: int
    km_n: int
    km_d: int
    km_k: int
    km_budget: int
    part_n: int
    part_d: int
    part_clusters: int
    part_inner: int
    part_budget: int


FULL = Scale(100_000, 256, 1_000, 1_000_000, 256, 1_000, 100_000, 1_000_000, 256, 16, 64, 100_000)
QUICK = Scale(10_000, 64, 200, 50_000, 64, 100, 5_000, 50_000, 32, 4, 16, 5_000)


def _time(function: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def _clustered(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """n rows around k random centres (float32), the kind of data k-means is meant for."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d)).astype(np.float32)
    rows = rng.standard_normal(size=(n, d), dtype=np.float32)
    rows += centres[rng.integers(0, k, size=n)]
    return rows


# -- 1. DPP ---------------------------------------------------------------------------------


def plain_numpy_fast_greedy(
    features: np.ndarray, quality: np.ndarray, ridge: float, k: int
) -> list[int]:
    """Chen et al.'s fast greedy MAP written plainly in numpy (the reference)."""
    n = features.shape[0]
    cis = np.zeros((k, n))
    di2s = (np.sum(features * features, axis=1) + ridge) * quality**2
    selected = [int(np.argmax(di2s))]
    while len(selected) < k:
        m = len(selected) - 1
        j = selected[-1]
        ci_optimal = cis[:m, j]
        di_optimal = np.sqrt(di2s[j])
        elements = quality[j] * quality * (features @ features[j])
        elements[j] += ridge * quality[j] ** 2
        eis = (elements - ci_optimal @ cis[:m, :]) / di_optimal
        cis[m, :] = eis
        di2s = di2s - np.square(eis)
        di2s[selected] = -np.inf
        j = int(np.argmax(di2s))
        if di2s[j] < 1e-10:
            break
        selected.append(j)
    return selected


def bench_dpp(scale: Scale) -> list[str]:
    from thresher.selectors import make_selector
    from thresher.selectors.dpp import dpp_quality
    from thresher.selectors.kmeans import normalize_rows

    n, d, k = scale.dpp_n, scale.dpp_d, scale.dpp_k
    features = _clustered(n, d, 50, seed=0)
    quality_score = np.random.default_rng(1).normal(size=n)
    table = pa.table({"quality": quality_score})
    unit = normalize_rows(features).astype(np.float64)
    quality = dpp_quality(quality_score, n, 0.5)
    reference_s, reference = _time(plain_numpy_fast_greedy, unit, quality, 1e-3, k)
    lines = [f"DPP greedy MAP, N = {n:,}, d = {d}, k = {k:,}, float64:", ""]
    lines += ["| implementation | seconds | ratio to numpy reference |", "|---|---:|---:|"]
    lines.append(f"| plain numpy fast greedy (reference) | {reference_s:.2f} | 1.00 |")
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        pass
    same = True
    for device in devices:
        selector = make_selector(
            "dpp", {"score": "quality", "alpha": 0.5, "ridge": 1e-3, "device": device}
        )
        ours_s, selection = _time(selector.select, table, features, k)
        same &= selection.indices.tolist() == sorted(reference)
        lines.append(f"| thresher `dpp` ({device}) | {ours_s:.2f} | {ours_s / reference_s:.2f} |")
    lines += [
        "",
        f"Same selected rows as the reference: {'yes' if same else 'NO'}. Target: <= 1.2x.",
    ]
    return lines


# -- 2. k-means sensitivity -------------------------------------------------------------------


def faiss_kmeans_alone(matrix: np.ndarray, k: int, seed: int) -> np.ndarray:
    """faiss k-means with thresher's settings, then every row assigned (the reference)."""
    import faiss

    kmeans = faiss.Kmeans(
        matrix.shape[1],
        k,
        niter=20,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        init_method=faiss.ClusteringInitMethod_AFK_MC2,
    )
    kmeans.train(matrix)
    _, labels = kmeans.index.search(matrix, 1)
    return labels


def bench_kmeans_sensitivity(scale: Scale) -> list[str]:
    from thresher.selectors import make_selector

    n, d, k, m = scale.km_n, scale.km_d, scale.km_k, scale.km_budget
    matrix = _clustered(n, d, k, seed=2)
    table = pa.table({"id": pa.array(np.arange(n))})
    reference_s, _ = _time(faiss_kmeans_alone, matrix, k, 12345)
    selector = make_selector("kmeans_sensitivity", {"n_clusters": k})
    ours_s, selection = _time(selector.select, table, matrix, m, random_state=0)
    assert len(selection) == m
    extra = ours_s / reference_s - 1.0
    return [
        f"k-means sensitivity sampling, {n:,} x {d}, k = {k:,}, budget {m:,}:",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| faiss k-means alone (train + assign, reference) | {reference_s:.2f} |",
        f"| thresher `kmeans_sensitivity` (k-means + sensitivities + sampling) | {ours_s:.2f} |",
        "",
        f"The selection adds {100 * extra:.1f}% to faiss k-means (target: under 50%).",
    ]


# -- 3. partitioned on Spark vs in memory ----------------------------------------------------


def _write_score_shards(root: Path, matrix: np.ndarray, shards: int) -> list[int]:
    """The rows as a run's score shards (one file per shard) and its shard registry."""
    from thresher.io.files import write_json_atomic, write_parquet_atomic
    from thresher.run_dir import RunDir

    n, d = matrix.shape
    rng = np.random.default_rng(3)
    shard = (np.arange(n) * shards // n).astype(np.int32)
    row = np.arange(n) - np.searchsorted(shard, shard)
    table = pa.table(
        {
            "id": pa.array([f"d{i}" for i in range(n)]),
            "thresher_shard": pa.array(shard),
            "thresher_row": pa.array(row.astype(np.int64)),
            "el2n": pa.array(rng.exponential(size=n)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), d),
        }
    )
    run = RunDir(root)
    for index in range(shards):
        part = table.filter(pa.compute.equal(table.column("thresher_shard"), index))
        write_parquet_atomic(part, run.scores_shard(index))
    names = [{"index": i, "name": f"shard-{i:05d}"} for i in range(shards)]
    write_json_atomic({"shards": names}, run.shard_registry)
    return list(range(shards))


def make_spark_engine() -> Any:
    """A Spark engine on every core of this machine (``local[*]``), session started (not timed)."""
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "6g",
        "spark.sql.shuffle.partitions": "16",
    }
    engine = SparkEngine(SparkConfig(master="local[*]", conf=conf))
    engine.spark.sparkContext.setLogLevel("ERROR")
    return engine


class _ValidVectors:
    """Rows whose vector is usable (an ``aggregate`` partial: reads every vector once)."""

    def __init__(self, column: str) -> None:
        self.column = column

    def __call__(self, table: pa.Table) -> int:
        from thresher.selectors.vectors import valid_vectors

        return int(valid_vectors(table.column(self.column)).sum())


def kept_order(kept: Any, budget: int) -> list[int]:
    """The input-order keys of a partitioned step's kept rows, sorted (collected on the driver)."""
    from thresher.stages.partitioned import ORDER

    return sorted(kept.to_table(max_rows=budget).column(ORDER).to_pylist())


def bench_partitioned(scale: Scale) -> list[str]:
    from thresher.frame import TableFrame
    from thresher.io.shards import order_ranks
    from thresher.run_dir import RunDir
    from thresher.selectors import make_selector
    from thresher.selectors.vectors import embedding_matrix
    from thresher.stages.partitioned import PartitionJob, select_partitioned
    from thresher.stages.select import read_score_table, score_rows

    n, d = scale.part_n, scale.part_d
    root = Path(tempfile.mkdtemp(prefix="thresher-bench-"))
    run = RunDir(root)
    engine = make_spark_engine()
    lines = [
        f"Partitioned selection, {n:,} rows x {d}, {scale.part_clusters} partitions "
        f"(sample {min(n, 100_000):,}), budget {scale.part_budget:,}; Spark `local[*]`:",
        "",
        "| selector | in memory on the driver (s) | partitioned, in memory (s) | partitioned on Spark (s) |",
        "|---|---:|---:|---:|",
    ]
    try:
        indices = _write_score_shards(root, _clustered(n, d, 200, seed=4), shards=16)
        ranks = order_ranks(run.shard_names())
        columns = ["id", "thresher_shard", "thresher_row", "el2n", "embedding"]
        # warm-up, not timed: start the Python workers and read the vectors once
        score_rows(engine, run, indices, columns, ranks).aggregate(_ValidVectors("embedding"), sum)
        cases = [
            ("ccs", {"score": "el2n", "beta": 0.1}, {"score": "el2n", "beta": 0.1}),
            (
                "kmeans_sensitivity",
                {"n_clusters": scale.part_clusters * scale.part_inner},
                {"n_clusters": scale.part_inner},
            ),
        ]
        for name, whole_params, inner_params in cases:
            read_s, table = _time(read_score_table, run)
            matrix = embedding_matrix(table, "embedding")
            whole_s, _ = _time(
                make_selector(name, whole_params).select,
                table,
                matrix,
                scale.part_budget,
                random_state=np.random.default_rng([0, 0]),
            )
            selector = make_selector(name, inner_params)
            job = PartitionJob(
                selector=selector,
                budget=scale.part_budget,
                clusters=scale.part_clusters,
                sample=100_000,
                iterations=20,
                seed=0,
                step=0,
                embeddings="embedding",
                columns=tuple(selector.score_columns()),
            )
            start = time.perf_counter()
            local = kept_order(select_partitioned(TableFrame.of(table), job, n)[0], job.budget)
            local_s = time.perf_counter() - start
            del table, matrix
            start = time.perf_counter()
            rows = score_rows(engine, run, indices, columns, ranks)
            remote = kept_order(select_partitioned(rows, job, n)[0], job.budget)
            spark_s = time.perf_counter() - start
            assert remote == local, "engines disagree"
            lines.append(
                f"| `{name}` | {read_s + whole_s:.1f} | {read_s + local_s:.1f} | {spark_s:.1f} |"
            )
        lines += [
            "",
            "In-memory columns include reading the score table with its vectors into the "
            "driver; the Spark column never holds the vectors on the driver (only the "
            "centroid sample). Spark and local partitioned selections were identical.",
        ]
    finally:
        engine.close()
        shutil.rmtree(root, ignore_errors=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.selectors")
    parser.add_argument("--quick", action="store_true", help="development scale")
    parser.add_argument("--only", choices=["dpp", "kmeans", "partitioned"])
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    scale = QUICK if quick else FULL
    parts = {"dpp": bench_dpp, "kmeans": bench_kmeans_sensitivity, "partitioned": bench_partitioned}
    print(f"## Selectors{' (quick scale)' if quick else ''}\n")
    print(f"Machine: {os.cpu_count()} cores; numbers are wall seconds of one run.\n")
    for name, bench in parts.items():
        if args.only and args.only != name:
            continue
        print("\n".join(bench(scale)) + "\n", flush=True)


if __name__ == "__main__":
    main()
