"""Duplicate graph: verified candidate edges inside LSH buckets, keepers, union-find.

Both engines call :func:`bucket_edges` on the members of each bucket (rows
sorted by band, key, then keeper rank or document), so they link the same
pairs. Duplicate clusters are keeper-centred (:func:`greedy_keepers`: every
dropped document is linked to its own keeper; Spark finds the same keepers
in rounds) or the connected components of the edges plus the exact-copy
edges (union-find here, large-star / small-star on Spark).

Inside a bucket (all members agree on one band), edges come from *anchor
rounds*: the first pending member (the best in keeper order under
keeper-centred clusters, else the smallest document key) is the anchor;
every other pending member whose signature-estimated Jaccard with the
anchor reaches the threshold is linked to it; those that do not form the
pending list of the next round. Without verification the first round
links every member to the anchor (a star). A bucket of ``m`` members costs
at most ``m`` comparisons per round and the edges are a pure function of
the bucket, so the result depends neither on engine nor on partitioning.

References
----------
Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets", chapter 3.4.
Tarjan, "Efficiency of a Good But Not Linear Set Union Algorithm", 1975.
Blelloch, Fineman and Shun, "Greedy Sequential Maximal Independent Set and
Matching are Parallel on Average", SPAA 2012.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numpy.typing import NDArray


@nb.njit(cache=True)
def _similar(signatures: NDArray[np.uint32], i: int, j: int, needed: float) -> bool:
    equal = 0
    for p in range(signatures.shape[1]):
        if signatures[i, p] == signatures[j, p]:
            equal += 1
    return equal >= needed


@nb.njit(cache=True)
def _bucket_edges(
    bands: NDArray[np.int64],
    keys: NDArray[np.int64],
    docs: NDArray[np.int64],
    signature_rows: NDArray[np.int64],
    signatures: NDArray[np.uint32],
    threshold: float,
    verify: bool,
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    n = docs.shape[0]
    sources = np.empty(n, dtype=np.int64)
    targets = np.empty(n, dtype=np.int64)
    pending = np.empty(n, dtype=np.int64)
    needed = threshold * signatures.shape[1]
    n_edges = 0
    n_compared = 0
    start = 0
    while start < n:
        end = start + 1
        while end < n and keys[end] == keys[start] and bands[end] == bands[start]:
            end += 1
        size = end - start
        for k in range(size):
            pending[k] = start + k
        while size >= 2:
            anchor = pending[0]
            kept = 0
            for k in range(1, size):
                member = pending[k]
                linked = True
                if verify:
                    n_compared += 1
                    linked = _similar(
                        signatures, signature_rows[anchor], signature_rows[member], needed
                    )
                if linked:
                    sources[n_edges] = docs[anchor]
                    targets[n_edges] = docs[member]
                    n_edges += 1
                else:
                    pending[kept] = member
                    kept += 1
            size = kept
        start = end
    return sources[:n_edges], targets[:n_edges], n_compared


def bucket_edges(
    bands: NDArray[np.int64],
    keys: NDArray[np.int64],
    docs: NDArray[np.int64],
    signature_rows: NDArray[np.int64],
    signatures: NDArray[np.uint32],
    threshold: float,
    verify: bool,
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Edges ``(anchor, member)`` of every bucket (see module docstring).

    Parameters
    ----------
    bands, keys, docs : (n,) int64
        Band number, band key and document key of each row, sorted by
        ``(band, key, doc)``; a bucket is a run of equal ``(band, key)``.
    signature_rows : (n,) int64
        Row of ``signatures`` holding each row's signature.
    signatures : (m, num_perm) uint32
    threshold : float
        A pair is linked when the fraction of equal signature values is at
        least ``threshold`` (datasketch's ``jaccard``).
    verify : bool
        Check that fraction; without it every bucket becomes a star.

    Returns
    -------
    sources, targets : (e,) int64
        Document keys of the linked pairs.
    n_compared : int
        Signature comparisons made.
    """
    return _bucket_edges(
        np.ascontiguousarray(bands, dtype=np.int64),
        np.ascontiguousarray(keys, dtype=np.int64),
        np.ascontiguousarray(docs, dtype=np.int64),
        np.ascontiguousarray(signature_rows, dtype=np.int64),
        signatures,
        float(threshold),
        bool(verify),
    )


