"""The LM corpus builder: determinism, planted shares and properties, a held-out target."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from thresher.examples import lm_corpus
from thresher.examples.lm_corpus import (
    BOILERPLATE_BLOCKS,
    DOMAIN,
    PLANTED_KINDS,
    build_corpus,
    cap_text,
    normalise,
    planted_counts,
)

SMALL: dict[str, Any] = {
    "sources": ("python_docstring",),
    "pool_chars": 150_000,
    "target_docs": 30,
    "low_quality_share": 0.25,
    "shard_rows": 64,
}


def _build(out: Path, **overrides: Any) -> dict[str, Any]:
    return build_corpus(out, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lm_corpus")
    _build(out, seed=3)
    return out


def _rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "train").to_pylist()


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(corpus: Path, tmp_path: Path) -> None:
    _build(tmp_path / "again", seed=3)
    first, second = _files(corpus), _files(tmp_path / "again")
    assert len([name for name in first if name.startswith("train/")]) > 1
    assert first == second
    _build(tmp_path / "other", seed=4)
    assert (
        _files(tmp_path / "other")["train/part-00000.parquet"] != first["train/part-00000.parquet"]
    )


def test_rows_have_the_columns_and_unique_ids(corpus: Path) -> None:
    shards = sorted((corpus / "train").glob("part-*.parquet"))
    assert [p.name for p in shards] == [f"part-{i:05d}.parquet" for i in range(len(shards))]
    for shard in shards:
        table = pq.read_table(shard)
        assert table.column_names == ["id", "text", "source", "kind"]
        assert table.num_rows <= SMALL["shard_rows"]
        assert all(table.column(name).null_count == 0 for name in table.column_names)
    rows = _rows(corpus)
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(row["text"].strip() for row in rows)
    assert {row["kind"] for row in rows} == {"clean", *PLANTED_KINDS}
    assert all((row["source"] == "planted") == (row["kind"] != "clean") for row in rows)
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["train"]["docs"] == len(rows)
    assert summary["train"]["characters"] == sum(len(row["text"]) for row in rows)
    assert summary["seed"] == 3 and summary["target"]["domain"] == DOMAIN


def test_rows_are_shuffled_across_shards(corpus: Path) -> None:
    first = pq.read_table(corpus / "train" / "part-00000.parquet").column("kind").to_pylist()
    assert "clean" in first and set(first) & set(PLANTED_KINDS)


def test_planted_share_per_kind(corpus: Path) -> None:
    kinds = Counter(row["kind"] for row in _rows(corpus))
    total = sum(kinds.values())
    planted = total - kinds["clean"]
    assert abs(planted / total - SMALL["low_quality_share"]) <= 1 / total
    for kind in PLANTED_KINDS:
        assert abs(kinds[kind] - planted / len(PLANTED_KINDS)) <= 1


def test_planted_counts_split_evenly() -> None:
    counts = planted_counts(800, 0.2)
    assert sum(counts.values()) == 200 and set(counts.values()) == {40}
    assert sum(planted_counts(103, 0.3).values()) == round(103 * 0.3 / 0.7)
    assert sum(planted_counts(50, 0.0).values()) == 0
    with pytest.raises(ValueError):
        planted_counts(10, 1.0)


def test_target_is_disjoint_from_the_pool(corpus: Path) -> None:
    rows = _rows(corpus)
    target = pq.read_table(corpus / "target" / f"{DOMAIN}.parquet")
    assert target.column_names == ["id", "text"]
    assert target.num_rows == SMALL["target_docs"]
    target_ids = set(target.column("id").to_pylist())
    target_texts = set(target.column("text").to_pylist())
    assert not target_ids & {row["id"] for row in rows}
    assert not target_texts & {row["text"] for row in rows}
    origins = pq.read_table(corpus / "planted.parquet").column("origin").to_pylist()
    clean_ids = {row["id"] for row in rows if row["kind"] == "clean"}
    assert {origin for origin in origins if origin is not None} <= clean_ids


def _planted(corpus: Path) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, text, origin id, origin text) of every planted row."""
    rows = {row["id"]: row for row in _rows(corpus)}
    planted = pq.read_table(corpus / "planted.parquet").to_pylist()
    assert {p["id"] for p in planted} == {i for i, row in rows.items() if row["kind"] != "clean"}
    out = []
    for p in planted:
        assert rows[p["id"]]["kind"] == p["kind"]
        origin = rows[p["origin"]]["text"] if p["origin"] is not None else None
        out.append((p["kind"], rows[p["id"]]["text"], p["origin"], origin))
    return out


def test_word_salad_is_a_permutation_of_a_pool_document(corpus: Path) -> None:
    salads = [(text, origin) for kind, text, _, origin in _planted(corpus) if kind == "word_salad"]
    assert salads
    for text, origin in salads:
        assert origin is not None and text != origin
        assert sorted(text.split()) == sorted(origin.split())
        assert text.split() != origin.split()


