"""Decontamination: the n-gram rule, the index and the matched rows, against planted contamination."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.config import parse_config
from thresher.contamination import NgramIndex, item_ngrams, normalized_words
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.reporting.data import build_funnel
from thresher.stages.decontaminate import (
    decontaminate_key,
    eval_set_files,
    read_eval_sets,
    scan_table,
)

WORDS = [f"w{i}" for i in range(5000)]
QUESTION = (
    "Which of the following best explains why the boiling point of water decreases at higher "
    "altitudes where the atmospheric pressure is lower than at sea level"
)


def filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def scan(index: NgramIndex, texts: list[str | None]) -> tuple[list[str | None], list[str | None]]:
    matches = index.scan(pa.array(texts, pa.string()))
    return matches.first_set(), matches.first_ngram()


def test_an_exact_13_gram_inside_a_long_document_is_found() -> None:
    rng = random.Random(0)
    index = NgramIndex.build({"mmlu": [QUESTION]})
    planted = " ".join(QUESTION.split()[5:18])  # 13 words from the middle
    document = f"{filler(rng, 3000)} {planted} {filler(rng, 3000)}"
    sets, ngrams = scan(index, [document, filler(rng, 6000)])
    assert sets == ["mmlu", None]
    assert ngrams[0] == " ".join(normalized_words(planted))


def test_a_12_word_overlap_is_not_contamination() -> None:
    rng = random.Random(1)
    index = NgramIndex.build({"mmlu": [QUESTION]})
    words = QUESTION.split()
    twelve = " ".join(words[5:17])
    # twelve words, then the question's 14th word replaced: no 13 consecutive words shared
    document = f"{filler(rng, 500)} {twelve} notaword {' '.join(words[18:29])} {filler(rng, 500)}"
    sets, _ = scan(index, [document])
    assert sets == [None]


@pytest.mark.parametrize(
    "variant",
    [
        QUESTION.upper(),  # case
        QUESTION.replace(" ", ", "),  # punctuation added
        QUESTION.replace(" ", " \n\t  "),  # extra whitespace
        "«" + QUESTION.replace("water", "wa'ter").replace("altitudes", "altitudes?!") + "»",
    ],
    ids=["case", "commas", "whitespace", "punctuation-inside-words"],
)
def test_normalisation_variants_match(variant: str) -> None:
    index = NgramIndex.build({"mmlu": [QUESTION]})
    sets, ngrams = scan(index, [f"Intro text here. {variant} Closing words."])
    assert sets == ["mmlu"]
    assert ngrams[0] == " ".join(QUESTION.lower().split()[:13])


def test_an_item_shorter_than_n_is_one_ngram_of_its_own_length() -> None:
    index = NgramIndex.build({"gsm8k": ["What is 17 times 23?"]})
    assert index.short_items == {"gsm8k": 1} and index.ngrams == {"gsm8k": 1}
    assert item_ngrams("What is 17 times 23?") == ["what is 17 times 23"]
    sets, ngrams = scan(
        index,
        [
            "Homework: what is 17 times 23 , asked the teacher",  # the whole item, in a row
            "what is 17 times 24",  # one word differs
            "what is 17 times",  # part of the item only
            "times 23 what is 17",  # the words, not in a row
        ],
    )
    assert sets == ["gsm8k", None, None, None]
    assert ngrams[0] == "what is 17 times 23"


def test_two_sets_the_detail_names_the_set_matched_first() -> None:
    rng = random.Random(2)
    other = filler(rng, 20)
    index = NgramIndex.build({"mmlu": [QUESTION], "gsm8k": [other]})
    only_gsm8k = f"{filler(rng, 100)} {other} {filler(rng, 100)}"
    both = f"{filler(rng, 50)} {other} {filler(rng, 50)} {QUESTION}"
    matches = index.scan(pa.array([only_gsm8k, both, QUESTION]))
    assert matches.first_set() == ["gsm8k", "gsm8k", "mmlu"]
    assert matches.matched_sets() == [["gsm8k"], ["mmlu", "gsm8k"], ["mmlu"]]


def test_an_ngram_in_two_sets_names_the_first_configured() -> None:
    index = NgramIndex.build({"first": [QUESTION], "second": [QUESTION]})
    matches = index.scan(pa.array([QUESTION]))
    assert matches.first_set() == ["first"]
    assert matches.matched_sets() == [["first", "second"]]


def test_equal_hashes_with_other_bytes_never_match() -> None:
    """A 64-bit hash hit is checked against the stored n-gram's bytes (no false positive)."""
    index = NgramIndex.build({"mmlu": [" ".join(QUESTION.split()[:13])]})
    assert index.n_entries == 1
    text = index.text.copy()
    text[0] = ord("x")  # same length, same hash, other bytes: a collision in all but name
    forged = dataclasses.replace(index, text=text)
    assert scan(index, [QUESTION])[0] == ["mmlu"]
    assert scan(forged, [QUESTION])[0] == [None]


