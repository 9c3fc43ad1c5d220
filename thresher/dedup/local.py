"""The dedup kernels on one machine: LSH candidate pairs in bounded memory, union-find components.

:data:`KERNELS` (:class:`LocalKernels`) is what the ``local`` engine's
registry row names (:mod:`thresher.dedup.kernels`); it works on frames of
Arrow tables in this process (:class:`~thresher.frame.TableFrame`), so any
engine whose frames are such tables can use it.

Candidate pairs are found band by band, spilled to disk.

Memory grows with the number of documents, never with the number of
candidate pairs:

1. one pass over the members (document key and signature) writes the
   signatures to a spill file and the key of each band to that band's
   spill file (8 bytes per document and band);
2. for each band in turn: its keys are read back and sorted; documents
   sharing a key are sorted again by the band's values (a bucket is an
   exact band value, as on Spark); buckets of two or more members become
   verified edges (:func:`thresher.dedup.graph.bucket_edges`; only their
   members' signatures are read).

The edges are those Spark finds (:mod:`thresher.dedup.spark`): both call
the same bucket function on buckets sorted by band, key and document.

References
----------
Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets", chapter 3.4.
Zhu et al., datasketch ``MinHashLSH``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

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
from thresher.errors import ConfigError, ThresherError
from thresher.frame import Frame, TableFrame
from thresher.io import schema as S
from thresher.io.fs import Location

if TYPE_CHECKING:
    from thresher.engines.base import Engine


class LocalKernels:
    """Dedup kernels on frames of Arrow tables held in this process (see module docstring)."""

    def near_duplicate_edges(
        self, engine: Engine, members: Frame, spec: DedupSpec, scratch: Location
    ) -> tuple[Frame, dict[str, Any]]:
        """Band by band in bounded memory (:func:`near_duplicate_edges`)."""
        sources, targets, counters = near_duplicate_edges(
            _table_frame(engine, members)._tables(), spec, scratch
        )
        edges = pa.table({"src": pa.array(sources), "dst": pa.array(targets)})
        return TableFrame.of(edges), counters

    def connected_components(self, engine: Engine, edges: Frame, scratch: Location) -> Frame:
        """Union-find over every edge (:mod:`thresher.dedup.graph`); roots are smallest nodes."""
        table = edges.to_table(max_rows=np.iinfo(np.int64).max)
        sources = table.column("src").to_numpy().astype(np.int64)
        targets = table.column("dst").to_numpy().astype(np.int64)
        nodes, index = np.unique(np.concatenate([sources, targets]), return_inverse=True)
        parent = np.arange(nodes.size, dtype=np.int64)
        union_edges(parent, index[: sources.size], index[sources.size :])
        root = roots(parent)
        return TableFrame.of(pa.table({"doc": pa.array(nodes), "root": pa.array(nodes[root])}))

    def keeper_clusters(
        self, engine: Engine, edges: Frame, keys: Frame, scratch: Location
    ) -> Frame:
        """The greedy in keeper order over every edge (:func:`thresher.dedup.graph.greedy_keepers`)."""
        table = edges.to_table(max_rows=np.iinfo(np.int64).max)
        sources = table.column("src").to_numpy().astype(np.int64)
        targets = table.column("dst").to_numpy().astype(np.int64)
        nodes, index = np.unique(np.concatenate([sources, targets]), return_inverse=True)
        ranked = _table_frame(engine, keys).join(
            TableFrame.of(pa.table({S.ORDER: pa.array(nodes, pa.int64())})), [S.ORDER], "left_semi"
        )
        ranks = ranked.to_table(max_rows=np.iinfo(np.int64).max)
        docs = ranks.column(S.ORDER).to_numpy().astype(np.int64)
        rank_of = np.empty(docs.size, dtype=np.int64)
        rank_of[np.asarray(pc.sort_indices(ranks.column(KEEPER_KEY)))] = np.arange(docs.size)
        if docs.size != nodes.size:
            raise ThresherError("dedup: a linked document has no keeper key")
        rank = rank_of[np.argsort(docs)]  # docs sorted like ``nodes``
        keeper = nodes[greedy_keepers(rank, index[: sources.size], index[sources.size :])]
        claimed = keeper != nodes
        return TableFrame.of(
            pa.table({"doc": pa.array(nodes[claimed]), "keeper": pa.array(keeper[claimed])})
        )


#: The kernels the local engine's registry row names.
KERNELS = LocalKernels()


def _table_frame(engine: Engine, frame: Frame) -> TableFrame:
    if not isinstance(frame, TableFrame):
        raise ConfigError(
            f"engine {engine.kind!r} uses the local dedup kernels, which need frames of Arrow "
            f"tables in this process (TableFrame), not {type(frame).__name__}"
        )
    return frame


def near_duplicate_edges(
    parts: list[pa.Table], spec: DedupSpec, scratch: Location
) -> tuple[NDArray[np.int64], NDArray[np.int64], dict[str, Any]]:
    """Verified LSH edges among the members (tables of ``thresher_order`` and the signature).

    Spill files go to a local temporary directory (under ``scratch`` when it is local).
    """
    base = scratch.uri if scratch.is_local else None
    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix="thresher-lsh-", dir=base))
    try:
        docs, within = _spill(parts, spec, spill)
        return _edges(docs, within, spec, spill)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _spill(
    parts: list[pa.Table], spec: DedupSpec, spill: Path
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Spill the signatures and band keys; the members' document keys and bucket order.

    The bucket order is the keeper rank under keeper-centred clusters (the
    best member anchors a bucket), the document key otherwise.
    """
    documents: list[NDArray[np.int64]] = []
    keeper_keys: list[pa.Array] = []
    with ExitStack() as stack:
        signature_file: BinaryIO = stack.enter_context((spill / "signatures.u32").open("wb"))
        band_files: list[BinaryIO] = [
            stack.enter_context((spill / f"band-{band:04d}.i64").open("wb"))
            for band in range(spec.bands)
        ]
        for part in _slices(parts):
            signatures, _ = signature_array(
                part.column(spec.signature), spec.num_perm, spec.signature
            )
            signature_file.write(signatures.tobytes())
            keys = band_keys(signatures, spec.bands, spec.rows)
            for band, handle in enumerate(band_files):
                handle.write(np.ascontiguousarray(keys[:, band]).tobytes())
            documents.append(np.asarray(part.column(S.ORDER).to_numpy(), dtype=np.int64))
            if spec.keeper_centred:
                keeper_keys.append(part.column(KEEPER_KEY).combine_chunks())
            del signatures, keys
    docs = np.concatenate(documents) if documents else np.zeros(0, dtype=np.int64)
    if not spec.keeper_centred or not docs.size:
        return docs, docs
    rank = np.empty(docs.size, dtype=np.int64)
    rank[np.asarray(pc.sort_indices(pa.concat_arrays(keeper_keys)))] = np.arange(docs.size)
    return docs, rank


