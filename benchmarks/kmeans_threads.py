"""k-means at 1, 2 and 4 threads: the same fit at every count, and its cost against faiss.

For each size (by default 200,000 x 64 with 64 and with 1,000 clusters),
every thread count runs in a process of its own, with OpenMP, OpenBLAS and
MKL limited through the environment and faiss's thread count set:

* **thresher**: :func:`thresher.selectors.kmeans.fit_kmeans` (20 Lloyd
  iterations, then every row assigned), wall seconds, inertia (the sum of
  squared distances of all rows to their centroids) and a digest of the
  centroids, labels and distances;
* **faiss**: faiss's k-means as thresher ran it before (AFK-MC2 seeding,
  20 iterations, at most 256 training rows per centroid), then every row
  assigned by faiss's search: the same three numbers.

The check: thresher's digests are the same at every thread count (exit
status 1 otherwise); whether faiss's are is reported. The data are rows
around 40 Gaussian centres, so most clusters split a blob and near-ties
between centroids are common (where thread-dependent rounding shows)::

    python -m benchmarks.kmeans_threads              # 200k x 64, k = 64 and 1,000
    python -m benchmarks.kmeans_threads --quick      # 50k x 64, k = 64 and 256
    python -m benchmarks.kmeans_threads --sizes 200000x64x1000 --threads 1,2 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FULL = "200000x64x64,200000x64x1000"
QUICK = "50000x64x64,50000x64x256"
SEED, DATA_SEED, ITERATIONS = 5, 11, 20


def blobs(rows: int, dim: int, seed: int) -> np.ndarray:
    """Rows around 40 Gaussian centres (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(40, dim))
    return (centres[rng.integers(0, 40, rows)] + rng.normal(size=(rows, dim))).astype(np.float32)


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def fit_thresher(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from thresher.selectors.kmeans import fit_kmeans

    fit = fit_kmeans(x, k, seed=SEED, n_iter=ITERATIONS)
    return fit.centroids, fit.labels, fit.sq_distances


def fit_faiss(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss k-means with the settings thresher used before its own fit, every row assigned."""
    import faiss

    kmeans = faiss.Kmeans(
        x.shape[1],
        k,
        niter=ITERATIONS,
        seed=SEED,
        verbose=False,
        min_points_per_centroid=1,
        init_method=faiss.ClusteringInitMethod_AFK_MC2,
    )
    kmeans.train(x)
    sq, labels = kmeans.index.search(x, 1)
    return kmeans.centroids, labels[:, 0].astype(np.int64), sq[:, 0].astype(np.float64)


def child(rows: int, dim: int, k: int, threads: int, method: str, repeats: int) -> dict[str, Any]:
    """One size, method and thread count (run in a process of its own)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    x = blobs(rows, dim, DATA_SEED)
    fit = fit_thresher if method == "thresher" else fit_faiss
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        centroids, labels, sq = fit(x, k)
        seconds.append(time.perf_counter() - start)
    inertia = float(np.sum(sq, dtype=np.float64))
    if method == "faiss":  # faiss's float32 distances: recompute in float64 for the inertia
        diff = x.astype(np.float64) - centroids[labels].astype(np.float64)
        inertia = float(np.einsum("ij,ij->", diff, diff))
    return {
        "seconds": min(seconds),
        "inertia": inertia,
        "digest": _digest(centroids, labels),
        "faiss_threads": faiss.omp_get_max_threads(),
    }


def _run_child(
    size: tuple[int, int, int], threads: int, method: str, repeats: int
) -> dict[str, Any]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    arguments = [*map(str, size), str(threads), method, str(repeats)]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.kmeans_threads", "--child", *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        rows, dim, k = (int(part) for part in item.lower().split("x"))
        sizes.append((rows, dim, k))
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="k-means at 1, 2 and 4 threads against faiss")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", help=f"ROWSxDIMxCLUSTERS,... (default {FULL})")
    parser.add_argument("--threads", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows, dim, k, threads = (int(value) for value in args.child[:4])
        print(json.dumps(child(rows, dim, k, threads, args.child[4], int(args.child[5]))))
        return
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    sizes = _sizes(args.sizes or (QUICK if quick else FULL))
    thread_counts = [int(t) for t in args.threads.split(",")]
    print(f"## k-means at {', '.join(map(str, thread_counts))} threads\n")
    print(
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"load average before: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"best of {args.repeats} run(s) per cell.\n"
    )
    print("| rows x dim, k | threads | faiss s | thresher s | faiss inertia | thresher inertia |")
    print("|---|---:|---:|---:|---:|---:|")
    failed = False
    for size in sizes:
        digests: dict[str, set[str]] = {"faiss": set(), "thresher": set()}
        for threads in thread_counts:
            before = _run_child(size, threads, "faiss", args.repeats)
            after = _run_child(size, threads, "thresher", args.repeats)
            digests["faiss"].add(before["digest"])
            digests["thresher"].add(after["digest"])
            print(
                f"| {size[0]:,} x {size[1]}, {size[2]:,} | {threads} "
                f"| {before['seconds']:.2f} | {after['seconds']:.2f} "
                f"| {before['inertia']:,.0f} | {after['inertia']:,.0f} |",
                flush=True,
            )
        same = len(digests["thresher"]) == 1
        failed |= not same
        print(
            f"|  | same fit at every count? | {'yes' if len(digests['faiss']) == 1 else 'no'} "
            f"| {'yes' if same else '**no**'} |  |  |",
            flush=True,
        )
    print(f"\nLoad average after: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if failed:
        print("thresher's k-means differed between thread counts")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
