"""`thresher eval`: splits, fixed-steps training, the paired summary, and the whole path.

The end-to-end tests run scikit-learn's digits (pixels as a `features`
column, a held-out test file) through the command line once: scoring (EL2N
and a proxy embedding), a beta search for CCS on the validation split, and
random / bottom-k EL2N / CCS / sensitivity sampling at two pruning rates
and two seeds. Known answers: keeping the easiest 5% (bottom-k EL2N at 95%
pruning) loses to random on every seed; the search never reads the test
split (it runs with the test files deleted and chooses the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from thresher.cli import app
from thresher.errors import ConfigError
from thresher.evaluation.config import DownstreamConfig, load_eval_config, parse_eval_config
from thresher.evaluation.features import features_dir
from thresher.evaluation.jobs import Job, budget_rows, run_jobs
from thresher.evaluation.model import batch_rows, train_classifier
from thresher.evaluation.splits import FLIPPED, TRUE_LABEL, carve, flip_labels
from thresher.evaluation.steps import choose_params, search_jobs, with_model
from thresher.evaluation.summary import best_by_rate, data_check, summarize
from thresher.io import schema as S

PROXY = {"features": {"source": "features"}, "hidden": 32, "epochs": 6, "n_seeds": 2}
RATES = [0.5, 0.95]
SEEDS = 2


def _digits(directory: Path) -> None:
    """Digits as `pixels` vectors: two training shards and a held-out test file (300 rows)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(digits.target.size)
    table = pa.table(
        {
            "image_id": [f"img-{i:04d}" for i in order],
            "pixels": pa.array(digits.data[order].tolist(), pa.list_(pa.float32())),
            "digit": digits.target[order],
        }
    )
    (directory / "train").mkdir(parents=True)
    (directory / "test").mkdir()
    pq.write_table(table.slice(0, 800), directory / "train" / "part-0.parquet")
    pq.write_table(table.slice(800, 697), directory / "train" / "part-1.parquet")
    pq.write_table(table.slice(1497), directory / "test" / "test.parquet")


def _config(directory: Path, **eval_overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "test": {"paths": ["data/test/*.parquet"]},
        "validation": 0.15,
        "rates": RATES,
        "seeds": SEEDS,
        "selectors": [
            {"name": "bottomk", "params": {"score": "el2n"}},
            {"name": "ccs", "params": {"score": "el2n"}, "search": {"beta": [0.0, 0.3]}},
            {"name": "kmeans_sensitivity", "label": "sensitivity", "params": {"n_clusters": 10}},
        ],
        "model": {"hidden": 64, "steps": 200, "batch_size": 64, "lr": 0.05},
        "batch": 6,
    }
    section.update(eval_overrides)
    return {
        "run_dir": "out",
        "seed": 0,
        "input": {"paths": ["data/train/*.parquet"]},
        "schema": {"id": "image_id", "text": None, "features": "pixels", "label": "digit"},
        "scorers": [
            {"name": "el2n", "params": {"proxy": PROXY}},
            {"name": "embedding", "params": {"source": "proxy", "proxy": PROXY}},
        ],
        "engine": {"kind": "local", "workers": 2},
        "eval": section,
    }


