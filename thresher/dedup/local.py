"""Dedup on one machine, in bounded memory: band by band, with band keys spilled to disk.

Memory grows with the number of documents, never with the number of
candidate pairs:

1. one pass over the score shards (in input order) keeps per document only
   its id, position, content hash and keeper scores; signatures go to a
   spill file and the key of each band to that band's spill file;
2. exact pass: documents with equal content hashes are linked to the first
   of them in keeper order, the only one that goes on to LSH;
3. for each band in turn: its keys (8 bytes per document) are read back and
   sorted; documents sharing a key are sorted again by the band's values
   (a bucket is an exact band value, as on Spark); buckets of two or more
   members become verified edges (``thresher.dedup.graph``; only their
   members' signatures are read), merged at once into a union-find over
   documents;
4. components of two or more documents are the clusters; each keeps its
   first member in keeper order.

References
----------
Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets", chapter 3.4.
Zhu et al., datasketch ``MinHashLSH``.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from numpy.typing import NDArray

from thresher.dedup.columns import hash_array, signature_array
from thresher.dedup.graph import bucket_edges, group_buckets, roots, shared_rows, union_edges
from thresher.dedup.keeper import keeper_rank
from thresher.dedup.lsh import band_keys, describe
from thresher.dedup.spec import CLUSTERS_FILE, CLUSTERS_SCHEMA, EXACT, NEAR, DedupSpec, doc_key
from thresher.io import schema as S
from thresher.io.files import write_parquet_atomic
from thresher.run_dir import RunDir


@dataclass
class _Documents:
    """Per-document state kept in memory (input order)."""

    table: pa.Table  # id, shard, row, keeper columns
    positions: NDArray[np.int64]  # doc keys
    hashes: NDArray[np.uint64]  # (n, 2)
    has_hash: NDArray[np.bool_]
    has_signature: NDArray[np.bool_]


def dedup_local(
    shard_indices: list[int], spec: DedupSpec, run_root: str, out_dir: str
) -> dict[str, Any]:
    """Deduplicate the scored shards of a run; write ``clusters.parquet/`` under ``out_dir``.

    Returns the summary of the run (counts and the LSH parameters).
    """
    run = RunDir(Path(run_root))
    out = Path(out_dir)
    spill = out / "_spill"
    spill.mkdir(parents=True, exist_ok=True)
    try:
        documents = _read_scores(run, sorted(shard_indices), spec, spill)
        return _cluster(documents, spec, spill, out)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _read_scores(run: RunDir, shard_indices: list[int], spec: DedupSpec, spill: Path) -> _Documents:
    """One pass over the score shards: keep small columns, spill signatures and band keys."""
    columns = list(dict.fromkeys([S.ID, S.SHARD, S.ROW, spec.exact_column, *spec.keeper_columns]))
    tables: list[pa.Table] = []
    signature_valid: list[NDArray[np.bool_]] = []
    with ExitStack() as stack:
        signature_file: BinaryIO = stack.enter_context((spill / "signatures.u32").open("wb"))
        band_files: list[BinaryIO] = [
            stack.enter_context((spill / f"band-{band:04d}.i64").open("wb"))
            for band in range(spec.bands)
        ]
        for index in shard_indices:
            shard = ds.dataset(run.scores_shard(index), format="parquet").to_table(
                columns=[*columns, spec.signature]
            )
            shard = shard.sort_by(S.ROW)
            signatures, valid = signature_array(
                shard.column(spec.signature), spec.num_perm, spec.signature
            )
            signature_file.write(signatures.tobytes())
            keys = band_keys(signatures, spec.bands, spec.rows)
            for band, handle in enumerate(band_files):
                handle.write(np.ascontiguousarray(keys[:, band]).tobytes())
            signature_valid.append(valid)
            tables.append(shard.select(columns))
            del signatures, keys, shard
    table = (
        pa.concat_tables(tables, promote_options="permissive")
        if tables
        else pa.table({c: pa.array([], pa.string()) for c in columns})
    )
    hashes, has_hash = hash_array(table.column(spec.exact_column), spec.exact_column)
    positions = doc_key(
        table.column(S.SHARD).to_numpy(zero_copy_only=False),
        table.column(S.ROW).to_numpy(zero_copy_only=False),
    )
    has_signature = np.concatenate(signature_valid) if signature_valid else np.zeros(0, dtype=bool)
    return _Documents(
        table.drop_columns([spec.exact_column]), positions, hashes, has_hash, has_signature
    )


def first_occurrences(ids: pa.ChunkedArray | pa.Array) -> NDArray[np.bool_]:
    """True for each row whose id did not appear in an earlier row."""
    n = len(ids)
    frame = pa.table({"id": ids, "position": pa.array(np.arange(n, dtype=np.int64))})
    first = frame.group_by("id", use_threads=False).aggregate([("position", "min")])
    mask = np.zeros(n, dtype=bool)
    mask[first.column("position_min").to_numpy()] = True
    return mask


def _exact_edges(
    documents: _Documents, candidates: NDArray[np.bool_], rank: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Edges from each exact copy to its group's first document in keeper order."""
    members = np.flatnonzero(candidates & documents.has_hash)
    if members.size == 0:
        return members, members
    hashes = documents.hashes[members]
    order = np.lexsort((rank[members], hashes[:, 1], hashes[:, 0]))
    members, hashes = members[order], hashes[order]
    new_group = np.concatenate([[True], np.any(hashes[1:] != hashes[:-1], axis=1)])
    head = members[np.flatnonzero(new_group)][np.cumsum(new_group) - 1]
    copies = members != head
    return head[copies], members[copies]


