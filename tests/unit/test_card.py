"""The dataset card: Hugging Face layout, and load instructions that work as written."""

from __future__ import annotations

import glob
import re
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from tests.helpers.curated_run import curated_run
from thresher.io.files import read_json
from thresher.reporting.card import render_card, size_category


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> Path:
    return curated_run(tmp_path_factory, small_corpus)


def _code_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def test_card_header_points_at_the_parquet_files(run_dir: Path) -> None:
    card = (run_dir / "README.md").read_text(encoding="utf-8")
    manifest = read_json(run_dir / "manifest.json")
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    (config,) = header["configs"]
    pattern = config["data_files"][0]["path"]
    assert config["config_name"] == "default" and config["data_files"][0]["split"] == "train"
    files = glob.glob(str(run_dir / pattern))
    assert files and all(f.endswith(".parquet") for f in files)
    assert header["thresher"]["config_hash"] == manifest["config_hash"]
    assert header["size_categories"] == ["n<1K"]
    for section in ("## Source", "## Method and parameters", "## Columns", "## Counts"):
        assert section in card
    assert "## Load it" in card and "## Lineage" in card
    assert f"Config hash `{manifest['config_hash']}`" in card
    assert 'threshold(alpha_fraction)` with `{"min": 0.8' in card  # filters with parameters
    assert "**selector** `ccs(word_count)`" in card and "budget 0.5" in card
    assert f"versions/{manifest['version']}/data/" in card  # the immutable files of the version
    assert "importance_weight" not in card  # no weights in this run


def test_load_snippets_run_from_the_run_directory(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = (run_dir / "README.md").read_text(encoding="utf-8")
    kept = read_json(run_dir / "manifest.json")["counts"]["kept"]
    blocks = _code_blocks(card)
    assert [b.split()[1] for b in blocks] == ["pandas", "pyarrow.dataset", "polars", "datasets"]
    monkeypatch.chdir(run_dir)

    namespace: dict[str, object] = {}
    exec(blocks[0], namespace)  # the one-line pandas load, exactly as the card shows it
    assert namespace["df"].shape[0] == kept  # type: ignore[attr-defined]
    assert set(namespace["df"].columns) == {"id", "text", "topic", "url"}  # type: ignore[attr-defined]

    exec(blocks[1], namespace)
    assert namespace["table"].num_rows == kept  # type: ignore[attr-defined]

    exec(blocks[2], namespace)
    assert namespace["df"].height == kept  # type: ignore[attr-defined]

    # `datasets` is not a dependency: run its snippet when it is installed, else check
    # that it parses and that its data_files pattern matches the dataset's files.
    try:
        import datasets  # noqa: F401
    except ImportError:
        compile(blocks[3], "card-datasets", "exec")
        (pattern,) = re.findall(r'data_files="([^"]+)"', blocks[3])
        assert len(glob.glob(pattern)) == len(glob.glob("data/*.parquet")) > 0  # the link agrees
    else:
        exec(blocks[3], namespace)
        assert namespace["dataset"].num_rows == kept  # type: ignore[attr-defined]


def test_importance_weights_are_documented_when_present(run_dir: Path) -> None:
    manifest = read_json(run_dir / "manifest.json")
    manifest["weighted"] = True
    schema = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("importance_weight", pa.float64())]
    )
    card = render_card(manifest, schema)
    assert "## Importance weights" in card
    assert "- `importance_weight` (double): importance weight" in card
    assert 'weights = df["importance_weight"]' in card


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 25_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]


def test_many_inputs_are_summarised_with_the_damaged_and_quarantined_first(run_dir: Path) -> None:
    from thresher.reporting.inputs import LISTED, listing

    manifest = read_json(run_dir / "manifest.json")
    template = manifest["inputs"][0]
    inputs = [
        {**template, "path": f"corpus/part-{i:05d}.jsonl", "format": "jsonl", "quarantined": 0}
        for i in range(500)
    ]
    inputs[321]["quarantined"] = 7
    inputs[400]["unreadable"] = {"error": "EOFError", "rows_read": 3}
    card = render_card({**manifest, "inputs": inputs})
    listed = re.findall(r"^- `corpus/part-(\d{5})\.jsonl`", card, flags=re.M)
    assert len(listed) == LISTED
    assert listed[:2] == ["00000", "00001"] and "00321" in listed and "00400" in listed
    assert f"and {500 - LISTED:,} more inputs" in card and "`jsonl` 500" in card
    chosen = listing(inputs).shown
    assert chosen.index(inputs[321]) < chosen.index(inputs[400])  # shown in name order
    few = render_card({**manifest, "inputs": inputs[:3]})
    assert len(re.findall(r"^- `corpus/part-", few, flags=re.M)) == 3 and "more inputs" not in few
