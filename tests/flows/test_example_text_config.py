"""``examples/curate-text.yaml`` as shipped: a token budget of one language, decontaminated, by DSIR.

The example runs on the sample corpus it was written for (generated here,
as ``make demo`` does) on both engines: the same kept ids, the token budget
met from below within one document, the documents overlapping each
evaluation set dropped as ``contaminated`` and counted per set.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.runs import kept_ids
from thresher.config import load_config
from thresher.examples.sample_corpus import write_sample_corpus
from thresher.flows.curate import curate
from thresher.runs import load_run

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.spark, pytest.mark.slow]

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_the_text_example_keeps_the_same_ids_on_both_engines(tmp_path: Path, spark: Any) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "eval_sets", examples / "eval_sets")
    write_sample_corpus(examples / "sample_corpus")
    spec = yaml.safe_load((EXAMPLES / "curate-text.yaml").read_text())
    assert spec["selector"]["budget"] == {"tokens": 1_000_000}
    manifests, kept = {}, {}
    for engine in ("local", "spark"):
        spec["run_dir"] = f"../runs/{engine}"
        (examples / f"{engine}.yaml").write_text(yaml.safe_dump(spec))
        manifests[engine] = curate(load_config(examples / f"{engine}.yaml"), engine=engine)
        kept[engine] = kept_ids(tmp_path / "runs" / engine)
    assert kept["local"] == kept["spark"] and len(kept["local"]) > 1000

    manifest = manifests["spark"]
    counts = manifest["counts"]
    assert counts["reconciles"]
    tokens = counts["tokens"]
    assert tokens["requested"] == 1_000_000
    data = load_run(tmp_path / "runs" / "spark")
    scores = data.scores
    largest = max(scores.column("token_count").to_pylist())
    assert 1_000_000 - largest < tokens["kept"] <= 1_000_000  # never over, short by < one row
    sets = manifest["decontamination"]["sets"]
    assert sets["quiz"]["documents"] > 0 and sets["slogans"]["documents"] > 0
    dropped = data.dropped
    contaminated = [r for r in dropped.column("reason").to_pylist() if r == "contaminated"]
    assert len(contaminated) == sets["quiz"]["documents"] + sets["slogans"]["documents"]
    assert counts["dropped"]["by_reason"]["filter:language_filter(language, language_probability)"]