@pytest.fixture(scope="module")
def digits_eval(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    """The digits eval run once through `thresher eval` (returns the config file)."""
    directory = tmp_path_factory.mktemp("digits-eval")
    _digits(directory / "data")
    config = directory / "eval.yaml"
    config.write_text(yaml.safe_dump(_config(directory)), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(config), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Best selector per pruning rate" in result.output
    return config


def _outputs(config: Path) -> Path:
    return config.parent / "out" / "run" / "eval"


# -- the whole path ------------------------------------------------------------------


def test_eval_writes_the_contract_tables_curve_and_report(digits_eval: Path) -> None:
    out = _outputs(digits_eval)
    table = pq.read_table(out / "results.parquet")
    contract = {
        "selector": pa.string(),
        "prune_rate": pa.float64(),
        "fraction_kept": pa.float64(),
        "seed": pa.int64(),
        "label_noise": pa.float64(),
        "accuracy": pa.float64(),
    }
    assert table.column_names[:6] == list(contract)
    assert {name: table.schema.field(name).type for name in contract} == contract
    results = table.to_pandas()
    labels = {"random", "bottomk(el2n)", "ccs(el2n)", "sensitivity"}
    assert len(results) == len(labels) * len(RATES) * SEEDS + SEEDS  # + the full-data models
    assert set(results["selector"]) == labels | {"full"}
    assert set(results["split"]) == {"test"}
    assert results["accuracy"].between(0, 1).all()

    splits = json.loads((digits_eval.parent / "out" / "splits" / "splits.json").read_text())
    n_pool = splits["rows"]["train"]
    assert splits["rows"] == {"train": n_pool, "validation": 225, "test": 300}
    assert n_pool == 1497 - 225
    for rate in RATES:  # every selector keeps the same number of rows at a rate
        kept = results.loc[results["prune_rate"] == rate, "n_kept"]
        assert set(kept) == {budget_rows(rate, n_pool)}
    full = results[results["selector"] == "full"]
    assert (full["fraction_kept"] == 1.0).all() and (full["prune_rate"] == 0.0).all()

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(labels) * len(RATES) + 1
    assert (summary.loc[summary["selector"] != "full", "n_seeds"] == SEEDS).all()
    assert summary.loc[summary["selector"] == "random", "diff_vs_random"].isna().all()

    search = pq.read_table(out / "search.parquet").to_pandas()
    assert set(search["split"]) == {"validation"}
    assert len(search) == 2 * len(RATES)  # two betas at each rate, one search seed
    record = json.loads((out / "eval.json").read_text())
    assert {(c["selector"], c["prune_rate"]) for c in record["chosen"]} == {
        ("ccs(el2n)", rate) for rate in RATES
    }

    # the learning rate was given; the weight decay was chosen on the validation split
    model = record["model"]
    assert model["given"] == {"lr": True, "weight_decay": False} and model["lr"] == 0.05
    assert [t["weight_decay"] for t in model["trials"]] == DownstreamConfig().weight_decay_grid
    assert model["weight_decay"] in DownstreamConfig().weight_decay_grid
    assert set(results["lr"]) == {0.05} and set(results["weight_decay"]) == {model["weight_decay"]}
    assert record["data_check"]["ok"] and record["warnings"] == []
    # every stage's time, under the keys readers of eval.json know
    stages = {"splits", "score", "features", "model_search", "search", "test"}
    assert set(record["seconds_per_stage"]) == stages
    (proxy,) = record["proxies"]  # EL2N and the embedding share one proxy
    assert proxy["train_accuracy"] > 0.9 and proxy["holdout_accuracy"] > 0.8

    curve = (out / "pruning_curve.svg").read_text()
    assert curve.lstrip().startswith("<?xml") and "<svg" in curve and "bottomk(el2n)" in curve
    report = (digits_eval.parent / "out" / "run" / "report.html").read_text()
    assert "Pruning curve" in report and "data:image/svg+xml;base64," in report


def test_keeping_the_easiest_five_percent_loses_to_random(digits_eval: Path) -> None:
    results = pq.read_table(_outputs(digits_eval) / "results.parquet").to_pandas()
    at_95 = results[results["prune_rate"] == 0.95].pivot(
        index="seed", columns="selector", values="accuracy"
    )
    margin = at_95["bottomk(el2n)"] - at_95["random"]
    assert (margin < -0.1).all(), at_95
    summary = pd.read_csv(_outputs(digits_eval) / "summary.csv")
    easiest = summary[(summary["selector"] == "bottomk(el2n)") & (summary["prune_rate"] == 0.95)]
    assert easiest["wins_vs_random"].item() == 0
    # random stays a usable model even on 5% of the data
    assert at_95["random"].min() > 0.6


def test_api_resumes_with_the_same_results(digits_eval: Path) -> None:
    import thresher

    before = pq.read_table(_outputs(digits_eval) / "results.parquet").to_pandas()
    evaluation = thresher.evaluate(digits_eval, quiet=True)
    after = evaluation.results
    columns = ["selector", "prune_rate", "seed", "accuracy", "n_kept", "params"]
    pd.testing.assert_frame_equal(before[columns], after[columns])
    assert evaluation.curve.is_file() and evaluation.report.is_file()
    assert evaluation.run.eval_results.num_rows == len(after)
    assert set(evaluation.best["prune_rate"]) == set(RATES)


def test_search_chooses_on_validation_without_the_test_split(
    digits_eval: Path, tmp_path: Path
) -> None:
    """By construction: the search reruns with the test files gone and chooses the same."""
    record = json.loads((_outputs(digits_eval) / "eval.json").read_text())
    config = with_model(
        load_eval_config(digits_eval), record["model"]["lr"], record["model"]["weight_decay"]
    )
    root = digits_eval.parent / "out"
    ids = {
        split: set(pq.read_table(root / "splits" / f"{split}.parquet").column(S.ID).to_pylist())
        for split in ("validation", "test")
    }
    train_ids = set(pq.read_table(root / "splits" / "train").column(S.ID).to_pylist())
    assert not ids["validation"] & ids["test"] and not ids["validation"] & train_ids
    assert not ids["test"] & train_ids

    for path in [root / "splits" / "test.parquet", features_dir(config) / "test.safetensors"]:
        path.rename(tmp_path / path.name)  # the search must not need them
    try:
        rows = run_jobs(config, search_jobs(config), tmp_path / "parts")
    finally:
        (tmp_path / "test.parquet").rename(root / "splits" / "test.parquet")
        (tmp_path / "test.safetensors").rename(features_dir(config) / "test.safetensors")
    recorded = pq.read_table(_outputs(digits_eval) / "search.parquet").to_pandas()
    assert [r["accuracy"] for r in rows] == recorded["accuracy"].tolist()
    chosen = choose_params(config, rows)
    assert {(k, v["beta"]) for k, v in chosen.items()} == {
        ((c["selector"], c["prune_rate"]), c["params"]["beta"]) for c in record["chosen"]
    }
    # the test jobs then use the chosen beta
    results = pq.read_table(_outputs(digits_eval) / "results.parquet").to_pandas()
    for (label, rate), params in chosen.items():
        used = results[(results["selector"] == label) & (results["prune_rate"] == rate)]
        assert {json.loads(p)["beta"] for p in used["params"]} == {params["beta"]}


# -- splits --------------------------------------------------------------------------


def _labelled(n: int, labels: list[Any]) -> pa.Table:
    return pa.table(
        {
            S.ID: [f"r{i}" for i in range(n)],
            S.LABEL: pa.array([labels[i % len(labels)] for i in range(n)]),
        }
    )


def test_carving_is_exact_deterministic_and_independent_of_row_order() -> None:
    table = _labelled(1000, ["a", "b"])
    rest, carved = carve(table, 0.2, seed=4, salt="test")
    assert carved.num_rows == 200 and rest.num_rows == 800
    again = carve(table.take(pa.array(np.arange(999, -1, -1))), 0.2, seed=4, salt="test")[1]
    assert set(again.column(S.ID).to_pylist()) == set(carved.column(S.ID).to_pylist())
    other = carve(table, 0.2, seed=4, salt="validation")[1]
    assert set(other.column(S.ID).to_pylist()) != set(carved.column(S.ID).to_pylist())


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], ["cat", "dog", "eel"]], ids=["int", "str"])
def test_label_noise_flips_exactly_the_fraction_to_other_classes(labels: list[Any]) -> None:
    table = _labelled(500, labels)
    noisy = flip_labels(table, 0.2, seed=1)
    flipped = noisy.column(FLIPPED).to_numpy(zero_copy_only=False)
    assert flipped.sum() == 100
    new, old = noisy.column(S.LABEL).to_pylist(), noisy.column(TRUE_LABEL).to_pylist()
    assert old == table.column(S.LABEL).to_pylist()
    assert all((a != b) == f for a, b, f in zip(new, old, flipped, strict=True))
    assert (
        set(new) <= set(labels)
        and noisy.schema.field(S.LABEL).type == table.schema.field(S.LABEL).type
    )
    assert flip_labels(table, 0.2, seed=1).equals(noisy)
    assert not flip_labels(table, 0.0, seed=1).column(FLIPPED).to_numpy(zero_copy_only=False).any()


