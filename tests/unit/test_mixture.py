"""Mixtures: target arithmetic, decisions per group, config checks, and what the card shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher import reasons as R
from thresher.config import RunConfig
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.reporting.card import _steps
from thresher.stages.mixture import plan_mixture, targets
from thresher.stages.select import decide_table

# -- the arithmetic ---------------------------------------------------------------------------


@st.composite
def _mixtures(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, int], int, int]:
    n = draw(st.integers(1, 6))
    raw = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n).filter(lambda w: sum(w) > 0))
    shares = {f"g{i}": w / sum(raw) for i, w in enumerate(raw)}
    available = {g: draw(st.integers(0, 500)) for g in shares}
    return shares, available, draw(st.integers(0, 3000)), draw(st.integers(1, 4))


@given(_mixtures())
def test_targets_sum_to_the_total_and_repeats_stay_within_max_repeat(
    case: tuple[dict[str, float], dict[str, int], int, int],
) -> None:
    shares, available, total, max_repeat = case
    plans = plan_mixture(shares, available, total, max_repeat)
    assert sum(p.target for p in plans) == total
    assert [p.group for p in plans] == sorted(shares)
    for plan in plans:
        assert abs(plan.target - plan.share * total) < 1  # rounded, never further
        chosen = plan.budget  # what the selector adds on top of base copies of every row
        assert plan.base + (1 if chosen else 0) <= max_repeat
        assert plan.base * plan.available + chosen + plan.shortfall == plan.target
        if plan.target <= plan.available:
            assert (plan.base, chosen, plan.shortfall) == (0, plan.target, 0)
        else:
            assert chosen < max(plan.available, 1)  # a remainder: less than one more epoch
            assert plan.shortfall == max(0, plan.target - max_repeat * plan.available)


def test_targets_round_by_largest_remainder() -> None:
    assert targets([0.6, 0.25, 0.15], 7).tolist() == [4, 2, 1]  # 4.2, 1.75, 1.05
    assert targets([0.5, 0.5], 3).tolist() == [2, 1]  # a tie goes to the first group


def test_a_short_group_known_answer() -> None:
    plans = plan_mixture({"a": 0.5, "b": 0.5}, {"a": 100, "b": 30}, 200, 3)
    a, b = plans
    assert (a.target, a.base, a.budget, a.shortfall) == (100, 0, 100, 0)
    assert (b.target, b.base, b.budget, b.shortfall) == (100, 3, 0, 10)  # 3 epochs of 30
    b2 = plan_mixture({"a": 0.5, "b": 0.5}, {"a": 100, "b": 40}, 200, 3)[1]
    assert (b2.base, b2.budget, b2.shortfall) == (2, 20, 0)  # 2 epochs, 20 rows a third time


# -- decisions ---------------------------------------------------------------------------------

SOURCES = ["web"] * 60 + ["code"] * 25 + ["books"] * 8 + ["misc"] * 6 + [None]
N = len(SOURCES)


def _scores(sources: list[str | None] = SOURCES) -> pa.Table:
    rng = np.random.default_rng(5)
    n = len(sources)
    order = rng.permutation(n)  # groups interleaved in input order
    return pa.table(
        {
            S.ID: [f"d{i}" for i in range(n)],
            S.SHARD: pa.array([0] * n, pa.int32()),
            S.ROW: pa.array(range(n), pa.int64()),
            S.LABEL: [sources[i] for i in order],
            "word_count": rng.integers(1, 40, n).astype(np.float64),
            "alpha_fraction": rng.uniform(0.0, 1.0, n),
            S.ORDER: pa.array(range(n), pa.int64()),
        }
    )


def _config(
    make_config: Callable[..., RunConfig],
    budget: Any,
    max_repeat: int = 1,
    shares: dict[str, float] | None = None,
    scorers: list[dict[str, Any]] | None = None,
    **selector: Any,
) -> RunConfig:
    step = {
        "name": "topk",
        "params": {"score": "alpha_fraction"},
        "budget": budget,
        "mixture": {
            "by": "topic",  # the label's input name
            "shares": shares or {"web": 0.6, "code": 0.25, "books": 0.15},
            "max_repeat": max_repeat,
        },
        **selector,
    }
    if scorers is None:
        return make_config(filters=[], selector=step)
    return make_config(filters=[], selector=step, scorers=scorers)


def _groups(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in steps[-1]["details"]["mixture"]["groups"]}


def test_a_row_budget_meets_the_shares_and_caps_a_short_group(
    make_config: Callable[..., RunConfig],
) -> None:
    scores = _scores()
    selection, steps = decide_table(_config(make_config, 80), scores)
    groups = _groups(steps)
    # 80 rows: web 48, code 20, books 12 of which only 8 exist (capped, 4 short)
    assert {g: (v["target"], v["achieved"], v["shortfall"]) for g, v in groups.items()} == {
        "web": (48, 48, 0),
        "code": (20, 20, 0),
        "books": (12, 8, 4),
    }
    keep = np.asarray(selection.column("keep").to_pylist())
    assert keep.sum() == 76 and set(selection.column(S.REPEAT).to_pylist()) == {0, 1}
    # within a group the selector's own rule: the highest scores of that group
    label = scores.column(S.LABEL).to_pylist()
    alpha = np.asarray(scores.column("alpha_fraction"))
    web = np.flatnonzero(np.asarray(label, dtype=object) == "web")
    best = set(web[np.argsort(-alpha[web])[:48]].tolist())
    assert best == {i for i in web.tolist() if keep[i]}
    reason = R.not_selected("topk(alpha_fraction)")
    details = {
        label[i]: d
        for i, (k, r, d) in enumerate(
            zip(
                keep,
                selection.column("reason").to_pylist(),
                selection.column("detail").to_pylist(),
                strict=True,
            )
        )
        if not k and r == reason
    }
    assert details["misc"] == "mixture: group misc has no share"
    assert details[None] == "mixture: topic is null"
    assert details["web"].startswith("topk(")


def test_max_repeat_fills_a_short_group(make_config: Callable[..., RunConfig]) -> None:
    selection, steps = decide_table(_config(make_config, 80, max_repeat=3), _scores())
    books = _groups(steps)["books"]
    # 12 from 8 rows: every row once, 4 of them (the selector's choice) twice
    assert (books["target"], books["achieved"], books["shortfall"]) == (12, 12, 0)
    assert books["repeat_max"] == 2 and books["kept_rows"] == 8
    repeats = selection.column(S.REPEAT).to_pylist()
    assert sorted(r for r in repeats if r) == [1] * 72 + [2] * 4
    assert all(r <= 3 for r in repeats)


def test_a_sum_budget_is_met_within_one_document_per_group(
    make_config: Callable[..., RunConfig],
) -> None:
    scores = _scores()
    budget = {"sum": "word_count", "total": 1500}
    config = _config(make_config, budget, max_repeat=4)
    selection, steps = decide_table(config, scores)
    longest = max(scores.column("word_count").to_pylist())
    sizes = np.asarray(scores.column("word_count"))
    repeat = np.asarray(selection.column(S.REPEAT))
    label = np.asarray(scores.column(S.LABEL).to_pylist(), dtype=object)
    for group, info in _groups(steps).items():
        achieved = int((repeat * sizes)[label == group].sum())
        assert info["achieved"] == achieved
        assert info["target"] - longest < achieved <= info["target"]
    assert steps[-1]["details"]["mixture"]["unit"] == "tokens"


def test_a_groups_choice_does_not_depend_on_the_other_groups(
    make_config: Callable[..., RunConfig],
) -> None:
    """Only code's rows change; web's and books' choices and repeats stay the same."""
    config = _config(make_config, 80, max_repeat=3, name="random", params={})
    first, _ = decide_table(config, _scores())
    changed = ["code2" if s == "code" else s for s in SOURCES]
    second, _ = decide_table(config, _scores(changed))
    label = _scores().column(S.LABEL).to_pylist()
    same = [i for i, s in enumerate(label) if s in ("web", "books")]
    for column in ("keep", S.REPEAT):
        a, b = first.column(column).to_pylist(), second.column(column).to_pylist()
        assert [a[i] for i in same] == [b[i] for i in same]


