"""A mixture through `curate`: target shares of a word budget over three sources, on both engines.

The corpus (600 documents in three Parquet shards) has a ``source``
passthrough column: ``web`` 70%, ``code`` 25%, ``books`` 5%, which is too
few words for its 15% share. The selector keeps the highest
``alpha_fraction`` within each source until its share of the
``word_count`` budget is met. With ``max_repeat: 1`` the books are capped
and their shortfall reported; with ``max_repeat: 3`` every book is used
once and the selector's choice of them twice, which meets the target.
Both engines keep the same rows with the same repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from thresher.config import RunConfig
from thresher.flows.curate import curate

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.spark]
TOTAL = 8_000
SHARES = {"web": 0.6, "code": 0.25, "books": 0.15}
TARGETS = {"web": 4_800, "code": 2_000, "books": 1_200}
VOCAB = ["alpha", "beta", "gamma", "delta", "x1", "y2", "z3", "42", "omega", "sigma"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixture-corpus")
    rng = np.random.default_rng(17)
    sources = rng.choice(["web", "code", "books"], 600, p=[0.7, 0.25, 0.05])
    texts = [" ".join(rng.choice(VOCAB, int(rng.integers(5, 60)))) for _ in range(600)]
    for shard in range(3):
        rows = range(shard * 200, (shard + 1) * 200)
        table = pa.table(
            {
                "id": [f"doc-{i}" for i in rows],
                "text": [texts[i] for i in rows],
                "source": [str(sources[i]) for i in rows],
            }
        )
        pq.write_table(table, out / f"shard-{shard}.parquet")
    return out


def _config(
    make_config: Callable[..., RunConfig], corpus: Path, run: Path, engine: str, max_repeat: int
) -> RunConfig:
    return make_config(
        run_dir=str(run),
        input={"paths": [str(corpus / "shard-*.parquet")]},
        schema={"id": "id", "text": "text", "passthrough": ["source"]},
        scorers=[{"name": "word_count"}, {"name": "alpha_fraction"}],
        filters=[],
        selector={
            "name": "topk",
            "params": {"score": "alpha_fraction"},
            "budget": {"sum": "word_count", "total": TOTAL},
            "mixture": {"by": "source", "shares": SHARES, "max_repeat": max_repeat},
        },
        engine={"kind": engine, "workers": 2},
    )


def _published(root: Path) -> tuple[dict[str, tuple[str, int]], dict[str, float]]:
    """Each kept id's (source, repeat), and every id's word count."""
    data = ds.dataset(root / "data", format="parquet").to_table()
    kept = {
        i: (s, r)
        for i, s, r in zip(
            data.column("id").to_pylist(),
            data.column("source").to_pylist(),
            data.column("repeat").to_pylist(),
            strict=True,
        )
    }
    scores = ds.dataset(root / "scores", format="parquet").to_table()
    words = dict(
        zip(scores.column("id").to_pylist(), scores.column("word_count").to_pylist(), strict=True)
    )
    return kept, words


def _achieved(kept: dict[str, tuple[str, int]], words: dict[str, float]) -> dict[str, int]:
    out = dict.fromkeys(SHARES, 0)
    for i, (source, repeat) in kept.items():
        out[source] += int(repeat * words[i])
    return out


def test_a_mixture_meets_its_shares_alike_on_both_engines(
    make_config: Callable[..., RunConfig], corpus: Path, tmp_path: Path, spark: Any
) -> None:
    # max_repeat 1: the books are capped, their shortfall reported
    manifest = curate(_config(make_config, corpus, tmp_path / "capped", "local", 1))
    assert manifest["counts"]["reconciles"]
    kept, words = _published(tmp_path / "capped")
    inputs = ds.dataset(corpus, format="parquet").to_table()
    sources = zip(inputs.column("id").to_pylist(), inputs.column("source").to_pylist(), strict=True)
    books_words = int(sum(words[i] for i, s in sources if s == "books"))
    achieved = _achieved(kept, words)
    longest = max(words.values())
    groups = {g["group"]: g for g in manifest["mixture"]["groups"]}
    assert {g: v["target"] for g, v in groups.items()} == TARGETS
    assert achieved["books"] == books_words == groups["books"]["achieved"]
    assert groups["books"]["shortfall"] == TARGETS["books"] - books_words > 0
    assert {r for _, r in kept.values()} == {1}
    for source in ("web", "code"):
        assert TARGETS[source] - longest < achieved[source] <= TARGETS[source]
    card = (tmp_path / "capped" / "README.md").read_text(encoding="utf-8")
    assert "Group `books` is short" in card
    report = (tmp_path / "capped" / "report.html").read_text(encoding="utf-8")
    assert "requested share" in report and "Group books is short" in report

    # max_repeat 3: the books repeated up to the target, the same on both engines
    published = {}
    for engine in ("local", "spark"):
        root = tmp_path / f"repeated-{engine}"
        manifest = curate(_config(make_config, corpus, root, engine, 3))
        counts = manifest["counts"]
        assert counts["reconciles"]
        kept, words = _published(root)
        published[engine] = kept
        achieved = _achieved(kept, words)
        for source, target in TARGETS.items():
            assert target - longest < achieved[source] <= target
        assert {r for s, r in kept.values() if s == "books"} == {1, 2}
        assert counts["kept_repeated"] == sum(r for _, r in kept.values())
        assert counts["tokens"]["kept"] == sum(achieved.values())
        assert all(g["shortfall"] == 0 for g in manifest["mixture"]["groups"])
    assert published["local"] == published["spark"]
