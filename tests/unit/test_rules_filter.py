"""Quality presets: expansion into one ``rules`` step, first-rule reasons, per-rule counts.

A preset filter (``{preset: gopher, overrides: {...}}``) becomes, when the
config is parsed, one ``rules`` step holding the preset's rules in their
order of checks; a row outside several rules' bounds is dropped with the
reason of the first, ``filter:<preset>.<rule>``; the step's details count
per rule the rows failing it, the rows it dropped and the rows failing only it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from thresher import reasons as R
from thresher.config import RunConfig, config_problems, parse_config
from thresher.errors import ConfigError
from thresher.frame import TableFrame
from thresher.io import schema as S
from thresher.presets import expand_presets
from thresher.reporting.data import build_funnel
from thresher.scorers.quality_rules import RULES
from thresher.selectors import make_selector
from thresher.selectors.base import with_row_keys
from thresher.stages.select import decide_table

# -- the rules step ------------------------------------------------------------------------

#: Two rules on the make_config scorers: ``long`` first, then ``plain``.
RULES_STEP: dict[str, Any] = {
    "name": "rules",
    "params": {
        "preset": "toy",
        "rules": [
            {"name": "long", "score": "word_count", "min": 10},
            {"name": "plain", "score": "alpha_fraction", "max": 0.9},
            {"name": "short", "score": "word_count", "max": 100},
        ],
    },
}

#: Rows: (word_count, alpha_fraction), and the rules each fails.
ROWS = [
    (50.0, 0.5),  # none
    (5.0, 0.5),  # long
    (5.0, 0.95),  # long, plain
    (20.0, 0.95),  # plain
    (200.0, 0.95),  # plain, short
    (200.0, 0.5),  # short
    (10.0, 0.9),  # none: both bounds are inclusive
    (3.0, 1.0),  # long, plain
]


def _scores(rows: list[tuple[float, float]]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            S.ID: [f"r{i}" for i in range(n)],
            S.SHARD: pa.array([0] * n, pa.int32()),
            S.ROW: pa.array(range(n), pa.int64()),
            "word_count": [r[0] for r in rows],
            "alpha_fraction": [r[1] for r in rows],
            S.ORDER: pa.array(range(n), pa.int64()),
        }
    )


def _decide(
    make_config: Callable[..., RunConfig], step: dict[str, Any], rows: list[tuple[float, float]]
) -> tuple[pa.Table, list[dict[str, Any]]]:
    config = make_config(filters=[step], selector={"name": "random", "budget": 1.0})
    return decide_table(config, _scores(rows))


def test_a_row_failing_several_rules_is_dropped_by_the_first(
    make_config: Callable[..., RunConfig],
) -> None:
    table, steps = _decide(make_config, RULES_STEP, ROWS)
    reasons = table.column("reason").to_pylist()
    assert reasons == [
        None,
        "filter:toy.long",
        "filter:toy.long",  # fails plain too
        "filter:toy.plain",
        "filter:toy.plain",  # fails short too
        "filter:toy.short",
        None,
        "filter:toy.long",
    ]
    details = table.column("detail").to_pylist()
    assert details[2] == "word_count=5; kept: word_count >= 10"
    assert details[4] == "alpha_fraction=0.95; kept: alpha_fraction <= 0.9"
    assert steps[0]["step"] == "rules(toy)"

    # the same rules in another order: the rows failing two take the other reason
    swapped = {
        "name": "rules",
        "params": {"preset": "toy", "rules": RULES_STEP["params"]["rules"][::-1]},
    }
    reasons = _decide(make_config, swapped, ROWS)[0].column("reason").to_pylist()
    assert reasons[2] == reasons[7] == "filter:toy.plain"
    assert reasons[4] == "filter:toy.short"


def test_per_rule_counts_alone_in_order_and_only(make_config: Callable[..., RunConfig]) -> None:
    _, steps = _decide(make_config, RULES_STEP, ROWS)
    rules = {r["rule"]: r for r in steps[0]["details"]["rules"]}
    counts = {name: (r["failing"], r["dropped"], r["only"]) for name, r in rules.items()}
    assert counts == {"long": (3, 3, 1), "plain": (4, 2, 1), "short": (2, 1, 1)}
    assert rules["long"]["reason"] == "toy.long" and rules["plain"]["kept"] == "x <= 0.9"
    step = steps[0]
    assert sum(c[1] for c in counts.values()) == step["rows_in"] - step["kept"] == 6


def test_counts_over_several_chunks_add_up_to_the_whole() -> None:
    """The counts are summed over the frame's chunks (the executors' partitions on Spark)."""
    rng = np.random.default_rng(4)
    words, alpha = rng.integers(0, 150, 300).astype(float), rng.random(300)
    rows = list(zip(words.tolist(), alpha.tolist(), strict=True))
    table = with_row_keys(_scores(rows).drop_columns([S.ORDER]))
    selector = make_selector("rules", RULES_STEP["params"])
    whole = selector.select_frame(TableFrame.of(table)).details
    parts = TableFrame.of(table.slice(0, 111)).union(TableFrame.of(table.slice(111)))
    assert selector.select_frame(parts).details == whole
    fails = np.array([words < 10, alpha > 0.9, words > 100])
    expected = [
        (
            int(f.sum()),
            int((f & ~fails[:i].any(axis=0)).sum()),
            int((f & (fails.sum(0) == 1)).sum()),
        )
        for i, f in enumerate(fails)
    ]
    assert [(r["failing"], r["dropped"], r["only"]) for r in whole["rules"]] == expected


def test_nan_values_are_invalid_scores_before_the_filters_as_for_threshold(
    make_config: Callable[..., RunConfig],
) -> None:
    """A NaN a rule reads drops the row as ``invalid_score``, even when an earlier rule fails."""
    rows = [(5.0, float("nan")), (float("inf"), 0.5), (50.0, 0.5)]
    table, steps = _decide(make_config, RULES_STEP, rows)
    assert table.column("reason").to_pylist() == [R.INVALID_SCORE, R.INVALID_SCORE, None]
    threshold = {"name": "threshold", "params": {"score": "alpha_fraction", "max": 0.9}}
    assert _decide(make_config, threshold, rows)[0].column("reason").to_pylist()[0] == (
        R.INVALID_SCORE
    )
    assert steps[0]["rows_in"] == 1  # counted over the rows that reach the step
    assert all(r["failing"] == 0 for r in steps[0]["details"]["rules"])
    scores = with_row_keys(_scores(rows).drop_columns([S.ORDER]))
    with pytest.raises(ValueError, match="NaN"):
        make_selector("rules", RULES_STEP["params"]).select(scores)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"name": "a", "score": "s"}], "give `min`, `max` or both"),
        ([{"name": "a", "score": "s", "min": 2, "max": 1}], "above max"),
        ([{"name": "a b", "score": "s", "min": 1}], "identifier"),
        ([{"name": "a", "score": "s", "min": 1}, {"name": "a", "score": "t", "max": 1}], "twice"),
        ([{"name": "a", "score": "s", "min": "1"}], "must be a number"),
        ([{"name": "a", "score": "s", "least": 1}], "unknown rule key"),
    ],
)
def test_bad_rules_are_refused(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_selector("rules", {"rules": rules})


# -- presets in the config -----------------------------------------------------------------


def _config_data(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": [str(tmp_path / "*.jsonl")]},
        "schema": {"id": "id", "text": "text"},
        "scorers": [{"name": "word_count"}],
        "filters": [{"preset": "gopher"}],
    }
    return {**data, **overrides}


def _rules(config: RunConfig, index: int = 0) -> dict[str, dict[str, Any]]:
    step = config.filters[index]
    assert step.name == "rules"
    return {rule["name"]: rule for rule in step.params["rules"]}


def test_a_preset_expands_to_one_rules_step_and_adds_its_scorers(tmp_path: Any) -> None:
    config = parse_config(
        _config_data(
            tmp_path,
            filters=[
                {"name": "threshold", "params": {"score": "word_count", "min": 1}},
                {"preset": "gopher"},
                {"preset": "fineweb"},
            ],
        )
    )
    assert [f.name for f in config.filters] == ["threshold", "rules", "rules"]
    gopher = config.filters[1].params
    assert gopher["preset"] == "gopher"
    assert [(r["name"], r["min"], r["max"]) for r in gopher["rules"]] == [
        (rule.name, rule.min, rule.max) for rule in RULES["gopher"]
    ]
    rules = _rules(config, 1)
    assert rules["word_count"]["score"] == "gopher_quality"
    assert rules["hash_word_ratio"]["score"] == "gopher_quality_hash_ratio"
    assert rules["dup_10gram"]["score"] == "gopher_repetition_dup_10gram"
    assert [s.name for s in config.scorers] == [
        "word_count",
        "gopher_quality",
        "gopher_repetition",
        "fineweb_quality",
    ]
    # what the run records is the expanded config; parsing it again gives the same run
    recorded = config.recorded_dict()
    assert recorded["filters"][1]["params"]["rules"][2]["max"] == 0.1
    again = parse_config(config.config_dict())
    assert again.config_hash() == config.config_hash()


def test_overrides_change_bounds_disable_rules_and_keep_the_others(tmp_path: Any) -> None:
    overrides = {
        "stop_words": {"min": 1},
        "word_count": {"max": 5000},
        "mean_word_length": {"min": None},
        "bullet_lines": None,
    }
    config = parse_config(
        _config_data(tmp_path, filters=[{"preset": "gopher", "overrides": overrides}])
    )
    rules = _rules(config)
    assert (rules["stop_words"]["min"], rules["stop_words"]["max"]) == (1, None)
    assert (rules["word_count"]["min"], rules["word_count"]["max"]) == (50, 5000)
    assert (rules["mean_word_length"]["min"], rules["mean_word_length"]["max"]) == (None, 10)
    assert "bullet_lines" not in rules
    assert rules["alpha_words"]["min"] == 0.8  # untouched
    names = [r["name"] for r in config.filters[0].params["rules"]]
    assert names == [r.name for r in RULES["gopher"] if r.name != "bullet_lines"]


def test_a_configured_scorer_is_read_under_its_own_column(tmp_path: Any) -> None:
    scorers = [{"name": "gopher_quality", "column": "gq"}]
    overrides = {r.name: None for r in RULES["gopher"] if r.scorer == "gopher_repetition"}
    config = parse_config(
        _config_data(
            tmp_path, scorers=scorers, filters=[{"preset": "gopher", "overrides": overrides}]
        )
    )
    assert [(s.name, s.column) for s in config.scorers] == [("gopher_quality", "gq")]
    rules = _rules(config)
    assert rules["word_count"]["score"] == "gq"
    assert rules["stop_words"]["score"] == "gq_stop_words"


def test_preset_mistakes_are_reported_with_the_others(tmp_path: Any) -> None:
    data = _config_data(
        tmp_path,
        seed="not a number",
        filters=[
            {"preset": "gopher", "overrides": {"stop_wrods": {"min": 1}, "word_count": 3}},
            {"preset": "gopher", "overrides": {"word_count": {"min": 10, "max": 5}}},
            {"preset": "c5"},
            {"preset": "c4", "budget": 3},
            {"preset": "fineweb", "overrides": {r.name: None for r in RULES["fineweb"]}},
            {"name": "threshold", "params": {"score": "nope", "min": 1}},
        ],
    )
    problems = config_problems(data)
    gopher = ", ".join(r.name for r in RULES["gopher"])
    expected = [
        "seed: ",
        f"filters[0].overrides.stop_wrods: preset 'gopher' has no rule 'stop_wrods'; "
        f"its rules: {gopher}",
        "filters[0].overrides.word_count: give new bounds {min, max}",
        "filters[1].overrides.word_count: preset 'gopher': rule 'word_count': min (10) is above",
        "filters[2].preset: unknown quality preset 'c5'; known presets: c4, fineweb, gopher",
        "filters[3]: unknown key(s) ['budget']",
        "filters[4].overrides: every rule of preset 'fineweb' is disabled",
        "filters[5]: score column 'nope' is not produced by any scorer",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems
    with pytest.raises(ConfigError, match="stop_wrods"):
        parse_config(data)


def test_expanding_an_expanded_config_changes_nothing() -> None:
    data = {"scorers": [], "filters": [{"preset": "c4", "overrides": {"sentences": {"min": 3}}}]}
    expanded, _, problems = expand_presets(data)
    assert not problems and expanded is not data and data["filters"][0]["preset"] == "c4"
    assert expanded["scorers"] == [{"name": "c4_quality"}]
    assert expand_presets(expanded)[0] is expanded


def test_the_funnel_puts_each_rules_drops_in_its_step() -> None:
    step = {
        "step": "rules(toy)",
        "role": "filter",
        "details": {"rules": [{"rule": "a", "reason": "toy.a"}, {"rule": "b", "reason": "toy.b"}]},
    }
    manifest = {
        "counts": {
            "input": 10,
            "kept": 6,
            "quarantined": {"by_reason": {}},
            "dropped": {"by_reason": {"filter:toy.a": 3, "filter:toy.b": 1}},
        }
    }
    funnel, _, kept = build_funnel(manifest, [], [step])
    assert [(f.stage, f.removed) for f in funnel[1:]] == [
        ("filter rules(toy)", {"filter:toy.a": 3, "filter:toy.b": 1})
    ]
    assert kept == 6
