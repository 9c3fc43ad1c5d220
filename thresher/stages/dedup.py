"""Dedup stage: from the stored MinHash columns to ``RUN_DIR/dedup/`` (clusters and summary).

Runs after scoring and before selection, on either engine, with the same
clusters on both: the shared steps (:mod:`thresher.dedup.steps`) run as
:meth:`Frame.map_groups` calls; only the LSH candidate pairs and the
connected components are engine-specific: the engine's dedup kernels
(:func:`thresher.dedup.kernels.kernels_for`).

Its result is keyed by the dedup configuration, the scorers and the shards:
a re-run with the same configuration reuses it, a changed ``dedup``
section (or a shard added to a growing corpus) recomputes it from the
stored scores. The clusters are written under ``dedup/<result>/clusters/``;
``dedup/summary.json``, written last, names those files and is the commit:
readers trust only what it names. Then, on a local disk, the link
``dedup/clusters`` is moved to the new result (the stable name users read,
:func:`thresher.dedup.spec.link_clusters`), and the previous result's
files are deleted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.config import RunConfig
from thresher.dedup.kernels import kernels_for
from thresher.dedup.lsh import choose_bands_rows, describe
from thresher.dedup.spec import (
    CLUSTERS_LINK,
    CLUSTERS_SCHEMA,
    DedupSpec,
    KeeperKey,
    link_clusters,
)
from thresher.dedup.steps import (
    DOC,
    EDGES_SCHEMA,
    LATER_SCHEMA,
    ClusterRows,
    ExactCopies,
    LaterOccurrences,
)
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.io.files import read_schema, write_parquet_atomic
from thresher.io.fs import Location
from thresher.io.shards import order_ranks
from thresher.keys import json_digest
from thresher.run_dir import RunDir
from thresher.scorers import make_scorer
from thresher.stages.base import KeyedResult, RunContext, Stage
from thresher.stages.select import AddOrder

if TYPE_CHECKING:
    from thresher.engines.base import Engine
    from thresher.frame import Frame
    from thresher.progress import StageProgress

#: Clusters listed by size in the summary (the report's table of largest clusters).
LARGEST_CLUSTERS = 10


def dedup_spec(config: RunConfig) -> DedupSpec:
    """The engine-independent description of the configured dedup (bands and rows resolved)."""
    dedup = config.dedup
    if dedup is None:
        raise ConfigError("dedup: not configured")
    (scorer,) = [s for s in config.scorers if s.output_column == dedup.signature]
    num_perm = int(make_scorer(scorer.name, scorer.params).get_params()["num_perm"])
    if dedup.bands == "auto":
        try:
            lsh = choose_bands_rows(dedup.threshold, num_perm, dedup.min_recall)
        except ValueError as error:
            raise ConfigError(f"dedup: {error}") from None
    else:
        lsh = describe(dedup.threshold, int(dedup.bands), int(dedup.rows))
    keeper = (
        tuple(KeeperKey(k.score, k.order == "desc") for k in dedup.keeper)
        if dedup.keeper is not None
        else (KeeperKey(f"{dedup.signature}_length", descending=True),)
    )
    return DedupSpec(
        signature=dedup.signature,
        num_perm=num_perm,
        threshold=dedup.threshold,
        bands=lsh.bands,
        rows=lsh.rows,
        verify=dedup.verify,
        exact=dedup.exact,
        keeper=keeper,
    )


def dedup_basis(config: RunConfig) -> list[Any]:
    """What a dedup result depends on besides the shards: the dedup section, scorers, seed."""
    data = config.config_dict()
    return [data["dedup"], data["scorers"], data["seed"]]


def dedup_to_run(
    config: RunConfig,
    engine: Engine,
    shard_indices: list[int],
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Deduplicate the stored scores unless an identical dedup result is already there.

    Returns the summary (also ``dedup/summary.json``); ``reused`` tells
    whether it was computed now.
    """
    run = RunDir(config.run_path)
    return dedup_into(run, dedup_spec(config), dedup_basis(config), engine, shard_indices, progress)


