"""`thresher eval` with knowledge distillation: one teacher per eval, distilled students.

A small text corpus (hashed n-grams, a linear model, one seed, one rate)
runs through the eval twice with ``eval.model.distill`` on: the teacher is
trained once and stored, the second run reuses it (and every stored
batch), the subsets' rows (dynamic pruning's too) carry the distillation settings, the ``full``
reference is not distilled, and the record and report say so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DISTILL = {"alpha": 0.7, "temperature": 2.0}


def test_a_distilled_eval_trains_its_teacher_once(
    small_corpus: Path, tmp_path: Path, prefect_server: None
) -> None:
    import thresher
    from thresher.evaluation.config import resolve_eval_config
    from thresher.evaluation.teacher import teacher_path

    config = {
        "run_dir": str(tmp_path / "distill"),
        "seed": 2,
        "input": {"paths": [str(small_corpus / "shard-*")]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [{"name": "word_count"}],
        "engine": {"kind": "local", "workers": 1},
        "eval": {
            "test": {"fraction": 0.25},
            "validation": 0.0,
            "rates": [0.5],
            "seeds": 1,
            "selectors": [
                {"name": "topk", "params": {"score": "word_count"}},
                {"name": "dynamic_el2n", "params": {"every": 0.5}},
            ],
            "model": {
                "features": {"dim": 256},
                "hidden": 0,
                "steps": 40,
                "lr": 0.5,
                "weight_decay": 0.0,
                "distill": DISTILL,
            },
        },
    }
    first = thresher.evaluate(config, quiet=True)
    path = teacher_path(resolve_eval_config(config))
    assert path.is_file() and list(path.parent.iterdir()) == [path]
    stamp = path.stat().st_mtime_ns

    results = first.results.set_index("selector")
    assert set(results.index) == {"random", "topk(word_count)", "dynamic_el2n", "full"}
    for label in ("random", "topk(word_count)", "dynamic_el2n"):
        assert results.loc[label, "distill_alpha"] == DISTILL["alpha"]
        assert results.loc[label, "distill_temperature"] == DISTILL["temperature"]
    assert pd.isna(results.loc["full", "distill_alpha"])  # the reference is not distilled
    record = first.record["distill"]
    assert {k: record[k] for k in DISTILL} == DISTILL
    assert record["teacher"]["file"] == str(path)
    assert record["teacher"]["rows"] == results.loc["full", "n_kept"]
    assert "teacher" in first.record["seconds_per_stage"]
    assert "Knowledge distillation on" in first.report.read_text()

    again = thresher.evaluate(config, quiet=True)
    assert path.stat().st_mtime_ns == stamp  # reused, not retrained
    assert again.results["accuracy"].tolist() == first.results["accuracy"].tolist()
    assert again.record["distill"]["teacher"] == record["teacher"]
