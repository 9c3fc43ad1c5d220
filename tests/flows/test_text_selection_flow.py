"""Language filter, token counts and DSIR through `curate`: the same kept ids on both engines.

A small corpus mixes English documents of five topics with German and
French ones; the target set is other cooking documents. The run keeps
English (``language_filter``), documents of at least 20 tokens
(``threshold`` on ``token_count``), confident language calls (``threshold``
on the probability), then resamples toward the target with ``dsir``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from thresher.config import RunConfig
from thresher.examples.sample_corpus import clean_document, generate_records
from thresher.flows.curate import curate

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.spark]

GERMAN = [
    "Der Zug nach Berlin hatte heute Morgen wieder einmal eine halbe Stunde Verspätung.",
    "Im Garten blühen die Rosen, und die Kinder spielen bis zum Abend im Schatten der Bäume.",
    "Die Regierung hat angekündigt, die Steuern für kleine Unternehmen im nächsten Jahr zu senken.",
    "Wir haben das Rezept meiner Großmutter ausprobiert und der Kuchen war ausgezeichnet.",
]
FRENCH = [
    "Le train pour Lyon avait encore une demi-heure de retard ce matin à cause de la neige.",
    "Dans le jardin, les roses fleurissent et les enfants jouent à l'ombre des arbres jusqu'au soir.",
    "Le gouvernement a annoncé une baisse des impôts pour les petites entreprises l'année prochaine.",
    "Nous avons essayé la recette de ma grand-mère et le gâteau était vraiment délicieux.",
]
TINY_TOKENIZER = {"vocab_size": 400, "n_documents": 200}


def _corpus(directory: Path) -> set[str]:
    """Two Parquet shards: English sample-corpus documents and 40 foreign ones; returns foreign ids."""
    rng = random.Random(11)
    records = [
        {"id": r["id"], "text": r["text"], "topic": r["topic"]} for r in generate_records(320, 4)
    ]
    foreign = []
    for number in range(40):
        pool = GERMAN if number % 2 else FRENCH
        text = " ".join(rng.sample(pool, 3))
        foreign.append({"id": f"foreign-{number:02d}", "text": text, "topic": "travel"})
    rows = records + foreign
    rng.shuffle(rows)
    directory.mkdir(parents=True)
    half = len(rows) // 2
    pq.write_table(pa.Table.from_pylist(rows[:half]), directory / "shard-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:]), directory / "shard-1.parquet")
    return {row["id"] for row in foreign}


def _config(
    make_config: Callable[..., RunConfig], corpus: Path, run: Path, engine: str
) -> RunConfig:
    scorers: list[dict[str, Any]] = [
        {"name": "language"},
        {"name": "token_count", "params": {"lm": TINY_TOKENIZER}},
        # a relative path: resolved against the config's directory
        {"name": "dsir", "params": {"target_files": ["target.jsonl"], "n_documents": 500}},
    ]
    return make_config(
        run_dir=str(run),
        input={"paths": [str(corpus / "shard-*")]},
        scorers=scorers,
        filters=[
            {"name": "language_filter", "params": {"languages": ["en"], "min_probability": 0.5}},
            {"name": "threshold", "params": {"score": "language_probability", "min": 0.9}},
            {"name": "threshold", "params": {"score": "token_count", "min": 20}},
        ],
        selector={"name": "dsir", "budget": 30},
        engine={"kind": engine, "workers": 2},
    )


def test_language_token_count_and_dsir_keep_the_same_rows_on_both_engines(
    make_config: Callable[..., RunConfig], tmp_path: Path, spark: Any
) -> None:
    corpus = tmp_path / "corpus"
    foreign = _corpus(corpus)
    rng = random.Random(5)
    (tmp_path / "target.jsonl").write_text(
        "".join(json.dumps({"text": clean_document(rng, "cooking")}) + "\n" for _ in range(100)),
        encoding="utf-8",
    )
    kept: dict[str, list[str]] = {}
    for engine in ("local", "spark"):
        manifest = curate(_config(make_config, corpus, tmp_path / engine, engine))
        assert manifest["counts"]["reconciles"]
        table = ds.dataset(tmp_path / engine / "data", format="parquet").to_table()
        kept[engine] = sorted(table.column("id").to_pylist())
        topics = table.column("topic").to_pylist()
        assert sum(topic == "cooking" for topic in topics) >= 0.9 * len(topics)
    assert kept["local"] == kept["spark"]
    assert len(kept["local"]) == 30 and not foreign & set(kept["local"])
    scores = ds.dataset(tmp_path / "local" / "scores", format="parquet").to_table()
    language = dict(
        zip(scores.column("id").to_pylist(), scores.column("language").to_pylist(), strict=True)
    )
    assert {language[i] for i in foreign} <= {"de", "fr"}
    assert scores.schema.field("token_count").type == pa.int64()