def dedup_into(
    run: RunDir,
    spec: DedupSpec,
    basis: list[Any],
    engine: Engine,
    shard_indices: list[int],
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """:func:`dedup_to_run` from the slice of the config it needs (the spec, the key's basis)."""
    names = run.shard_names()
    key = json_digest([*basis, sorted(names[i] for i in shard_indices)])
    results = KeyedResult(run.dedup)
    stored = results.current(key)
    if stored is not None:
        named = stored.get("clusters_dir") or next(iter(stored.get("files") or []), "")
        if named:  # a run killed before the link moved: move it now
            _after_commit(run, str(named).split("/")[0])
        return {**stored, "reused": True}
    prefix = results.prefix()
    with engine.watch(progress):
        summary = deduplicate(engine, run, shard_indices, spec, prefix)
    summary = {
        **summary,
        "clusters_dir": f"{prefix.name}/{CLUSTERS_LINK}/",
        "files": [f"{prefix.name}/{name}" for name in summary["files"]],
        "key": key,
        "spec": spec.to_dict(),
    }
    results.commit(summary)
    _after_commit(run, prefix.name)
    return {**summary, "reused": False}


def _after_commit(run: RunDir, result: str) -> None:
    """Once the summary names ``result``: move the ``clusters`` link, delete other results."""
    link_clusters(run.dedup, result)
    KeyedResult(run.dedup).retire(run.dedup / result, keep=(CLUSTERS_LINK,))


def deduplicate(
    engine: Engine, run: RunDir, shard_indices: list[int], spec: DedupSpec, out: Location
) -> dict[str, Any]:
    """Find the duplicate clusters of the scored shards; write the clusters table under ``out``.

    Returns the summary: counts, the LSH parameters, cluster sizes and the
    largest clusters, and ``files``, the clusters table's files relative to
    ``out`` (what a reader must read; nothing else under ``out`` counts).
    """
    scratch = run.staging / f"dedup-{uuid.uuid4().hex[:8]}"
    try:
        return _deduplicate(engine, run, shard_indices, spec, out, scratch)
    finally:
        scratch.delete_tree()


def _deduplicate(
    engine: Engine,
    run: RunDir,
    shard_indices: list[int],
    spec: DedupSpec,
    out: Location,
    scratch: Location,
) -> dict[str, Any]:
    ranks = order_ranks(run.shard_names())
    files = [run.scores_shard(i) for i in sorted(shard_indices)]
    available = pa.unify_schemas([read_schema(f) for f in files], promote_options="permissive")
    columns = list(
        dict.fromkeys(
            [S.ID, S.SHARD, S.ROW, spec.exact_column, spec.signature, *spec.keeper_columns]
        )
    )
    schema = pa.schema([available.field(c) for c in columns] + [pa.field(DOC, pa.int64())])
    docs = engine.read(files, schema, AddOrder(ranks)).cache()
    try:
        n_documents = docs.count()
        # 1. repeated ids take no part (selection drops them as duplicate_id)
        later = docs.select([S.ID, DOC]).map_groups([S.ID], LaterOccurrences(), LATER_SCHEMA)
        eligible = docs.join(later, [DOC], "left_anti").cache()
        meta_columns = [c for c in schema.names if c != spec.signature]
        meta = eligible.select(meta_columns)
        members = eligible.map_batches(_Present(spec.signature), eligible.schema)
        counts = {"eligible": eligible.count(), "with_signature": members.count()}
        # 2. exact copies link to their group's first in keeper order; only it goes on to LSH
        edges, n_exact, members = _link_exact_copies(meta, members, spec)
        # 3. LSH buckets of two or more members, verified edges
        near, counters = kernels_for(engine).near_duplicate_edges(
            engine, members.select([DOC, spec.signature]), spec, scratch
        )
        edges = near if edges is None else edges.union(near)
        # 4. connected components, then the clusters table with keepers
        written, cluster_stats = _write_clusters(engine, edges, meta, spec, out, scratch)
    finally:
        docs.release()
    return {
        "documents": int(n_documents),
        "eligible": int(counts["eligible"]),
        "with_signature": int(counts["with_signature"]),
        "exact_copies": int(n_exact),
        "lsh": describe(spec.threshold, spec.bands, spec.rows).to_dict(),
        **counters,
        **cluster_stats,
        "engine": engine.kind,
        "files": [f.relative_to(out) for f in written],
    }


def _link_exact_copies(
    meta: Frame, members: Frame, spec: DedupSpec
) -> tuple[Frame | None, int, Frame]:
    """Edges from each exact copy to its group's first, and the members left for LSH."""
    if not spec.exact:
        return None, 0, members
    copies = meta.map_groups([spec.exact_column], ExactCopies(spec), EDGES_SCHEMA).cache()
    later_copies = copies.map_batches(lambda t: pa.table({DOC: t.column("src")}), LATER_SCHEMA)
    return copies, copies.count(), members.join(later_copies, [DOC], "left_anti")


def _write_clusters(
    engine: Engine, edges: Frame, meta: Frame, spec: DedupSpec, out: Location, scratch: Location
) -> tuple[list[Location], dict[str, Any]]:
    """Connected components of ``edges`` written as the clusters table, with its statistics."""
    components = kernels_for(engine).connected_components(engine, edges, scratch / "components")
    as_doc = pa.schema([pa.field("doc" if f.name == DOC else f.name, f.type) for f in meta.schema])
    members_meta = meta.map_batches(_RenameDoc(), as_doc)
    clusters = components.join(members_meta, ["doc"], "inner").map_groups(
        ["root"], ClusterRows(spec), CLUSTERS_SCHEMA
    )
    written = clusters.write(out / CLUSTERS_LINK)
    cluster_stats = _cluster_statistics(engine, written)
    if not written:  # no duplicates: readers of the directory still find the columns
        written = [out / CLUSTERS_LINK / "part-empty.parquet"]
        write_parquet_atomic(CLUSTERS_SCHEMA.empty_table(), written[0])
    return written, cluster_stats


class _Present:
    """Rows whose ``column`` is not null."""

    def __init__(self, column: str) -> None:
        self.column = column

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pc.is_valid(table.column(self.column)))


