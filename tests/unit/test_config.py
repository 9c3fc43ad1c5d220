"""Config validation: every mistake is reported with the field that holds it, before work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.config import load_config, parse_config
from thresher.errors import ConfigError

BASE = {"run_dir": "run", "input": {"paths": ["data/*.parquet"]}}


def test_minimal_config_has_defaults(tmp_path: Path) -> None:
    config = parse_config(BASE, base_dir=tmp_path)
    assert config.engine.kind == "spark"
    assert config.engine.spark.master is None  # local[*] unless spark-submit gives one
    assert config.selector.name == "random"
    assert config.run_path.as_path() == (tmp_path / "run").resolve()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"scorers": [{"name": "perplexitty"}]}, "scorers[0].name: unknown scorer 'perplexitty'"),
        ({"scorers": [{"name": "word_count", "params": {"window": 3}}]}, "scorers[0].params"),
        ({"selector": {"name": "kmeans-ish", "budget": 3}}, "selector.name: unknown selector"),
        ({"selector": {"name": "random"}}, "selector.budget: 'random' needs a budget"),
        ({"selector": {"name": "random", "budget": 1.5}}, "selector.budget"),
        ({"selector": {"name": "random", "budget": -2}}, "selector.budget"),
        ({"selecter": {"name": "random"}}, "selecter: Extra inputs are not permitted"),
        ({"engine": {"kind": "dask"}}, "engine.kind"),
        (
            {"filters": [{"name": "threshold", "params": {"score": "perplexity", "min": 1}}]},
            "filters[0]: score column 'perplexity' is not produced by any scorer",
        ),
        ({"scorers": [{"name": "word_count"}, {"name": "word_count"}]}, "used twice"),
        ({"scorers": [{"name": "word_count", "column": "../../etc"}]}, "scorers.0.column"),
        ({"scorers": [{"name": "word_count", "column": "id"}]}, "reserved"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, **change}, base_dir=tmp_path)
    assert expected in str(error.value)


def test_missing_input_names_the_pattern(tmp_path: Path) -> None:
    config = parse_config(BASE, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"input.paths: 'data/\*.parquet' matches no file"):
        config.input_files()


def test_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "data").mkdir()
    (tmp_path / "conf" / "data" / "a.parquet").write_bytes(b"")
    (tmp_path / "conf" / "job.yaml").write_text(
        "run_dir: out\ninput:\n  paths: [data/*.parquet]\n", encoding="utf-8"
    )
    config = load_config(tmp_path / "conf" / "job.yaml")
    assert [e.location.as_path() for e in config.input_files()] == [
        (tmp_path / "conf" / "data" / "a.parquet").resolve()
    ]
    assert config.run_path.as_path() == (tmp_path / "conf" / "out").resolve()


def test_a_run_dir_parameter_replaces_the_config_s_and_starts_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thresher.flows.curate import resolve_config

    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "a.parquet").write_bytes(b"")
    job = tmp_path / "conf" / "job.yaml"
    job.write_text("run_dir: out\ninput:\n  paths: [data/*.parquet]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config = resolve_config(str(job), run_dir="runs/nightly")
    assert config.run_path.as_path() == (tmp_path / "runs" / "nightly").resolve()
    assert [e.location.as_path() for e in config.input_files()] == [
        (tmp_path / "conf" / "data" / "a.parquet").resolve()
    ]
    assert resolve_config(str(job)).run_path.as_path() == (tmp_path / "conf" / "out").resolve()


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    a = parse_config(BASE, base_dir=tmp_path)
    b = parse_config(dict(BASE), base_dir=tmp_path)
    c = parse_config({**BASE, "seed": 1}, base_dir=tmp_path)
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_scorer_file_parameters_resolve_against_the_config_file(tmp_path: Path) -> None:
    from thresher.stages.fit import build_scorers

    config = parse_config(
        {
            **BASE,
            "scorers": [
                {
                    "name": "fasttext_quality",
                    "params": {
                        "positive_files": ["clean.txt", "/abs/other.txt"],
                        "classifiers": [{"seed": 1}, {"seed": 2, "negative_files": ["neg.txt"]}],
                    },
                }
            ],
        },
        base_dir=tmp_path,
    )
    params = build_scorers(config)[0].scorer.get_params()
    assert params["positive_files"] == [str((tmp_path / "clean.txt").resolve()), "/abs/other.txt"]
    assert params["classifiers"] == [
        {"seed": 1},
        {"seed": 2, "negative_files": [str((tmp_path / "neg.txt").resolve())]},
    ]
    # the recorded configuration keeps what the user wrote
    assert config.config_dict()["scorers"][0]["params"]["positive_files"][0] == "clean.txt"


TOKENS = [{"name": "token_count"}, {"name": "word_count"}]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {
                "selector": {
                    "name": "topk",
                    "params": {"score": "word_count"},
                    "budget": {"tokens": 0},
                }
            },
            "selector.budget: tokens: must be > 0",
        ),
        (
            {"selector": {"name": "random", "budget": {"sum": "word_count", "total": -5}}},
            "selector.budget: total: must be > 0",
        ),
        (
            {"selector": {"name": "random", "budget": {"tokens": 2.5}}},
            "selector.budget: tokens: must be a whole number",
        ),
        (
            {"selector": {"name": "random", "budget": {"sum": "word_count"}}},
            "selector.budget: a sum budget is {tokens: N} or {sum: <column>, total: N}",
        ),
        (
            {"selector": {"name": "random", "budget": {"tokens": 5, "total": 5}}},
            "selector.budget: a sum budget is",
        ),
        (
            {"selector": {"name": "random", "budget": {"sum": "bytes", "total": 5}}},
            "selector.budget.sum: column 'bytes' is not produced by any configured scorer",
        ),
        (
            {
                "filters": [
                    {
                        "name": "threshold",
                        "params": {"score": "word_count", "min": 1},
                        "budget": {"tokens": 9},
                    }
                ]
            },
            "filters[0].budget: 'threshold' defines its own size; remove budget",
        ),
        (
            {"selector": {"name": "random", "budget": [3]}},
            "selector.budget: budget must be a count (int), a fraction (float), {tokens: N}",
        ),
        ({"selector": {"name": "random", "budget": "1.5"}}, "a fraction budget must be in (0, 1]"),
    ],
)
def test_bad_sum_budget_names_the_field(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, "scorers": TOKENS, **change}, base_dir=tmp_path)
    assert expected in str(error.value)


def test_a_token_budget_needs_a_token_count_column(tmp_path: Path) -> None:
    change = {
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": {"tokens": 9}},
    }
    with pytest.raises(ConfigError, match=r"selector\.budget\.sum: column 'token_count'"):
        parse_config({**BASE, **change}, base_dir=tmp_path)


def test_sum_budgets_parse_to_one_form_and_round_trip(tmp_path: Path) -> None:
    from thresher.selectors.base import SumBudget

    tokens = parse_config(
        {
            **BASE,
            "scorers": TOKENS,
            "selector": {"name": "random", "budget": {"tokens": 2_000_000_000}},
        },
        base_dir=tmp_path,
    )
    assert tokens.selector.selector_budget() == SumBudget("token_count", 2_000_000_000)
    assert tokens.selector.budget_json() == {"sum": "token_count", "total": 2_000_000_000}
    summed = parse_config(
        {
            **BASE,
            "scorers": TOKENS,
            "selector": {
                "name": "random",
                "budget": {"sum": "token_count", "total": 2_000_000_000},
            },
        },
        base_dir=tmp_path,
    )
    assert summed.config_hash() == tokens.config_hash()  # the shorthand is the same budget
    again = parse_config(tokens.config_dict(), base_dir=tmp_path)
    assert again.selector.selector_budget() == tokens.selector.selector_budget()
    counted = parse_config(
        {**BASE, "selector": {"name": "random", "budget": 30}}, base_dir=tmp_path
    )
    assert counted.selector.selector_budget() == 30 and counted.selector.budget_json() == 30