# -- the downstream model ------------------------------------------------------------


def test_every_subset_trains_for_the_same_number_of_steps() -> None:
    rng = np.random.default_rng(0)
    for n in (7, 64, 1000):
        rows = batch_rows(n, 64, 300, rng)
        assert rows.shape == (300, min(64, n))
        assert all(len(set(batch)) == batch.size for batch in rows)  # no row twice in a step
    with pytest.raises(ValueError):
        batch_rows(0, 64, 10, rng)


def test_classifier_learns_separable_classes_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=5.0, size=(3, 8))
    targets = rng.integers(0, 3, 600)
    x = (centres[targets] + rng.normal(size=(600, 8))).astype(np.float32)
    config = DownstreamConfig(hidden=0, steps=150, batch_size=32, lr=0.1, weight_decay=0.0)
    model = train_classifier(x, targets, 3, config, seed=5)
    assert model.accuracy(x, targets) > 0.97
    again = train_classifier(x, targets, 3, config, seed=5)
    assert all(
        np.array_equal(model.weights[k].numpy(), again.weights[k].numpy()) for k in model.weights
    )
    # uniform importance weights change nothing; a missing class is never predicted right
    weighted = train_classifier(x, targets, 3, config, seed=5, weights=np.full(600, 2.0))
    assert np.allclose(
        weighted.weights["out.weight"].numpy(), model.weights["out.weight"].numpy(), atol=1e-5
    )
    assert model.accuracy(x[:10], np.full(10, -1)) == 0.0