def test_empty_null_and_punctuation_only_documents_do_not_match() -> None:
    index = NgramIndex.build({"s": ["!!!", "", QUESTION]})
    assert index.items == {"s": 1}
    assert scan(index, [None, "", "!!! ...", "   "])[0] == [None, None, None, None]


def brute_force(
    sets: dict[str, list[str]], documents: list[str], ngram: int
) -> list[tuple[str | None, list[str]]]:
    """The rule with Python strings: the first match (earliest, longest, first set) and all sets."""
    grams = {
        name: {g for item in items for g in item_ngrams(item, ngram)}
        for name, items in sets.items()
    }
    lengths = sorted({len(g.split()) for grams_ in grams.values() for g in grams_}, reverse=True)
    out: list[tuple[str | None, list[str]]] = []
    for document in documents:
        words = normalized_words(document)
        first: str | None = None
        hit: set[str] = set()
        for start in range(len(words)):
            for length in lengths:
                if start + length > len(words):
                    continue
                window = " ".join(words[start : start + length])
                for name in sets:
                    if window in grams[name]:
                        first = first or name
                        hit.add(name)
        out.append((first, [n for n in sets if n in hit]))
    return out


@pytest.mark.parametrize("ngram", [3, 13])
def test_matches_equal_set_of_strings_matching(ngram: int) -> None:
    """On a small vocabulary (many near misses), the kernel agrees with exact string matching."""
    rng = random.Random(ngram)
    vocab = ["a", "b", "c", "d", "E", "f.", "g,"]

    def text(n: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(n))

    sets = {
        "one": [text(rng.randint(1, 20)) for _ in range(30)],
        "two": [text(rng.randint(1, 20)) for _ in range(30)],
    }
    documents = [text(rng.randint(0, 60)) for _ in range(300)]
    index = NgramIndex.build(sets, ngram)
    matches = index.scan(pa.array(documents))
    expected = brute_force(sets, documents, ngram)
    assert matches.first_set() == [first for first, _ in expected]
    assert matches.matched_sets() == [every for _, every in expected]
    assert 0 < sum(first is not None for first, _ in expected) < len(documents)


def test_index_round_trips_through_bytes() -> None:
    index = NgramIndex.build({"mmlu": [QUESTION, "short one"], "gsm8k": ["x y z"]}, ngram=5)
    again = NgramIndex.from_bytes(index.to_bytes())
    for field in dataclasses.fields(NgramIndex):
        left, right = getattr(index, field.name), getattr(again, field.name)
        if isinstance(left, np.ndarray):
            assert np.array_equal(left, right) and left.dtype == right.dtype
        else:
            assert left == right


# -- evaluation sets from files, matched rows, configuration ---------------------------------------


def config_with(tmp_path: Path, decontaminate: Any, **schema: Any) -> Any:
    return parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "input": {"paths": [str(tmp_path)]},
            "schema": {"id": "id", "text": "text", **schema},
            "engine": {"kind": "local"},
            "decontaminate": decontaminate,
        },
        base_dir=tmp_path,
    )


