"""From per-model results to the summary table, the best selector per rate, and the curve.

The summary has one row per (label noise, selector, pruning rate): the mean
and sample standard deviation of test accuracy over seeds, and the paired
difference against ``random`` at the same rate (model ``s`` of a selector
against model ``s`` of random: same seed, same initial weights) with its
standard deviation and the number of seeds on which the selector won;
``diff_vs_full`` is the mean paired difference against the model trained on
the whole pool.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd

from thresher.evaluation.config import FULL, RANDOM
from thresher.io.files import write_text_atomic

SUMMARY_COLUMNS = [
    "label_noise",
    "selector",
    "prune_rate",
    "fraction_kept",
    "n_seeds",
    "mean",
    "std",
    "diff_vs_random",
    "diff_vs_random_std",
    "wins_vs_random",
    "diff_vs_full",
    "flipped_kept",
    "params",
]


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The summary table (see module docstring), sorted by noise, rate, then selector."""
    rows = []
    for (noise, selector, rate), group in results.groupby(
        ["label_noise", "selector", "prune_rate"], sort=True
    ):
        by_seed = group.set_index("seed")["accuracy"]
        same_noise = results[results["label_noise"] == noise]
        random = same_noise[
            (same_noise["selector"] == RANDOM) & (same_noise["prune_rate"] == rate)
        ].set_index("seed")["accuracy"]
        full = same_noise[same_noise["selector"] == FULL].set_index("seed")["accuracy"]
        paired = (by_seed - random).dropna() if selector not in (RANDOM, FULL) else pd.Series([])
        versus_full = (by_seed - full).dropna() if selector != FULL else pd.Series([])
        rows.append(
            {
                "label_noise": float(noise),
                "selector": selector,
                "prune_rate": float(rate),
                "fraction_kept": float(group["fraction_kept"].mean()),
                "n_seeds": int(group["seed"].nunique()),
                "mean": float(by_seed.mean()),
                "std": _std(by_seed),
                "diff_vs_random": float(paired.mean()) if len(paired) else np.nan,
                "diff_vs_random_std": _std(paired) if len(paired) else np.nan,
                "wins_vs_random": int((paired > 0).sum()) if len(paired) else np.nan,
                "diff_vs_full": float(versus_full.mean()) if len(versus_full) else np.nan,
                "flipped_kept": float(group["flipped_kept"].mean())
                if "flipped_kept" in group
                else np.nan,
                "params": str(group["params"].iloc[0]) if "params" in group else "",
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def best_by_rate(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (label noise, pruning rate): the selector with the best mean, and its margin over random.

    ``random`` and ``full`` are not candidates. Columns: ``label_noise,
    prune_rate, best, mean, margin, margin_std, n_seeds``.
    """
    candidates = summary[~summary["selector"].isin([RANDOM, FULL])]
    rows = []
    for (noise, rate), group in candidates.groupby(["label_noise", "prune_rate"], sort=True):
        best = group.sort_values(["mean", "selector"], ascending=[False, True]).iloc[0]
        rows.append(
            {
                "label_noise": noise,
                "prune_rate": rate,
                "best": best["selector"],
                "mean": best["mean"],
                "margin": best["diff_vs_random"],
                "margin_std": best["diff_vs_random_std"],
                "n_seeds": best["n_seeds"],
            }
        )
    return pd.DataFrame(
        rows,
        columns=["label_noise", "prune_rate", "best", "mean", "margin", "margin_std", "n_seeds"],
    )


def write_curve(results: pd.DataFrame, path: Path) -> Path:
    """The pruning curve (the run report's own plot) as an SVG file."""
    from thresher.reporting.plots import pruning_curve

    uri = pruning_curve(results)
    prefix = "data:image/svg+xml;base64,"
    if not uri.startswith(prefix):
        raise ValueError("the pruning-curve plot is not an SVG data URI")
    write_text_atomic(base64.b64decode(uri[len(prefix) :]).decode("utf-8"), path)
    return path


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A Markdown table of ``frame`` (numbers rounded to ``digits``)."""

    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
