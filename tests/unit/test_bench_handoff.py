"""The hand-off benchmark's corpus has its stated shape, and its smoke mode measures what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.handoff import _vocabulary, generate_texts, main, write_version


def test_documents_are_40_to_80_vocabulary_words_ending_in_a_full_stop() -> None:
    rng = np.random.default_rng(0)
    vocabulary = _vocabulary(rng)
    buffer, starts, lengths = vocabulary
    words = {bytes(buffer[s : s + n]).decode() for s, n in zip(starts, lengths, strict=True)}
    texts = generate_texts(500, rng, vocabulary).to_pylist()
    assert len(texts) == 500
    counts = []
    for text in texts:
        assert text.endswith(".") and "  " not in text
        tokens = text[:-1].split(" ")
        assert set(tokens) <= words
        counts.append(len(tokens))
    assert min(counts) >= 40 and max(counts) <= 80
    # Zipf-like: the most frequent word is far more frequent than the median word.
    frequency = np.sort(np.unique(" ".join(texts).replace(".", "").split(), return_counts=True)[1])
    assert frequency[-1] > 20 * np.median(frequency)


def test_version_holds_every_row_once_in_its_parts(tmp_path: Path) -> None:
    write_version(tmp_path, 1_000, parts=3)
    parts = sorted((tmp_path / "data").glob("*.parquet"))
    table = pq.read_table(parts)
    assert len(parts) == 3
    assert table.column_names == ["id", "text", "source", "quality", "words"]
    assert sorted(table.column("id").to_pylist()) == [f"doc-{i:09d}" for i in range(1_000)]
    texts, words = table.column("text").to_pylist(), table.column("words").to_pylist()
    assert all(len(t.split(" ")) == w for t, w in zip(texts, words, strict=True))


def test_smoke_run_measures_every_part_on_the_local_engine(tmp_path: Path) -> None:
    out = tmp_path / "handoff.md"
    result = main(["--docs", "2000", "--engines", "local", "--parts", "4", "--out", str(out)])
    assert result is not None
    (local,) = result["engines"]
    assert local["engine"] == "local" and local["cores"] == 1
    for name in ("thresher", "hf"):
        # The export tokenizes every document once: as many tokens as the tokenizer alone.
        assert local["megatron"][name]["rows"] == 2_000
        assert local["megatron"][name]["tokens"] == local["alone"][name]["tokens"] > 2_000 * 40
    assert local["shuffle"]["rows"] == 2_000
    assert local["shuffle"]["files"] >= 16  # 125-row files of the train split, and validation
    assert local["sizes"]["bytes"]["parquet"] > 0 and local["sizes"]["bytes"]["mds"] > 0
    assert local["peak"]["self"] > 0
    text = out.read_text()
    for heading in ("### 1. Tokenize and write", "### 2. Output size", "### 3. Global shuffle"):
        assert heading in text