def test_eval_sets_are_read_in_every_format_with_their_content_digest(tmp_path: Path) -> None:
    (tmp_path / "mmlu.jsonl").write_text(
        json.dumps({"question": QUESTION}) + "\n" + json.dumps({"question": ""}) + "\n"
    )
    pq.write_table(pa.table({"problem": ["What is 17 times 23?"]}), tmp_path / "gsm8k.parquet")
    decontaminate = {
        "sets": {
            "mmlu": {"paths": ["mmlu.jsonl"], "text": "question"},
            "gsm8k": {"paths": ["*.parquet"], "text": "problem"},
        }
    }
    config = config_with(tmp_path, decontaminate)
    sets = {s.name: s for s in read_eval_sets(config)}
    assert sets["mmlu"].texts.to_pylist() == [QUESTION] and sets["mmlu"].skipped == 1
    assert sets["gsm8k"].texts.to_pylist() == ["What is 17 times 23?"]
    key = decontaminate_key(config.decontaminate, list(sets.values()))
    assert key == decontaminate_key(config.decontaminate, read_eval_sets(config))
    (tmp_path / "mmlu.jsonl").write_text(json.dumps({"question": QUESTION + " changed"}) + "\n")
    assert decontaminate_key(config.decontaminate, read_eval_sets(config)) != key


def test_matched_rows_carry_set_ngram_and_every_set() -> None:
    index = NgramIndex.build({"mmlu": [QUESTION], "gsm8k": ["What is 17 times 23?"]})
    table = pa.table(
        {
            S.ID: ["a", "b", "c"],
            S.SHARD: pa.array([0, 0, 0], pa.int32()),
            S.ROW: pa.array([0, 1, 2], pa.int64()),
            S.TEXT: ["clean text", f"{QUESTION}. And what is 17 times 23?", "what is 17 times 23"],
        }
    )
    rows = scan_table(index, table).to_pylist()
    assert [r["id"] for r in rows] == ["b", "c"]
    assert rows[0]["set"] == "mmlu" and rows[0]["sets"] == ["mmlu", "gsm8k"]
    assert rows[0]["ngram"] == " ".join(QUESTION.lower().split()[:13])
    assert rows[1] == {
        "id": "c",
        "thresher_shard": 0,
        "thresher_row": 2,
        "set": "gsm8k",
        "ngram": "what is 17 times 23",
        "sets": ["gsm8k"],
    }


@pytest.mark.parametrize(
    ("decontaminate", "schema", "message"),
    [
        ({"sets": {}}, {}, "decontaminate.sets: Dictionary should have at least 1 item"),
        ({"sets": {"mmlu": {"paths": []}}}, {}, "decontaminate.sets.mmlu.paths:"),
        ({"sets": {"a b": {"paths": ["x"]}}}, {}, "decontaminate.sets: set name 'a b'"),
        ({"sets": {"m": {"paths": ["x"]}}, "ngram": 0}, {}, "decontaminate.ngram:"),
        ({"sets": {"m": {"paths": ["x"], "field": "q"}}}, {}, "decontaminate.sets.m.field:"),
        ({"sets": {"m": {"paths": ["x"]}}, "n": 13}, {}, "decontaminate.n:"),
        ({"sets": {"m": {"paths": ["x"]}}}, {"text": None, "features": "f"}, "decontaminate:"),
    ],
)
def test_config_refusals_name_the_field(
    tmp_path: Path, decontaminate: Any, schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(tmp_path, decontaminate, **schema)
    assert message in str(raised.value)


def test_an_eval_pattern_matching_nothing_is_refused_with_its_field(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"sets": {"mmlu": {"paths": ["missing/*.jsonl"]}}})
    with pytest.raises(ConfigError, match=r"decontaminate\.sets\.mmlu\.paths\[0\]: 'missing"):
        eval_set_files(config)


def test_an_eval_file_without_the_text_field_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mmlu.jsonl").write_text(json.dumps({"prompt": QUESTION}) + "\n")
    config = config_with(tmp_path, {"sets": {"mmlu": {"paths": ["mmlu.jsonl"], "text": "q"}}})
    with pytest.raises(
        ConfigError, match=r"decontaminate\.sets\.mmlu\.text: none of the 1 record.*'q'"
    ):
        read_eval_sets(config)


def test_the_funnel_counts_contaminated_rows_first_in_a_stage_of_their_own() -> None:
    manifest = {
        "counts": {
            "input": 10,
            "quarantined": {"by_reason": {}},
            "dropped": {"by_reason": {"duplicate": 2, "contaminated": 3}},
            "kept": 5,
        }
    }
    funnel, _, _ = build_funnel(manifest, [], [])
    assert [(s.stage, s.removed, s.remaining) for s in funnel[1:]] == [
        ("contaminated", {"contaminated": 3}, 7),
        ("duplicates", {"duplicate": 2}, 5),
    ]