def _cluster(documents: _Documents, spec: DedupSpec, spill: Path, out: Path) -> dict[str, Any]:
    n = documents.table.num_rows
    eligible = first_occurrences(documents.table.column(S.ID))
    rank = keeper_rank(documents.table, spec.keeper, documents.positions)
    parent = np.arange(n, dtype=np.int64)

    exact_sources = exact_targets = np.zeros(0, dtype=np.int64)
    lsh_members = eligible & documents.has_signature
    if spec.exact:
        exact_sources, exact_targets = _exact_edges(documents, eligible, rank)
        union_edges(parent, exact_sources, exact_targets)
        lsh_members[exact_targets] = False
    candidates = np.flatnonzero(lsh_members)

    signatures = (
        np.memmap(spill / "signatures.u32", dtype=np.uint32, mode="r", shape=(n, spec.num_perm))
        if n and candidates.size
        else np.zeros((1, spec.num_perm), dtype=np.uint32)
    )
    n_compared = n_edges = n_bucketed = 0
    for band in range(spec.bands):
        keys = np.fromfile(spill / f"band-{band:04d}.i64", dtype=np.int64)[candidates]
        buckets, docs = _buckets(keys, candidates, signatures, band, spec.rows)
        n_bucketed += int(docs.size)
        if docs.size:
            unique_docs, rows = np.unique(docs, return_inverse=True)
            band_signatures = np.ascontiguousarray(signatures[unique_docs])
        else:
            rows = np.zeros(0, dtype=np.int64)
            band_signatures = np.zeros((1, spec.num_perm), dtype=np.uint32)
        sources, targets, compared = bucket_edges(
            np.zeros(docs.size, dtype=np.int64),
            buckets,
            docs,
            rows,
            band_signatures,
            spec.threshold,
            spec.verify,
        )
        union_edges(parent, sources, targets)
        n_compared += compared
        n_edges += int(sources.size)
    del signatures

    table = _clusters_table(documents, rank, roots(parent))
    write_parquet_atomic(table, out / CLUSTERS_FILE / "part-00000.parquet")
    keepers = int(pc.sum(table.column("keeper").cast(pa.int64())).as_py() or 0)
    return {
        "engine": "local",
        "documents": n,
        "eligible": int(eligible.sum()),
        "with_signature": int((eligible & documents.has_signature).sum()),
        "exact_copies": int(exact_targets.size),
        "lsh": describe(spec.threshold, spec.bands, spec.rows).to_dict(),
        "bucketed_rows": n_bucketed,
        "comparisons": n_compared,
        "near_edges": n_edges,
        "clusters": keepers,
        "clustered_documents": table.num_rows,
        "duplicates": table.num_rows - keepers,
    }


def _buckets(
    keys: NDArray[np.int64],
    docs: NDArray[np.int64],
    signatures: NDArray[np.uint32],
    band: int,
    rows: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Bucket number and document of every row of a bucket of two or more (one band).

    Documents are first sorted by their 64-bit band key; only those sharing
    a key have their band's values read, and the buckets are the exact band
    values (``graph.group_buckets``, as on Spark).
    """
    order = np.lexsort((docs, keys))
    keys, docs = keys[order], docs[order]
    shared = shared_rows(keys)
    keys, docs = keys[shared], docs[shared]
    values = (
        np.asarray(signatures[docs, band * rows : (band + 1) * rows])
        if docs.size
        else np.zeros((0, rows), dtype=np.uint32)
    )
    buckets, index = group_buckets([keys, *values.T], docs)
    return buckets, docs[index]


def _clusters_table(
    documents: _Documents, rank: NDArray[np.int64], root: NDArray[np.int64]
) -> pa.Table:
    """One row per document of a cluster of two or more, in input order."""
    sizes = np.bincount(root, minlength=root.size) if root.size else np.zeros(0, dtype=np.int64)
    members = np.flatnonzero(sizes[root] >= 2)
    if members.size == 0:
        return CLUSTERS_SCHEMA.empty_table()
    member_root = root[members]
    order = np.lexsort((rank[members], member_root))
    first = np.concatenate([[True], member_root[order][1:] != member_root[order][:-1]])
    keeper_of_root = np.zeros(root.size, dtype=np.int64)
    keeper_of_root[member_root[order][first]] = members[order][first]
    keeper = keeper_of_root[member_root]
    hashes, has_hash = documents.hashes, documents.has_hash
    identical = (
        has_hash[members] & has_hash[keeper] & np.all(hashes[members] == hashes[keeper], axis=1)
    )
    not_identical = np.bincount(member_root, weights=~identical, minlength=root.size)
    is_keeper = members == keeper
    exact = np.where(is_keeper, not_identical[member_root] == 0, identical)
    ids = documents.table.column(S.ID)
    return pa.table(
        {
            S.ID: ids.take(pa.array(members)),
            S.SHARD: documents.table.column(S.SHARD).take(pa.array(members)).cast(pa.int32()),
            S.ROW: documents.table.column(S.ROW).take(pa.array(members)).cast(pa.int64()),
            "cluster": pa.array(documents.positions[member_root]),
            "cluster_size": pa.array(sizes[member_root].astype(np.int64)),
            "keeper": pa.array(is_keeper),
            "keeper_id": ids.take(pa.array(keeper)),
            "kind": pa.array(np.where(exact, EXACT, NEAR)),
        },
        schema=CLUSTERS_SCHEMA,
    )
