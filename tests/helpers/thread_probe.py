"""Run every k-means-based selection once and print a digest of its result (a child process).

Called as ``python -m tests.helpers.thread_probe THREADS CHUNK``: THREADS is
given to faiss and to the BLAS libraries (through the environment the
parent sets), CHUNK replaces the row-chunk sizes of the k-means helpers, so
the parent can compare the digests of runs that differ only in thread
count and batch size.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pyarrow as pa

ROWS, DIM = 24_000, 48  # 24k x 48 x 32 clusters is above the single-thread cut-off


def _data() -> tuple[pa.Table, np.ndarray]:
    from thresher.io import schema as S

    rng = np.random.default_rng(11)
    centres = rng.normal(scale=4.0, size=(40, DIM))
    x = (centres[rng.integers(0, 40, ROWS)] + rng.normal(size=(ROWS, DIM))).astype(np.float32)
    table = pa.table(
        {
            S.ID: [f"d{i}" for i in range(ROWS)],
            S.SHARD: pa.array(np.zeros(ROWS), pa.int32()),
            S.ROW: pa.array(np.arange(ROWS), pa.int64()),
            S.LABEL: rng.choice(["a", "b", "c"], size=ROWS),
            "loss": rng.exponential(size=ROWS),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
            S.ORDER: pa.array(np.arange(ROWS, dtype=np.int64)),
        }
    )
    return table, x


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    threads, chunk = int(sys.argv[1]), int(sys.argv[2])
    import faiss

    from thresher.frame import TableFrame
    from thresher.io import schema as S
    from thresher.selectors import kmeans, make_selector
    from thresher.stages.partitioned import PartitionJob, select_partitioned

    faiss.omp_set_num_threads(threads)
    kmeans._CHUNK_ROWS = chunk
    kmeans._CHUNK_ENTRIES = chunk * 64
    table, x = _data()
    out: dict[str, str] = {"threads": str(faiss.omp_get_max_threads())}

    fit = kmeans.fit_kmeans(x, 32, seed=5, n_iter=15)
    out["fit_kmeans"] = _digest(fit.labels, fit.centroids, fit.sq_distances)
    selectors = {
        "kmeans_sensitivity": ({"n_clusters": 32}, 3000),
        "prototypes": ({"n_clusters": 32}, 3000),
        "semdedup": ({"n_clusters": 32, "eps": 0.05}, None),
        "dpp": ({}, 300),
    }
    for name, (params, budget) in selectors.items():
        data = table if name != "dpp" else table.slice(0, 4000)
        vectors = x if name != "dpp" else x[:4000]
        result = make_selector(name, params).select(data, vectors, budget, random_state=7)
        out[name] = _digest(np.asarray(result.indices), np.asarray(result.weights))
    selector = make_selector("kmeans_sensitivity", {"n_clusters": 8})
    job = PartitionJob(
        selector=selector,
        budget=2000,
        clusters=6,
        sample=5000,
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
