"""`thresher eval` with `task: language_model`: equal-token LM training per subset, end to end.

A small corpus of Python standard-library docstrings (present on any
machine) with planted low-quality documents runs through the command line
once: scoring (a reference LM's perplexity, memorization, token counts,
MinHash), dedup, a learning-rate choice on the validation split, random,
random after dedup and a perplexity band at one pruning rate and two
seeds, each model a tiny transformer trained for the same number of tokens
and measured on the held-out split and a target set. Known answer, on the
eval's own loop: a subset of only the planted documents trains a clearly
worse model than a random subset of as many tokens, and a subset of clean
documents a better one.
"""

from __future__ import annotations

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
from thresher.evaluation.config import parse_eval_config
from thresher.evaluation.summary import best_by_rate, summarize_lm

LM = {
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "context_length": 32,
    "train_tokens": 12_000,
    "batch_size": 8,
    "vocab_size": 512,
    "tokenizer_documents": 300,
    "lr_grid": [0.003, 0.01],
}
REFERENCE = {
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "context_length": 64,
    "steps": 30,
    "n_documents": 300,
    "vocab_size": 512,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Docstrings with 30% planted low-quality documents, and a held-out target set."""
    from thresher.examples.lm_corpus import build_corpus

    out = tmp_path_factory.mktemp("lm-corpus") / "corpus"
    build_corpus(
        out,
        sources=["python_docstring"],
        pool_chars=300_000,
        target_docs=40,
        low_quality_share=0.3,
        shard_rows=400,
        seed=0,
    )
    return out


def _config(corpus: Path, **eval_overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "task": "language_model",
        "test": {"fraction": 0.05},
        "validation": 0.05,
        "targets": {"python_docs": {"paths": [str(corpus / "target" / "python_docs.parquet")]}},
        "rates": [0.5],
        "seeds": 2,
        "selectors": [
            {"name": "random", "dedup": False},
            {"name": "random", "label": "dedup", "dedup": True},
            {
                "name": "quantile_band",
                "label": "ppl_low",
                "params": {"score": "perplexity", "band": "low"},
                "dedup": False,
            },
            {
                "name": "quantile_band",
                "label": "memorization_low",
                "params": {"score": "memorization", "band": "low"},
                "dedup": False,
            },
        ],
        "lm": LM,
    }
    section.update(eval_overrides)
    return {
        "run_dir": "out",
        "seed": 0,
        "input": {"paths": [str(corpus / "train" / "part-*.parquet")]},
        "schema": {"id": "id", "text": "text"},
        "scorers": [
            {"name": "perplexity", "params": {"lm": REFERENCE}},
            {
                "name": "memorization",
                "params": {"lm": REFERENCE, "prefix": 16, "continuation": 16, "offsets": [0, 32]},
            },
            {"name": "token_count", "params": {"lm": REFERENCE}},
            {"name": "minhash"},
        ],
        "dedup": {"threshold": 0.8},
        "engine": {"kind": "local"},
        "eval": section,
    }


@pytest.fixture(scope="module")
def lm_eval(corpus: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    """The eval run once through `thresher eval` (returns the config file)."""
    directory = tmp_path_factory.mktemp("lm-eval")
    config = directory / "eval.yaml"
    config.write_text(yaml.safe_dump(_config(corpus)), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(config), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "per-token loss per held-out set" in result.output
    return config


def _outputs(config: Path) -> Path:
    return config.parent / "out" / "run" / "eval"


def test_every_model_trains_on_the_same_tokens_and_is_measured_on_every_set(
    lm_eval: Path,
) -> None:
    results = pd.read_parquet(_outputs(lm_eval) / "results.parquet")
    assert list(results.columns[:6]) == [
        "selector",
        "prune_rate",
        "fraction_kept",
        "seed",
        "label_noise",
        "loss",
    ]
    assert sorted(results["selector"].unique()) == [
        "dedup",
        "full",
        "memorization_low",
        "ppl_low",
        "random",
    ]
    assert len(results) == 5 * 2
    # equal compute: every model saw exactly the same number of tokens
    steps = -(-LM["train_tokens"] // (LM["batch_size"] * LM["context_length"]))
    assert (results["train_tokens"] == steps * LM["batch_size"] * LM["context_length"]).all()
    # the repetition rule: epochs = tokens trained / tokens of the subset
    np.testing.assert_allclose(results["epochs"], results["train_tokens"] / results["tokens_kept"])
    subsets = results[results["selector"] != "full"]
    assert (subsets["epochs"] > results[results["selector"] == "full"]["epochs"].max()).all()
    # a token budget: the subsets hold about half the pool's tokens, the full pool all of them
    assert subsets["fraction_kept"].between(0.4, 0.56).all()
    assert (results[results["selector"] == "full"]["fraction_kept"] == 1.0).all()
    for column in ("loss", "loss_python_docs"):
        assert np.isfinite(results[column]).all() and (results[column] > 0).all()
        np.testing.assert_allclose(
            results[column.replace("loss", "perplexity")], np.exp(results[column])
        )


def test_summary_report_and_record_speak_of_loss(lm_eval: Path) -> None:
    import json

    out = _outputs(lm_eval)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["set"]) == {"test", "python_docs"}
    assert (summary["metric"] == "loss").all()
    record = json.loads((out / "eval.json").read_text())
    assert record["task"] == "language_model"
    assert record["sets"] == ["test", "python_docs"]
    # the learning rate, then the warm-up, chosen on the validation split
    model = record["model"]
    assert model["given"] == {"lr": False, "warmup": False}
    assert model["lr"] in LM["lr_grid"] and model["warmup"] in (0.05, 0.2)
    assert [(t["lr"], t["warmup"]) for t in model["trials"]] == [
        *((lr, 0.05) for lr in LM["lr_grid"]),
        (model["lr"], 0.2),
    ]
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["lr"]) == {model["lr"]} and set(results["warmup"]) == {model["warmup"]}
    assert record["tokens"]["tokens"]["train"] > 0
    assert record["dedup"]["duplicates"] > 0  # the planted near-copies
    test_rows = [r for r in record["summary"] if r["set"] == "test"]
    assert {r["selector"] for r in test_rows} == {
        "full",
        "random",
        "dedup",
        "ppl_low",
        "memorization_low",
    }
    svg = (out / "pruning_curve.svg").read_text()
    assert "per-token loss" in svg
    report = (lm_eval.parent / "out" / "run" / "report.html").read_text()
    assert "Per-token loss (nats; lower is better)" in report
    assert "target: python_docs" in svg


def test_a_rerun_trains_no_model_and_a_lost_model_alone_is_retrained(lm_eval: Path) -> None:
    from thresher.api import evaluate

    parts = sorted((_outputs(lm_eval) / "_parts").rglob("*.json"))
    assert len(parts) == 5 * 2 + len(LM["lr_grid"]) + 1  # one stored part per model
    before = {p: p.stat().st_mtime_ns for p in parts}
    results = pd.read_parquet(_outputs(lm_eval) / "results.parquet")
    lost = parts[0]
    lost.unlink()
    evaluate(str(lm_eval), quiet=True)
    after = {p: p.stat().st_mtime_ns for p in parts}
    assert lost.is_file()  # the lost model was trained again...
    assert [p for p in parts if after[p] != before.get(p)] == [lost]  # ...and no other one
    again = pd.read_parquet(_outputs(lm_eval) / "results.parquet")
    pd.testing.assert_frame_equal(
        results.drop(columns=[c for c in results if c.endswith(("seconds", "per_second"))]),
        again.drop(columns=[c for c in again if c.endswith(("seconds", "per_second"))]),
    )


def test_planted_documents_alone_train_a_worse_model_and_clean_ones_a_better(
    corpus: Path,
) -> None:
    """The known answer at a tiny scale, on the eval's own tokenization and training loop."""
    from thresher.evaluation.lm_train import (
        LMTrainSettings,
        heldout_loss,
        tokenize_documents,
        train_lm,
    )
    from thresher.models.tokenizer import BPETokenizer

    table = pq.read_table(corpus / "train")
    texts = table.column("text").to_pylist()
    kinds = np.asarray(table.column("kind").to_pylist())
    clean, planted = np.flatnonzero(kinds == "clean"), np.flatnonzero(kinds != "clean")
    held_out, clean = clean[:60], clean[60:]
    tokenizer = BPETokenizer.train([texts[i] for i in clean[:300]], 512)
    docs = tokenize_documents(texts, tokenizer)
    sizes = np.diff(docs.starts)
    budget = int(sizes[planted].sum())
    rng = np.random.default_rng(0)

    def fill(candidates: np.ndarray) -> np.ndarray:
        order = rng.permutation(candidates)
        return np.sort(order[np.cumsum(sizes[order]) <= budget])

    pool = np.sort(np.concatenate([clean, planted]))
    settings = LMTrainSettings(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=1,
        n_heads=2,
        context_length=32,
        train_tokens=40_000,
        batch_size=8,
        lr=0.01,
    )
    losses = {}
    for name, rows in (("planted", planted), ("random", fill(pool)), ("clean", fill(clean))):
        subset = docs.take(rows)
        assert subset.n_tokens <= budget
        assert subset.n_tokens >= 0.9 * budget  # the same tokens, within a document or two
        trained = train_lm(subset, settings, seed=0)
        losses[name], _ = heldout_loss(trained.model, docs.take(held_out), 32)
    # margins about ten times the spread of a model's loss over seeds at this scale (~0.005)
    assert losses["planted"] > losses["random"] + 0.03, losses
    assert losses["clean"] < losses["random"] - 0.05, losses


# -- configuration and summary --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label_noise": 0.1}, "label_noise"),
        ({"targets": {"test": {"paths": ["x.parquet"]}}}, "name the eval's own splits"),
        ({"targets": {"bad-name": {"paths": ["x.parquet"]}}}, "identifiers"),
        ({"lm": {"d_model": 30, "n_heads": 4}}, "must divide"),
        ({"validation": 0.0}, "lm.lr and lm.warmup"),
        ({"lm": {"warmup_grid": [0.1, 1.5]}}, "warmup_grid"),
        ({"lm": {"lr_grid": [0.01, 0.01]}}, "each candidate once"),
    ],
)
def test_bad_language_model_configs_name_the_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = _config(tmp_path)
    data["eval"].update(change)
    with pytest.raises(ConfigError, match=message):
        parse_eval_config(data, base_dir=tmp_path)


