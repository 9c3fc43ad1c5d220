"""The methods grid benchmark builds valid eval configs and pairs its margins by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.eval_methods import (
    DATASETS,
    METHODS,
    REFERENCE,
    Method,
    build,
    choose_methods,
    margins,
    random_mismatch,
    scorer_registered,
)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_available_method_builds_a_valid_eval_config(tmp_path: Path, dataset: str) -> None:
    built = {}
    for name, method in METHODS.items():
        config, reason = build(DATASETS[dataset], method, tmp_path / "data", tmp_path, 0.2, False)
        assert method.missing() is None, name  # every method of the table is in thresher
        assert config is not None, f"{name}: {reason}"
        built[name] = config
    reference = built[REFERENCE]
    labels = [s.display for s in reference.selectors]
    assert labels == ["random", *DATASETS[dataset].references]
    assert reference.eval.rates == [0.5, 0.7, 0.9]
    assert reference.eval.label_noise == 0.2
    roots = {config.root for config in built.values()}
    assert len(roots) == len(built)  # an eval directory per method
    issues = built["label_issues"]
    assert [s.output_column for s in issues.run.scorers] == ["el2n", "label_issues"]
    ccs = issues.selectors[-1]
    assert ccs.params["cutoff_score"] == "label_issues" and ccs.params["cutoff_hard"] == "low"
    flagged = built["label_issues_filter"].run.filters
    assert [(f.name, f.params["score"]) for f in flagged] == [("threshold", "label_issues_flagged")]
    assert not reference.run.filters


def test_a_method_not_in_this_checkout_is_skipped_with_its_reason(tmp_path: Path) -> None:
    dataset = DATASETS["fashion"]
    unregistered = Method(
        "planned",
        "a scorer that does not exist yet",
        lambda ctx: [{"name": "topk", "params": {"score": "planned"}}],
        scorers=lambda ctx: [{"name": "planned"}],
        requires=(scorer_registered("planned"),),
    )
    config, reason = build(dataset, unregistered, tmp_path / "data", tmp_path, 0.0, True)
    assert config is None and reason == "no scorer 'planned' is registered"
    # no requirement declared: the eval config's own validation says what is missing
    unchecked = Method(unregistered.name, unregistered.about, unregistered.selectors)
    config, reason = build(dataset, unchecked, tmp_path / "data", tmp_path, 0.0, True)
    assert config is None and reason is not None and "'planned'" in reason


def test_method_names_are_checked_and_the_reference_comes_first() -> None:
    assert choose_methods("label_issues") == [REFERENCE, "label_issues"]
    assert choose_methods("all")[0] == REFERENCE
    with pytest.raises(SystemExit, match="unknown method"):
        choose_methods("label_issues,nope")


def _rows(method: str, selector: str, accuracy: list[float], rate: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": "fashion",
            "label_noise": 0.0,
            "method": method,
            "selector": selector,
            "prune_rate": rate,
            "seed": range(len(accuracy)),
            "accuracy": accuracy,
        }
    )


def test_margins_are_paired_by_seed_against_the_reference_random() -> None:
    results = pd.concat(
        [
            _rows(REFERENCE, "random", [0.80, 0.70, 0.60]),
            _rows(REFERENCE, "ccs(el2n)", [0.82, 0.73, 0.61]),  # +2, +3, +1
            _rows("label_issues", "random", [0.80, 0.70, 0.60]),  # the same models
            _rows("label_issues", "ccs(cut)", [0.83, 0.75, 0.60]),  # +3, +5, 0
            _rows("label_issues_filter", "random", [0.81, 0.69, 0.62]),  # +1, -1, +2
            _rows(REFERENCE, "full", [0.9, 0.9, 0.9], rate=0.0),
        ],
        ignore_index=True,
    )
    summary = margins(results).set_index(["method", "selector"])
    cut = summary.loc[("label_issues", "ccs(cut)")]
    assert cut["margin"] == pytest.approx(0.02 + 2 / 300)
    assert cut["margin_std"] == pytest.approx(np.std([0.03, 0.05, 0.0], ddof=1))
    assert cut["wins"] == 2
    assert cut["best_reference"] == "ccs(el2n)"
    assert cut["vs_best_reference"] == pytest.approx(0.02 / 3)  # +1, +2, -1
    assert summary.loc[("label_issues_filter", "random")]["margin"] == pytest.approx(0.02 / 3)
    assert ("label_issues", "random") not in summary.index  # equal to the reference's
    assert np.isnan(summary.loc[(REFERENCE, "random")]["margin"])
    assert "full" not in summary.index.get_level_values("selector")
    mismatch = random_mismatch(results)
    assert mismatch.to_dict("records") == [{"method": "label_issues", "models": 3, "max_abs": 0.0}]
