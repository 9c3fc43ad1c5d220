"""Text pruning curves: is the eval's text model trustworthy, and which selector wins on real text?

Runs ``examples/eval-debian.yaml`` (Debian package descriptions labelled by
section, built from ``apt-cache dumpavail``) through ``thresher eval`` with
clean labels and with 20% of the training labels flipped: random, EL2N
top-k, CCS on EL2N, k-means sensitivity sampling, prototypes, a DPP,
SemDeDup rank and D2 Pruning on sentence embeddings; pruning rates
30/50/70/90/95%; 5 seeds; the full-data model as reference (paired
differences against random at the same rate and seed).

Parity: on the eval's own splits and features, scikit-learn's
``SGDClassifier(loss="log_loss")`` is trained for the same number of
examples seen as the eval's full-data model (``steps x batch_size``), with
its default ``alpha`` and with ``alpha`` chosen on the validation split;
the thresher model must be within 1 point of both. The proxy behind
EL2N/AUM is compared the same way (its held-out accuracy against
scikit-learn's validation accuracy after as many epochs). Sentence
embedding throughput (documents per second) is measured on the machine.

Writes to ``benchmarks/results/``: ``eval_text.md`` (the section printed
here), ``eval_text.csv`` (one row per trained model),
``eval_text_summary.csv``, ``eval_text_parity.csv`` and ``eval_text.svg``.

Needs the package index (``apt-get update``) and ``thresher[sentence]``.
Full scale::

    python -m benchmarks.eval_text

Development scale (8,000 descriptions, 2 rates, 2 seeds; a few minutes)::

    python -m benchmarks.eval_text --quick     # or THRESHER_BENCH_QUICK=1

Runs go to ``--work`` (default ``runs/bench-eval-text``); a re-run resumes
there (``--fresh`` starts over).

References
----------
Maharana, Yadav and Bansal, "D2 Pruning: Message Passing for Balancing
Diversity and Difficulty in Data Pruning", ICLR 2024.
Zheng, Liu, Li and Prakash, "Coverage-centric Coreset Selection for High
Pruning Rates", ICLR 2023.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from benchmarks.eval_fashion_mnist import accuracy_table, best_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "eval-debian.yaml"
CONVERTER = ROOT / "examples" / "debian_packages_to_parquet.py"
RESULTS = ROOT / "benchmarks" / "results"
NAME = "eval_text"
#: scikit-learn's alpha candidates (its default first).
ALPHAS = (1e-4, 1e-5, 1e-6, 1e-7)


def _converter() -> Any:
    spec = importlib.util.spec_from_file_location("debian_packages_to_parquet", CONVERTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_data(work: Path, quick: bool) -> Path:
    """The package descriptions as Parquet under ``work/data`` (an 8,000-row sample when quick)."""
    full = work / "data"
    if not list(full.glob("part-*.parquet")):
        converter = _converter()
        converter.convert(converter.dumpavail(), full)
    if not quick:
        return full
    data = work / "data-quick"
    if not (data / "part-00.parquet").is_file():
        table = pq.read_table(full)
        keep = np.sort(np.random.default_rng(0).choice(table.num_rows, 8000, replace=False))
        data.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(keep), data / "part-00.parquet")
    return data


def eval_config(data: Path, work: Path, noise: float, quick: bool) -> dict[str, Any]:
    """The example config, pointed at ``data``, with ``noise`` (and smaller when quick)."""
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["run_dir"] = str(work / f"noise-{noise:g}{'-quick' if quick else ''}")
    config["input"]["paths"] = [str(data / "part-*.parquet")]
    section = config["eval"]
    section["label_noise"] = noise
    if quick:
        section.update(rates=[0.5, 0.9], seeds=2)
        section["model"]["steps"] = 200
        for selector in section["selectors"]:
            if selector["name"] in ("kmeans_sensitivity", "prototypes", "semdedup_rank"):
                selector["params"]["n_clusters"] = 20
            if selector.get("partitions"):
                selector["partitions"] = {"clusters": 4, "sample": 5000}
    return dict(config)


def _sparse(split: Any) -> Any:
    import scipy.sparse as sp

    m = split.matrix
    if hasattr(m, "indptr"):
        return sp.csr_matrix((m.values, m.indices, m.indptr), shape=(len(m), m.dim))
    return np.asarray(m)


def sklearn_baseline(config: Any, epochs: int) -> dict[str, Any]:
    """scikit-learn's SGD logistic regression on the eval's features: default and tuned alpha."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    from thresher.evaluation.features import load_split

    train, validation, test = (load_split(config, s) for s in ("train", "validation", "test"))
    x = {"train": _sparse(train), "validation": _sparse(validation), "test": _sparse(test)}
    scores: dict[float, tuple[float, float]] = {}
    for alpha in ALPHAS:
        model = SGDClassifier(
            loss="log_loss", alpha=alpha, max_iter=epochs, tol=None, random_state=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x["train"], train.targets)
        scores[alpha] = (
            float(np.mean(model.predict(x["validation"]) == validation.targets)),
            float(np.mean(model.predict(x["test"]) == test.targets)),
        )
    best = max(ALPHAS, key=lambda a: (scores[a][0], -ALPHAS.index(a)))
    return {
        "epochs": epochs,
        "default_alpha": ALPHAS[0],
        "default_test": scores[ALPHAS[0]][1],
        "tuned_alpha": best,
        "tuned_validation": scores[best][0],
        "tuned_test": scores[best][1],
        "by_alpha": {str(a): v for a, v in scores.items()},
    }


