"""Write scikit-learn's digits (1,797 8x8 images) as Parquet shards for ``thresher eval``.

The data ships with scikit-learn (the ``dev`` extra): nothing is downloaded.
Output (``--out``, default ``examples/digits``): ``train/part-0.parquet``,
``train/part-1.parquet`` (1,497 images) and ``test/test.parquet`` (300),
with columns ``id``, ``pixels`` (list<float32>, 64 values in 0..16) and
``digit`` (int64). Then, from the repository root::

    python examples/eval_digits_data.py
    thresher eval examples/eval-digits.yaml      # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_digits(out: Path, n_test: int = 300, seed: int = 0) -> dict[str, int]:
    """Shuffle the digits with ``seed`` and write the train shards and the test file."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(digits.target.size)
    table = pa.table(
        {
            "id": [f"digit-{i:04d}" for i in order],
            "pixels": pa.array(
                digits.data[order].astype(np.float32).tolist(), pa.list_(pa.float32())
            ),
            "digit": pa.array(digits.target[order].astype(np.int64)),
        }
    )
    n_train = table.num_rows - n_test
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    half = n_train // 2
    pq.write_table(table.slice(0, half), out / "train" / "part-0.parquet")
    pq.write_table(table.slice(half, n_train - half), out / "train" / "part-1.parquet")
    pq.write_table(table.slice(n_train), out / "test" / "test.parquet")
    return {"train": n_train, "test": n_test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "digits")
    args = parser.parse_args()
    counts = write_digits(args.out)
    print(f"wrote {counts['train']:,} training and {counts['test']:,} test images to {args.out}")


if __name__ == "__main__":
    main()
