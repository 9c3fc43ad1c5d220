"""Write MNIST-1D (Greydanus 2020) as Parquet shards for ``thresher eval``.

MNIST-1D is generated, not downloaded: ``make_dataset(get_dataset_args())``
from the PyPI package ``mnist1d`` (``pip install mnist1d``; never its
``get_dataset``, which downloads a pickle). The default arguments make 5,000
sequences of 40 values (4,000 train, 1,000 test) from 10 templates; ``--samples``
makes more. Output (``--out``, default ``examples/mnist1d``):
``train/part-0.parquet``, ``test/test.parquet`` with ``id``, ``signal``
(list<float32>) and ``digit``. Then::

    python examples/eval_mnist1d_data.py --samples 20000
    thresher eval examples/eval-mnist1d.yaml

References
----------
Greydanus, "Scaling Down Deep Learning", 2020 (MNIST-1D).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_mnist1d(out: Path, samples: int = 5000, seed: int = 42) -> dict[str, int]:
    """Generate MNIST-1D with ``samples`` sequences and write the train and test files."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise SystemExit("error: MNIST-1D needs the mnist1d package: pip install mnist1d") from None
    args = get_dataset_args()
    args.num_samples = samples
    args.seed = seed
    data = make_dataset(args)  # generated locally; get_dataset would download
    counts = {}
    for split, x, y in (("train", data["x"], data["y"]), ("test", data["x_test"], data["y_test"])):
        table = pa.table(
            {
                "id": [f"{split}-{i:05d}" for i in range(len(y))],
                "signal": pa.array(np.asarray(x, np.float32).tolist(), pa.list_(pa.float32())),
                "digit": pa.array(np.asarray(y, np.int64)),
            }
        )
        (out / split).mkdir(parents=True, exist_ok=True)
        name = "part-0.parquet" if split == "train" else "test.parquet"
        pq.write_table(table, out / split / name)
        counts[split] = table.num_rows
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "mnist1d")
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    counts = write_mnist1d(args.out, args.samples)
    print(f"wrote {counts['train']:,} training and {counts['test']:,} test sequences to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