def test_near_copy_changes_a_few_words(corpus: Path) -> None:
    copies = [(text, origin) for kind, text, _, origin in _planted(corpus) if kind == "near_copy"]
    assert copies
    for text, origin in copies:
        assert origin is not None and text != origin
        new, old = text.split(), origin.split()
        assert len(new) == len(old)
        changed = sum(a != b for a, b in zip(new, old, strict=True))
        assert 1 <= changed <= 8 and changed <= max(1, 0.05 * len(old))
        assert re.sub(r"\S+", "w", text) == re.sub(r"\S+", "w", origin)  # layout kept


def test_boilerplate_blocks_repeat_across_documents(corpus: Path) -> None:
    docs = [(text, origin) for kind, text, _, origin in _planted(corpus) if kind == "boilerplate"]
    assert len(docs) >= 2 * len(BOILERPLATE_BLOCKS)
    uses: Counter[str] = Counter()
    for text, origin in docs:
        blocks = [block for block in BOILERPLATE_BLOCKS if block in text]
        assert len(blocks) == 1
        uses[blocks[0]] += 1
        unique = text.replace(blocks[0], "").strip()
        assert origin is not None and unique and unique in " ".join(origin.split())
        assert len(unique) < len(blocks[0])
    assert min(uses.values()) >= 2


def test_truncated_docs_are_short_fragments(corpus: Path) -> None:
    docs = [(text, origin) for kind, text, _, origin in _planted(corpus) if kind == "truncated"]
    assert docs
    for text, origin in docs:
        assert 1 <= len(text.split()) <= 25
        assert origin is not None and text in " ".join(origin.split())
        assert not text.endswith((".", "!", "?"))


def test_keyword_lists_use_the_pool_vocabulary(corpus: Path) -> None:
    rows = _rows(corpus)
    pool_text = "\n".join(row["text"] for row in rows if row["kind"] == "clean").lower()
    lists = [text for kind, text, _, _ in _planted(corpus) if kind == "keyword_list"]
    assert lists
    for text in lists:
        body = re.sub(r"^(Tags|Keywords|Related searches): ", "", text)
        words = re.split(r", |\n| \| ", body)
        assert len(words) >= 20
        assert all(re.fullmatch(r"[a-z][a-z0-9+\-]{2,}", word) for word in words)
        assert all(word in pool_text for word in words)


def test_max_docs_caps_the_clean_pool(tmp_path: Path) -> None:
    summary = _build(tmp_path, max_docs=40, target_docs=5, low_quality_share=0.2)
    assert summary["train"]["by_kind"]["clean"]["docs"] == 40
    assert summary["train"]["docs"] == 50


def test_unknown_source_and_too_many_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sources"):
        _build(tmp_path, sources=("nonsense",))
    with pytest.raises(ValueError, match="target documents"):
        _build(tmp_path, target_docs=10**7)


def test_stdlib_documents_is_a_seeded_sample() -> None:
    first = lm_corpus.stdlib_documents(limit=25, seed=1)
    assert len(first) == 25 and first == lm_corpus.stdlib_documents(limit=25, seed=1)
    assert first != lm_corpus.stdlib_documents(limit=25, seed=2)
    assert all(doc.source == "python_docstring" and doc.in_domain for doc in first)
    assert all(doc.id.startswith("python_docstring:") for doc in first)


def test_normalise_drops_short_and_foreign_text_and_caps_long_text() -> None:
    assert normalise("too short") is None
    assert normalise("\u0416" * 500) is None  # Cyrillic: not the English corpus
    text = normalise("a \u2010 b\u2019s\r\n\n\n\n" + "word " * 100)
    assert text is not None and text.startswith("a - b's\n\nword")
    paragraphs = "\n\n".join("x" * 900 for _ in range(40))
    capped = cap_text(paragraphs, 20_000)
    assert len(capped) <= 20_000 and paragraphs.startswith(capped) and capped.endswith("x")


@pytest.mark.skipif(
    not lm_corpus.package_available(), reason="no apt-cache package index with long descriptions"
)
def test_package_descriptions_are_long_and_distinct() -> None:
    docs = lm_corpus.package_descriptions()
    assert len(docs) > 1000
    assert len({doc.id for doc in docs}) == len(docs) == len({doc.text for doc in docs})
    assert all(len(doc.text) >= lm_corpus.MIN_CHARS for doc in docs)
    assert not any(line == "." for doc in docs[:2000] for line in doc.text.split("\n"))
    assert any(doc.in_domain for doc in docs) and not all(doc.in_domain for doc in docs)


@pytest.mark.skipif(not lm_corpus.man_available(), reason="no man or no English man pages")
def test_man_pages_render_to_plain_text_and_mix_with_the_domain(tmp_path: Path) -> None:
    summary = _build(
        tmp_path,
        sources=("man_page", "python_docstring"),
        pool_chars=200_000,
        domain_share=0.2,
        workers=2,
    )
    clean = summary["train"]["clean_by_source"]
    assert clean["man_page"]["docs"] > 0
    domain_share = summary["train"]["domain_characters"] / sum(
        c["characters"] for c in clean.values()
    )
    assert 0.1 < domain_share < 0.3
    pages = [row["text"] for row in _rows(tmp_path) if row["source"] == "man_page"]
    assert not any("\b" in text for text in pages)
    assert all(text.startswith("NAME") or "NAME" in text[:200] for text in pages[:5])
