"""``thresher eval``: train on each selector's subsets and draw the pruning curve.

A labelled data set is split into a training pool, a validation split and a
held-out test split (:mod:`.splits`); the pool is scored once by the
``curate`` flow; then for each (selector, pruning rate, seed) the select
stage picks a subset from the stored scores, a small classifier trains on
it for a fixed number of steps (:mod:`.model`) and is measured on the test
split (:mod:`.jobs`). Hyper-parameters such as CCS's ``beta`` are chosen on
the validation split. Results, summary and curve go to
``RUN_DIR/run/eval/`` (:mod:`.flow`, :mod:`.summary`).
"""

from __future__ import annotations

from thresher.evaluation.config import (
    DistillConfig,
    DownstreamConfig,
    EvalConfig,
    EvalSelectorConfig,
    EvalSettings,
    TestSplitConfig,
    load_eval_config,
    parse_eval_config,
)

__all__ = [
    "DistillConfig",
    "DownstreamConfig",
    "EvalConfig",
    "EvalSelectorConfig",
    "EvalSettings",
    "TestSplitConfig",
    "load_eval_config",
    "parse_eval_config",
]