def _same_as_previous(columns: list[NDArray[Any]]) -> NDArray[np.bool_]:
    """For rows 1..n-1 of a sorted table: equal to the previous row in every column."""
    same = np.ones(max(columns[0].size - 1, 0), dtype=bool)
    for column in columns:
        same &= column[1:] == column[:-1]
    return same


def shared_rows(*columns: NDArray[Any]) -> NDArray[np.bool_]:
    """Rows of a table sorted by ``columns`` whose values equal a neighbour's in all of them."""
    same = _same_as_previous(list(columns))
    shared = np.zeros(columns[0].size, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    return shared


def group_buckets(
    columns: list[NDArray[Any]], within: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Buckets of two or more rows with equal ``columns`` (band, key, the band's values).

    Returns the bucket number of each kept row and the kept rows' indices,
    sorted by bucket then ``within`` (the order of a bucket's members, whose
    first pending member anchors each round: the document key, or the
    keeper rank): the input :func:`bucket_edges` expects. Both engines group
    with this function, so a 64-bit key collision never merges two buckets
    on either (the band's values are among the columns).
    """
    if within.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((within, *reversed(columns)))
    ordered = [c[order] for c in columns]
    kept = shared_rows(*ordered)
    order = order[kept]
    ordered = [c[kept] for c in ordered]
    new = np.ones(order.size, dtype=bool)
    new[1:] = ~_same_as_previous(ordered)
    return np.cumsum(new) - 1, order


@nb.njit(cache=True)
def _find(parent: NDArray[np.int64], node: int) -> int:
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving
        node = parent[node]
    return node


@nb.njit(cache=True)
def union_edges(
    parent: NDArray[np.int64], sources: NDArray[np.int64], targets: NDArray[np.int64]
) -> None:
    """Merge the components of each edge; the smaller index becomes the root."""
    for e in range(sources.shape[0]):
        a = _find(parent, sources[e])
        b = _find(parent, targets[e])
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b


@nb.njit(cache=True)
def _greedy_keepers(
    rank: NDArray[np.int64], starts: NDArray[np.int64], neighbours: NDArray[np.int64]
) -> NDArray[np.int64]:
    n = rank.shape[0]
    order = np.argsort(rank)
    keeper = np.full(n, -1, dtype=np.int64)
    for node in order:
        if keeper[node] != -1:
            continue  # claimed by a better keeper
        keeper[node] = node
        for k in range(starts[node], starts[node + 1]):
            other = neighbours[k]
            if keeper[other] == -1:
                keeper[other] = node
    return keeper


def greedy_keepers(
    rank: NDArray[np.int64], sources: NDArray[np.int64], targets: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Keeper-centred clusters: the keeper (node index) of every node of a graph.

    In ``rank`` order (smallest first), a node nobody has claimed becomes a
    keeper and claims every unclaimed neighbour. So every node is its own
    keeper or a neighbour of its keeper (never linked to it through a
    chain), each claimed node belongs to its best-ranked keeper neighbour,
    and the keepers are the lexicographically first maximal independent set
    in ``rank`` order, which Spark finds in rounds of local minima
    (:func:`thresher.dedup.spark.keeper_assignment`).

    ``sources``/``targets`` are node indices (``0 .. len(rank) - 1``) of the
    undirected edges; ``rank`` holds distinct values.
    """
    n = rank.shape[0]
    both_from = np.concatenate([sources, targets]).astype(np.int64)
    both_to = np.concatenate([targets, sources]).astype(np.int64)
    order = np.argsort(both_from, kind="stable")
    starts = np.searchsorted(both_from[order], np.arange(n + 1)).astype(np.int64)
    return _greedy_keepers(np.asarray(rank, dtype=np.int64), starts, both_to[order])


@nb.njit(cache=True)
def roots(parent: NDArray[np.int64]) -> NDArray[np.int64]:
    """Root (smallest index) of every node's component."""
    out = np.empty(parent.shape[0], dtype=np.int64)
    for node in range(parent.shape[0]):
        out[node] = _find(parent, node)
    return out