def test_the_language_model_needs_text_and_no_label(tmp_path: Path) -> None:
    data = _config(tmp_path)
    data["schema"] = {"id": "id", "text": None, "features": "x"}
    with pytest.raises(ConfigError, match=r"schema\.text"):
        parse_eval_config(data, base_dir=tmp_path)
    classifier = _config(tmp_path)
    classifier["eval"]["task"] = "classifier"
    classifier["schema"]["label"] = "kind"
    with pytest.raises(ConfigError, match="targets"):
        parse_eval_config(classifier, base_dir=tmp_path)
    config = parse_eval_config(_config(tmp_path), base_dir=tmp_path)  # no label needed
    assert config.eval.language_model


def test_the_language_model_scoring_run_counts_tokens(tmp_path: Path) -> None:
    from thresher.evaluation.config import scoring_config

    data = _config(tmp_path)
    data["scorers"] = [{"name": "perplexity", "params": {"lm": REFERENCE}}]
    data["eval"]["selectors"] = data["eval"]["selectors"][:1]
    del data["dedup"]
    scoring = scoring_config(parse_eval_config(data, base_dir=tmp_path))
    assert [s.name for s in scoring.scorers] == ["perplexity", "token_count"]
    assert scoring.schema_.label is None


def test_lm_summary_pairs_seeds_and_a_lower_loss_wins() -> None:
    rows = []
    for seed, (random, better, worse) in enumerate([(5.0, 4.8, 5.5), (5.2, 5.0, 5.6)]):
        for selector, loss in (("random", random), ("good", better), ("bad", worse)):
            rows.append(
                {
                    "selector": selector,
                    "prune_rate": 0.5,
                    "fraction_kept": 0.5,
                    "seed": seed,
                    "label_noise": 0.0,
                    "loss": loss,
                    "loss_t": loss + 1,
                }
            )
    summary = summarize_lm(pd.DataFrame(rows), ["test", "t"])
    good = summary[(summary["set"] == "test") & (summary["selector"] == "good")].iloc[0]
    assert good["diff_vs_random"] == pytest.approx(-0.2)
    assert good["wins_vs_random"] == 2
    assert good["rel_diff_vs_random"] == pytest.approx(-0.2 / 5.1)
    bad = summary[(summary["set"] == "t") & (summary["selector"] == "bad")].iloc[0]
    assert bad["wins_vs_random"] == 0
    best = best_by_rate(summary)
    assert list(best["set"]) == ["test", "t"]
    assert (best["best"] == "good").all()


