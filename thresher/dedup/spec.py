"""What a dedup run needs (engine-independent) and the table it produces.

The clusters table (Parquet files under ``RUN_DIR/dedup/<result>/clusters/``,
named by ``RUN_DIR/dedup/summary.json``, which is written last) has one row
per document in a duplicate cluster of two or more. Its stable name is
``RUN_DIR/dedup/clusters/``: on a local disk a link that is moved to the
current result's ``clusters/`` once the summary names it (the way
``RUN_DIR/data`` follows ``CURRENT``); on any store the summary's
``clusters_dir`` and ``files`` entries name the current directory and files.
A result without duplicates holds one empty file, so readers always find
the columns:

========== ======= ==========================================================
column     type    meaning
========== ======= ==========================================================
id         string  document id
thresher_shard int32 input position
thresher_row   int64
cluster    int64   the input-order key (``thresher.keys.order_key``) of the cluster's first document
cluster_size int64 documents in the cluster
keeper     bool    the one document of the cluster that is kept
keeper_id  string  id of the cluster's keeper
kind       string ``exact``: byte-identical to the keeper (for the keeper: every
                   member is); ``near``: a near-duplicate
similarity float64 the fraction of equal MinHash values with the keeper (the
                   signature's Jaccard estimate); 1.0 for the keeper and exact copies
========== ======= ==========================================================

Which documents take part: every ingested row except a repeated id (the
select stage drops those first, as ``duplicate_id``). A row without a
signature (no shingle after normalisation) takes part in the exact pass
only.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from thresher.io import schema as S
from thresher.io.files import read_json_or, read_parquet_files

if TYPE_CHECKING:
    from thresher.io.fs import Location
    from thresher.run_dir import RunDir

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
        pa.field("similarity", pa.float64(), nullable=False),
    ]
)
SUMMARY_FILE = "summary.json"
#: The stable name of the current clusters table under ``RUN_DIR/dedup/`` (a local link).
CLUSTERS_LINK = "clusters"
EXACT, NEAR = "exact", "near"
#: The cluster rules: keeper-centred (the default) or connected components.
KEEPER_CENTRED, COMPONENTS = "keeper", "components"


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
    clusters: str = KEEPER_CENTRED
    warn_cluster_share: float = 0.01

    @property
    def keeper_centred(self) -> bool:
        """Whether a document is dropped only as a verified neighbour of its own keeper."""
        return self.clusters == KEEPER_CENTRED

    @property
    def exact_column(self) -> str:
        return f"{self.signature}_exact"

    @property
    def keeper_columns(self) -> list[str]:
        return list(dict.fromkeys(k.column for k in self.keeper))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cluster_files(run: RunDir) -> list[Location]:
    """The files of the current clusters table, as the dedup summary names them."""
    return summary_files(run.dedup)


def summary_files(directory: Location) -> list[Location]:
    """The clusters files named by ``directory/summary.json`` (or by a summary given)."""
    summary = read_json_or(directory / SUMMARY_FILE, None)
    if summary is None:
        from thresher.errors import RunStateError

        raise RunStateError(f"{directory}: no dedup result; run the dedup stage first")
    return [directory / name for name in summary.get("files", [])]


def read_clusters(
    run: RunDir | None = None,
    columns: list[str] | None = None,
    *,
    files: list[Location] | None = None,
) -> pa.Table:
    """The whole clusters table (by cluster, then position): tests and small runs only."""
    if files is None:
        assert run is not None
        files = cluster_files(run)
    if not files:
        return (
            CLUSTERS_SCHEMA.empty_table()
            if columns is None
            else CLUSTERS_SCHEMA.empty_table().select(columns)
        )
    table = read_parquet_files(files).cast(CLUSTERS_SCHEMA)
    table = table.sort_by([("cluster", "ascending"), (S.SHARD, "ascending"), (S.ROW, "ascending")])
    return table.select(columns) if columns is not None else table


def link_clusters(directory: Location, result: str) -> None:
    """Point ``directory/clusters`` at ``directory/<result>/clusters`` (local stores only).

    Called after the summary naming ``result`` was written: a link renamed
    over a link is atomic, so a reader of the link sees the old table or
    the new one, never a mix.
    """
    if not directory.is_local:
        return
    link = os.path.join(directory.uri, CLUSTERS_LINK)
    target = os.path.join(result, CLUSTERS_LINK)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    tmp = os.path.join(directory.uri, f".{CLUSTERS_LINK}.tmp-{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    os.replace(tmp, link)
