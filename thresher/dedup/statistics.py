"""What the dedup summary says about the clusters table: counts, sizes, similarity, warnings.

Two aggregates over the written table, on either engine, with partial
results per batch merged on the driver (small: a histogram, the largest
clusters), so they hold whatever the partitioning:

1. counts, the distribution of cluster sizes, the histogram of the
   similarity of every near-duplicate removed to its keeper, and the
   largest clusters;
2. for those largest clusters only: their least similar member and a
   sample of members (the first in input position), which the report
   shows and a warning names when one cluster holds more than
   ``warn_cluster_share`` of the documents (templated text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.dedup.spec import CLUSTERS_SCHEMA, EXACT, DedupSpec
from thresher.io import schema as S

if TYPE_CHECKING:
    from thresher.engines.base import Engine

#: Clusters listed by size in the summary (the report's table of largest clusters).
LARGEST_CLUSTERS = 10
#: Members listed for each of the largest clusters.
SAMPLE_MEMBERS = 5
#: Bins of the histogram of similarity to the keeper (of width 0.05 on [0, 1]).
SIMILARITY_BINS = 20


def _histogram(values: np.ndarray) -> list[int]:
    bins = np.clip((values * SIMILARITY_BINS).astype(np.int64), 0, SIMILARITY_BINS - 1)
    return np.bincount(bins, minlength=SIMILARITY_BINS).tolist()


class _ClusterSizes:
    """Partial statistics of the clusters table: sizes, counts, similarity, the largest clusters."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        keepers = table.filter(table.column("keeper"))
        removed = table.filter(pc.invert(table.column("keeper")))
        is_exact = removed.column("kind").to_numpy(zero_copy_only=False) == EXACT
        similarity = removed.column("similarity").to_numpy(zero_copy_only=False)[~is_exact]
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
            "exact_removed": int(np.count_nonzero(is_exact)),
            "near_removed": int(similarity.size),
            "below_threshold": int(np.count_nonzero(similarity < self.threshold - 1e-12)),
            "histogram": _histogram(similarity),
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
    histogram = np.zeros(SIMILARITY_BINS, dtype=np.int64)
    for part in parts:
        histogram += np.asarray(part["histogram"], dtype=np.int64)
    merged: dict[str, Any] = {
        key: sum(p[key] for p in parts)
        for key in ("clustered", "clusters", "exact_removed", "near_removed", "below_threshold")
    }
    return {
        **merged,
        "histogram": histogram.tolist(),
        "sizes": sizes,
        "largest": sorted(largest, key=lambda r: (-r[0], r[1]))[:LARGEST_CLUSTERS],
    }


class _LargestDetail:
    """For the named clusters: the least similarity to the keeper and the first members."""

    def __init__(self, clusters: list[int]) -> None:
        self.clusters = pa.array(clusters, pa.int64())

    def __call__(self, table: pa.Table) -> dict[int, dict[str, Any]]:
        wanted = pc.and_(
            pc.is_in(table.column("cluster"), value_set=self.clusters),
            pc.invert(table.column("keeper")),
        )
        table = table.filter(wanted).sort_by(
            [("cluster", "ascending"), (S.SHARD, "ascending"), (S.ROW, "ascending")]
        )
        detail: dict[int, dict[str, Any]] = {}
        for row in table.select(["cluster", S.SHARD, S.ROW, S.ID, "similarity"]).to_pylist():
            entry = detail.setdefault(row["cluster"], {"min": 1.0, "members": []})
            entry["min"] = min(entry["min"], row["similarity"])
            if len(entry["members"]) < SAMPLE_MEMBERS:
                entry["members"].append((row[S.SHARD], row[S.ROW], row[S.ID]))
        return detail


def _merge_detail(parts: list[dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    merged: dict[int, dict[str, Any]] = {}
    for part in parts:
        for cluster, entry in part.items():
            into = merged.setdefault(cluster, {"min": 1.0, "members": []})
            into["min"] = min(into["min"], entry["min"])
            into["members"] = sorted(into["members"] + entry["members"])[:SAMPLE_MEMBERS]
    return merged


def cluster_statistics(
    engine: Engine, files: list[Any], spec: DedupSpec, eligible: int
) -> dict[str, Any]:
    """The summary's statistics of the clusters table written as ``files``."""
    empty: dict[str, Any] = {
        "clustered": 0,
        "clusters": 0,
        "exact_removed": 0,
        "near_removed": 0,
        "below_threshold": 0,
        "histogram": [0] * SIMILARITY_BINS,
        "sizes": {},
        "largest": [],
    }
    stats: dict[str, Any] = empty
    detail: dict[int, dict[str, Any]] = {}
    if files:
        table = engine.read(files, CLUSTERS_SCHEMA)
        stats = table.aggregate(_ClusterSizes(spec.threshold), _merge_cluster_sizes)
        ids = [cluster for _, cluster, _ in stats["largest"]]
        if ids:
            detail = table.aggregate(_LargestDetail(ids), _merge_detail)
    largest = []
    for size, cluster, keeper in stats["largest"]:
        entry = detail.get(cluster, {"min": 1.0, "members": []})
        largest.append(
            {
                "size": size,
                "cluster": cluster,
                "keeper_id": keeper,
                "share": size / eligible if eligible else 0.0,
                "min_similarity": float(entry["min"]),
                "members": [member_id for _, _, member_id in entry["members"]],
            }
        )
    return {
        "rule": spec.clusters,
        "threshold": spec.threshold,
        "clusters": int(stats["clusters"]),
        "clustered_documents": int(stats["clustered"]),
        "duplicates": int(stats["clustered"] - stats["clusters"]),
        "exact_removed": int(stats["exact_removed"]),
        "near_removed": int(stats["near_removed"]),
        "below_threshold": int(stats["below_threshold"]),
        "similarity_histogram": {
            "edges": [round(i / SIMILARITY_BINS, 4) for i in range(SIMILARITY_BINS + 1)],
            "counts": [int(c) for c in stats["histogram"]],
        },
        "cluster_sizes": {str(k): v for k, v in sorted(stats["sizes"].items())},
        "largest_clusters": largest,
        "warnings": _warnings(largest, spec),
    }


def _warnings(largest: list[dict[str, Any]], spec: DedupSpec) -> list[str]:
    """One warning per cluster holding more than ``warn_cluster_share`` of the documents."""
    return [
        f"cluster {c['cluster']} (keeper {c['keeper_id']!r}) holds {c['size']:,} documents, "
        f"{c['share']:.1%} of the corpus (more than {spec.warn_cluster_share:.1%}): templated "
        "text? Check its sample members in the report"
        + (
            "; keeper-centred clusters removed only verified duplicates of the keeper."
            if spec.keeper_centred
            else "; under `clusters: components` a chain of similar pages removes them all."
        )
        for c in largest
        if c["share"] > spec.warn_cluster_share
    ]
