"""Dedup on stored scores: planted near-duplicates, keepers, and the same clusters on both engines."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from thresher.dedup.graph import bucket_edges, roots, union_edges
from thresher.dedup.kernels import kernels_for
from thresher.dedup.lsh import choose_bands_rows
from thresher.dedup.shingles import shingles
from thresher.dedup.spec import DedupSpec, KeeperKey, read_clusters
from thresher.engines.base import Engine
from thresher.engines.local import LocalEngine
from thresher.io.files import write_json_atomic, write_parquet_atomic
from thresher.io.fs import Location
from thresher.run_dir import RunDir
from thresher.scorers import make_scorer
from thresher.stages.dedup import deduplicate

Row = dict[str, Any]


def write_scores(run_root: Path, shards: list[list[Row]], num_perm: int = 128) -> list[int]:
    """Score ``shards`` (rows with id, text, optional quality) into ``run_root/scores``.

    Each shard is written with its rows in reverse order, as a Spark job may
    write them, so readers must sort by position themselves.
    """
    scorer = make_scorer("minhash", {"num_perm": num_perm})
    scorer.setup()
    for index, rows in enumerate(shards):
        texts = pa.array([r["text"] for r in rows], pa.string())
        scored = scorer.score(pa.RecordBatch.from_arrays([texts], names=["text"]))
        table = pa.table(
            {
                "id": pa.array([r["id"] for r in rows], pa.string()),
                "thresher_shard": pa.array([index] * len(rows), pa.int32()),
                "thresher_row": pa.array(range(len(rows)), pa.int64()),
                "minhash": scored.field(0),
                "minhash_exact": scored.field(1),
                "minhash_length": scored.field(2),
                "quality": pa.array([r.get("quality", 0.0) for r in rows], pa.float64()),
            }
        )
        table = table.take(pa.array(range(len(rows) - 1, -1, -1)))
        write_parquet_atomic(table, RunDir(run_root).scores_shard(index))
    names = [{"index": i, "name": f"shard-{i:02d}"} for i in range(len(shards))]
    write_json_atomic({"shards": names}, RunDir(run_root).shard_registry)
    return list(range(len(shards)))


def make_spec(threshold: float = 0.8, **overrides: Any) -> DedupSpec:
    lsh = choose_bands_rows(threshold, 128)
    values: dict[str, Any] = {
        "signature": "minhash",
        "num_perm": 128,
        "threshold": threshold,
        "bands": lsh.bands,
        "rows": lsh.rows,
        "keeper": (KeeperKey("quality"), KeeperKey("minhash_length")),
    }
    values.update(overrides)
    return DedupSpec(**values)


def run_dedup(
    engine: Engine, run_root: Path, indices: list[int], spec: DedupSpec, name: str
) -> tuple[pa.Table, dict[str, Any]]:
    """Dedup on ``engine``; the clusters (every file the summary names) and the summary."""
    out = Location.of(run_root.parent / name)
    summary = deduplicate(engine, RunDir(run_root), indices, spec, out)
    assert not (run_root / "_staging").exists() or not any((run_root / "_staging").iterdir())
    assert summary["duplicates"] == summary["clustered_documents"] - summary["clusters"]
    clusters = read_clusters(files=[out / name for name in summary["files"]])
    return clusters, summary


def run_local(run_root: Path, indices: list[int], spec: DedupSpec, name: str) -> pa.Table:
    return run_dedup(LocalEngine(workers=1), run_root, indices, spec, name)[0]


def jaccard(a: str, b: str) -> float:
    first, second = set(shingles(a)), set(shingles(b))
    return len(first & second) / len(first | second)


def planted_corpus(
    seed: int, n_bases: int = 40, words: int = 150
) -> tuple[list[Row], dict[str, str]]:
    """Base documents of distinct random words, each with copies that replace 1, 2, 8, 20 words.

    With 5-word shingles, replacing one word changes up to five shingles:
    Jaccard about 0.93, 0.87, 0.57 and 0.3 to the base. Returns the rows
    (shuffled) and each copy's base id.
    """
    rng = random.Random(seed)

    def fresh() -> str:
        return f"w{rng.getrandbits(40):010x}"

    rows: list[Row] = []
    base_of: dict[str, str] = {}
    for b in range(n_bases):
        base = [fresh() for _ in range(words)]
        rows.append({"id": f"base-{b:03d}", "text": " ".join(base)})
        for edits in (1, 2, 8, 20):
            copy = list(base)
            for position in rng.sample(range(words), edits):
                copy[position] = fresh()
            rows.append({"id": f"copy-{b:03d}-{edits:02d}", "text": " ".join(copy)})
            base_of[rows[-1]["id"]] = f"base-{b:03d}"
    rows += [
        {"id": f"other-{u:03d}", "text": " ".join(fresh() for _ in range(words))} for u in range(60)
    ]
    rng.shuffle(rows)
    return rows, base_of


def test_planted_near_duplicates_are_found_and_unrelated_are_not(tmp_path: Path) -> None:
    rows, base_of = planted_corpus(seed=5)
    run_root = tmp_path / "run"
    indices = write_scores(run_root, [rows[0::3], rows[1::3], rows[2::3]])
    clusters = run_local(run_root, indices, make_spec(0.8), "out")
    cluster_of = dict(
        zip(clusters.column("id").to_pylist(), clusters.column("cluster").to_pylist(), strict=True)
    )
    text = {r["id"]: r["text"] for r in rows}

    found = [
        (
            jaccard(text[copy], text[base]),
            copy in cluster_of and cluster_of[copy] == cluster_of.get(base),
        )
        for copy, base in base_of.items()
    ]
    high = [ok for j, ok in found if j >= 0.9]
    above = [ok for j, ok in found if j >= 0.85]
    assert len(high) >= 40 and all(high)
    assert len(above) >= 60 and sum(above) / len(above) >= 0.95
    assert not any(ok for j, ok in found if j < 0.7)
    # Every pair put in one cluster is a near-duplicate pair (exact Jaccard >= 0.7).
    members: dict[int, list[str]] = {}
    for doc, cluster in cluster_of.items():
        members.setdefault(cluster, []).append(doc)
    pairs = [p for group in members.values() for p in itertools.combinations(group, 2)]
    assert pairs and min(jaccard(text[a], text[b]) for a, b in pairs) >= 0.7
    assert not any(doc.startswith("other-") for doc in cluster_of)
    # The cluster id is the input position of its first document; each cluster keeps one.
    assert all(np.array(clusters.column("cluster")) >= 0)
    keepers = clusters.filter(clusters.column("keeper"))
    assert keepers.num_rows == len(members)


def test_keeper_order_known_answer(tmp_path: Path) -> None:
    text = " ".join(f"t{i}" for i in range(60))
    longer = " ".join(f"u{i}" for i in range(61))
    rows = [
        {"id": "d-b", "text": text, "quality": 0.9},  # exact copies tie on quality and length:
        {"id": "d-a", "text": text, "quality": 0.9},  # the smaller id is kept
        {"id": "d-c", "text": text, "quality": 0.5},
        {"id": "e-low", "text": "x " + longer, "quality": 0.1},
        {"id": "e-nan", "text": "y " + longer + " t61 t62", "quality": math.nan},  # NaN: last
        {"id": "e-high", "text": "z " + longer, "quality": 0.7},
        {"id": "f-1", "text": "!!!", "quality": 1.0},  # no shingle: exact pass only
        {"id": "f-2", "text": "!!!", "quality": 2.0},
        {"id": "f-3", "text": "?!", "quality": 3.0},
    ]
    run_root = tmp_path / "run"
    indices = write_scores(run_root, [rows])
    table = run_local(run_root, indices, make_spec(0.5), "out").to_pylist()
    by_id = {r["id"]: r for r in table}
    assert {r["keeper_id"] for r in table if r["id"].startswith("d-")} == {"d-a"}
    assert {r["keeper_id"] for r in table if r["id"].startswith("e-")} == {"e-high"}
    assert {r["keeper_id"] for r in table if r["id"].startswith("f-")} == {"f-2"}
    assert "f-3" not in by_id
    assert [by_id[i]["kind"] for i in ("d-a", "d-b", "d-c", "f-2")] == ["exact"] * 4
    assert by_id["e-nan"]["kind"] == "near" and by_id["e-high"]["kind"] == "near"
    assert by_id["d-a"]["cluster_size"] == 3 and by_id["e-low"]["cluster_size"] == 3
    # Ascending order flips the choice; ties still go to the smaller id.
    spec = make_spec(0.5, keeper=(KeeperKey("quality", descending=False),))
    ascending = {
        r["id"]: r["keeper_id"] for r in run_local(run_root, indices, spec, "asc").to_pylist()
    }
    assert ascending["d-a"] == "d-c" and ascending["e-nan"] == "e-low" and ascending["f-2"] == "f-1"


def test_anchor_rounds_known_answer() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=10, dtype=np.uint64).astype(np.uint32)
    other = rng.integers(0, 2**32, size=10, dtype=np.uint64).astype(np.uint32)
    signatures = np.stack([base, base.copy(), other, other.copy(), base.copy()])
    signatures[1, :3] += 1  # 7 of 10 values equal to doc 1's
    signatures[3, :2] += 1  # 8 of 10 equal to doc 3's
    # Bucket (band 0, key 7) holds docs 10, 11, 12, 13; bucket (band 1, key 7) docs 10, 14.
    bands = np.array([0, 0, 0, 0, 1, 1])
    keys = np.array([7, 7, 7, 7, 7, 7])
    docs = np.array([10, 11, 12, 13, 10, 14])
    rows = np.array([0, 1, 2, 3, 0, 4])
    sources, targets, compared = bucket_edges(bands, keys, docs, rows, signatures, 0.5, True)
    assert list(zip(sources.tolist(), targets.tolist(), strict=True)) == [
        (10, 11),
        (12, 13),
        (10, 14),
    ]
    assert compared == 3 + 1 + 1  # anchor 10 vs 11, 12, 13; anchor 12 vs 13; anchor 10 vs 14
    sources, targets, _ = bucket_edges(bands, keys, docs, rows, signatures, 0.5, False)
    assert list(zip(sources.tolist(), targets.tolist(), strict=True)) == [
        (10, 11),
        (10, 12),
        (10, 13),
        (10, 14),
    ]


def _known_graph() -> tuple[list[tuple[int, int]], dict[int, int]]:
    """A shuffled path of 10 nodes, a star, a cycle and a pair, with the expected roots."""
    rng = random.Random(3)
    path = list(range(100, 110))
    rng.shuffle(path)
    edges = list(itertools.pairwise(path))
    edges += [(7, leaf) for leaf in (9, 30, 31, 32)]
    edges += [(50, 51), (51, 52), (52, 50), (60, 61), (61, 60), (61, 61)]
    rng.shuffle(edges)
    expected = {n: 100 for n in path} | {n: 7 for n in (7, 9, 30, 31, 32)}
    expected |= {n: 50 for n in (50, 51, 52)} | {60: 60, 61: 60}
    return edges, expected


def test_union_find_known_graph() -> None:
    edges, expected = _known_graph()
    parent = np.arange(200, dtype=np.int64)
    union_edges(parent, np.array([a for a, _ in edges]), np.array([b for _, b in edges]))
    found = roots(parent)
    assert {n: int(found[n]) for n in expected} == expected


@pytest.mark.spark
def test_spark_connected_components_known_graph(spark_engine: Any, tmp_path: Path) -> None:
    edges, expected = _known_graph()
    table = pa.table({"src": [a for a, _ in edges], "dst": [b for _, b in edges]})
    for engine in (spark_engine, LocalEngine(workers=1)):
        frame = engine.from_table(table)
        kernels = kernels_for(engine)
        result = kernels.connected_components(engine, frame, Location.of(tmp_path / "cc")).to_table(
            10_000
        )
        found = dict(
            zip(result.column("doc").to_pylist(), result.column("root").to_pylist(), strict=True)
        )
        assert found == expected
        assert result.num_rows == len(expected)


def tricky_corpus() -> list[list[Row]]:
    """Planted near-duplicates plus what real corpora add: copies across shards, a repeated
    id, documents without shingles, NaN and tied keeper scores."""
    rows, _ = planted_corpus(seed=11, n_bases=12)
    rng = random.Random(4)
    for row in rows:
        row["quality"] = rng.choice([0.1, 0.5, 0.5, math.nan])
    shards = [rows[0::3], rows[1::3], rows[2::3]]
    shards[1].append({"id": "exact-1", "text": shards[0][0]["text"], "quality": 0.5})
    shards[2].append({"id": "exact-2", "text": shards[0][0]["text"], "quality": 0.5})
    shards[2].append({"id": shards[0][1]["id"], "text": shards[0][2]["text"], "quality": 9.0})
    shards[0] += [{"id": f"punct-{i}", "text": "... !!!", "quality": 0.0} for i in range(3)]
    return shards


@pytest.mark.spark
def test_clusters_identical_on_both_engines_and_across_runs(
    spark_engine: Any, tmp_path: Path
) -> None:
    run_root = tmp_path / "run"
    shards = tricky_corpus()
    indices = write_scores(run_root, shards)
    spec = make_spec(0.8)
    local = run_local(run_root, indices, spec, "local")
    assert local.equals(run_local(run_root, indices, spec, "local-again"))
    on_spark, summary = run_dedup(spark_engine, run_root, indices, spec, "spark")
    assert on_spark.equals(local)
    assert summary["clusters"] == sum(local.column("keeper").to_pylist())
    assert summary["documents"] == sum(len(s) for s in shards)
    assert summary["eligible"] == summary["documents"] - 1  # the repeated id

    table = {(r["thresher_shard"], r["thresher_row"]): r for r in local.to_pylist()}
    assert (2, len(shards[2]) - 1) not in table  # the repeated id takes no part
    assert {table[(0, len(shards[0]) - k)]["kind"] for k in (1, 2, 3)} == {"exact"}
    first = table[(0, 0)]  # exact-1 and exact-2 copy it, in other shards
    copies = [r for r in local.to_pylist() if r["id"] in ("exact-1", "exact-2")]
    assert [r["cluster"] for r in copies] == [first["cluster"]] * 2
    identical_keeper = first["keeper_id"] in (first["id"], "exact-1", "exact-2")
    assert all((r["kind"] == "exact") == identical_keeper for r in copies)
    no_spark = make_spec(0.8, verify=False, exact=False)
    unverified, summary = run_dedup(spark_engine, run_root, indices, no_spark, "s2")
    assert summary["clusters"] > 0
    assert unverified.equals(run_local(run_root, indices, no_spark, "l2"))
