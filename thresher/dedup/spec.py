"""What a dedup run needs (engine-independent) and the table it produces.

``clusters.parquet`` (a directory of Parquet files under ``RUN_DIR/dedup/``)
has one row per document in a duplicate cluster of two or more:

========== ======= ==========================================================
column     type    meaning
========== ======= ==========================================================
id         string  document id
thresher_shard int32 input position
thresher_row   int64
cluster    int64   :func:`doc_key` of the cluster's first document in input order
cluster_size int64 documents in the cluster
keeper     bool    the one document of the cluster that is kept
keeper_id  string  id of the cluster's keeper
kind       string ``exact``: byte-identical to the keeper (for the keeper: every
                   member is); ``near``: a near-duplicate
========== ======= ==========================================================

Which documents take part: every ingested row except a repeated id (the
select stage drops those first, as ``duplicate_id``). A row without a
signature (no shingle after normalisation) takes part in the exact pass
only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from numpy.typing import NDArray

from thresher.io import schema as S

#: Shift of the shard number in a document key (rows per shard < 2**40).
SHARD_SHIFT = 40

CLUSTERS_SCHEMA = pa.schema(
    [
        pa.field(S.ID, pa.string(), nullable=False),
        pa.field(S.SHARD, pa.int32(), nullable=False),
        pa.field(S.ROW, pa.int64(), nullable=False),
        pa.field("cluster", pa.int64(), nullable=False),
        pa.field("cluster_size", pa.int64(), nullable=False),
        pa.field("keeper", pa.bool_(), nullable=False),
        pa.field("keeper_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)
CLUSTERS_FILE = "clusters.parquet"
SUMMARY_FILE = "summary.json"
EXACT, NEAR = "exact", "near"


def doc_key(shard: NDArray[np.integer] | int, row: NDArray[np.integer] | int) -> Any:
    """A document's position as one int64: ``shard * 2**40 + row`` (input order)."""
    return (np.asarray(shard, dtype=np.int64) << SHARD_SHIFT) + np.asarray(row, dtype=np.int64)


@dataclass(frozen=True)
class KeeperKey:
    """One key of the keeper order: a numeric score column and its direction."""

    column: str
    descending: bool = True


@dataclass(frozen=True)
class DedupSpec:
    """Everything an engine needs to deduplicate a scored run.

    The keeper of a cluster is its first member by ``keeper`` keys (scores
    compared as float64; null and NaN last), then by id (byte order), then
    by input position.
    """

    signature: str
    num_perm: int
    threshold: float
    bands: int
    rows: int
    verify: bool = True
    exact: bool = True
    keeper: tuple[KeeperKey, ...] = field(default_factory=tuple)

    @property
    def exact_column(self) -> str:
        return f"{self.signature}_exact"

    @property
    def length_column(self) -> str:
        return f"{self.signature}_length"

    @property
    def keeper_columns(self) -> list[str]:
        return list(dict.fromkeys(k.column for k in self.keeper))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_clusters(dedup_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """The clusters table of a dedup directory (either engine's layout), in input order."""
    path = dedup_dir / CLUSTERS_FILE
    table = ds.dataset(path, format="parquet", schema=CLUSTERS_SCHEMA).to_table()
    table = table.sort_by([(S.SHARD, "ascending"), (S.ROW, "ascending")])
    return table.select(columns) if columns is not None else table
