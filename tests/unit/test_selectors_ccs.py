"""Coverage-centric coreset selection: known answers for cutoff, strata and the budget loop."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.selectors import make_selector
from thresher.selectors.ccs import strata_edges, stratum_budgets, stratum_of


def direct_budget_loop(sizes: list[int], budget: int) -> list[int]:
    """The CCS paper's loop written out plainly: smallest stratum first, fair share of the rest."""
    result = [0] * len(sizes)
    remaining = budget
    visit = sorted(range(len(sizes)), key=lambda s: (sizes[s], s))
    for position, stratum in enumerate(visit):
        share = remaining // (len(sizes) - position)
        result[stratum] = min(sizes[stratum], share)
        remaining -= result[stratum]
    return result


def test_budget_loop_known_answer() -> None:
    # visit order: stratum 0 (empty), 1 (2), 3 (5), 2 (10); shares 9//4=2 -> 0, 9//3=3 -> 2,
    # 7//2=3 -> 3, then the last stratum takes the remaining 4
    assert stratum_budgets(np.array([0, 2, 10, 5]), 9).tolist() == [0, 2, 4, 3]


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), fraction=st.floats(0, 1))
def test_budget_loop_matches_direct_computation(sizes: list[int], fraction: float) -> None:
    budget = int(fraction * sum(sizes))
    result = stratum_budgets(np.array(sizes), budget)
    assert result.tolist() == direct_budget_loop(sizes, budget)
    assert result.sum() == budget and np.all(result <= np.array(sizes))


def _skewed(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"el2n": rng.exponential(size=n), "aum": rng.normal(size=n)})


def test_selection_follows_the_budget_loop_per_stratum() -> None:
    table = _skewed(3000, 0)
    values = table.column("el2n").to_numpy()
    selector = make_selector("ccs", {"score": "el2n", "n_strata": 20})
    selection = selector.select(table, None, 300, random_state=1)
    low, width = strata_edges(values, 20)
    stratum = stratum_of(values, low, width, 20)
    sizes = np.bincount(stratum, minlength=20)
    expected = direct_budget_loop(sizes.tolist(), 300)
    got = np.bincount(stratum[selection.indices], minlength=20)
    assert got.tolist() == expected
    strata = selection.details["strata"]
    assert [s["size"] for s in strata] == sizes.tolist()
    assert [s["selected"] for s in strata] == expected
    assert np.array_equal(selection.groups, stratum[selection.indices])


def test_every_nonempty_stratum_survives_high_pruning() -> None:
    table = _skewed(5000, 1)  # exponential: the top strata hold a handful of rows
    values = table.column("el2n").to_numpy()
    selection = make_selector("ccs", {"score": "el2n"}).select(table, None, 100, random_state=0)
    low, width = strata_edges(values, 50)
    stratum = stratum_of(values, low, width, 50)
    nonempty = set(np.unique(stratum).tolist())
    assert len(nonempty) <= 100
    assert set(np.unique(stratum[selection.indices]).tolist()) == nonempty  # 98% pruned
    topk = make_selector("topk", {"score": "el2n"}).select(table, None, 100)
    assert len(set(stratum[topk.indices].tolist())) < len(nonempty) / 2


def test_top_edge_keeps_the_maximum_of_negative_scores() -> None:
    # the reference's max * 1.0001 puts the top edge below a negative maximum
    values = np.array([-5.0, -4.0, -3.0, -2.0, -1.0])
    low, width = strata_edges(values, 5)
    assert stratum_of(values, low, width, 5).tolist() == [0, 1, 2, 3, 4]
    assert -1.0 * 1.0001 < -1.0  # what the reference would have used as top edge
    selection = make_selector("ccs", {"score": "s", "n_strata": 5}).select(
        pa.table({"s": values}), None, 5, random_state=0
    )
    assert selection.indices.tolist() == [0, 1, 2, 3, 4]


def test_hard_cutoff_by_score_and_by_mislabel_score() -> None:
    table = _skewed(1000, 2)
    el2n, aum = table.column("el2n").to_numpy(), table.column("aum").to_numpy()
    hardest = set(np.argsort(-el2n, kind="stable")[:300].tolist())
    selection = make_selector("ccs", {"score": "el2n", "beta": 0.3}).select(
        table, None, 200, random_state=0
    )
    assert not hardest & set(selection.indices.tolist())
    assert selection.details["cut"] == 300
    easy = make_selector("ccs", {"score": "el2n", "beta": 0.3, "hard": "low"}).select(
        table, None, 200, random_state=0
    )
    assert not set(np.argsort(el2n, kind="stable")[:300].tolist()) & set(easy.indices.tolist())
    mislabelled = set(np.argsort(aum, kind="stable")[:300].tolist())  # low AUM
    by_aum = make_selector("ccs", {"score": "el2n", "beta": 0.3, "cutoff_score": "aum"}).select(
        table, None, 200, random_state=0
    )
    assert not mislabelled & set(by_aum.indices.tolist())


def test_cutoff_shrinks_so_that_the_budget_is_met() -> None:
    table = _skewed(100, 3)
    el2n = table.column("el2n").to_numpy()
    selection = make_selector("ccs", {"score": "el2n", "beta": 0.5}).select(
        table, None, 80, random_state=0
    )
    # only the 20 hardest rows can be cut; the 80 others are exactly the selection
    assert selection.details["cut"] == 20
    assert selection.indices.tolist() == sorted(np.argsort(-el2n, kind="stable")[20:].tolist())


def test_uniform_within_a_stratum() -> None:
    table = pa.table({"s": np.linspace(0.0, 1.0, 40)})
    selector = make_selector("ccs", {"score": "s", "n_strata": 1})
    counts = np.zeros(40)
    for seed in range(500):
        counts[selector.select(table, None, 10, random_state=seed).indices] += 1
    assert np.all(np.abs(counts - 125) < 45)  # p = 0.25: 125 of 500, sd about 10


def test_by_label_splits_the_budget_across_classes() -> None:
    rng = np.random.default_rng(4)
    labels = np.array(["cat"] * 600 + ["dog"] * 300 + ["eel"] * 100)
    table = pa.table({"el2n": rng.exponential(size=1000), "label": labels})
    selection = make_selector(
        "ccs", {"score": "el2n", "beta": 0.1, "by_label": True, "n_strata": 10}
    ).select(table, None, 100, random_state=0)
    kept = labels[selection.indices]
    assert [(kept == c).sum() for c in ("cat", "dog", "eel")] == [60, 30, 10]
    equal = make_selector(
        "ccs", {"score": "el2n", "by_label": True, "label_allocation": "equal"}
    ).select(table, None, 90, random_state=0)
    kept = labels[equal.indices]
    assert [(kept == c).sum() for c in ("cat", "dog", "eel")] == [30, 30, 30]
    # the cutoff applies within each class: no class loses more than its 10% hardest
    el2n = table.column("el2n").to_numpy()
    for name in ("cat", "dog", "eel"):
        members = np.flatnonzero(labels == name)
        hardest = members[np.argsort(-el2n[members], kind="stable")[: members.size // 10]]
        assert not set(hardest.tolist()) & set(selection.indices.tolist())
