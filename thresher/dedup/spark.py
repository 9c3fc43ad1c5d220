"""The engine-specific parts of dedup on Spark: LSH candidate pairs and connected components.

Functions of Spark DataFrames; :class:`thresher.engines.spark.SparkEngine`
wraps them into frames. Nothing but small statistics reaches the driver:

- :func:`near_duplicate_edges`: band keys where the signatures are, moved by
  a vectorised shuffle (:func:`_bucketed_rows`); rows whose band key another
  row shares get their signatures joined in and become buckets (exact band
  values, :func:`thresher.dedup.graph.group_buckets`) and verified edges
  (``mapInArrow`` over partitions sorted by band, key, document, running the
  same :func:`thresher.dedup.graph.bucket_edges` as the local engine),
  contracted to stars per partition;
- :func:`connected_components`: the large-star / small-star iteration, each
  round's edges written through thresher's filesystem layer and read back
  (a durable checkpoint that cuts the lineage, on any store).

The rest of dedup (first occurrences, exact copies, keepers, the clusters
table) is shared with the local engine (:mod:`thresher.dedup.steps`).

References
----------
Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014
(large-star / small-star).
Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets", chapter 3.4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.dedup.columns import signature_array
from thresher.dedup.graph import (
    bucket_edges,
    greedy_keepers,
    group_buckets,
    roots,
    shared_rows,
    union_edges,
)
from thresher.dedup.keeper import KEEPER_KEY
from thresher.dedup.lsh import band_keys
from thresher.dedup.spec import DedupSpec
from thresher.errors import ThresherError
from thresher.io import schema as S

_EDGES = "src long, dst long"
_BLOBS = "part int, band binary, key binary, doc binary"
_BLOBS_ARROW = pa.schema(
    [("part", pa.int32()), ("band", pa.binary()), ("key", pa.binary()), ("doc", pa.binary())]
)
_BAND_ROWS = "band int, key long, doc long"
_BAND_ROWS_ARROW = pa.schema([("band", pa.int32()), ("key", pa.int64()), ("doc", pa.int64())])
_MAX_ROUNDS = 200
#: Keeper rounds stop and the driver finishes the greedy once the undecided graph has at
#: most this many (directed) edges: about 20 MB on the driver, whatever the corpus.
_DRIVER_EDGES = 200_000
_BAND_ROWS_PER_PARTITION = 4_000_000  # (band, key, doc): 20 bytes a row, about 80 MB
#: The signatures of the bucketed documents are picked from the members by broadcasting
#: their keys (about 50 MB in the hash table at this many) rather than by shuffling every
#: member's signature.
_BROADCAST_DOCS = 2_000_000


def near_duplicate_edges(spark: Any, members: Any, spec: DedupSpec) -> tuple[Any, dict[str, Any]]:
    """Verified LSH edges among ``members`` (``thresher_order``, signature).

    ``members`` is a Spark DataFrame; the edges come back as a persisted
    DataFrame of ``EDGES_SCHEMA`` (the caller releases it), with the counts
    of bucketed rows and edges.
    """
    from pyspark.sql import functions as F

    columns = ["doc", spec.signature] + ([KEEPER_KEY] if spec.keeper_centred else [])
    # Not persisted: the members are a filter of the caller's cached rows, read twice here.
    df = members.withColumnRenamed(S.ORDER, "doc").select(*columns)
    n_members = int(df.count())
    bucketed = _bucketed_rows(df, spec, n_members).persist()
    wanted = bucketed.select("doc").distinct().persist()
    try:
        n_bucketed = int(bucketed.count())
        if int(wanted.count()) <= _BROADCAST_DOCS:  # the members' rows stay where they are
            signatures = df.join(F.broadcast(wanted), "doc", "left_semi")
        else:
            signatures = df.join(wanted, "doc", "left_semi")
        edges = _verified_edges(bucketed.join(signatures, "doc"), spec, spark).persist()
        n_edges = int(edges.count())
    finally:
        wanted.unpersist()
        bucketed.unpersist()
    return edges, {"bucketed_rows": n_bucketed, "near_edges": n_edges}


def _bucketed_rows(members: Any, spec: DedupSpec, n_members: int) -> Any:
    """``(band, key, doc)`` of every row whose (band, 64-bit band key) another row shares.

    A vectorised shuffle: where the signatures are, numpy computes the band
    keys (:func:`thresher.dedup.lsh.band_keys`, as the local engine) and
    packs the rows bound for each shuffle partition into one binary row;
    Spark moves those few large rows; each partition unpacks its arrays and
    finds the shared keys with a numpy sort. The JVM never handles the
    ``documents x bands`` rows one by one. The number of shuffle partitions
    follows the data (about :data:`_BAND_ROWS_PER_PARTITION` band rows each,
    at least one per core), not ``spark.sql.shuffle.partitions``: each
    partition is a Python task, and 200 of them cost seconds on a small corpus.
    """
    bands, rows, num_perm, signature = spec.bands, spec.rows, spec.num_perm, spec.signature
    parallelism = int(members.sparkSession.sparkContext.defaultParallelism)
    partitions = max(1, parallelism, -(-n_members * bands // _BAND_ROWS_PER_PARTITION))

    def route(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            matrix, _ = signature_array(batch.column(1), num_perm, signature)
            keys = band_keys(matrix, bands, rows).reshape(-1)
            docs = np.repeat(batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64), bands)
            band = np.tile(np.arange(bands, dtype=np.int32), batch.num_rows)
            target = (keys.view(np.uint64) % np.uint64(partitions)).astype(np.int64)
            order = np.argsort(target, kind="stable")
            bounds = np.searchsorted(target[order], np.arange(partitions + 1))
            parts = [p for p in range(partitions) if bounds[p + 1] > bounds[p]]
            slices = [order[bounds[p] : bounds[p + 1]] for p in parts]
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(parts, pa.int32()),
                    pa.array([band[i].tobytes() for i in slices], pa.binary()),
                    pa.array([keys[i].tobytes() for i in slices], pa.binary()),
                    pa.array([docs[i].tobytes() for i in slices], pa.binary()),
                ],
                names=["part", "band", "key", "doc"],
            )

    def shared(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        blobs = pa.Table.from_batches(list(batches), schema=_BLOBS_ARROW)
        band, key, doc = (
            np.frombuffer(b"".join(blobs.column(name).to_pylist()), dtype=dtype)
            for name, dtype in (("band", np.int32), ("key", np.int64), ("doc", np.int64))
        )
        order = np.lexsort((doc, key, band))
        band, key, doc = band[order], key[order], doc[order]
        kept = shared_rows(band, key)
        yield pa.RecordBatch.from_arrays(
            [pa.array(band[kept]), pa.array(key[kept]), pa.array(doc[kept])],
            schema=_BAND_ROWS_ARROW,
        )

    return (
        members.select("doc", signature)
        .mapInArrow(route, _BLOBS)
        .repartition(partitions, "part")
        .mapInArrow(shared, _BAND_ROWS)
    )


def _verified_edges(bucketed: Any, spec: DedupSpec, spark: Any) -> Any:
    """Edges of every bucket (``graph.bucket_edges``) over partitions sorted by band, key, doc."""
    values = (spec.num_perm, spec.rows, spec.signature, spec.threshold, spec.verify)
    signature = spec.signature
    keeper_centred = spec.keeper_centred

    def to_edges(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pending: pa.Table | None = None
        found: list[tuple[NDArray[np.int64], NDArray[np.int64]]] = []
        for batch in batches:
            table = pa.Table.from_batches([batch])
            if pending is not None:
                table = pa.concat_tables([pending, table])
            cut = _last_bucket_start(table)
            if cut > 0:
                found.append(_edges_of(table.slice(0, cut), values))
            pending = table.slice(cut)
        if pending is not None and pending.num_rows:
            found.append(_edges_of(pending, values))
        yield _as_edges(found) if keeper_centred else _as_stars(found)

    partitions = max(1, int(spark.sparkContext.defaultParallelism))
    return (
        bucketed.repartition(partitions, "band", "key")
        .sortWithinPartitions("band", "key", "doc")
        .select("band", "key", "doc", signature, *([KEEPER_KEY] if keeper_centred else []))
        .mapInArrow(to_edges, _EDGES)
    )


def _last_bucket_start(table: pa.Table) -> int:
    """Start of the last (band, key) run of a sorted table: rows before it are complete."""
    if table.num_rows == 0:
        return 0
    bands = table.column("band").to_numpy()
    keys = table.column("key").to_numpy()
    different = np.flatnonzero((bands != bands[-1]) | (keys != keys[-1]))
    return int(different[-1]) + 1 if different.size else 0


def _edges_of(
    table: pa.Table, spec_values: tuple[int, int, str, float, bool]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Verified edges of the complete buckets in ``table`` (band, key, doc, signature)."""
    num_perm, rows, signature, threshold, verify = spec_values
    bands = table.column("band").to_numpy().astype(np.int64)
    keys = table.column("key").to_numpy()
    docs = table.column("doc").to_numpy()
    matrix, valid = signature_array(table.column(signature), num_perm, signature)
    if not valid.all():
        raise ThresherError(f"dedup: a bucketed document lost its {signature!r} signature")
    positions = np.arange(table.num_rows, dtype=np.int64)
    values = matrix[positions[:, None], bands[:, None] * rows + np.arange(rows)]
    within = docs
    if KEEPER_KEY in table.column_names:  # the best member anchors its bucket
        within = np.empty(table.num_rows, dtype=np.int64)
        within[np.asarray(pc.sort_indices(table.column(KEEPER_KEY)))] = positions
    buckets, order = group_buckets([bands, keys, *values.T], within)
    zeros = np.zeros(order.size, dtype=np.int64)
    sources, targets, _ = bucket_edges(
        zeros, buckets, docs[order], order, matrix, threshold, verify
    )
    return sources, targets