def test_an_embedding_selector_mixes_per_group(make_config: Callable[..., RunConfig]) -> None:
    rng = np.random.default_rng(2)
    scores = _scores()
    vectors = rng.normal(size=(N, 4)).astype(np.float32)
    scores = scores.append_column("embedding", pa.array(vectors.tolist(), pa.list_(pa.float32())))
    for partitions in (None, {"clusters": 2, "sample": 40, "iterations": 3}):
        extra = {} if partitions is None else {"partitions": partitions}
        config = _config(
            make_config,
            80,
            max_repeat=3,
            name="dpp",
            params={"score": "alpha_fraction", "device": "cpu"},
            scorers=[
                {"name": "word_count"},
                {"name": "alpha_fraction"},
                {"name": "embedding", "params": {"dim": 4}},
            ],
            **extra,
        )
        selection, steps = decide_table(config, scores)
        groups = _groups(steps)
        assert {g: v["achieved"] for g, v in groups.items()} == {"web": 48, "code": 20, "books": 12}
        assert groups["books"]["repeat_max"] == 2
        assert sum(selection.column("keep").to_pylist()) == 48 + 20 + 8


# -- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shares": {"web": 0.5, "code": 0.4}}, "shares must sum to 1"),
        ({"shares": {"web": 1.2, "code": -0.2}}, "finite number >= 0"),
        ({"shares": {}}, "at least one group"),
        ({"max_repeat": 0}, "max_repeat"),
        ({"by": "nowhere"}, "column 'nowhere' is not the label, a passthrough column"),
    ],
)
def test_bad_mixtures_are_refused(
    make_config: Callable[..., RunConfig], change: dict[str, Any], message: str
) -> None:
    mixture = {"by": "topic", "shares": {"web": 0.6, "code": 0.4}, **change}
    step = {"name": "random", "budget": 10, "mixture": mixture}
    with pytest.raises(ConfigError, match=message):
        make_config(
            filters=[],
            selector=step,
            schema={"id": "id", "text": "text", "label": "topic", "passthrough": ["source"]},
        )


