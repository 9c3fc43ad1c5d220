"""Language-model pruning curves: which selection trains the better small LM at equal tokens?

Runs ``examples/eval-lm.yaml`` through ``thresher eval`` on the offline
pretraining-style corpus (:mod:`thresher.examples.lm_corpus`: package
descriptions, man pages, /usr/share/doc, Python documentation, with 20% of
planted low-quality documents of five known kinds, and a held-out Python
documentation target set). For every selector (random, random after dedup,
perplexity bands low/medium/high, token EL2N, memorization, DSIR toward the
target, fastText quality toward the target, SemDeDup rank on LM embeddings)
at 50% and 25% of the pool's tokens, 3 seeds, and the full pool, a small
decoder-only LM trains from scratch for the same number of tokens and is
measured by its per-token loss on the corpus's held-out split and on the
target set.

The known-answer check uses the same tokenized pool, training loop and
settings: a subset made only of the planted documents, a random subset and
a subset of clean documents, each of the planted documents' token count,
3 seeds each, measured on the held-out split's clean documents (and on the
whole split, whose planted fifth favours the planted-only model). Targets:
the planted-only model's loss at least 10% above random's; the clean-only
model's below it.

Targets of "selection helps": at each rate, the best selector's target-set
loss at least 3% below random's, paired over the seeds and more than twice
the spread, while not worse than random by more than 1% on the held-out
split.

Speed: each test model's training tokens over its whole job (selection,
training, measuring), median over the models, against a bare torch loop
on the same network and data timed in the same run (target >= 0.8x).

Writes ``benchmarks/results/eval_lm.md`` (the section printed here),
``eval_lm.csv`` (one row per model), ``eval_lm_summary.csv``,
``eval_lm_known_answer.csv`` and ``eval_lm.svg``. Full scale (about an hour
on 2 cores)::

    python -m benchmarks.eval_lm

Development scale (a small corpus and model, 2 seeds; a few minutes)::

    python -m benchmarks.eval_lm --quick

Runs go to ``--work`` (default ``runs/bench-eval-lm``); a re-run resumes
there (finished models are reused); ``--fresh`` starts over. ``--device
cuda`` with ``--scale gpu`` runs the same grid with a larger model (the GPU
check does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXAMPLE = ROOT / "examples" / "eval-lm.yaml"

#: Model and corpus scales: ``train_tokens`` per model, the pool's clean characters.
SCALES: dict[str, dict[str, Any]] = {
    "quick": {
        "pool_chars": 1_200_000,
        "target_docs": 150,
        "seeds": 2,
        "lm": {
            "d_model": 64,
            "n_layers": 2,
            "n_heads": 4,
            "context_length": 64,
            "train_tokens": 150_000,
            "batch_size": 16,
            "vocab_size": 2048,
            "lr_grid": [0.003, 0.01],
            "warmup": 0.05,
        },
        "reference_lm": {"n_documents": 600, "steps": 120},
        "speed_tokens": 30_000,
    },
    "default": {
        "pool_chars": 6_000_000,
        "target_docs": 400,
        "seeds": 3,
        "lm": {
            "d_model": 128,
            "n_layers": 2,
            "n_heads": 4,
            "context_length": 128,
            "train_tokens": 250_000,
            "batch_size": 16,
            "vocab_size": 4096,
            "lr_grid": [0.001, 0.003, 0.01],
            "warmup": 0.05,
        },
        "reference_lm": {"n_documents": 2000, "steps": 300},
        "speed_tokens": 150_000,
    },
    "gpu": {
        "pool_chars": 9_000_000,
        "target_docs": 400,
        "seeds": 3,
        "lm": {
            "d_model": 384,
            "n_layers": 6,
            "n_heads": 6,
            "context_length": 256,
            "train_tokens": 4_000_000,
            "batch_size": 32,
            "vocab_size": 4096,
            "lr_grid": [0.0006, 0.002, 0.006],
            "warmup": 0.05,
        },
        "reference_lm": {"n_documents": 4000, "steps": 600},
        "speed_tokens": 1_000_000,
    },
}


def build_corpus(work: Path, scale: dict[str, Any]) -> Path:
    """The offline corpus under ``work/corpus`` (built once; ``corpus.json`` marks it done)."""
    from thresher.examples.lm_corpus import build_corpus as build

    out = work / "corpus"
    if not (out / "corpus.json").is_file():
        started = time.perf_counter()
        build(out, pool_chars=scale["pool_chars"], target_docs=scale["target_docs"], seed=0)
        print(f"corpus built in {time.perf_counter() - started:.0f} s: {out}", flush=True)
    return out


def eval_config(corpus: Path, work: Path, scale: dict[str, Any], device: str) -> dict[str, Any]:
    """``examples/eval-lm.yaml`` on the built corpus at ``scale``."""
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    target = str(corpus / "target" / "python_docs.parquet")
    config["run_dir"] = str(work / "eval")
    config["input"]["paths"] = [str(corpus / "train" / "part-*.parquet")]
    reference = scale["reference_lm"]
    for scorer in config["scorers"]:
        params = scorer.setdefault("params", {})
        if "lm" in params:
            params["lm"] = dict(reference)
        if scorer["name"] == "dsir":
            params["target_files"] = [target]
        if scorer["name"] == "fasttext_quality":
            params["positive_files"] = [target]
    section = config["eval"]
    section["targets"]["python_docs"]["paths"] = [target]
    section["seeds"] = scale["seeds"]
    section["lm"] = {**scale["lm"], "device": device}
    return config


def known_answer(evaluation: Any, config: Any, seeds: int) -> pd.DataFrame:
    """Planted-only, random and clean-only subsets of equal tokens, trained as the eval trains."""
    import pyarrow.parquet as pq

    from thresher.evaluation.features import pool_table
    from thresher.evaluation.lm_eval import load_docs, train_settings
    from thresher.evaluation.lm_train import heldout_loss, train_lm
    from thresher.io import schema as S
    from thresher.run_dir import RunDir

    pool = pool_table(RunDir(evaluation.run_path), [S.ID, S.SHARD, S.ROW])
    corpus = pq.read_table(Path(config.run.input_files()[0].location.as_path()).parent)
    kind = dict(
        zip(corpus.column("id").to_pylist(), corpus.column("kind").to_pylist(), strict=True)
    )
    kinds = np.asarray([kind[i] for i in pool.column(S.ID).to_pylist()])
    train, test = load_docs(config, "train"), load_docs(config, "test")
    test_ids = pq.read_table(evaluation.path / "splits" / "test.parquet", columns=["id"])
    clean_test = test.take(
        np.flatnonzero([kind[i] == "clean" for i in test_ids.column("id").to_pylist()])
    )
    sizes = np.diff(train.starts)
    planted = np.flatnonzero(kinds != "clean")
    budget = int(sizes[planted].sum())
    lm = config.eval.lm
    vocab = int(
        json.loads((Path(evaluation.dir) / "_lm" / "tokens.json").read_text())["vocab_size"]
    )
    settings = train_settings(
        lm,
        vocab,
        float(evaluation.record["model"]["lr"]),
        warmup=evaluation.record["model"].get("warmup"),
    )
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        subsets = {
            "planted only": planted,
            "random": _fill(rng.permutation(train.n_docs), sizes, budget),
            "clean only": _fill(rng.permutation(np.flatnonzero(kinds == "clean")), sizes, budget),
        }
        for name, rows_ in subsets.items():
            trained = train_lm(train.take(np.sort(rows_)), settings, 1000 + seed)
            loss, _ = heldout_loss(trained.model, test, lm.context_length)
            clean_loss, _ = heldout_loss(trained.model, clean_test, lm.context_length)
            rows.append(
                {
                    "subset": name,
                    "seed": seed,
                    "clean_loss": clean_loss,
                    "loss": loss,
                    "tokens": int(sizes[rows_].sum()),
                    "documents": int(rows_.size),
                    "epochs": trained.record["epochs"],
                }
            )
    return pd.DataFrame(rows)


def loop_speed(evaluation: Any, config: Any, rounds: int, tokens: int) -> dict[str, Any]:
    """The eval's training tokens/s against a bare torch loop on the same model and data.

    ``train_lm`` and the bare loop (:func:`benchmarks.lm_loop.bare_loop`: the
    same network and windows, a plain AdamW step, nothing else) are timed
    here, interleaved, ``rounds`` times each (their ratio is immune to the
    machine's load, which both see); the eval's own rows give the share of
    each model's job (selection, training, measuring on every held-out set)
    spent training. The eval's whole-job rate against the bare loop is their
    product.
    """
    import dataclasses

    from benchmarks.lm_loop import bare_loop
    from thresher.evaluation.lm_eval import load_docs, train_settings
    from thresher.evaluation.lm_train import train_lm

    vocab = int(
        json.loads((Path(evaluation.dir) / "_lm" / "tokens.json").read_text())["vocab_size"]
    )
    settings = train_settings(
        config.eval.lm,
        vocab,
        float(evaluation.record["model"]["lr"]),
        warmup=evaluation.record["model"].get("warmup"),
    )
    settings = dataclasses.replace(settings, train_tokens=tokens)
    train = load_docs(config, "train")
    loop, bare = [], []
    for _ in range(rounds):
        loop.append(float(train_lm(train, settings, 0).record["tokens_per_second"]))
        bare.append(bare_loop(train, settings, 0))
    results = evaluation.results
    job_seconds = results["select_seconds"] + results["train_seconds"] + results["eval_seconds"]
    # the job's share spent training, from each model's own timings (same moment, same load)
    training_share = float((results["train_seconds"] / job_seconds).median())
    loop_ratio = float(np.median(np.asarray(loop) / np.asarray(bare)))
    return {
        "eval_job_tokens_per_second": float((results["train_tokens"] / job_seconds).median()),
        "eval_train_tokens_per_second": float(results["tokens_per_second"].median()),
        "training_share_of_job": training_share,
        "train_lm_tokens_per_second": float(np.median(loop)),
        "bare_tokens_per_second": float(np.median(bare)),
        "train_lm_vs_bare": loop_ratio,
        "ratio": loop_ratio * training_share,
        "rounds": rounds,
        "tokens": tokens,
    }


def _fill(order: np.ndarray, sizes: np.ndarray, budget: int) -> np.ndarray:
    """The first documents of ``order`` whose tokens fit in ``budget``."""
    return order[np.cumsum(sizes[order]) <= budget]


def target_checks(summary: pd.DataFrame, known: pd.DataFrame) -> list[dict[str, Any]]:
    """Each target of the benchmark: measured value, met or missed."""
    checks = []
    for column, where in (("clean_loss", "clean held-out documents"), ("loss", "held-out split")):
        by = known.pivot(index="seed", columns="subset", values=column)
        planted = float((by["planted only"] / by["random"] - 1).mean())
        clean = float((by["clean only"] / by["random"] - 1).mean())
        checks.append(
            {
                "target": f"planted-only loss >= 1.10x random ({where})",
                "measured": f"{1 + planted:.3f}x",
                "met": planted >= 0.10,
            }
        )
        checks.append(
            {
                "target": f"clean-only loss < random ({where})",
                "measured": f"{1 + clean:.3f}x",
                "met": clean < 0,
            }
        )
    candidates = summary[~summary["selector"].isin(["random", "full"])]
    for rate in sorted(candidates["prune_rate"].unique()):
        target = candidates[
            (candidates["set"] == "python_docs") & (candidates["prune_rate"] == rate)
        ]
        best = target.sort_values("mean").iloc[0]
        held = candidates[
            (candidates["set"] == "test")
            & (candidates["prune_rate"] == rate)
            & (candidates["selector"] == best["selector"])
        ].iloc[0]
        rel, std = float(best["rel_diff_vs_random"]), float(best["diff_vs_random_std"])
        clear = float(best["diff_vs_random"]) < -2 * std
        met = rel <= -0.03 and clear and float(held["rel_diff_vs_random"]) <= 0.01
        checks.append(
            {
                "target": f"at {100 * (1 - rate):g}% of the tokens: best target loss >= 3% below random, "
                f"> 2x spread, held-out not worse than +1%",
                "measured": f"{best['selector']}: target {100 * rel:+.2f}% (paired diff "
                f"{best['diff_vs_random']:+.4f} ± {std:.4f} nats), held-out "
                f"{100 * float(held['rel_diff_vs_random']):+.2f}%",
                "met": bool(met),
            }
        )
    return checks


def markdown(
    summary: pd.DataFrame,
    known: pd.DataFrame,
    checks: list[dict[str, Any]],
    record: dict[str, Any],
    corpus: dict[str, Any],
    seconds: float,
    scale_name: str,
) -> str:
    from thresher.evaluation.summary import markdown_table

    lm = record["lm"]
    train = corpus["train"]
    planted = sum(v["docs"] for k, v in train["by_kind"].items() if k != "clean")
    lines = [
        f"Scale `{scale_name}`: corpus of {train['docs']:,} documents "
        f"({train['characters']:,} characters; {planted:,} planted), target set "
        f"{corpus['target']['docs']:,} documents. Model: {lm['n_layers']} layers x "
        f"{lm['d_model']}, context {lm['context_length']}, {lm['train_tokens']:,} training tokens per "
        f"model, learning rate {record['model']['lr']:g} (chosen on the validation split from "
        f"{lm['lr_grid']}). {record['models']} models; {seconds / 60:.1f} min in all.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else 'no'} |" for c in checks],
        "",
        "Per-token loss (nats), mean over seeds; `rel_diff_vs_random` is the paired difference "
        "relative to random's mean (negative: better).",
        "",
        markdown_table(
            summary[
                [
                    "set",
                    "selector",
                    "prune_rate",
                    "fraction_kept",
                    "mean",
                    "std",
                    "diff_vs_random",
                    "diff_vs_random_std",
                    "rel_diff_vs_random",
                    "wins_vs_random",
                ]
            ]
        ),
        "",
        "Known answer (same loop and settings, equal tokens):",
        "",
        markdown_table(
            known.groupby("subset", sort=False)[["clean_loss", "loss", "tokens", "epochs"]]
            .mean()
            .reset_index()
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", default=bool(os.environ.get("THRESHER_BENCH_QUICK"))
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-eval-lm")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    scale_name = args.scale or ("quick" if args.quick else "default")
    scale = SCALES[scale_name]
    work = args.work / scale_name
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    from thresher.api import evaluate
    from thresher.evaluation.config import parse_eval_config

    started = time.perf_counter()
    corpus_dir = build_corpus(work, scale)
    config = parse_eval_config(eval_config(corpus_dir, work, scale, args.device), base_dir=work)
    evaluation = evaluate(config, quiet=True)
    stored = work / "known_answer.csv"  # a re-run reuses the known-answer models
    if stored.is_file():
        known = pd.read_csv(stored)
    else:
        known = known_answer(evaluation, config, scale["seeds"])
        known.to_csv(stored, index=False)
    seconds = time.perf_counter() - started
    speed = loop_speed(evaluation, config, rounds=2, tokens=scale["speed_tokens"])
    summary = evaluation.summary
    checks = target_checks(summary, known)
    checks.append(
        {
            "target": "eval training tokens/s (whole job) >= 0.8x a bare torch loop",
            "measured": f"{speed['ratio']:.2f}x (train_lm {speed['train_lm_vs_bare']:.2f}x the "
            f"bare loop, interleaved; training {100 * speed['training_share_of_job']:.0f}% of "
            f"each job)",
            "met": speed["ratio"] >= 0.8,
        }
    )
    corpus = json.loads((corpus_dir / "corpus.json").read_text())
    text = markdown(summary, known, checks, evaluation.record, corpus, seconds, scale_name)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if scale_name == "default" else f"_{scale_name}"
    (RESULTS / f"eval_lm{suffix}.md").write_text(text + "\n", encoding="utf-8")
    evaluation.results.to_csv(RESULTS / f"eval_lm{suffix}.csv", index=False)
    summary.to_csv(RESULTS / f"eval_lm{suffix}_summary.csv", index=False)
    known.to_csv(RESULTS / f"eval_lm{suffix}_known_answer.csv", index=False)
    (RESULTS / f"eval_lm{suffix}_speed.json").write_text(json.dumps(speed, indent=2) + "\n")
    shutil.copyfile(evaluation.curve, RESULTS / f"eval_lm{suffix}.svg")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
