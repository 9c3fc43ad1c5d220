"""Fashion-MNIST pruning curves: which selector wins at which pruning rate, with and without noise.

Runs ``examples/eval-fashion-mnist.yaml`` through ``thresher eval`` twice,
with clean labels and with 20% of the training labels flipped: random,
EL2N top-k, CCS on EL2N and on forgetting events (beta chosen on the
validation split per rate), k-means sensitivity sampling, prototypes
(hard or easy, chosen per rate), a DPP and D2 Pruning; pruning rates 50/70/90/95/98%; 5 seeds; the full-data model as
reference. The reference for every number is random selection at the same
rate and seed, measured in the same run (paired differences).

Writes to ``benchmarks/results/``: ``eval_fashion_mnist.md`` (the section
printed here), ``eval_fashion_mnist.csv`` (one row per trained model),
``eval_fashion_mnist_summary.csv`` and ``eval_fashion_mnist.svg`` (the
pruning curves, one panel per noise level).

Needs the IDX files of Debian's ``dataset-fashion-mnist``
(``make sysdeps-bench``). Full scale (410 models; 48.7 minutes on 2 shared
cores, 10.0 minutes for the 310 of an earlier grid on 2 quiet ones)::

    python -m benchmarks.eval_fashion_mnist

Development scale (6,000 training images, 2 rates, 2 seeds; a few minutes)::

    python -m benchmarks.eval_fashion_mnist --quick     # or THRESHER_BENCH_QUICK=1

Runs go to ``--work`` (default ``runs/bench-eval-fashion-mnist``); a re-run
resumes there (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "eval-fashion-mnist.yaml"
CONVERTER = ROOT / "examples" / "fashion_mnist_to_parquet.py"
RESULTS = ROOT / "benchmarks" / "results"
NAME = "eval_fashion_mnist"


def _converter() -> Any:
    spec = importlib.util.spec_from_file_location("fashion_mnist_to_parquet", CONVERTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_data(work: Path, quick: bool) -> Path:
    """Fashion-MNIST as Parquet under ``work/data`` (a 6,000/2,000 subsample when quick)."""
    data = work / ("data-quick" if quick else "data")
    if (data / "test" / "test.parquet").is_file():
        return data
    converter = _converter()
    full = work / "data"
    if not (full / "test" / "test.parquet").is_file():
        converter.convert(converter.SOURCE, full)
    if quick:
        for split, rows in (("train", 6000), ("test", 2000)):
            table = pq.read_table(full / split)
            keep = np.sort(np.random.default_rng(0).choice(table.num_rows, rows, replace=False))
            (data / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(table.take(keep), data / split / f"{split}.parquet")
    return data


def eval_config(data: Path, work: Path, noise: float, quick: bool) -> dict[str, Any]:
    """The example config, pointed at ``data``, with ``noise`` (and smaller when quick)."""
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["run_dir"] = str(work / f"noise-{noise:g}{'-quick' if quick else ''}")
    config["input"]["paths"] = [str(data / "train" / "*.parquet")]
    section = config["eval"]
    section["test"]["paths"] = [str(data / "test" / "*.parquet")]
    section["label_noise"] = noise
    if quick:
        section.update(rates=[0.5, 0.9], seeds=2)
        section["model"]["steps"] = 300
        for selector in section["selectors"]:
            if selector["name"] == "ccs":
                selector["search"] = {"beta": [0.0, 0.2]}
            if selector["name"] in ("kmeans_sensitivity", "prototypes"):
                selector["params"]["n_clusters"] = 30
            if selector.get("partitions"):
                selector["partitions"] = {"clusters": 8, "sample": 5000}
    return dict(config)


def _cell(mean: float, std: float) -> str:
    return "" if np.isnan(mean) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def accuracy_table(summary: pd.DataFrame, noise: float) -> str:
    """Accuracy (%, mean ± std over seeds) per selector and rate; random's row first."""
    part = summary[summary["label_noise"] == noise]
    rates = sorted(r for r in part["prune_rate"].unique() if r > 0)
    full = part[part["selector"] == "full"]
    selectors = ["random", *sorted(set(part["selector"]) - {"random", "full"})]
    lines = [
        "| selector | " + " | ".join(f"{100 * r:g}% pruned" for r in rates) + " |",
        "|---" * (len(rates) + 1) + "|",
    ]
    for selector in selectors:
        cells = []
        for rate in rates:
            row = part[(part["selector"] == selector) & (part["prune_rate"] == rate)]
            if row.empty:
                cells.append("")
                continue
            text = _cell(row["mean"].item(), row["std"].item())
            if selector != "random":
                diff = row["diff_vs_random"].item()
                text += f" ({100 * diff:+.2f})"
            cells.append(text)
        lines.append(f"| {selector} | " + " | ".join(cells) + " |")
    if not full.empty:
        lines.append(
            f"| full data | {_cell(full['mean'].item(), full['std'].item())} (every rate) |"
            + " |" * (len(rates) - 1)
        )
    return "\n".join(lines)


