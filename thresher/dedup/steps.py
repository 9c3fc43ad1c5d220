"""The steps of dedup that both engines share, as Arrow functions over groups of rows.

Each is a function of one call's rows (a :meth:`Frame.map_groups` call, which
holds every row of the groups it sees), so the local engine runs it once
over the whole table and Spark once per shuffle partition, with the same
result:

- :class:`LaterOccurrences`: rows whose id appeared earlier in input order
  (grouped by id); they take no part in dedup (selection drops them as
  ``duplicate_id``);
- :class:`ExactCopies`: byte-identical texts (grouped by content hash): each
  copy links to its group's first document in keeper order, the only one
  that goes on to LSH;
- :class:`KeeperKeys`: the keeper order as one binary key per row, for the
  steps that compare documents of different tables (keeper-centred clusters);
- :class:`ClusterRows`: the clusters table (grouped by keeper, or by component
  root): the keeper of each cluster, whether each member is an exact copy
  of it, and each member's similarity to it.

A document is known by its input-order key (``thresher_order``): smaller
is earlier. The keeper order (:func:`thresher.dedup.keeper.keeper_rank`)
is a total order, so a cluster's keeper never depends on how it was found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.dedup.columns import hash_array, signature_array
from thresher.dedup.keeper import KEEPER_KEY, keeper_rank, keeper_sort_key
from thresher.dedup.spec import CLUSTERS_SCHEMA, EXACT, NEAR, DedupSpec
from thresher.io import schema as S

DOC = S.ORDER
EDGES_SCHEMA = pa.schema([pa.field("src", pa.int64()), pa.field("dst", pa.int64())])
COMPONENTS_SCHEMA = pa.schema([pa.field("doc", pa.int64()), pa.field("root", pa.int64())])
LATER_SCHEMA = pa.schema([pa.field(DOC, pa.int64())])
KEEPERS_SCHEMA = pa.schema([pa.field("doc", pa.int64()), pa.field("keeper", pa.int64())])


def _docs(table: pa.Table) -> NDArray[np.int64]:
    return np.asarray(table.column(DOC).to_numpy(zero_copy_only=False), dtype=np.int64)


class LaterOccurrences:
    """Rows (of rows grouped by id) whose id appeared at an earlier input-order key."""

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return LATER_SCHEMA.empty_table()
        table = table.sort_by([(S.ID, "ascending"), (DOC, "ascending")])
        ids = table.column(S.ID).to_numpy(zero_copy_only=False)
        later = np.zeros(ids.size, dtype=bool)
        later[1:] = ids[1:] == ids[:-1]
        return pa.table({DOC: pa.array(_docs(table)[later], pa.int64())})


class ExactCopies:
    """Copies (of rows grouped by content hash) and the document each links to.

    Returns ``src`` (a copy), ``dst`` (its group's first document in keeper
    order) for every member of a group of two or more but that first one.
    """

    def __init__(self, spec: DedupSpec) -> None:
        self.spec = spec

    def __call__(self, table: pa.Table) -> pa.Table:
        column = self.spec.exact_column
        hashes, valid = hash_array(table.column(column), column)
        rows = np.flatnonzero(valid)
        if rows.size < 2:
            return EDGES_SCHEMA.empty_table()
        table, hashes = table.take(pa.array(rows)), hashes[rows]
        docs = _docs(table)
        rank = keeper_rank(table, self.spec.keeper, docs)
        order = np.lexsort((rank, hashes[:, 1], hashes[:, 0]))
        hashes, docs = hashes[order], docs[order]
        new_group = np.concatenate([[True], np.any(hashes[1:] != hashes[:-1], axis=1)])
        head = docs[np.flatnonzero(new_group)][np.cumsum(new_group) - 1]
        copies = docs != head
        return pa.table({"src": pa.array(docs[copies]), "dst": pa.array(head[copies])})


class KeeperKeys:
    """The rows with their keeper-order key (:func:`thresher.dedup.keeper.keeper_sort_key`)."""

    def __init__(self, spec: DedupSpec) -> None:
        self.spec = spec

    @staticmethod
    def schema_of(frame: Any) -> pa.Schema:
        return frame.schema.append(pa.field(KEEPER_KEY, pa.binary()))

    def __call__(self, table: pa.Table) -> pa.Table:
        key = keeper_sort_key(table, self.spec.keeper, _docs(table))
        return table.append_column(KEEPER_KEY, key)


class ClusterRows:
    """The clusters table (``CLUSTERS_SCHEMA``) of documents grouped by ``root``.

    Input rows: ``doc``, ``root``, ``id``, positions, the content hash, the
    signature and the keeper columns. Under keeper-centred clusters ``root``
    is the keeper (its own row has ``doc == root``); under connected
    components it is the component's smallest document and the keeper is
    the first member in keeper order. A group of one document is not a
    cluster. A cluster is named by its smallest document key.
    """

    def __init__(self, spec: DedupSpec) -> None:
        self.spec = spec

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return CLUSTERS_SCHEMA.empty_table()
        docs = np.asarray(table.column("doc").to_numpy(), dtype=np.int64)
        root = np.asarray(table.column("root").to_numpy(), dtype=np.int64)
        rank = keeper_rank(table, self.spec.keeper, docs)
        if self.spec.keeper_centred:
            order = np.lexsort((rank, docs != root, root))
        else:
            order = np.lexsort((rank, root))
        table, docs, root = table.take(pa.array(order)), docs[order], root[order]
        first = np.concatenate([[True], root[1:] != root[:-1]])
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, root.size))
        size = sizes[group]
        keep_rows = size >= 2
        keeper_row = starts[group]
        hashes, has_hash = hash_array(table.column(self.spec.exact_column), self.spec.exact_column)
        identical = has_hash & has_hash[keeper_row] & np.all(hashes == hashes[keeper_row], axis=1)
        is_keeper = np.arange(root.size) == keeper_row
        not_identical = np.bincount(group, weights=~identical, minlength=starts.size)
        exact = np.where(is_keeper, not_identical[group] == 0, identical)
        signatures, _ = signature_array(
            table.column(self.spec.signature), self.spec.num_perm, self.spec.signature
        )
        similarity = np.mean(signatures == signatures[keeper_row], axis=1)
        similarity = np.where(identical | is_keeper, 1.0, similarity)
        cluster = np.minimum.reduceat(docs, starts)[group]
        ids = table.column(S.ID)
        chosen = pa.array(np.flatnonzero(keep_rows))
        return pa.table(
            {
                S.ID: ids.take(chosen).cast(pa.string()),
                S.SHARD: table.column(S.SHARD).take(chosen).cast(pa.int32()),
                S.ROW: table.column(S.ROW).take(chosen).cast(pa.int64()),
                "cluster": pa.array(cluster[keep_rows]),
                "cluster_size": pa.array(size[keep_rows].astype(np.int64)),
                "keeper": pa.array(is_keeper[keep_rows]),
                "keeper_id": ids.take(pa.array(keeper_row[keep_rows])).cast(pa.string()),
                "kind": pa.array(np.where(exact[keep_rows], EXACT, NEAR)),
                "similarity": pa.array(similarity[keep_rows], pa.float64()),
            },
            schema=CLUSTERS_SCHEMA,
        )
