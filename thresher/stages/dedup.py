"""Dedup stage: from the stored MinHash columns to ``RUN_DIR/dedup/`` (clusters and summary).

Runs after scoring and before selection, on either engine, with the same
clusters on both: the shared steps (:mod:`thresher.dedup.steps`) run as
:meth:`Frame.map_groups` calls; only the LSH candidate pairs and the
clusters (keeper-centred, or connected components) are engine-specific:
the engine's dedup kernels (:func:`thresher.dedup.kernels.kernels_for`).

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
from thresher.dedup.keeper import KEEPER_KEY
from thresher.dedup.kernels import kernels_for
from thresher.dedup.lsh import choose_bands_rows, describe
from thresher.dedup.spec import (
    CLUSTERS_LINK,
    CLUSTERS_SCHEMA,
    DedupSpec,
    KeeperKey,
    link_clusters,
)
from thresher.dedup.statistics import cluster_statistics
from thresher.dedup.steps import (
    COMPONENTS_SCHEMA,
    DOC,
    EDGES_SCHEMA,
    LATER_SCHEMA,
    ClusterRows,
    ExactCopies,
    KeeperKeys,
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
from thresher.tables import conform_to

if TYPE_CHECKING:
    from thresher.engines.base import Engine
    from thresher.frame import Frame
    from thresher.progress import StageProgress


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
        clusters=dedup.clusters,
        warn_cluster_share=dedup.warn_cluster_share,
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
    stored = pa.schema([available.field(c) for c in columns] + [pa.field(DOC, pa.int64())])
    # One pass over the rows computes all that is per row: the input-order key, the keeper
    # key and whether a signature is there (a frame's passes through Python are its cost).
    prepare = _Prepare(AddOrder(ranks), stored, spec)
    docs = engine.read(files, prepare.schema, prepare).cache()
    kernels = kernels_for(engine)
    later = docs.select([S.ID, DOC]).map_groups([S.ID], LaterOccurrences(), LATER_SCHEMA).cache()
    try:
        n_documents = docs.count()
        # 1. repeated ids take no part (selection drops them as duplicate_id); usually none
        n_later = later.count()
        eligible = docs.join(later, [DOC], "left_anti") if n_later else docs
        n_eligible = eligible.count() if n_later else n_documents
        meta = eligible.select([c for c in eligible.schema.names if c != spec.signature])
        members = eligible.where(_PRESENT)
        counts = {"eligible": n_eligible, "with_signature": members.count()}
        # 2. exact copies link to their group's first in keeper order; only it goes on to LSH
        copies, n_exact, members = _link_exact_copies(meta, members, spec)
        # 3. LSH buckets of two or more members, verified edges
        lsh_columns = [DOC, spec.signature] + ([KEEPER_KEY] if spec.keeper_centred else [])
        near, counters = kernels.near_duplicate_edges(
            engine, members.select(lsh_columns), spec, scratch
        )
        # 4. clusters: keeper-centred, or connected components; then the clusters table
        if spec.keeper_centred:
            keys = eligible.select([DOC, KEEPER_KEY])
            links = _keeper_links(engine, near, copies, keys, scratch)
        else:
            edges = near if copies is None else copies.union(near)
            links = kernels.connected_components(engine, edges, scratch / "components")
        cluster_meta = eligible.select(
            [c for c in eligible.schema.names if c not in (KEEPER_KEY, _PRESENT)]
        )
        written, cluster_stats = _write_clusters(
            engine, links, cluster_meta, spec, out, int(counts["eligible"])
        )
    finally:
        later.release()
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


def _keeper_links(
    engine: Engine, near: Frame, copies: Frame | None, keys: Frame, scratch: Location
) -> Frame:
    """``(doc, root)`` of every clustered document under keeper-centred clusters.

    ``root`` is the document's keeper (a keeper's own row too). Near
    duplicates get theirs from the engine's greedy in keeper order; an exact
    copy follows its group's first document: dropped with that document's
    keeper when it is dropped (same text, same similarity), else with it.
    """
    assignment = kernels_for(engine).keeper_clusters(engine, near, keys, scratch / "keepers")
    links = assignment.map_batches(_Rename({"keeper": "root"}), COMPONENTS_SCHEMA)
    if copies is not None:
        heads = assignment.map_batches(_Rename({"doc": "dst", "keeper": "head"}), _HEADS_SCHEMA)
        links = links.union(
            copies.join(heads, ["dst"], "left").map_batches(_CopyLinks(), COMPONENTS_SCHEMA)
        )
    keepers = links.select(["root"]).map_groups(["root"], _Roots(), COMPONENTS_SCHEMA)
    return links.union(keepers)


def _write_clusters(
    engine: Engine, links: Frame, meta: Frame, spec: DedupSpec, out: Location, eligible: int
) -> tuple[list[Location], dict[str, Any]]:
    """The clusters table of ``links`` (``doc``, ``root``) written under ``out``, with its statistics."""
    # The links (a few rows per cluster) are renamed, not the documents: no pass over those.
    links = links.map_batches(_Rename({"doc": DOC}), _LINKS_SCHEMA).cache()
    try:
        links.count()  # known small before the join (Spark then broadcasts it)
        clusters = links.join(meta, [DOC], "inner").map_groups(
            ["root"], _ClusterRowsOf(spec), CLUSTERS_SCHEMA
        )
        written = clusters.write(out / CLUSTERS_LINK)
    finally:
        links.release()
    cluster_stats = cluster_statistics(engine, written, spec, eligible)
    if not written:  # no duplicates: readers of the directory still find the columns
        written = [out / CLUSTERS_LINK / "part-empty.parquet"]
        write_parquet_atomic(CLUSTERS_SCHEMA.empty_table(), written[0])
    return written, cluster_stats


_HEADS_SCHEMA = pa.schema([pa.field("dst", pa.int64()), pa.field("head", pa.int64())])
_LINKS_SCHEMA = pa.schema([pa.field(DOC, pa.int64()), pa.field("root", pa.int64())])
#: Whether a document has a signature (a column of the frames of the stage, never written).
_PRESENT = "thresher_has_signature"


class _Prepare:
    """The per-row columns of the stage, added as the score shards are read.

    The input-order key (``thresher_order``), under keeper-centred clusters
    the keeper key (:class:`~thresher.dedup.steps.KeeperKeys`), and whether
    the row has a signature: one pass where the rows are read, instead of
    one pass over the table for each.
    """

    def __init__(self, order: AddOrder, stored: pa.Schema, spec: DedupSpec) -> None:
        self.order = order
        self.stored = stored  # the score columns and the input-order key
        self.signature = spec.signature
        self.keys = KeeperKeys(spec) if spec.keeper_centred else None
        keyed = [pa.field(KEEPER_KEY, pa.binary())] if self.keys is not None else []
        self.schema = pa.schema([*stored, *keyed, pa.field(_PRESENT, pa.bool_())])

    def __call__(self, table: pa.Table) -> pa.Table:
        table = conform_to(self.order(table), self.stored)
        if self.keys is not None:
            table = self.keys(table)
        present = pc.is_valid(table.column(self.signature))
        return table.append_column(_PRESENT, present)


class _ClusterRowsOf:
    """:class:`~thresher.dedup.steps.ClusterRows` of rows keyed by ``thresher_order``."""

    def __init__(self, spec: DedupSpec) -> None:
        self.rows = ClusterRows(spec)

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.rows(_Rename({DOC: "doc"})(table))


class _Rename:
    """Columns renamed (the others kept)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.rename_columns([self.names.get(c, c) for c in table.column_names])


class _CopyLinks:
    """Exact copies (``src``) with their head (``dst``) and the head's keeper, if dropped."""

    def __call__(self, table: pa.Table) -> pa.Table:
        root = pc.coalesce(table.column("head"), table.column("dst"))
        return pa.table({"doc": table.column("src"), "root": root}, schema=COMPONENTS_SCHEMA)


class _Roots:
    """One ``(root, root)`` row per distinct root: the keepers' own rows."""

    def __call__(self, table: pa.Table) -> pa.Table:
        roots = pa.array(np.unique(table.column("root").to_numpy()), pa.int64())
        return pa.table({"doc": roots, "root": roots}, schema=COMPONENTS_SCHEMA)


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
