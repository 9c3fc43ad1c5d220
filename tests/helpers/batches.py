"""Small tables for unit tests of scorers and selectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.io import schema as S


def text_batch(texts: list[str | None], labels: list[str] | None = None) -> pa.RecordBatch:
    """A canonical batch (id, text[, label]) for scorer tests."""
    columns = {
        "id": pa.array([f"d{i}" for i in range(len(texts))]),
        "text": pa.array(texts, pa.string()),
    }
    if labels is not None:
        columns["label"] = pa.array(labels)
    return pa.RecordBatch.from_pydict(columns)


def vector_table(n: int = 240, width: int = 6, seed: int = 0) -> pa.Table:
    """Numeric features with uneven norms; label = sign pattern of two coordinates."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)) * rng.uniform(0.2, 3.0, size=(n, 1))
    labels = [f"c{int(a > 0) + 2 * int(b > 0)}" for a, b in x[:, :2]]
    return pa.table(
        {
            S.FEATURES: pa.array(x.tolist(), pa.list_(pa.float32())),
            S.LABEL: labels,
            S.SHARD: pa.array(np.zeros(n, dtype=np.int32)),
            S.ROW: pa.array(np.arange(n, dtype=np.int64)),
        }
    )