class _RenameDoc:
    def __call__(self, table: pa.Table) -> pa.Table:
        return table.rename_columns(["doc" if c == DOC else c for c in table.column_names])


class _ClusterSizes:
    """Partial statistics of the clusters table: sizes, counts, the largest clusters."""

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        keepers = table.filter(table.column("keeper"))
        removed = table.filter(pc.invert(table.column("keeper")))
        exact = int(
            np.count_nonzero(removed.column("kind").to_numpy(zero_copy_only=False) == "exact")
        )
        sizes = keepers.column("cluster_size").to_numpy()
        values, counts = np.unique(sizes, return_counts=True)
        order = np.lexsort((keepers.column("cluster").to_numpy(), -sizes))[:LARGEST_CLUSTERS]
        largest = [
            [
                int(sizes[i]),
                int(keepers.column("cluster")[int(i)].as_py()),
                keepers.column("id")[int(i)].as_py(),
            ]
            for i in order.tolist()
        ]
        return {
            "clustered": table.num_rows,
            "clusters": keepers.num_rows,
            "exact_removed": exact,
            "near_removed": removed.num_rows - exact,
            "sizes": dict(zip(values.tolist(), counts.tolist(), strict=True)),
            "largest": largest,
        }


def _merge_cluster_sizes(parts: list[dict[str, Any]]) -> dict[str, Any]:
    sizes: dict[int, int] = {}
    largest: list[list[Any]] = []
    for part in parts:
        for size, count in part["sizes"].items():
            sizes[int(size)] = sizes.get(int(size), 0) + int(count)
        largest += part["largest"]
    return {
        "clustered": sum(p["clustered"] for p in parts),
        "clusters": sum(p["clusters"] for p in parts),
        "exact_removed": sum(p["exact_removed"] for p in parts),
        "near_removed": sum(p["near_removed"] for p in parts),
        "sizes": sizes,
        "largest": sorted(largest, key=lambda r: (-r[0], r[1]))[:LARGEST_CLUSTERS],
    }


def _cluster_statistics(engine: Engine, files: list[Any]) -> dict[str, Any]:
    """Counts, the distribution of cluster sizes and the largest clusters (one aggregate)."""
    if not files:
        stats: dict[str, Any] = {
            "clustered": 0,
            "clusters": 0,
            "exact_removed": 0,
            "near_removed": 0,
            "sizes": {},
            "largest": [],
        }
    else:
        stats = engine.read(files, CLUSTERS_SCHEMA).aggregate(_ClusterSizes(), _merge_cluster_sizes)
    return {
        "clusters": int(stats["clusters"]),
        "clustered_documents": int(stats["clustered"]),
        "duplicates": int(stats["clustered"] - stats["clusters"]),
        "exact_removed": int(stats["exact_removed"]),
        "near_removed": int(stats["near_removed"]),
        "cluster_sizes": {str(k): v for k, v in sorted(stats["sizes"].items())},
        "largest_clusters": [
            {"size": size, "cluster": cluster, "keeper_id": keeper}
            for size, cluster, keeper in stats["largest"]
        ],
    }


@dataclass(frozen=True)
class Deduplicated:
    """The committed dedup summary (``dedup/summary.json``) and whether it was reused."""

    summary: dict[str, Any]

    @property
    def reused(self) -> bool:
        return bool(self.summary.get("reused"))


class DedupStage(Stage):
    """Near- and exact-duplicate clusters of the stored signatures, keyed apart (reused)."""

    name = "dedup"

    def __init__(self, spec: DedupSpec | None, basis: list[Any]) -> None:
        self.spec = spec
        self.basis = basis

    def wanted(self) -> bool:
        return self.spec is not None

    def clear(self, ctx: RunContext) -> None:
        ctx.run.dedup.delete_tree()  # a result left by an earlier run with a dedup section

    def totals(self, ctx: RunContext) -> dict[str, int]:
        return {"shards": len(ctx.result("ingest").stats)}

    def run(self, ctx: RunContext, bar: StageProgress) -> Deduplicated:
        assert self.spec is not None
        indices = ctx.result("ingest").indices
        summary = dedup_into(ctx.run, self.spec, self.basis, ctx.engine, indices, bar)
        bar.advance(shards=len(indices), docs=summary["documents"])
        return Deduplicated(summary)

    def describe(self, result: Deduplicated) -> str:
        reused = " (reused)" if result.reused else ""
        summary = result.summary
        return f"dedup: {summary['duplicates']} duplicate(s) in {summary['clusters']} cluster(s){reused}"