def _as_edges(edges: list[tuple[NDArray[np.int64], NDArray[np.int64]]]) -> pa.RecordBatch:
    """The verified edges of one partition as they are (keeper-centred clusters need each one)."""
    sources = np.concatenate([s for s, _ in edges] or [np.zeros(0, dtype=np.int64)])
    targets = np.concatenate([t for _, t in edges] or [np.zeros(0, dtype=np.int64)])
    return pa.RecordBatch.from_arrays([pa.array(sources), pa.array(targets)], names=["src", "dst"])


def _as_stars(edges: list[tuple[NDArray[np.int64], NDArray[np.int64]]]) -> pa.RecordBatch:
    """The edges of one partition contracted to stars around each local component's minimum.

    Same components, far fewer large-star / small-star rounds afterwards.
    """
    sources = np.concatenate([s for s, _ in edges] or [np.zeros(0, dtype=np.int64)])
    targets = np.concatenate([t for _, t in edges] or [np.zeros(0, dtype=np.int64)])
    nodes, index = np.unique(np.concatenate([sources, targets]), return_inverse=True)
    parent = np.arange(nodes.size, dtype=np.int64)
    union_edges(parent, index[: sources.size], index[sources.size :])
    root = roots(parent)
    leaves = np.flatnonzero(root != np.arange(nodes.size))
    return pa.RecordBatch.from_arrays(
        [pa.array(nodes[leaves]), pa.array(nodes[root[leaves]])], names=["src", "dst"]
    )


