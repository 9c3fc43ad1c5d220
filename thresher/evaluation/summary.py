"""From per-model results to the summary table, the best selector per rate, and the curve.

The summary has one row per (label noise, selector, pruning rate): the mean
and sample standard deviation of test accuracy over seeds, and the paired
difference against ``random`` at the same rate (model ``s`` of a selector
against model ``s`` of random: same seed, same initial weights) with its
standard deviation and the number of seeds on which the selector won;
``diff_vs_full`` is the mean paired difference against the model trained on
the whole pool.

:func:`data_check` asks whether the comparison means anything: the model
trained on the whole pool must beat a small random subset clearly, or the
data does not matter to the model and no selector can be told apart from
another.

:func:`distill_rankings` sets two evals side by side, the same eval run
without and with knowledge distillation (``eval.model.distill``): does
distillation change which selector wins, and by how much each beats random?
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


def summarize(results: pd.DataFrame, metric: str = "accuracy", higher: bool = True) -> pd.DataFrame:
    """The summary table (see module docstring), sorted by noise, rate, then selector.

    ``metric`` is the result column summarised; ``higher`` says whether a
    larger value is better (a win against random is then a positive paired
    difference, else a negative one).
    """
    rows = []
    for (noise, selector, rate), group in results.groupby(
        ["label_noise", "selector", "prune_rate"], sort=True
    ):
        by_seed = group.set_index("seed")[metric]
        same_noise = results[results["label_noise"] == noise]
        random = same_noise[
            (same_noise["selector"] == RANDOM) & (same_noise["prune_rate"] == rate)
        ].set_index("seed")[metric]
        full = same_noise[same_noise["selector"] == FULL].set_index("seed")[metric]
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
                "wins_vs_random": int(((paired > 0) if higher else (paired < 0)).sum())
                if len(paired)
                else np.nan,
                "diff_vs_full": float(versus_full.mean()) if len(versus_full) else np.nan,
                "flipped_kept": float(group["flipped_kept"].mean())
                if "flipped_kept" in group
                else np.nan,
                "params": str(group["params"].iloc[0]) if "params" in group else "",
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


#: Columns the language-model summary adds in front of :data:`SUMMARY_COLUMNS`.
LM_SUMMARY_COLUMNS = ["set", "metric"]


def summarize_lm(results: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """The language model's summary: per held-out set, the summary of its per-token loss.

    ``sets`` are ``test`` (the corpus's held-out split, column ``loss``) and
    the target sets (``loss_<name>``). Beside the paired difference from
    random (nats per token; negative is better) the table gives it relative
    to random's mean loss (``rel_diff_vs_random``, e.g. -0.03 is 3% lower).
    """
    parts = []
    for name in sets:
        column = "loss" if name == "test" else f"loss_{name}"
        part = summarize(results, metric=column, higher=False)
        random = part[part["selector"] == RANDOM].set_index("prune_rate")["mean"]
        part["rel_diff_vs_random"] = part["diff_vs_random"] / part["prune_rate"].map(random)
        part.insert(0, "metric", "loss")
        part.insert(0, "set", name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


#: Fraction pruned of the "small random subset" the full-data model must clearly beat.
CHECK_RATE = 0.9
#: Smallest margin (accuracy, i.e. 1 point) of the full-data model over that subset.
CHECK_MARGIN = 0.01


def data_check(
    results: pd.DataFrame, extra: pd.DataFrame | None = None, rate: float = CHECK_RATE
) -> dict[str, object]:
    """Does the full-data model clearly beat a small random subset (paired over seeds)?

    The subset is random at the largest pruning rate of at least ``rate``
    in ``results``, else random at ``rate`` from ``extra`` (models trained
    only for this check). Clearly: the mean paired difference is at least
    :data:`CHECK_MARGIN` and more than twice its standard deviation.

    Returns
    -------
    dict
        ``ok``, ``message``, and when measured ``full``, ``random``,
        ``prune_rate``, ``diff``, ``diff_std``, ``n_seeds``.
    """
    frames = [results] + ([extra] if extra is not None and not extra.empty else [])
    every = pd.concat(frames, ignore_index=True)
    clean = every[every["label_noise"] == every["label_noise"].min()]
    full = clean[clean["selector"] == FULL].set_index("seed")["accuracy"]
    randoms = clean[(clean["selector"] == RANDOM) & (clean["prune_rate"] >= rate - 1e-12)]
    if full.empty or randoms.empty:
        return {"ok": True, "message": "not checked: no full-data model or no small random subset"}
    smallest = float(randoms["prune_rate"].max())
    random = randoms[randoms["prune_rate"] == smallest].set_index("seed")["accuracy"]
    paired = (full - random).dropna()
    diff, std = float(paired.mean()), _std(paired)
    ok = bool(diff >= CHECK_MARGIN and diff > 2 * std)
    kept = 100 * (1 - smallest)
    message = (
        f"the full-data model ({100 * full.mean():.2f}%) beats a random {kept:g}% subset "
        f"({100 * random.mean():.2f}%) by {100 * diff:+.2f} ± {100 * std:.2f} points"
    )
    if not ok:
        message = (
            f"{message}: not clearly (at least {100 * CHECK_MARGIN:g} point and twice the std). "
            "The model barely uses the data, so selector comparisons in this eval mean nothing; "
            "fix the downstream model (features, steps, learning rate) before reading them"
        )
    return {
        "ok": ok,
        "message": message,
        "full": float(full.mean()),
        "random": float(random.mean()),
        "prune_rate": smallest,
        "diff": diff,
        "diff_std": std,
        "n_seeds": int(paired.size),
    }


def best_by_rate(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (label noise, pruning rate): the selector with the best mean, and its margin over random.

    ``random`` and ``full`` are not candidates. Columns: ``label_noise,
    prune_rate, best, mean, margin, margin_std, n_seeds``.
    """
    candidates = summary[~summary["selector"].isin([RANDOM, FULL])]
    lowest = "metric" in summary.columns  # the language model's loss: lower is better
    first = "set" if lowest else "label_noise"
    rows = []
    for (level, rate), group in candidates.groupby([first, "prune_rate"], sort=not lowest):
        best = group.sort_values(["mean", "selector"], ascending=[lowest, True]).iloc[0]
        rows.append(
            {
                first: level,
                "prune_rate": rate,
                "best": best["selector"],
                "mean": best["mean"],
                "margin": best["diff_vs_random"],
                "margin_std": best["diff_vs_random_std"],
                "n_seeds": best["n_seeds"],
            }
        )
    return pd.DataFrame(
        rows, columns=[first, "prune_rate", "best", "mean", "margin", "margin_std", "n_seeds"]
    )


#: Columns of :func:`distill_rankings`.
RANKING_COLUMNS = [
    "label_noise",
    "prune_rate",
    "selector",
    "rank_without",
    "mean_without",
    "margin_without",
    "rank_with",
    "mean_with",
    "margin_with",
]


def _ranked(results: pd.DataFrame) -> pd.DataFrame:
    """Per (label noise, rate): every selector but ``full``, ranked by mean accuracy (1 = best)."""
    summary = summarize(results)
    table = summary[summary["selector"] != FULL].copy()
    table["margin"] = table["diff_vs_random"].where(table["selector"] != RANDOM, 0.0)
    table = table.sort_values(
        ["label_noise", "prune_rate", "mean", "selector"], ascending=[True, True, False, True]
    )
    table["rank"] = table.groupby(["label_noise", "prune_rate"]).cumcount() + 1
    return table[["label_noise", "prune_rate", "selector", "rank", "mean", "margin"]]


def distill_rankings(without: pd.DataFrame, distilled: pd.DataFrame) -> pd.DataFrame:
    """Does distillation change which selector wins? The two evals' rankings side by side.

    ``without`` and ``distilled`` are the results of the same eval run
    without and with ``eval.model.distill`` (:attr:`Evaluation.results
    <thresher.evaluation.result.Evaluation.results>`). Per (label noise,
    pruning rate), every selector but ``full`` is ranked by mean test
    accuracy in each (1 = best; ties by name), with its mean and its
    paired margin over random (0 for random itself). One row per
    (label noise, rate, selector), ordered by the rank without
    distillation; a selector missing from one eval has NaN there.

    Returns
    -------
    DataFrame
        Columns :data:`RANKING_COLUMNS`.
    """
    keys = ["label_noise", "prune_rate", "selector"]
    table = _ranked(without).merge(
        _ranked(distilled), on=keys, how="outer", suffixes=("_without", "_with")
    )
    table = table.sort_values(["label_noise", "prune_rate", "rank_without", "rank_with"])
    return table[RANKING_COLUMNS].reset_index(drop=True)


def distill_winners(rankings: pd.DataFrame) -> pd.DataFrame:
    """Per (label noise, rate): the best selector without and with distillation, and if it changed.

    ``rankings`` is :func:`distill_rankings`'s table; random counts as a
    selector (with distillation it often wins). Columns: ``label_noise,
    prune_rate, best_without, best_with, changed``.
    """
    rows = []
    for (noise, rate), group in rankings.groupby(["label_noise", "prune_rate"], sort=True):
        before = group.loc[group["rank_without"] == 1, "selector"]
        after = group.loc[group["rank_with"] == 1, "selector"]
        best_without = before.iloc[0] if len(before) else None
        best_with = after.iloc[0] if len(after) else None
        rows.append(
            {
                "label_noise": noise,
                "prune_rate": rate,
                "best_without": best_without,
                "best_with": best_with,
                "changed": best_without != best_with,
            }
        )
    return pd.DataFrame(
        rows, columns=["label_noise", "prune_rate", "best_without", "best_with", "changed"]
    )


def write_curve(results: pd.DataFrame, path: Path, sets: list[str] | None = None) -> Path:
    """The pruning curve (the run report's own plot) as an SVG file.

    With ``sets`` (the language model's held-out sets), loss against the
    fraction of tokens kept, one panel per set.
    """
    from thresher.reporting.plots import lm_pruning_curve, long_losses, pruning_curve

    uri = pruning_curve(results) if sets is None else lm_pruning_curve(long_losses(results, sets))
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
