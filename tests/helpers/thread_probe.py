"""Run every fitted selection step once and print a digest of its result (a child process).

Called as ``python -m tests.helpers.thread_probe THREADS CHUNK``: THREADS is
given to OpenMP (faiss, torch) and the BLAS libraries (through the
environment the parent sets, and ``faiss.omp_set_num_threads``), CHUNK replaces the
row-chunk sizes of the k-means helpers, so the parent can compare the
digests of runs that differ only in thread count and batch size. The
last line printed is a JSON object: one digest per step, and the thread
counts each library really used.

The sizes are the smallest found where faiss's own k-means (the fit before
this check existed) gave other centroids at 2 or 4 threads than at 1: a
near-tie between two centroids that BLAS rounds differently per thread
count, after which Lloyd's iterations drift apart.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import numpy as np
import pyarrow as pa

#: (rows, dimensions, clusters, data seed): each gave other centroids at 2 and 4 threads.
FITS = [(10_000, 64, 64, 17), (12_000, 64, 64, 11)]
ROWS, DIM = 12_000, 64  # the selectors' table: the second fit's rows
#: float32 DPP (greedy MAP, 300 picks) whose BLAS kernel rows gave other picks at 2 and 4 threads.
DPP_FLOAT32 = (20_000, 64, 11)


def blobs(rows: int, dim: int, seed: int) -> np.ndarray:
    """Rows around 40 Gaussian centres: many clusters split one blob, so near-ties abound."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(40, dim))
    return (centres[rng.integers(0, 40, rows)] + rng.normal(size=(rows, dim))).astype(np.float32)


def _table(x: np.ndarray, seed: int) -> pa.Table:
    from thresher.io import schema as S

    rng = np.random.default_rng(seed)
    rows, dim = x.shape
    return pa.table(
        {
            S.ID: [f"d{i}" for i in range(rows)],
            S.SHARD: pa.array(np.zeros(rows), pa.int32()),
            S.ROW: pa.array(np.arange(rows), pa.int64()),
            S.LABEL: rng.choice(["a", "b", "c"], size=rows),
            "loss": rng.exponential(size=rows),
            "el2n": rng.random(size=rows),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim),
            S.ORDER: pa.array(np.arange(rows, dtype=np.int64)),
        }
    )


def _duplicated(rows: int, dim: int, copies: int, seed: int) -> np.ndarray:
    """Unit rows in groups of about ``copies`` exact duplicates (ties in every kNN list)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows // copies, dim))
    x = base[rng.integers(0, base.shape[0], rows)]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _threads_used() -> dict[str, Any]:
    """Threads each library will use in this process (what the parent asked for, if it took)."""
    import faiss
    from threadpoolctl import threadpool_info

    blas = sorted({int(pool["num_threads"]) for pool in threadpool_info()})
    return {"faiss": faiss.omp_get_max_threads(), "blas": blas}


def main() -> None:
    threads, chunk = int(sys.argv[1]), int(sys.argv[2])
    import faiss

    from thresher.frame import TableFrame
    from thresher.io import schema as S
    from thresher.selectors import d2, kmeans, make_selector
    from thresher.stages.partitioned import PartitionJob, select_partitioned

    faiss.omp_set_num_threads(threads)
    kmeans._CHUNK_ROWS = chunk
    kmeans._CHUNK_ENTRIES = chunk * 64
    d2._CHUNK_ROWS = max(1, chunk // 16)
    out: dict[str, str] = {}
    for rows, dim, clusters, seed in FITS:
        fit = kmeans.fit_kmeans(blobs(rows, dim, seed), clusters, seed=5, n_iter=20)
        out[f"fit_kmeans {rows}x{dim}x{clusters}"] = _digest(
            fit.labels, fit.centroids, fit.sq_distances
        )
    x = blobs(ROWS, DIM, 11)
    table = _table(x, 11)
    selectors = {
        "kmeans_sensitivity": ({"n_clusters": 64}, 1200),
        "prototypes": ({"n_clusters": 64}, 1200),
        "semdedup": ({"n_clusters": 64, "eps": 0.05}, None),
        "semdedup_rank": ({"n_clusters": 64}, 1200),
    }
    for name, (params, budget) in selectors.items():
        result = make_selector(name, params).select(table, x, budget, random_state=7)
        out[name] = _digest(np.asarray(result.indices), np.asarray(result.weights))
    result = make_selector("dpp", {}).select(table.slice(0, 4000), x[:4000], 300, random_state=7)
    out["dpp"] = _digest(np.asarray(result.indices))
    many = blobs(*DPP_FLOAT32)
    result = make_selector("dpp", {"precision": "float32"}).select(
        pa.table({S.ID: np.arange(many.shape[0])}), many, 300, random_state=7
    )
    out["dpp float32"] = _digest(np.asarray(result.indices))
    duplicated = _duplicated(4000, 32, 50, 3)
    result = make_selector("d2", {"score": "el2n"}).select(
        table.slice(0, 4000), duplicated, 400, random_state=7
    )
    out["d2"] = _digest(np.asarray(result.indices))
    selector = make_selector("kmeans_sensitivity", {"n_clusters": 64})
    job = PartitionJob(
        selector=selector,
        budget=1200,
        clusters=2,
        sample=ROWS,
        iterations=10,
        seed=3,
        step=1,
        embeddings="embedding",
        columns=tuple(dict.fromkeys([*selector.score_columns(), S.LABEL])),
    )
    kept, _ = select_partitioned(TableFrame.of(table), job, ROWS)
    rows = kept.to_table(max_rows=ROWS).sort_by(S.ORDER)
    out["partitioned"] = _digest(
        rows.column(S.ORDER).to_numpy(),
        rows.column("weight").to_numpy(),
        rows.column("group").to_numpy(),
    )
    print(json.dumps({"digests": out, "threads": _threads_used()}))


if __name__ == "__main__":
    main()
