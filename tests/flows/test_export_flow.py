"""The training hand-off end to end: a 3-topic mixture under a token budget, in three formats.

One config mixes three topics of the sample corpus by token shares (a
short topic repeated), then hands the kept rows over as Parquet,
Megatron-LM and MDS, shuffled by a seeded id hash, cut into files of a
target row count, with a validation split. It runs on the local engine
with one worker, and on Spark with two cores: the files must hold the same
rows in the same order everywhere. Each format is read back by its own
library (megatron-core, mosaicml-streaming, pyarrow) and must hold exactly
the kept rows with their repeats and the tokenizer's token ids; the card's
loader snippets run as written. A run killed while exporting leaves the
previous version's hand-off published and loadable.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.flows.test_faults import reap, start, write_job
from tests.helpers.readers import (
    deltalake_in_child,
    megatron_indexed_dataset,
    streaming_without_torchvision,
)
from thresher import faults
from thresher.api import load_run
from thresher.config import RunConfig
from thresher.export.delta import table_state
from thresher.export.handoff import DocumentTokenizer
from thresher.flows.curate import curate
from thresher.io import schema as S
from thresher.io.fs import Location

pytestmark = pytest.mark.usefixtures("prefect_server")
SHARES = {"science": 0.3, "sports": 0.2, "cooking": 0.5}  # cooking is short: repeated
FILE_ROWS = 40


def _config(make_config: Callable[..., RunConfig], run: Path, engine: dict[str, Any]) -> RunConfig:
    return make_config(
        run_dir=str(run),
        scorers=[{"name": "token_count"}, {"name": "alpha_fraction"}],
        filters=[],
        selector={
            "name": "topk",
            "params": {"score": "alpha_fraction"},
            "budget": {"tokens": 50_000},
            "mixture": {"by": "topic", "shares": SHARES, "max_repeat": 3},
        },
        engine=engine,
        output={
            "formats": ["parquet", "megatron", "mds", "delta"],
            "file_rows": FILE_ROWS,
            "validation": 0.1,
        },
    )


def _split_dir(run: Path, manifest: dict[str, Any], split: str) -> Path:
    return run / manifest["output"]["splits"][split]["directory"]


def _rows(run: Path, manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The split's Parquet rows, files in name order (the shuffled order)."""
    files = sorted((_split_dir(run, manifest, split) / "parquet").glob("part-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _tokenizer(run: Path) -> DocumentTokenizer:
    (path,) = {p for p in (run / "models").rglob("tokenizer.json")}
    return DocumentTokenizer.read(Location.of(str(path)))


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, spark: Any
) -> dict[str, Any]:
    from thresher.config import parse_config

    base = tmp_path_factory.mktemp("handoff")

    def make_config(**overrides: Any) -> RunConfig:
        data: dict[str, Any] = {
            "seed": 3,
            "input": {"paths": [str(small_corpus / "shard-*")]},
            "schema": {"id": "id", "text": "text", "label": "topic"},
        }
        data.update(overrides)
        return parse_config(data, base_dir=base)

    engines = {
        "local-1": {"kind": "local", "workers": 1, "batch_size": 16},
        "spark": {"kind": "spark"},
    }
    out = {}
    for name, engine in engines.items():
        manifest = curate(_config(make_config, base / name, engine))
        out[name] = (base / name, manifest)
    return out


@pytest.mark.spark
def test_the_same_shuffled_files_on_every_engine_and_core_count(runs: dict[str, Any]) -> None:
    orders = {
        name: {split: [r["id"] for r in _rows(run, m, split)] for split in ("train", "validation")}
        for name, (run, m) in runs.items()
    }
    assert orders["local-1"] == orders["spark"]  # one worker against Spark's two cores
    run, manifest = runs["local-1"]
    train, validation = orders["local-1"]["train"], orders["local-1"]["validation"]
    assert train != sorted(train)  # shuffled, not in id or input order
    assert not set(train) & set(validation)  # a document's copies share its split
    assert 0 < len(set(validation)) < 0.25 * len(set(train) | set(validation))

    # Every kept row, as many times as its repeat count, in one split or the other.
    data = load_run(run).data
    wanted = Counter(
        dict(zip(data.column("id").to_pylist(), data.column(S.REPEAT).to_pylist(), strict=True))
    )
    assert max(wanted.values()) > 1  # the short topic is repeated
    assert Counter(train) + Counter(validation) == wanted
    output = manifest["output"]
    assert output["splits"]["train"]["rows"] == len(train)
    assert sum(s["rows"] for s in output["splits"].values()) == sum(wanted.values())

    # Files of the target size: ceil(rows / 40) files, as equal as the key buckets allow.
    files = sorted((_split_dir(run, manifest, "train") / "parquet").glob("*.parquet"))
    sizes = [pq.read_metadata(f).num_rows for f in files]
    assert len(files) == -(-len(train) // FILE_ROWS) == output["splits"]["train"]["files"]
    assert max(sizes) - min(sizes) <= 2 and max(sizes) <= FILE_ROWS + 1

    mixture = next(
        s["details"]["mixture"] for s in manifest["selection_steps"] if s["role"] == "selector"
    )
    assert {g["group"] for g in mixture["groups"]} == set(SHARES)


@pytest.mark.spark
def test_each_format_reads_back_with_its_own_library(runs: dict[str, Any]) -> None:
    for name, (run, manifest) in runs.items():
        tokenizer = _tokenizer(run)
        for split in ("train", "validation"):
            rows = _rows(run, manifest, split)
            where = _split_dir(run, manifest, split)

            # Megatron: per document, the tokenizer's ids and the end-of-document token.
            indexed = megatron_indexed_dataset()
            prefixes = sorted(str(p)[: -len(".idx")] for p in (where / "megatron").glob("*.idx"))
            parts = [indexed.IndexedDataset(p) for p in prefixes]  # their mmaps back the views
            documents = [np.array(doc) for part in parts for doc in part]
            expected = tokenizer.documents([r["text"] for r in rows])
            assert len(documents) == len(rows), name
            assert all(
                np.array_equal(got, want) for got, want in zip(documents, expected, strict=True)
            ), name
            tokens = manifest["output"]["splits"][split]["tokens"]
            assert sum(len(d) for d in documents) == tokens

            # MDS: every row, every column, in the same order.
            streaming = streaming_without_torchvision()
            mds = streaming.StreamingDataset(local=str(where / "mds"), shuffle=False, batch_size=1)
            samples = [mds[i] for i in range(len(mds))]
            assert [s["id"] for s in samples] == [r["id"] for r in rows], name
            assert [s["text"] for s in samples] == [r["text"] for r in rows], name
            assert [s["topic"] for s in samples] == [r["topic"] for r in rows], name


def _every(rows: int) -> dict[str, int]:
    return dict.fromkeys(["parquet", "megatron", "mds", "delta"], rows)


def _card_snippets(run: Path) -> dict[str, str]:
    card = (run / "README.md").read_text(encoding="utf-8")
    section = card.split("## Train on it", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"`(\w+)`:\n\n```python\n(.*?)```", section, flags=re.S)
    return dict(found)


def _run_snippets(run: Path) -> dict[str, int]:
    """Each loader snippet of the card, run as written from the run directory: what it prints."""
    streaming_without_torchvision()  # the vision stand-in, before the snippet imports streaming
    printed = {}
    before = os.getcwd()
    os.chdir(run)
    try:
        for fmt, code in _card_snippets(run).items():
            if fmt == "delta":  # deltalake only in a child process (tests/helpers/readers.py)
                deltalake_in_child()
                done = subprocess.run(
                    [sys.executable, "-c", code], cwd=run, capture_output=True, check=True
                )
                printed[fmt] = int(done.stdout.split()[0])
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"<card snippet {fmt}>", "exec"), {})
            printed[fmt] = int(out.getvalue().split()[0])
    finally:
        os.chdir(before)
    return printed


