"""Every config under ``examples/`` loads as the README says it runs: curation or eval."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thresher.config import parse_config
from thresher.evaluation.config import parse_eval_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_found() -> None:
    names = {path.name for path in CONFIGS}
    assert {"curate.yaml", "eval-debian.yaml", "eval-fashion-mnist.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_loads(path: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "eval" in raw:  # an eval config checks every selector of its grid, searches included
        assert parse_eval_config(raw, base_dir=path.parent).eval.selectors
    else:
        assert parse_config(raw, base_dir=path.parent).scorers
