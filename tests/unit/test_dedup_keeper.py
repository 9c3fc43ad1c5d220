"""Keeper-centred dedup: no document is dropped through a chain, on both engines alike."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_dedup import jaccard, make_spec, run_dedup, write_scores
from thresher.dedup.graph import greedy_keepers
from thresher.dedup.keeper import KEEPER_KEY, keeper_rank, keeper_sort_key
from thresher.dedup.kernels import kernels_for
from thresher.dedup.spec import KeeperKey
from thresher.engines.local import LocalEngine
from thresher.io import schema as S
from thresher.io.fs import Location

Row = dict[str, Any]


def sequential_greedy(n: int, edges: list[tuple[int, int]], rank: list[int]) -> list[int]:
    """The rule as a reader states it: in rank order, an unclaimed node keeps its neighbours."""
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    keeper = [-1] * n
    for node in sorted(range(n), key=lambda i: rank[i]):
        if keeper[node] == -1:
            keeper[node] = node
            for other in neighbours[node]:
                if keeper[other] == -1:
                    keeper[other] = node
    return keeper


def random_graph(seed: int, n: int = 40, m: int = 70) -> tuple[list[tuple[int, int]], list[int]]:
    rng = random.Random(seed)
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(m)]
    rank = list(range(n))
    rng.shuffle(rank)
    return edges, rank


@pytest.mark.parametrize("seed", range(20))
def test_greedy_keepers_match_the_stated_rule(seed: int) -> None:
    edges, rank = random_graph(seed)
    n = len(rank)
    keeper = greedy_keepers(
        np.array(rank), np.array([a for a, _ in edges]), np.array([b for _, b in edges])
    )
    assert keeper.tolist() == sequential_greedy(n, edges, rank)
    linked = {frozenset(e) for e in edges}
    for node, chosen in enumerate(keeper.tolist()):
        assert keeper[chosen] == chosen  # a keeper keeps itself
        if chosen != node:  # claimed: a neighbour of its keeper, and its best keeper neighbour
            assert frozenset((node, chosen)) in linked
            keeper_neighbours = [
                k for k in range(n) if keeper[k] == k and frozenset((node, k)) in linked
            ]
            assert chosen == min(keeper_neighbours, key=lambda k: rank[k])


def test_a_chain_keeps_every_other_document() -> None:
    # 0-1-2-3-4, best first: 0 keeps 1, 2 keeps 3, 4 alone (components would drop 1..4 to 0)
    keeper = greedy_keepers(np.arange(5), np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4]))
    assert keeper.tolist() == [0, 0, 2, 2, 4]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.5, -0.0, 0.0, 2.0, float("nan"), float("inf"), -1e300]),
            st.sampled_from([1.0, 3.0, float("nan")]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
def test_keeper_sort_key_orders_as_keeper_rank(
    values: list[tuple[float, float]], desc: bool
) -> None:
    ids = ["a", "", "a\x00", "a\x00b", "ab", "b", "\x00", "é", "a\x00\x00", "\x7f", "ÿ", "zz"]
    n = len(values)
    table = pa.table(
        {
            "id": pa.array(ids[:n], pa.string()),
            "q": [v for v, _ in values],
            "l": [v for _, v in values],
        }
    )
    keys = (KeeperKey("q", desc), KeeperKey("l", not desc))
    positions = np.array([(7 * i) % 13 - 6 for i in range(n)], dtype=np.int64)
    expected = keeper_rank(table, keys, positions)
    order = np.asarray(pc.sort_indices(keeper_sort_key(table, keys, positions)))
    found = np.empty(n, dtype=np.int64)
    found[order] = np.arange(n)
    assert found.tolist() == expected.tolist()


@pytest.mark.spark
def test_spark_keeper_rounds_equal_the_greedy(spark_engine: Any, tmp_path: Path) -> None:
    from thresher.dedup.spark import keeper_assignment
    from thresher.dedup.spark_kernels import KERNELS

    for seed in range(3):
        edges, rank = random_graph(seed, n=60, m=110)
        # a path ranked along its length: the local minima advance two nodes per round
        edges += [(60 + i, 61 + i) for i in range(9)]
        rank += list(range(60, 70))
        src = [1000 + a for a, _ in edges]
        dst = [1000 + b for _, b in edges]
        keys = pa.table(
            {
                S.ORDER: pa.array([1000 + i for i in range(len(rank))], pa.int64()),
                KEEPER_KEY: pa.array([r.to_bytes(4, "big") for r in rank], pa.binary()),
            }
        )
        edge_table = pa.table({"src": pa.array(src, pa.int64()), "dst": pa.array(dst, pa.int64())})
        local_engine = LocalEngine(workers=1)
        local = kernels_for(local_engine).keeper_clusters(
            local_engine,
            local_engine.from_table(edge_table),
            local_engine.from_table(keys),
            Location.of(tmp_path / "l"),
        )
        expected = sorted(zip(*local.to_table(10_000).to_pydict().values(), strict=True))
        greedy = sequential_greedy(len(rank), edges, rank)
        assert expected == sorted((1000 + i, 1000 + k) for i, k in enumerate(greedy) if k != i)
        frame = KERNELS.keeper_clusters(
            spark_engine,
            spark_engine.from_table(edge_table),
            spark_engine.from_table(keys),
            Location.of(tmp_path / f"s{seed}"),
        )
        assert sorted(zip(*frame.to_table(10_000).to_pydict().values(), strict=True)) == expected
        # rounds of joins only (no driver finish): several rounds, the same keepers
        rounds: list[str] = []

        def checkpoint(df: Any, name: str, rounds: list[str] = rounds) -> Any:
            rounds.append(name)
            return df.localCheckpoint()

        spark_df = keeper_assignment(
            spark_engine.from_table(edge_table).df,
            spark_engine.from_table(keys).df,
            checkpoint,
            driver_edges=0,
        )
        assert sum(name.startswith("claimed-") for name in rounds) >= 5
        found = sorted((r["doc"], r["keeper"]) for r in spark_df.collect())
        assert found == expected


def chain_corpus(seed: int, chains: int = 6, length: int = 8, words: int = 150) -> list[Row]:
    """Chains whose neighbours share about 0.87 of their 5-gram shingles, two steps apart 0.76."""
    rng = random.Random(seed)

    def fresh() -> str:
        return f"w{rng.getrandbits(40):010x}"

    rows: list[Row] = []
    for c in range(chains):
        text = [fresh() for _ in range(words)]
        positions = rng.sample(range(words), 2 * length)
        for step in range(length):
            if step:
                for position in positions[2 * step : 2 * step + 2]:
                    text[position] = fresh()
            rows.append({"id": f"chain-{c}-{step}", "text": " ".join(text), "quality": 0.0})
    rows += [
        {"id": f"other-{u}", "text": " ".join(fresh() for _ in range(words))} for u in range(20)
    ]
    rng.shuffle(rows)
    return rows


def templated_corpus(seed: int, pages: int = 120, template_words: int = 300) -> list[Row]:
    """Pages of one large template with 10 to 40 unique words each (templated boilerplate)."""
    rng = random.Random(seed)
    template = [f"t{i}" for i in range(template_words)]
    rows = []
    for p in range(pages):
        unique = [f"p{p}u{k}" for k in range(rng.randint(10, 40))]
        cut = rng.randrange(template_words)
        rows.append(
            {"id": f"page-{p:03d}", "text": " ".join(template[:cut] + unique + template[cut:])}
        )
    return rows


def dropped_with_keepers(clusters: pa.Table) -> list[Row]:
    return [r for r in clusters.to_pylist() if not r["keeper"]]


@pytest.mark.spark
@pytest.mark.parametrize("corpus", ["chain", "templated"])
def test_no_document_is_dropped_through_a_chain(
    corpus: str, spark_engine: Any, tmp_path: Path
) -> None:
    rows = chain_corpus(1) if corpus == "chain" else templated_corpus(2)
    text = {r["id"]: r["text"] for r in rows}
    run_root = tmp_path / "run"
    indices = write_scores(run_root, [rows[0::2], rows[1::2]])
    spec = make_spec(0.8, keeper=(KeeperKey("minhash_length"),))
    clusters, summary = run_dedup(LocalEngine(workers=1), run_root, indices, spec, "keeper")
    dropped = dropped_with_keepers(clusters)
    assert dropped
    for row in dropped:  # the guarantee: a verified neighbour of its own keeper
        assert row["similarity"] >= 0.8
        assert jaccard(text[row["id"]], text[row["keeper_id"]]) >= 0.7
    assert summary["below_threshold"] == 0 and summary["rule"] == "keeper"
    on_spark, _ = run_dedup(spark_engine, run_root, indices, spec, "keeper-spark")
    assert on_spark.equals(clusters)

    # The fault the rule prevents really happens under connected components.
    components = make_spec(0.8, keeper=spec.keeper, clusters="components")
    merged, merged_summary = run_dedup(
        LocalEngine(workers=1), run_root, indices, components, "components"
    )
    chained = [r for r in dropped_with_keepers(merged) if r["similarity"] < 0.8]
    assert chained and merged_summary["below_threshold"] == len(chained)
    assert min(jaccard(text[r["id"]], text[r["keeper_id"]]) for r in chained) < 0.8
    assert merged_summary["duplicates"] > summary["duplicates"]
    if corpus == "chain":  # components keep one per chain of 8; keepers more
        assert merged_summary["largest_clusters"][0]["size"] == 8
        assert summary["largest_clusters"][0]["size"] < 8
        assert summary["clusters"] > merged_summary["clusters"] == 6
    else:  # one template: one cluster holds most pages; the summary warns
        largest = summary["largest_clusters"][0]
        assert largest["share"] > 0.01 and len(largest["members"]) == 5
        assert summary["warnings"] and str(largest["cluster"]) in summary["warnings"][0]
        assert largest["min_similarity"] >= 0.8
