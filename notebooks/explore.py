# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring a thresher run
#
# This notebook opens a scored run through thresher's public Python API,
# looks at the score distributions, then tries two selectors at three
# budgets **in memory** (nothing is written; the run's scores are reused)
# and compares what they keep.
#
# Run `make demo` first: it writes `runs/sample/`. Another run directory can
# be given with the environment variable `THRESHER_RUN_DIR`. If the run
# directory holds no scores yet, the notebook scores the sample corpus with
# `examples/curate.yaml` (local engine) first.

# %%
import os
from itertools import combinations
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import thresher

RUN_DIR = Path(os.environ.get("THRESHER_RUN_DIR", "../runs/sample"))
CONFIG = Path(os.environ.get("THRESHER_CONFIG", "../examples/curate.yaml"))
BUDGETS = [0.1, 0.3, 0.5]  # fractions of the rows that pass the run's filters

if not (RUN_DIR / "scores").is_dir():
    thresher.score(CONFIG, engine="local", quiet=True)
run = thresher.load_run(RUN_DIR)
run

# %% [markdown]
# ## The score table
#
# One row per ingested document: its id, its position in the input, and one
# column per scorer. `run.scores` is an Arrow table; `run.to_pandas()` gives
# a DataFrame.

# %%
scores = run.to_pandas("scores")
score_columns = [
    c
    for c in scores.columns
    if c not in ("id", "label", "thresher_shard", "thresher_row")
    and pd.api.types.is_numeric_dtype(scores[c])
]
print(f"{len(scores):,} scored documents, scores: {', '.join(score_columns)}")
scores[score_columns].describe().T

# %% [markdown]
# ## Score distributions
#
# If the run has been selected, kept and dropped documents are drawn apart.

# %%
if run.manifest is not None:
    decided = run.to_pandas("scored_selection")
    kept_mask = decided["keep"].fillna(False).astype(bool).to_numpy()
else:
    decided, kept_mask = scores, np.zeros(len(scores), dtype=bool)

fig, axes = plt.subplots(1, len(score_columns), figsize=(4 * len(score_columns), 3), squeeze=False)
for ax, column in zip(axes[0], score_columns, strict=True):
    values = decided[column].to_numpy(dtype=float)
    bins = np.histogram_bin_edges(values[np.isfinite(values)], bins=40)
    ax.hist(values[~kept_mask], bins=bins, alpha=0.6, label="dropped" if kept_mask.any() else "all")
    if kept_mask.any():
        ax.hist(values[kept_mask], bins=bins, alpha=0.6, label="kept")
    ax.set_title(column)
    ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Two selectors at three budgets
#
# `run.try_selector` runs the run's filters and then a selector on the
# stored scores, exactly as `thresher select` would, but writes nothing.
# Here: the random baseline against a band of the first score centred on its
# median (as in perplexity-band pruning).

# %%
SELECTORS = {
    "random": {},
    "quantile_band": {"score": score_columns[0], "band": "medium"},
}
trials = {
    (name, budget): run.try_selector(name, budget, params)
    for name, params in SELECTORS.items()
    for budget in BUDGETS
}
summary = pd.DataFrame(
    [
        {
            "selector": name,
            "budget": budget,
            "kept": int(trial.keep.sum()),
            **{f"mean {c}": scores.loc[trial.keep, c].mean() for c in score_columns},
        }
        for (name, budget), trial in trials.items()
    ]
)
summary

# %% [markdown]
# ## How much do they agree?
#
# Jaccard overlap of the kept ids of the two selectors at each budget (a
# random subset overlaps another subset of the same size by about
# budget / (2 - budget) by chance).

# %%
overlap = []
for budget in BUDGETS:
    for first, second in combinations(SELECTORS, 2):
        a, b = trials[(first, budget)].kept_ids, trials[(second, budget)].kept_ids
        overlap.append(
            {
                "budget": budget,
                "pair": f"{first} / {second}",
                "jaccard": len(a & b) / len(a | b),
                "chance": budget / (2 - budget),
            }
        )
overlap = pd.DataFrame(overlap)
overlap

# %% [markdown]
# ## What each selector keeps
#
# Distribution of the first score among the kept documents, per selector and
# budget: the band selector concentrates on the middle of the range, random
# follows the whole distribution.

# %%
column = score_columns[0]
fig, axes = plt.subplots(1, len(BUDGETS), figsize=(4 * len(BUDGETS), 3), sharey=True)
bins = np.histogram_bin_edges(scores[column].to_numpy(dtype=float), bins=40)
for ax, budget in zip(axes, BUDGETS, strict=True):
    for name in SELECTORS:
        kept_values = scores.loc[trials[(name, budget)].keep, column]
        ax.hist(kept_values, bins=bins, alpha=0.6, label=name)
    ax.set_title(f"{column}, budget {budget}")
    ax.legend()
fig.tight_layout()

# %% [markdown]
# To make one of these the run's selection (pruned dataset, card and report
# rewritten, no re-scoring):
#
# ```python
# thresher.select(RUN_DIR, budget=0.3, selector="quantile_band",
#                 params={"score": "word_count", "band": "medium"})
# ```
# or, on the command line, `thresher select runs/sample --budget 0.3`.