@pytest.mark.spark
def test_the_cards_loader_snippets_run_as_written(runs: dict[str, Any]) -> None:
    run, manifest = runs["spark"]
    rows = manifest["output"]["splits"]["train"]["rows"]
    assert _run_snippets(run) == _every(rows)


def _first_then_killed(
    make_config: Callable[..., RunConfig], tmp_path: Path, point: str
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A published run, then a run with a smaller budget killed at ``point``.

    Returns the run directory, the first manifest and the smaller run's config.
    """
    from prefect.settings import PREFECT_API_URL

    run = tmp_path / "run"
    first = curate(_config(make_config, run, {"kind": "local", "workers": 1}))
    smaller = _config(make_config, run, {"kind": "local", "workers": 1}).config_dict()
    smaller["selector"]["budget"] = {"tokens": 12_000}
    config_file = write_job(tmp_path / "smaller.yaml", smaller)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), faults.KILL_AT_ENV: point}
    process = start(config_file, env)
    process.wait(timeout=300)
    reap(process)
    assert process.returncode == -signal.SIGKILL, config_file.with_suffix(".log").read_text()
    return run, first, smaller


def test_a_run_killed_while_exporting_leaves_the_last_hand_off_published(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    from thresher.config import parse_config

    run, first, smaller = _first_then_killed(make_config, tmp_path, "export:after-file")
    published = first["version"]
    rows = first["output"]["splits"]["train"]["rows"]
    unpublished = [
        v for v in (run / "versions").iterdir() if v.name != published and (v / "train").exists()
    ]
    assert unpublished, "the kill must land after a hand-off file of the new version"

    # Readers still find the previous version, whole, in every format.
    assert json.loads((run / "CURRENT").read_text())["version"] == published
    assert _run_snippets(run) == _every(rows)

    second = curate(parse_config(smaller, base_dir=tmp_path))
    smaller_rows = second["output"]["splits"]["train"]["rows"]
    assert smaller_rows < rows
    assert _run_snippets(run) == _every(smaller_rows)
    assert table_state(Location.of(str(run / "delta" / "train")))[1] == second["version"]


def test_a_delta_table_left_behind_by_a_killed_run_catches_up_at_the_next_start(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    from thresher.config import parse_config

    run, first, smaller = _first_then_killed(make_config, tmp_path, "publish:after-pointer")
    published = json.loads((run / "CURRENT").read_text())["version"]
    assert published != first["version"]  # the pointer moved; the table did not follow
    table = Location.of(str(run / "delta" / "train"))
    assert table_state(table) == (0, first["version"])

    again = curate(parse_config(smaller, base_dir=tmp_path))  # nothing new to publish
    assert again["version"] == published
    assert table_state(table) == (1, published)
    rows = again["output"]["splits"]["train"]["rows"]
    assert _run_snippets(run)["delta"] == rows
