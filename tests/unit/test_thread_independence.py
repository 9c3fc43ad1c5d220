"""The same selection with 1 or 4 threads and any batch size: every k-means-based result.

Each configuration runs in its own process (thread pools are fixed at
start-up), with OpenMP, OpenBLAS and MKL limited through the environment
and faiss's thread count set explicitly, and with the k-means helpers'
row-chunk sizes changed. The problem is above the size below which faiss
is kept on one thread, so the threaded code paths really run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _probe(threads: int, chunk: int) -> dict[str, str]:
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
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_kmeans_selections_do_not_depend_on_threads_or_batch_sizes() -> None:
    one = _probe(threads=1, chunk=65536)
    several = _probe(threads=4, chunk=997)
    assert (one.pop("threads"), several.pop("threads")) == ("1", "4")  # the setting took
    assert set(one) == {
        "fit_kmeans",
        "kmeans_sensitivity",
        "prototypes",
        "semdedup",
        "dpp",
        "partitioned",
    }
    assert one == several
