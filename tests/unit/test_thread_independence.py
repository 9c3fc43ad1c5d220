"""The same selection at 1, 2 or 4 threads, any batch size, on either engine.

Each configuration runs in its own process (thread pools are fixed at
start-up), with OpenMP, OpenBLAS and MKL limited through the environment
and faiss's thread count set explicitly, and with the k-means helpers'
row-chunk sizes changed. The sizes are ones where faiss's k-means (the fit
before this test's size was raised) gave other centroids per thread count,
so the threaded code paths really run and near-ties really occur.

Spark's Python workers run one OpenMP and BLAS thread per task; the driver
runs as many as it has cores: partitioned sensitivity sampling must keep
the same rows in both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.thread_probe import blobs

ROOT = Path(__file__).resolve().parents[2]
#: (threads, row-chunk size) of each child process.
RUNS = [(1, 65536), (2, 4099), (4, 997)]


def _probe(threads: int, chunk: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.thread_probe", str(threads), str(chunk)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_fitted_steps_do_not_depend_on_threads_or_batch_sizes() -> None:
    results = [_probe(threads, chunk) for threads, chunk in RUNS]
    cores = os.cpu_count() or 1
    for (threads, _), result in zip(RUNS, results, strict=True):  # the settings took
        assert result["threads"]["faiss"] == threads
        blas = result["threads"]["blas"]
        assert blas == [1] if threads == 1 else max(blas) >= min(threads, cores)
    digests = [result["digests"] for result in results]
    assert set(digests[0]) == {
        "fit_kmeans 10000x64x64",
        "fit_kmeans 12000x64x64",
        "kmeans_sensitivity",
        "prototypes",
        "semdedup",
        "semdedup_rank",
        "dpp",
        "dpp float32",
        "d2",
        "partitioned",
    }
    assert digests[0] == digests[1] == digests[2]


# -- decisions on float64 numbers, whatever BLAS rounds ------------------------------------


def test_knn_graph_finds_neighbours_faiss_left_out() -> None:
    import faiss

    from thresher.selectors.d2 import _SPARE, knn_graph

    # 100 groups of 50 exact copies: every neighbour is a tie at distance 0, which
    # faiss's float32 distances (BLAS) break by rounding, not by row position
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(100, 64))
    centres *= 10.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, 50, axis=0)[rng.permutation(5000)].astype(np.float32)
    k = 5
    index = faiss.IndexFlatL2(64)
    index.add(x)
    _, fetched = index.search(x, k + 1 + _SPARE)
    neighbors, distances = knn_graph(x, k)
    x64 = x.astype(np.float64)
    missed = 0
    for row in range(0, 5000, 7):
        diff = x64 - x64[row]
        sq = np.einsum("ij,ij->i", diff, diff)
        sq[row] = np.inf
        expected = np.lexsort((np.arange(5000), sq))[:k]  # by distance, then row position
        missed += int(not set(expected.tolist()) <= set(fetched[row].tolist()))
        assert neighbors[row].tolist() == expected.tolist()
        np.testing.assert_array_equal(distances[row], np.sqrt(sq[expected]))
    assert missed > 0  # the fault: faiss's candidates alone miss true neighbours


def test_semdedup_decides_similarities_at_the_threshold_in_float64() -> None:
    from thresher.selectors.kmeans import normalize_rows
    from thresher.selectors.semdedup import redundancy, similar_earlier_pairs

    rng = np.random.default_rng(7)
    noise = rng.normal(scale=0.3, size=(400, 32))
    rows = normalize_rows(rng.normal(size=(8, 32))[rng.integers(0, 8, 400)] + noise)
    x64 = rows.astype(np.float64)
    pairs = similar_earlier_pairs(rows, 0.5)
    exact = np.einsum("ij,ij->i", x64[pairs.earlier], x64[pairs.later])
    assert pairs.earlier.size > 1000 and np.all(exact > 0.5)
    # thresholds within float32's error of the pairs' similarities
    wrong_in_float32 = 0
    for threshold in [*exact[::37].tolist(), *(exact[::41] - 1e-12).tolist()]:
        truth = exact > threshold
        assert pairs.above(threshold).tolist() == truth.tolist()
        wrong_in_float32 += int(np.sum((pairs.similarity > threshold) != truth))
    assert wrong_in_float32 > 0  # the fault: float32 alone decides some of them wrongly
    expected = [-np.inf] + [
        float(np.max(np.einsum("ij,ij->i", x64[:i], np.broadcast_to(x64[i], (i, 32)))))
        for i in range(1, 400)
    ]  # the float64 similarity of each pair, summed as semdedup sums it
    np.testing.assert_array_equal(redundancy(rows), expected)


# -- Spark executors (one thread) and the driver (every core) ---------------------------

#: 16,000 rows in 2 partitions of 64 clusters: faiss's k-means kept 109 of 1,600 rows
#: differently at 1 and 2 threads.
SPARK_ROWS, SPARK_DIM, SPARK_SEED = 16_000, 64, 11


def _worker_threads(table: pa.Table) -> pa.Table:
    """The OpenMP and BLAS threads of the process that runs this batch."""
    import faiss
    from threadpoolctl import threadpool_info

    blas = max(int(pool["num_threads"]) for pool in threadpool_info())
    return pa.table({"omp": [faiss.omp_get_max_threads()], "blas": [blas]})


@pytest.mark.spark
def test_partitioned_sensitivity_sampling_is_the_same_on_spark_and_in_memory(
    spark_engine: Any,
) -> None:
    import faiss
    from threadpoolctl import threadpool_limits

    from thresher.frame import TableFrame
    from thresher.io import schema as S
    from thresher.selectors import make_selector
    from thresher.stages.partitioned import PartitionJob, select_partitioned

    x = blobs(SPARK_ROWS, SPARK_DIM, SPARK_SEED)
    table = pa.table(
        {
            S.ID: [f"d{i}" for i in range(SPARK_ROWS)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), SPARK_DIM),
            S.ORDER: pa.array(np.arange(SPARK_ROWS, dtype=np.int64)),
        }
    )
    selector = make_selector("kmeans_sensitivity", {"n_clusters": 64})
    job = PartitionJob(
        selector=selector,
        budget=SPARK_ROWS // 10,
        clusters=2,
        sample=SPARK_ROWS,
        iterations=20,
        seed=3,
        step=1,
        embeddings="embedding",
        columns=tuple(selector.score_columns()),
    )

    def kept(frame: Any) -> pa.Table:
        rows, _ = select_partitioned(frame, job, SPARK_ROWS)
        return rows.to_table(max_rows=SPARK_ROWS).sort_by(S.ORDER)

    threads_before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        with threadpool_limits(limits=2):
            local = kept(TableFrame.of(table))
            driver = _worker_threads(table).to_pylist()[0]
    finally:
        faiss.omp_set_num_threads(threads_before)
    frame = spark_engine.from_table(table)
    spark = kept(frame)
    schema = pa.schema([pa.field("omp", pa.int64()), pa.field("blas", pa.int64())])
    workers = frame.map_batches(_worker_threads, schema).to_table(max_rows=64).to_pylist()
    # the fault: the executors ran on one thread, the driver on two
    assert driver == {"omp": 2, "blas": 2}
    assert workers and all(w == {"omp": 1, "blas": 1} for w in workers)
    assert spark.num_rows == local.num_rows == SPARK_ROWS // 10
    assert spark.column(S.ORDER).to_pylist() == local.column(S.ORDER).to_pylist()
    assert spark.column("weight").to_pylist() == local.column("weight").to_pylist()
    assert spark.column("group").to_pylist() == local.column("group").to_pylist()