#: Rows of the members spilled at a time (their signatures are copied once per slice).
_SPILL_ROWS = 1 << 16


def _slices(parts: list[pa.Table]) -> Iterator[pa.Table]:
    """The rows of ``parts`` in slices of at most :data:`_SPILL_ROWS` (bounded copies)."""
    for part in parts:
        for start in range(0, part.num_rows, _SPILL_ROWS):
            yield part.slice(start, _SPILL_ROWS)


def _edges(
    docs: NDArray[np.int64], within: NDArray[np.int64], spec: DedupSpec, spill: Path
) -> tuple[NDArray[np.int64], NDArray[np.int64], dict[str, Any]]:
    n = docs.size
    signatures = (
        np.memmap(spill / "signatures.u32", dtype=np.uint32, mode="r", shape=(n, spec.num_perm))
        if n
        else np.zeros((1, spec.num_perm), dtype=np.uint32)
    )
    rows_of = np.arange(n, dtype=np.int64)
    found_sources, found_targets = [], []
    n_compared = n_bucketed = 0
    for band in range(spec.bands):
        keys = np.fromfile(spill / f"band-{band:04d}.i64", dtype=np.int64) if n else docs
        order = np.lexsort((within, keys))
        keys, members = keys[order], rows_of[order]
        shared = shared_rows(keys)
        keys, members = keys[shared], members[shared]
        values = (
            np.asarray(signatures[members, band * spec.rows : (band + 1) * spec.rows])
            if members.size
            else np.zeros((0, spec.rows), dtype=np.uint32)
        )
        buckets, index = group_buckets([keys, *values.T], within[members])
        members = members[index]
        n_bucketed += int(members.size)
        if members.size:
            unique, local_rows = np.unique(members, return_inverse=True)
            band_signatures = np.ascontiguousarray(signatures[unique])
        else:
            local_rows = np.zeros(0, dtype=np.int64)
            band_signatures = np.zeros((1, spec.num_perm), dtype=np.uint32)
        sources, targets, compared = bucket_edges(
            np.zeros(members.size, dtype=np.int64),
            buckets,
            docs[members],
            local_rows,
            band_signatures,
            spec.threshold,
            spec.verify,
        )
        found_sources.append(sources)
        found_targets.append(targets)
        n_compared += compared
    del signatures
    sources = np.concatenate(found_sources) if found_sources else np.zeros(0, dtype=np.int64)
    targets = np.concatenate(found_targets) if found_targets else np.zeros(0, dtype=np.int64)
    counters = {
        "bucketed_rows": n_bucketed,
        "comparisons": n_compared,
        "near_edges": int(sources.size),
    }
    return sources, targets, counters