def embedding_throughput(data: Path, n_docs: int = 2000) -> dict[str, Any]:
    """Sentence embeddings per second on this machine (model loaded beforehand)."""
    from thresher.devices import resolve_device
    from thresher.models.sentence import encode, load_encoder

    texts = pq.read_table(data, columns=["text"]).column("text").to_pylist()[:n_docs]
    device = resolve_device("auto")
    load_encoder(None, device)
    encode(texts[:64], None, device, 128)  # warm-up
    started = time.perf_counter()
    encode(texts, None, device, 128)
    seconds = time.perf_counter() - started
    return {
        "device": device,
        "docs": len(texts),
        "seconds": seconds,
        "docs_per_s": len(texts) / seconds,
    }


def parity_rows(
    label: str, evaluation: Any, config: Any, record: dict[str, Any]
) -> list[dict[str, Any]]:
    """Full-data model and proxies against scikit-learn, as table rows."""
    results = evaluation.results
    full = results[results["selector"] == "full"]["accuracy"]
    model = config.eval.model
    epochs = max(1, round(model.steps * model.batch_size / int(record["splits"]["rows"]["train"])))
    baseline = sklearn_baseline(config, epochs)
    rows = [
        {
            "set": label,
            "model": "eval downstream (full data)",
            "thresher": float(full.mean()),
            "sklearn_default": baseline["default_test"],
            "sklearn_tuned": baseline["tuned_test"],
            "split": "test",
            "settings": f"lr {record['model']['lr']:g}, wd {record['model']['weight_decay']:g}; "
            f"sklearn {epochs} epochs, alpha {baseline['tuned_alpha']:g}",
        }
    ]
    for proxy in record.get("proxies", []):
        if proxy.get("holdout_accuracy") is None:
            continue
        proxy_base = (
            sklearn_baseline(config, int(proxy["epochs"]))
            if proxy["epochs"] != epochs
            else baseline
        )
        rows.append(
            {
                "set": label,
                "model": f"proxy {proxy['proxy']} (hidden {proxy['hidden']})",
                "thresher": float(proxy["holdout_accuracy"]),
                "sklearn_default": proxy_base["by_alpha"][str(ALPHAS[0])][0],
                "sklearn_tuned": proxy_base["tuned_validation"],
                "split": "held-out / validation",
                "settings": f"lr {proxy['learning_rate']:g}, wd {proxy['weight_decay']:g}, "
                f"train accuracy {proxy['train_accuracy']:.3f}; sklearn {proxy['epochs']} epochs",
            }
        )
    return rows


def parity_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| set | model | thresher % | sklearn default alpha % | sklearn tuned alpha % | "
        "thresher - tuned (points) | split | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['set']} | {row['model']} | {100 * row['thresher']:.2f} | "
            f"{100 * row['sklearn_default']:.2f} | {100 * row['sklearn_tuned']:.2f} | "
            f"{100 * (row['thresher'] - row['sklearn_tuned']):+.2f} | {row['split']} | "
            f"{row['settings']} |"
        )
    return "\n".join(lines)


