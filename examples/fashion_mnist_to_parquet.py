"""Convert Fashion-MNIST's IDX files into Parquet shards that thresher reads as feature vectors.

The IDX files come from Debian's ``dataset-fashion-mnist`` package
(``apt-get install dataset-fashion-mnist``, or ``make sysdeps-bench``), which puts
them in /usr/share/datasets/fashion-mnist/. Nothing is downloaded.

Output (``--out``, default ``examples/fashion_mnist``)::

    train/part-00.parquet ... part-05.parquet   60,000 images, 10,000 per shard
    test/test.parquet                           10,000 images

Columns: ``id`` (``train-00000``...), ``pixels`` (list<float32> of 784 values
in [0, 1], row-major 28 x 28), ``label`` (int64, 0-9) and ``label_name``
(T-shirt/top, Trouser...). Run it from the repository root::

    python examples/fashion_mnist_to_parquet.py
    thresher eval examples/eval-fashion-mnist.yaml

References
----------
Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", 2017.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}


def read_idx(path: Path) -> NDArray[np.generic]:
    """Read an IDX file (gzipped or not): magic ``0 0 type ndim``, big-endian sizes, data."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic {data[:4]!r})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[dtype_code]).newbyteorder(">")
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {array.size} values for shape {shape}")
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def to_table(images: NDArray[np.generic], labels: NDArray[np.generic], prefix: str) -> pa.Table:
    """One row per image: id, pixels (784 float32 in [0, 1]), label, label_name."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    flat = (images.reshape(images.shape[0], -1).astype(np.float32) / 255.0).reshape(-1)
    width = int(np.prod(images.shape[1:]))
    offsets = pa.array(np.arange(0, flat.size + 1, width, dtype=np.int32))
    return pa.table(
        {
            "id": [f"{prefix}-{i:05d}" for i in range(labels.shape[0])],
            "pixels": pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float32())),
            "label": pa.array(labels.astype(np.int64)),
            "label_name": [CLASSES[int(k)] for k in labels],
        }
    )


def convert(source: Path, out: Path, shard_rows: int = 10_000) -> dict[str, int]:
    """Write the train shards and the test file; return the row counts."""
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    counts = {}
    for split, (images_name, labels_name) in names.items():
        images = read_idx(_find(source, images_name))
        labels = read_idx(_find(source, labels_name))
        table = to_table(images, labels, split)
        directory = out / split
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.parquet"):
            stale.unlink()
        if split == "test":
            pq.write_table(table, directory / "test.parquet")
        else:
            for number, start in enumerate(range(0, table.num_rows, shard_rows)):
                pq.write_table(
                    table.slice(start, shard_rows), directory / f"part-{number:02d}.parquet"
                )
        counts[split] = table.num_rows
    return counts


def _find(source: Path, name: str) -> Path:
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{source / name}[.gz] not found: install Debian's dataset-fashion-mnist package "
        "(sudo apt-get install dataset-fashion-mnist, or make sysdeps-bench) or pass --source"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="directory of the IDX files")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "fashion_mnist", help="output directory"
    )
    parser.add_argument("--shard-rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    try:
        counts = convert(args.source, args.out, args.shard_rows)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {counts['train']:,} training and {counts['test']:,} test images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