def best_table(best: pd.DataFrame) -> str:
    lines = [
        "| label noise | pruned | best selector | accuracy % | margin over random (points, ± std) |",
        "|---|---|---|---|---|",
    ]
    for row in best.itertuples(index=False):
        lines.append(
            f"| {row.label_noise:g} | {100 * row.prune_rate:g}% | {row.best} | "
            f"{100 * row.mean:.2f} | {100 * row.margin:+.2f} ± {100 * row.margin_std:.2f} |"
        )
    return "\n".join(lines)


def expectations(summary: pd.DataFrame) -> list[str]:
    """The expected patterns (top-k collapse, CCS above random...), checked against the summary."""

    def diff(selector_prefix: str, noise: float, rate: float) -> float | None:
        rows = summary[
            summary["selector"].str.startswith(selector_prefix)
            & (summary["label_noise"] == noise)
            & (summary["prune_rate"] == rate)
        ]
        return None if rows.empty else float(rows["diff_vs_random"].iloc[0])

    lines = []
    rates = sorted(r for r in summary["prune_rate"].unique() if r >= 0.9)
    for rate in rates:
        topk, ccs = diff("topk(el2n)", 0.0, rate), diff("ccs(el2n)", 0.0, rate)
        if topk is not None:
            lines.append(
                f"- EL2N top-k at {100 * rate:g}% pruning: {100 * topk:+.2f} points vs random "
                f"({'collapses below random' if topk < 0 else 'does not collapse'})"
            )
        if ccs is not None:
            lines.append(
                f"- CCS at {100 * rate:g}% pruning: {100 * ccs:+.2f} points vs random "
                f"({'above' if ccs > 0 else 'not above'} random)"
            )
    clean = summary[(summary["label_noise"] == 0.0)]
    full = clean[clean["selector"] == "full"]["mean"]
    low = clean[(clean["prune_rate"] == clean["prune_rate"][clean["prune_rate"] > 0].min())]
    low = low[~low["selector"].isin(["full"])]
    if not full.empty and not low.empty:
        top = low.sort_values("mean", ascending=False).iloc[0]
        lines.append(
            f"- At {100 * top['prune_rate']:g}% pruning the best selector ({top['selector']}) "
            f"is {100 * (top['mean'] - full.item()):+.2f} points from the full data"
        )
    for noise in sorted(n for n in summary["label_noise"].unique() if n > 0):
        for rate in rates:
            ccs = diff("ccs(el2n)", noise, rate)
            if ccs is not None:
                lines.append(
                    f"- With {100 * noise:g}% label noise, CCS at {100 * rate:g}% pruning: "
                    f"{100 * ccs:+.2f} points vs random"
                )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="development scale")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-eval-fashion-mnist")
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
    frames, timings = [], {}
    for noise in args.noise:
        config = parse_eval_config(eval_config(data, args.work, noise, quick), base_dir=ROOT)
        begun = time.perf_counter()
        evaluate_with_runner(config, fresh=args.fresh, quiet=True)
        timings[noise] = time.perf_counter() - begun
        evaluation = load_evaluation(config.root)
        frames.append(evaluation.results)
        stages = evaluation.record["seconds_per_stage"]
        print(f"noise {noise:g}: {len(evaluation.results)} models, stages {stages}", flush=True)
    results = pd.concat(frames, ignore_index=True)
    summary = summarize(results)
    best = best_by_rate(summary)
    total = time.perf_counter() - started

    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    results.to_csv(RESULTS / f"{NAME}{suffix}.csv", index=False)
    summary.to_csv(RESULTS / f"{NAME}{suffix}_summary.csv", index=False)
    write_curve(results, RESULTS / f"{NAME}{suffix}.svg")

    n_train = int(results["n_pool"].iloc[0])
    lines = [
        f"## Fashion-MNIST pruning curves{' (quick scale)' if quick else ''}",
        "",
        f"{n_train:,} training images (after the validation split), "
        f"{results['seed'].nunique()} seeds, downstream MLP trained for the same number of "
        "steps on every subset; test accuracy in %, mean ± std over seeds, and in "
        "parentheses the paired difference against random (same seed) in points. "
        f"Wall time {total / 60:.1f} min on {os.cpu_count()} cores "
        f"({', '.join(f'noise {n:g}: {t / 60:.1f} min' for n, t in timings.items())}).",
        "",
    ]
    for noise in sorted(summary["label_noise"].unique()):
        lines += [f"### Label noise {100 * noise:g}%", "", accuracy_table(summary, noise), ""]
    lines += ["### Best selector per pruning rate", "", best_table(best), ""]
    lines += [
        "### Expected patterns (papers) against what was measured",
        "",
        *expectations(summary),
    ]
    lines += ["", f"Plot: `benchmarks/results/{NAME}{suffix}.svg`."]
    text = "\n".join(lines)
    (RESULTS / f"{NAME}{suffix}.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