def targets(summary: pd.DataFrame) -> list[str]:
    """The Debian targets, each checked against the measured summary (clean labels)."""
    clean = summary[summary["label_noise"] == 0.0]
    candidates = clean[~clean["selector"].isin(["random", "full"])]
    full = clean[clean["selector"] == "full"]["mean"]
    lines = []
    for rate in sorted(candidates["prune_rate"].unique()):
        at = candidates[candidates["prune_rate"] == rate].sort_values("mean", ascending=False)
        best = at.iloc[0]
        margin, std = 100 * best["diff_vs_random"], 100 * best["diff_vs_random_std"]
        text = (
            f"- {100 * rate:g}% pruned: best {best['selector']} {100 * best['mean']:.2f}%, "
            f"{margin:+.2f} ± {std:.2f} points vs random"
        )
        if not full.empty:
            text += f", {100 * (best['mean'] - full.item()):+.2f} vs full data"
        if rate == 0.5:
            ok = (not full.empty and best["mean"] >= full.item() - 0.005) and margin >= 0
            text += f" (target: within 0.5 of full and >= random: {'met' if ok else 'not met'})"
        if rate in (0.7, 0.9):
            ok = margin >= 1.0 and margin > 2 * std
            text += f" (target: >= +1 point and > 2 std: {'met' if ok else 'not met'})"
        lines.append(text)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="development scale")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-eval-text")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--fresh", action="store_true", help="discard earlier runs in --work")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from thresher.evaluation.config import parse_eval_config
    from thresher.evaluation.flow import evaluate_with_runner
    from thresher.evaluation.result import load_evaluation
    from thresher.evaluation.summary import best_by_rate, summarize, write_curve

    started = time.perf_counter()
    data = prepare_data(args.work, quick)
    throughput = embedding_throughput(data)
    print(f"sentence embeddings: {throughput['docs_per_s']:.0f} docs/s on {throughput['device']}")
    frames, timings, parity, records = [], {}, [], {}
    for noise in args.noise:
        config = parse_eval_config(eval_config(data, args.work, noise, quick), base_dir=ROOT)
        begun = time.perf_counter()
        evaluate_with_runner(config, fresh=args.fresh, quiet=True)
        timings[noise] = time.perf_counter() - begun
        evaluation = load_evaluation(config.root)
        frames.append(evaluation.results)
        record = evaluation.record
        records[noise] = record
        print(
            f"noise {noise:g}: {len(evaluation.results)} models, stages {record['seconds_per_stage']}"
        )
        for warning in record.get("warnings", []):
            print(f"WARNING (noise {noise:g}): {warning}")
        if noise == 0.0:
            parity = parity_rows("Debian package sections", evaluation, config, record)
    results = pd.concat(frames, ignore_index=True)
    summary = summarize(results)
    best = best_by_rate(summary)
    total = time.perf_counter() - started

    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    results.to_csv(RESULTS / f"{NAME}{suffix}.csv", index=False)
    summary.to_csv(RESULTS / f"{NAME}{suffix}_summary.csv", index=False)
    pd.DataFrame(parity).to_csv(RESULTS / f"{NAME}{suffix}_parity.csv", index=False)
    write_curve(results, RESULTS / f"{NAME}{suffix}.svg")

    n_train = int(results["n_pool"].iloc[0])
    clean = records.get(0.0, next(iter(records.values())))
    score_seconds = clean["seconds_per_stage"].get("score")
    lines = [
        f"## Text pruning curves: Debian package descriptions{' (quick scale)' if quick else ''}",
        "",
        f"{n_train:,} training descriptions (after the test and validation splits), "
        f"{clean['features']['classes'].__len__()} sections, "
        f"{results['seed'].nunique()} seeds; linear downstream model on 16,384 hashed word "
        "1-2-grams, the same number of steps on every subset; test accuracy in %, mean ± std "
        "over seeds, and in parentheses the paired difference against random (same seed) in "
        f"points. Wall time {total / 60:.1f} min on {os.cpu_count()} cores "
        f"({', '.join(f'noise {n:g}: {t / 60:.1f} min' for n, t in timings.items())}).",
        "",
        "### Parity with scikit-learn (same features, same number of examples seen)",
        "",
        parity_table(parity),
        "",
        f"Downstream learning-rate search (validation): {json.dumps(clean['model']['trials'])}",
        "",
        f"Sentence embeddings (all-MiniLM-L6-v2, packaged): {throughput['docs_per_s']:.0f} docs/s "
        f"on {throughput['device']} ({throughput['docs']} descriptions, batches of 128); the "
        f"scoring stage (EL2N proxy and embeddings of the pool) took {score_seconds} s.",
        "",
    ]
    for noise in sorted(summary["label_noise"].unique()):
        lines += [f"### Label noise {100 * noise:g}%", "", accuracy_table(summary, noise), ""]
    lines += ["### Best selector per pruning rate", "", best_table(best), ""]
    lines += ["### Targets against what was measured", "", *targets(summary)]
    lines += ["", f"Plot: `benchmarks/results/{NAME}{suffix}.svg`."]
    text = "\n".join(lines)
    (RESULTS / f"{NAME}{suffix}.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