def test_an_unlabelled_corpus_is_split_without_losing_rows(tmp_path: Path) -> None:
    from thresher.evaluation.splits import prepare_splits, read_split

    data = tmp_path / "data"
    data.mkdir()
    texts = [f"document number {i} " * 3 for i in range(200)]
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(200)], "text": texts}), data / "a.parquet"
    )
    pq.write_table(pa.table({"text": ["target text"] * 5}), data / "t.parquet")
    config = _config(tmp_path)
    config["input"]["paths"] = ["data/a.parquet"]
    config["run_dir"] = str(tmp_path / "out")
    config["eval"]["targets"] = {"t": {"paths": ["data/t.parquet"]}}
    cfg = parse_eval_config(config, base_dir=tmp_path)
    record, rebuilt = prepare_splits(cfg)
    assert rebuilt
    rows = record["rows"]
    assert rows["train"] + rows["validation"] + rows["test"] == 200
    assert record["target_rows"] == {"t": 5}
    target = read_split(tmp_path / "out" / "splits" / "targets" / "t.parquet")
    assert target.column_names == ["id", "text"] and target.num_rows == 5


def test_a_hugging_face_config_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    from thresher.evaluation.lm_eval import train_settings

    data = _config(tmp_path)
    data["eval"]["lm"] = {**LM, "hf_config": "models/gpt2.json"}
    config = parse_eval_config(data, base_dir=tmp_path)
    settings = train_settings(config.eval.lm, 512, 0.01, config.run.base_dir)
    assert settings.hf_config == str(tmp_path / "models" / "gpt2.json")
    assert (settings.d_model, settings.train_tokens) == (LM["d_model"], LM["train_tokens"])