# -- summary ---------------------------------------------------------------------------


def _check_rows(full: list[float], random: list[float], rate: float = 0.9) -> pd.DataFrame:
    rows = [
        {"selector": "full", "prune_rate": 0.0, "seed": s, "label_noise": 0.0, "accuracy": a}
        for s, a in enumerate(full)
    ]
    rows += [
        {"selector": "random", "prune_rate": rate, "seed": s, "label_noise": 0.0, "accuracy": a}
        for s, a in enumerate(random)
    ]
    frame = pd.DataFrame(
        rows, columns=["selector", "prune_rate", "seed", "label_noise", "accuracy"]
    )
    return frame.assign(fraction_kept=1.0 - frame["prune_rate"])


def test_data_check_warns_when_the_full_data_barely_beats_a_small_random_subset() -> None:
    clear = data_check(_check_rows([0.80, 0.81, 0.80], [0.70, 0.72, 0.69]))
    assert clear["ok"] and clear["prune_rate"] == 0.9
    assert clear["diff"] == pytest.approx(0.10)
    # the text model before the fix: 39.0% on all the data, 38.7% on a random 10%
    flat = data_check(_check_rows([0.390, 0.392, 0.388], [0.387, 0.389, 0.386]))
    assert not flat["ok"] and "mean nothing" in flat["message"]
    # a large but noisy margin is not clear either (twice the std of the paired difference)
    noisy = data_check(_check_rows([0.80, 0.60, 0.80], [0.70, 0.70, 0.70]))
    assert not noisy["ok"]
    # without so small a subset in the rates, the extra check models are used
    extra = _check_rows([], [0.5, 0.5], 0.9)
    mixed = data_check(_check_rows([0.8, 0.8], [0.79, 0.79], rate=0.5), extra)
    assert mixed["ok"] and mixed["prune_rate"] == 0.9
    assert data_check(_check_rows([0.8], [], 0.5))["ok"]  # nothing to compare: not checked


def test_the_report_and_cli_show_the_warning(tmp_path: Path) -> None:
    from thresher.reporting.html import _curve_context

    results = _check_rows([0.39, 0.39], [0.39, 0.39])
    record = {
        "warnings": ["the full-data model barely beats a random 10% subset"],
        "model": {"lr": 3.0, "weight_decay": 1e-5, "given": {"lr": False, "weight_decay": False}},
        "proxies": [{"proxy": "proxy-x", "train_accuracy": 0.9, "holdout_accuracy": 0.7}],
    }
    context = _curve_context(results, None, record)
    assert context["warnings"] == record["warnings"]
    assert any("learning rate 3, weight decay 1e-05 (chosen" in fact for fact in context["facts"])
    assert any("held-out accuracy 0.700" in fact for fact in context["facts"])