def connected_components(edges: Any, checkpoint: Callable[[Any, str], Any]) -> Any:
    """``(doc, root)`` for every node of ``edges``; ``root`` is its component's smallest node.

    Alternates large-star and small-star (Kiveris et al. 2014) until the
    edges form stars around each component's minimum (O(log^2 n) rounds at
    most; none or one for the star-like graphs of duplicates). ``edges`` is
    a Spark DataFrame of ``EDGES_SCHEMA``; the input edges and each round's
    edges go through ``checkpoint(df, name)``, which writes them under a
    scratch directory and reads them back, a durable checkpoint that keeps
    the plan short. Returns a DataFrame of ``COMPONENTS_SCHEMA``.
    """
    from pyspark.sql import functions as F

    normalised = (
        edges.filter(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst"))
        .distinct()
    )
    current = checkpoint(normalised, "edges")
    for round_number in range(_MAX_ROUNDS + 1):
        if _is_star_forest(current):
            centres = current.select(F.col("dst").alias("doc"), F.col("dst").alias("root"))
            leaves = current.select(F.col("src").alias("doc"), F.col("dst").alias("root"))
            return leaves.unionByName(centres.distinct())
        current = checkpoint(_small_star(_large_star(current)), f"round-{round_number:03d}")
    raise ThresherError(f"dedup: connected components did not converge in {_MAX_ROUNDS} rounds")


def _large_star(edges: Any) -> Any:
    """Link every node's larger neighbours to the smallest node of its closed neighbourhood.

    Returns edges ``(src, dst)`` with ``src > dst`` (possibly repeated).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    both = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        edges.select(F.col("dst").alias("u"), F.col("src").alias("v"))
    )
    smallest = F.least(F.min("v").over(Window.partitionBy("u")), F.col("u"))
    return (
        both.withColumn("m", smallest)
        .filter(F.col("v") > F.col("u"))
        .select(F.col("v").alias("src"), F.col("m").alias("dst"))
    )


def _small_star(edges: Any) -> Any:
    """Link every node and its smaller neighbours to the smallest of them (``src > dst`` in)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    linked = edges.withColumn("m", F.min("dst").over(Window.partitionBy("src")))
    return (
        linked.select(F.col("dst").alias("src"), F.col("m").alias("dst"))
        .unionByName(linked.select("src", F.col("m").alias("dst")))
        .filter(F.col("src") != F.col("dst"))
        .distinct()
    )


def _is_star_forest(edges: Any) -> bool:
    """True when every node has one smaller neighbour at most and no centre is a leaf."""
    from pyspark.sql import functions as F

    nodes = edges.select(
        F.col("src").alias("node"), F.lit(1).alias("leaf"), F.lit(0).alias("centre")
    ).unionByName(
        edges.select(F.col("dst").alias("node"), F.lit(0).alias("leaf"), F.lit(1).alias("centre"))
    )
    bad = (
        nodes.groupBy("node")
        .agg(F.sum("leaf").alias("leaf"), F.max("centre").alias("centre"))
        .filter((F.col("leaf") > 1) | ((F.col("leaf") >= 1) & (F.col("centre") == 1)))
    )
    return len(bad.limit(1).collect()) == 0


def keeper_assignment(
    edges: Any,
    keys: Any,
    checkpoint: Callable[[Any, str], Any],
    driver_edges: int = _DRIVER_EDGES,
) -> Any:
    """``(doc, keeper)`` of every node of ``edges`` that a better-ranked neighbour claims.

    The same result as the greedy in keeper order on one machine
    (:func:`thresher.dedup.graph.greedy_keepers`), found in rounds of joins
    (Blelloch, Fineman and Shun 2012): a node whose key is smaller than
    every undecided neighbour's is a keeper; its neighbours are claimed;
    both leave the graph. Once at most ``driver_edges`` undecided edges are
    left, the driver runs the greedy on them (the keepers of the rest of the
    graph do not depend on the decided part). No task ever holds a whole
    component: a templated cluster of a million members costs a few rounds.
    Then each claimed node goes to its best-ranked keeper neighbour.
    ``keys``: ``thresher_order`` and the binary ``thresher_keeper_key``.
    """
    from pyspark.sql import functions as F

    pairs = (
        edges.filter(F.col("src") != F.col("dst"))
        .select(F.least("src", "dst").alias("a"), F.greatest("src", "dst").alias("b"))
        .distinct()
    )
    key = keys.select(F.col(S.ORDER).alias("node"), F.col(KEEPER_KEY).alias("key"))
    graph = checkpoint(
        pairs.select(F.col("a").alias("u"), F.col("b").alias("v"))
        .unionByName(pairs.select(F.col("b").alias("u"), F.col("a").alias("v")))
        .join(key.select(F.col("node").alias("u"), F.col("key").alias("ku")), "u")
        .join(key.select(F.col("node").alias("v"), F.col("key").alias("kv")), "v")
        .select("u", "ku", "v", "kv"),
        "graph",
    )
    current, claimed = graph, []
    for round_number in range(_MAX_ROUNDS):
        remaining = int(current.count())
        if remaining == 0:
            break
        if remaining <= driver_edges:
            claimed.append(_claimed_on_driver(current))
            break
        best = current.groupBy("u").agg(F.min("ku").alias("ku"), F.min("kv").alias("m"))
        keepers = best.filter(F.col("ku") < F.col("m")).select(F.col("u").alias("node"))
        dropped = checkpoint(
            current.join(keepers.withColumnRenamed("node", "u"), "u", "left_semi")
            .select(F.col("v").alias("node"))
            .distinct(),
            f"claimed-{round_number:03d}",
        )
        claimed.append(dropped)
        decided = keepers.unionByName(dropped)
        current = checkpoint(
            current.join(decided.withColumnRenamed("node", "u"), "u", "left_anti").join(
                decided.withColumnRenamed("node", "v"), "v", "left_anti"
            ),
            f"undecided-{round_number:03d}",
        )
    else:
        raise ThresherError(f"dedup: keeper clusters did not converge in {_MAX_ROUNDS} rounds")
    if not claimed:
        return graph.sparkSession.createDataFrame([], "doc long, keeper long")
    all_claimed = claimed[0]
    for part in claimed[1:]:
        all_claimed = all_claimed.unionByName(part)
    all_claimed = all_claimed.distinct()
    return (
        graph.join(all_claimed.withColumnRenamed("node", "v"), "v", "left_semi")
        .join(all_claimed.withColumnRenamed("node", "u"), "u", "left_anti")
        .groupBy("v")
        .agg(F.min(F.struct("ku", "u")).alias("best"))
        .select(F.col("v").alias("doc"), F.col("best.u").alias("keeper"))
    )


def _claimed_on_driver(current: Any) -> Any:
    """The nodes claimed by the greedy on the undecided edges, collected to the driver."""
    table = current.toArrow()
    u = table.column("u").to_numpy().astype(np.int64)
    v = table.column("v").to_numpy().astype(np.int64)
    nodes, index = np.unique(np.concatenate([u, v]), return_inverse=True)
    first = np.unique(index[: u.size], return_index=True)[1]  # every node is some row's ``u``
    node_keys = table.column("ku").take(pa.array(first))
    rank = np.empty(nodes.size, dtype=np.int64)
    rank[np.asarray(pc.sort_indices(node_keys))] = np.arange(nodes.size)
    keeper = greedy_keepers(rank, index[: u.size], index[u.size :])
    claimed = nodes[keeper != np.arange(nodes.size)]
    return current.sparkSession.createDataFrame(
        pa.table({"node": pa.array(claimed, pa.int64())}).to_pandas(), "node long"
    )