def test_a_mixture_is_for_the_selector_alone_with_a_budget_and_no_repeats_of_its_own(
    make_config: Callable[..., RunConfig],
) -> None:
    mixture = {"by": "topic", "shares": {"a": 1.0}}
    with pytest.raises(ConfigError, match=r"filters\[0\]\.mixture: only the selector"):
        make_config(filters=[{"name": "random", "budget": 0.5, "mixture": mixture}])
    repeats = {"score": "alpha_fraction", "buckets": 2, "repeats": [1, 2]}
    with pytest.raises(ConfigError, match="sets its own repeat counts"):
        make_config(selector={"name": "bucket_repeat", "params": repeats, "mixture": mixture})
    with pytest.raises(ConfigError, match="mixture: needs a budget"):
        make_config(selector={"name": "random", "mixture": mixture})


def test_integer_groups_are_named_by_their_text_and_a_config_without_mixture_hashes_as_before(
    make_config: Callable[..., RunConfig],
) -> None:
    config = make_config(
        selector={"name": "random", "budget": 5, "mixture": {"by": "topic", "shares": {1: 1.0}}}
    )
    assert config.selector.mixture is not None
    assert config.selector.mixture.shares == {"1": 1.0}
    assert "mixture" not in make_config().recorded_dict()["selector"]


def test_a_by_column_in_neither_scores_nor_input_is_refused_at_run(
    make_config: Callable[..., RunConfig], tmp_path: Any
) -> None:
    from thresher.engines import in_memory_engine
    from thresher.frame import TableFrame
    from thresher.io.files import write_parquet_atomic
    from thresher.run_dir import RunDir
    from thresher.stages.decide import SelectionSpec
    from thresher.stages.select import with_group_column

    config = make_config(
        filters=[],
        selector={"name": "random", "budget": 5, "mixture": {"by": "source", "shares": {"a": 1}}},
    )
    run = RunDir(config.run_path)
    write_parquet_atomic(
        pa.table({S.SHARD: pa.array([0], pa.int32()), S.ROW: [0], "year": [2020]}),
        run.ingested_shard(0),
    )
    spec = SelectionSpec.of(config)
    with pytest.raises(ConfigError, match=r"'source' is in neither.*'year'"):
        with_group_column(
            in_memory_engine(driver_max_rows=10),
            run,
            [0],
            spec,
            TableFrame.of(_scores()),
            np.zeros(1, np.int64),
        )


# -- the card ------------------------------------------------------------------------------------


def test_the_card_shows_requested_and_achieved_shares_and_a_short_group(
    make_config: Callable[..., RunConfig],
) -> None:
    _, steps = decide_table(_config(make_config, 80), _scores())
    card = _steps({"selection_steps": steps})
    assert "| `web` | 60% | 63.2% | 48 | 48 |" in card
    assert "Group `books` is short: 8 of its target 12 rows" in card
    assert "Mixture by `topic`" in card
    # an old run's steps (no mixture) render as before
    assert "mixes groups" not in _steps({"selection_steps": [{**steps[-1], "details": {}}]})


def test_the_report_and_manifest_show_the_mixture_and_old_runs_render_as_before(
    make_config: Callable[..., RunConfig],
) -> None:
    from thresher.io.manifest import _mixture
    from thresher.reporting.html import _step_context

    _, steps = decide_table(_config(make_config, 80), _scores())
    context = _step_context(1, steps[-1])
    table = context["tables"][0]
    assert table["header"][:3] == ["group", "requested share", "achieved share"]
    assert ["books", "15%", "10.5%", "12", "8", "8", "8", "1", "4"] in table["rows"]
    assert any("Group books is short" in note for note in context["notes"])
    assert "mixture" not in dict(context["scalars"])
    assert _mixture(steps) == {"mixture": steps[-1]["details"]["mixture"]}
    old = {**steps[-1], "details": {}}
    assert _step_context(1, old)["notes"] == [] and _mixture([old]) == {}