def test_summary_pairs_each_seed_with_random() -> None:
    rows = []
    for seed, (random, ccs, full) in enumerate([(0.70, 0.75, 0.90), (0.60, 0.69, 0.88)]):
        rows += [
            {"selector": "random", "prune_rate": 0.9, "accuracy": random},
            {"selector": "ccs", "prune_rate": 0.9, "accuracy": ccs},
            {"selector": "full", "prune_rate": 0.0, "accuracy": full},
        ]
        for row in rows[-3:]:
            row.update(seed=seed, label_noise=0.0, fraction_kept=0.1, params="{}", flipped_kept=0.0)
    summary = summarize(pd.DataFrame(rows)).set_index("selector")
    assert summary.loc["ccs", "diff_vs_random"] == pytest.approx(0.07)
    assert summary.loc["ccs", "diff_vs_random_std"] == pytest.approx(np.std([0.05, 0.09], ddof=1))
    assert summary.loc["ccs", "wins_vs_random"] == 2
    assert summary.loc["ccs", "diff_vs_full"] == pytest.approx(-0.17)
    assert summary.loc["random", "std"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    best = best_by_rate(summary.reset_index())
    assert best[["best", "margin"]].values.tolist() == [["ccs", pytest.approx(0.07)]]


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"selector": {"name": "random", "budget": 0.5}}, "eval.selectors"),
        ({"eval": None}, "eval"),
        ({"eval": {"selectors": [{"name": "topkk"}]}}, "eval.selectors[0]"),
        (
            {"eval": {"selectors": [{"name": "topk", "params": {"score": "nope"}}]}},
            "eval.selectors[0]",
        ),
        (
            {"eval": {"selectors": [{"name": "threshold", "params": {"score": "el2n", "max": 1}}]}},
            "own size",
        ),
        (
            {"eval": {"selectors": [{"name": "threshold", "params": {"score": "el2n"}}]}},
            "give `min`, `max` or both",
        ),
        ({"eval": {"rates": [0.0]}}, "eval.rates"),
        ({"eval": {"validation": 0.0}}, "validation"),
        ({"eval": {"test": {"paths": ["x"], "fraction": 0.2}}}, "eval.test"),
        ({"schema": {"id": "image_id", "text": None, "features": "pixels"}}, "schema.label"),
    ],
)
def test_bad_eval_configs_name_the_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = _config(tmp_path)
    for key, value in change.items():
        if key == "eval" and value is not None:
            data["eval"] = {**data["eval"], **value}
        elif value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_eval_config(data, base_dir=tmp_path)


def test_random_is_always_compared(tmp_path: Path) -> None:
    config = parse_eval_config(_config(tmp_path), base_dir=tmp_path)
    assert next(s.display for s in config.selectors) == "random"
    assert Job.full(0).selector == "full"


def test_a_text_corpus_with_label_noise_goes_through_the_same_path(
    small_corpus: Path, tmp_path: Path, prefect_server: None
) -> None:
    """Text records (hashed n-gram features), a carved test split, 10% of the labels flipped."""
    import thresher

    evaluation = thresher.evaluate(
        {
            "run_dir": str(tmp_path / "topics"),
            "seed": 1,
            "input": {"paths": [str(small_corpus / "shard-*")]},
            "schema": {"id": "id", "text": "text", "label": "topic"},
            "scorers": [
                {
                    "name": "el2n",
                    "params": {"proxy": {"features": {"dim": 512}, "hidden": 16, "n_seeds": 2}},
                }
            ],
            "engine": {"kind": "local", "workers": 2},
            "eval": {
                "test": {"fraction": 0.25},
                "validation": 0.0,
                "rates": [0.5],
                "seeds": 1,
                "label_noise": 0.1,
                "selectors": [{"name": "topk", "params": {"score": "el2n"}}],
                "model": {
                    "features": {"dim": 512},
                    "hidden": 0,
                    "steps": 100,
                    "lr": 0.5,
                    "weight_decay": 0.0,
                },
            },
        },
        quiet=True,
    )
    splits = evaluation.record["splits"]
    n_pool, n_test = splits["rows"]["train"], splits["rows"]["test"]
    assert splits["rows"]["validation"] == 0 and splits["flipped"] == round(0.1 * n_pool)
    ingested = splits["input"]["rows_in"] - sum(splits["input"]["quarantined"].values())
    assert n_test == round(0.25 * (ingested - splits["input"]["unlabelled"]))
    results = evaluation.results.set_index("selector")
    assert set(results.index) == {"random", "topk(el2n)", "full"}
    # the hardest half by EL2N holds most (> 65%) of the flipped labels; random about half
    assert results.loc["topk(el2n)", "flipped_kept"] > 0.13
    assert results.loc["random", "flipped_kept"] == pytest.approx(0.1, abs=0.03)
    assert results.loc["full", "accuracy"] > 0.9 > results.loc["topk(el2n)", "accuracy"]


def test_the_example_eval_configs_are_valid() -> None:
    examples = sorted((Path(__file__).parents[2] / "examples").glob("eval-*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        config = load_eval_config(path)
        assert config.selectors[0].display == "random", path


def test_validate_checks_an_eval_config(digits_eval: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(digits_eval)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "valid eval job: 2 input file(s)" in result.output
