"""End to end: a DPP on the proxy's gradient embeddings records its diversity in the manifest, report and card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher import reasons as R
from thresher.config import RunConfig
from thresher.examples.sample_corpus import generate_records
from thresher.flows.curate import curate

pytestmark = pytest.mark.usefixtures("prefect_server")

TINY_PROXY = {
    "features": {"dim": 256},
    "hidden": 8,
    "epochs": 2,
    "n_seeds": 1,
    "lr": 0.1,
    "weight_decay": 0.0,
}


def _corpus(path: Path) -> int:
    """A small topical corpus in one Parquet file, some rows without a topic; returns how many."""
    records = generate_records(150, seed=11)
    unlabelled = 0
    for number, record in enumerate(records):
        if number % 25 == 7:
            record["topic"] = None
            unlabelled += 1
    pq.write_table(pa.Table.from_pylist(records).select(["id", "text", "topic"]), path)
    return unlabelled


def test_dpp_on_gradient_embeddings_reports_its_diversity(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    unlabelled = _corpus(tmp_path / "corpus.parquet")
    config = make_config(
        input={"paths": [str(tmp_path / "corpus.parquet")]},
        scorers=[
            {
                "name": "embedding",
                "params": {"source": "gradient", "proxy": TINY_PROXY, "dim": 32},
            }
        ],
        filters=[],
        selector={"name": "dpp", "params": {"device": "cpu"}, "budget": 30},
        engine={"kind": "local", "workers": 1},
    )
    manifest = curate(config)

    (step,) = manifest["selection_steps"]
    diversity = step["details"]["diversity"]
    assert set(diversity) == {"logdet_kept", "logdet_random", "sample"}
    assert diversity["sample"] == step["kept"] == 30
    assert diversity["logdet_kept"] > diversity["logdet_random"]  # the DPP spreads its picks
    # a row whose label the proxy has no class for has no gradient: dropped, not a crash
    assert unlabelled > 0
    assert manifest["counts"]["dropped"]["by_reason"][R.INVALID_SCORE] == unlabelled

    run = tmp_path / "run"
    card = (run / "README.md").read_text(encoding="utf-8")
    assert f"kept {diversity['logdet_kept']:.3f}, a random subset" in card
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "log-det diversity: kept rows and a random subset" in html
