"""The dedup peers benchmark's corpora have their stated structure and its measures count right."""

from __future__ import annotations

import itertools

import numpy as np
import xxhash
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from benchmarks.dedup_peers import (
    PRECISION_JACCARD,
    RECALL_JACCARD,
    THRESHOLD,
    Corpus,
    ShingleSets,
    keepers_by_cluster,
    make_chains,
    make_templated,
    measure,
    normalised_words,
    outcome_from_ids,
    shingle_hashes,
)
from thresher.dedup.shingles import shingles


def test_ground_truth_shingles_are_thresher_shingles() -> None:
    texts = [
        "Hello, World! Don't   stop\tthe \u00c9COLE's “quoted” words—here now.",
        "Two words",
        "",
        "... !!! ???",
        "one two three four five six seven eight nine ten",
    ]
    for text, words in zip(texts, normalised_words(texts), strict=True):
        expected = {xxhash.xxh3_64_intdigest(s) for s in shingles(text, ngram=5)}
        assert set(shingle_hashes(words).tolist()) == expected


def test_chain_steps_are_above_the_threshold_and_two_steps_are_below() -> None:
    corpus = make_chains(120, seed=3)
    sets = ShingleSets(corpus.texts)
    assert len(corpus.groups) >= 5
    for chain in corpus.groups:
        steps = [sets.jaccard(a, b) for a, b in itertools.pairwise(chain)]
        skips = [sets.jaccard(a, c) for a, c in zip(chain, chain[2:], strict=False)]
        assert min(steps) >= RECALL_JACCARD
        assert skips and max(skips) < THRESHOLD
    grouped = {i for chain in corpus.groups for i in chain}
    loose = [i for i in range(len(corpus.texts)) if i not in grouped][:5]
    assert all(sets.jaccard(a, b) == 0.0 for a in loose for b in grouped)


def test_templated_pages_chain_together_across_the_threshold() -> None:
    corpus = make_templated(150, seed=4)
    sets = ShingleSets(corpus.texts)
    (group,) = corpus.groups
    first, second, jaccard = sets.pairs(group)
    assert (jaccard >= RECALL_JACCARD).sum() > 0 and (jaccard < THRESHOLD).sum() > 0
    index = {doc: i for i, doc in enumerate(group)}
    above = jaccard >= THRESHOLD
    rows, columns = [index[d] for d in first[above]], [index[d] for d in second[above]]
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(group),) * 2)
    _, labels = connected_components(graph, directed=False)
    component = labels == np.bincount(labels).argmax()
    assert component.sum() >= 0.5 * len(group)  # one chain through most pages...
    members = set(np.asarray(group)[component].tolist())
    inside = np.array([a in members and b in members for a, b in zip(first, second, strict=True)])
    assert (jaccard[inside] < THRESHOLD).any()  # ...joining pages below the threshold
    pair = sets.pairs(group[:2])[2][0]
    assert pair == sets.jaccard(group[0], group[1])
    loose = next(i for i in range(len(corpus.texts)) if i not in index)
    assert sets.jaccard(loose, group[0]) == 0.0


def _words(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def _hand_made() -> Corpus:
    """Two groups: ``a`` with a close copy, ``b`` with a close copy and a distant one."""
    a, b = _words("a", 100), _words("b", 100)
    texts = [
        " ".join(a),
        " ".join([*a[:50], "x", *a[51:]]),  # one word changed: J 0.9
        " ".join(b),
        " ".join([*b[:50], "y", *b[51:]]),  # J 0.9
        " ".join(b[:50] + _words("z", 50)),  # J 0.3 with b
    ]
    ids = [f"d{i}" for i in range(len(texts))]
    return Corpus("hand", ids, texts, [[0, 1], [2, 3, 4]])


def test_a_distant_keeper_lowers_precision_and_a_kept_pair_lowers_recall() -> None:
    corpus = _hand_made()
    sets = ShingleSets(corpus.texts)
    assert sets.jaccard(0, 1) >= RECALL_JACCARD and sets.jaccard(2, 3) >= RECALL_JACCARD
    assert sets.jaccard(2, 4) < PRECISION_JACCARD and sets.jaccard(3, 4) < PRECISION_JACCARD

    right = outcome_from_ids(
        corpus.ids, {"d1": "d0", "d3": "d2"}, {"d0": 0, "d1": 0, "d2": 1, "d3": 1}
    )
    good = measure(corpus, right, sets)
    assert (good.removed, good.recall, good.precision, good.largest_cluster) == (2, 1.0, 1.0, 2)
    assert good.true_pairs == 2

    chained = outcome_from_ids(
        corpus.ids, {"d1": "d0", "d4": "d2"}, {"d0": 0, "d1": 0, "d2": 1, "d3": 1, "d4": 1}
    )
    bad = measure(corpus, chained, sets)
    assert bad.removed == 2 and bad.precise == 1 and bad.precision == 0.5  # d4 is far from d2
    assert good.below_threshold == 0 and bad.below_threshold == 1
    assert bad.found_pairs == 1 and bad.recall == 0.5  # d2 and d3 both kept
    assert bad.largest_cluster == 3


def test_a_system_without_keepers_is_measured_against_its_clusters_kept_document() -> None:
    corpus = _hand_made()
    clusters = {"d0": 7, "d1": 7, "d2": 9, "d3": 9, "d4": 9}
    dropped = keepers_by_cluster(corpus.ids, {"d0", "d3", "d4"}, clusters)
    assert dropped == {"d0": "d1", "d3": "d2", "d4": "d2"}
    result = measure(
        corpus, outcome_from_ids(corpus.ids, dropped, clusters), ShingleSets(corpus.texts)
    )
    assert result.precise == 2 and result.without_keeper == 0 and result.recall == 1.0

    orphan = keepers_by_cluster(corpus.ids, {"d0", "d1"}, clusters)  # nothing of cluster 7 kept
    assert orphan == {"d0": None, "d1": None}
    counted = measure(
        corpus, outcome_from_ids(corpus.ids, orphan, clusters), ShingleSets(corpus.texts)
    )
    assert counted.without_keeper == 2 and counted.precision == 0.0
