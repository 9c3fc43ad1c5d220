"""Gopher, C4 and FineWeb signals: known answers at every rule's edge, and a Python reference.

The reference below restates datatrove 0.10.1's formulas in plain Python over
the tokens of :func:`thresher.scorers.quality_tokens.words`; the compiled
kernels must give the same values on arbitrary text. The tokenizer itself is
pinned by spaCy's answers on examples of each of its rules.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.batches import text_batch
from thresher.errors import ConfigError
from thresher.scorers import SCORERS, make_scorer
from thresher.scorers.quality_rules import RULES, Rule, preset_rules
from thresher.scorers.quality_tables import (
    DATATROVE_PUNCTUATION,
    DATATROVE_TERMINAL_PUNCTUATION,
    SPACY_SENTENCE_PUNCT,
)
from thresher.scorers.quality_tokens import words

NAMES = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
Signals = dict[str, Any]


def scored(scorer: str, texts: list[str | None]) -> list[Signals]:
    """Each text's outputs by signal name ("" for the scorer's main column)."""
    rows = make_scorer(scorer).score(text_batch(texts)).to_pylist()
    return [
        {key.removeprefix(scorer).removeprefix("_"): v for key, v in row.items()} for row in rows
    ]


def rule(name: str) -> Rule:
    (found,) = [r for rules in RULES.values() for r in rules if r.name == name]
    return found


def value(name: str, text: str) -> float:
    r = rule(name)
    return scored(r.scorer, [text])[0]["" if r.signal is None else r.signal]


def keeps(r: Rule, v: float) -> bool:
    """The rule table's decision: keep when min <= v <= max; NaN fails."""
    if math.isnan(v):
        return False
    return (r.min is None or r.min <= v) and (r.max is None or v <= r.max)


# -- the rule table ------------------------------------------------------------------------


def test_rule_table_holds_the_published_thresholds() -> None:
    bounds = {(r.preset, r.name): (r.min, r.max) for rules in RULES.values() for r in rules}
    assert bounds == {
        ("gopher", "word_count"): (50, 100_000),
        ("gopher", "mean_word_length"): (3, 10),
        ("gopher", "hash_word_ratio"): (None, 0.1),
        ("gopher", "ellipsis_word_ratio"): (None, 0.1),
        ("gopher", "bullet_lines"): (None, 0.9),
        ("gopher", "ellipsis_lines"): (None, 0.3),
        ("gopher", "alpha_words"): (0.8, None),
        ("gopher", "stop_words"): (2, None),
        ("gopher", "dup_para_fraction"): (None, 0.3),
        ("gopher", "dup_para_char_fraction"): (None, 0.2),
        ("gopher", "dup_line_fraction"): (None, 0.3),
        ("gopher", "dup_line_char_fraction"): (None, 0.2),
        ("gopher", "top_2gram"): (None, 0.2),
        ("gopher", "top_3gram"): (None, 0.18),
        ("gopher", "top_4gram"): (None, 0.16),
        ("gopher", "dup_5gram"): (None, 0.15),
        ("gopher", "dup_6gram"): (None, 0.14),
        ("gopher", "dup_7gram"): (None, 0.13),
        ("gopher", "dup_8gram"): (None, 0.12),
        ("gopher", "dup_9gram"): (None, 0.11),
        ("gopher", "dup_10gram"): (None, 0.1),
        ("c4", "lorem_ipsum"): (None, 0),
        ("c4", "curly_bracket"): (None, 0),
        ("c4", "sentences"): (5, None),
        ("fineweb", "line_punct_ratio"): (0.12, None),
        ("fineweb", "short_line_ratio"): (None, 0.67),
        ("fineweb", "char_dup_ratio"): (None, 0.01),
        ("fineweb", "list_ratio"): (None, 0.3),
    }


def test_every_rule_reads_an_output_of_a_registered_signal_scorer() -> None:
    for rules in RULES.values():
        for r in rules:
            assert r.scorer in SCORERS and r.doc
            fields = [f.name for f in make_scorer(r.scorer).output_fields("c")]
            assert ("c" if r.signal is None else f"c_{r.signal}") in fields


def test_an_unknown_preset_is_refused_naming_the_known_ones() -> None:
    assert preset_rules("c4") == RULES["c4"]
    with pytest.raises(ConfigError, match="c4, fineweb, gopher"):
        preset_rules("refinedweb")


# -- known answers at each rule's edge -------------------------------------------------------


def _filler(n: int, length: int = 5, start: int = 0) -> list[str]:
    """``n`` distinct lower-case words of ``length`` letters (no stop word, no repeat)."""
    letters = "bcdfgjklmnprsvxz"
    found = []
    for k in range(start, start + n):
        word = ""
        while k or not word:
            k, r = divmod(k, len(letters))
            word = letters[r] + word
        found.append(word.rjust(length, "q")[:length] if len(word) <= length else word)
    assert len(set(found)) == n
    return found


def _line_doc(special: int, total: int, line_special: str, line_plain: str) -> str:
    return "\n".join([line_special] * special + [line_plain] * (total - special))


def _repeat_para(separator: str, n_unique: int, n_repeat: int) -> str:
    return separator.join(_filler(n_unique) + ["qqqqq"] * (n_repeat + 1))


def _dup_chars(separator: str, pad: int) -> str:
    """A unique part of ``pad`` characters, then a 20-character block twice."""
    return "x" * pad + separator + "b" * 20 + separator + "b" * 20


def _top_gram(gram: list[str], count: int, length: int) -> str:
    """``gram`` ``count`` times between unique words, padded to ``length`` characters."""
    parts: list[str] = []
    for word in _filler(count, 3, start=400):
        parts += [word, *gram]
    text = " ".join(parts)
    return text + " " + "v" * (length - len(text) - 1)


def _dup_gram(n: int, word_length: int, length: int) -> str:
    """``n`` distinct words twice in a row, padded to ``length`` characters."""
    block = _filler(n, word_length, start=700)
    text = " ".join(block + block)
    return text + " " + "v" * (length - len(text) - 1)


def _sentences(n: int) -> str:
    return "\n".join(f"Sentence number {k} is here." for k in range(n))


def _fineweb_lines(punct: int, total: int) -> str:
    long = "this line has more than thirty characters"
    return "\n".join(
        [f"{long} {k}." for k in range(punct)] + [f"{long} {k}" for k in range(punct, total)]
    )


EDGES: dict[str, tuple[str, float, str]] = {
    # rule: (a text that just passes, its value, a text that just fails)
    "word_count": (" ".join(_filler(50)), 50, " ".join(_filler(49))),
    "mean_word_length": (" ".join(["abc"] * 10), 3.0, " ".join(["abc"] * 9 + ["ab"])),
    "hash_word_ratio": (
        " ".join(["a#b"] * 10 + _filler(90)),
        0.1,
        " ".join(["a#b"] * 11 + _filler(89)),
    ),
    "ellipsis_word_ratio": (
        " ".join(["ok..."] * 10 + _filler(80)),
        0.1,
        " ".join(["ok..."] * 11 + _filler(80)),
    ),
    "bullet_lines": (
        _line_doc(9, 10, "  - item", "text"),
        0.9,
        _line_doc(91, 100, "• item", "text"),
    ),
    "ellipsis_lines": (
        _line_doc(3, 10, "and so\u2026 ", "text"),
        0.3,
        _line_doc(31, 100, "more...", "t"),
    ),
    "alpha_words": (" ".join(_filler(80) + ["123"] * 20), 0.8, " ".join(_filler(79) + ["12"] * 21)),
    "stop_words": ("The cat of the house", 2, "The cat of The house"),
    "dup_para_fraction": (_repeat_para("\n\n", 6, 3), 0.3, _repeat_para("\n\n", 5, 3)),
    "dup_para_char_fraction": (_dup_chars("\n\n", 56), 0.2, _dup_chars("\n\n", 55)),
    "dup_line_fraction": (_repeat_para("\n", 6, 3), 0.3, _repeat_para("\n", 5, 3)),
    "dup_line_char_fraction": (_dup_chars("\n", 58), 0.2, _dup_chars("\n", 57)),
    "top_2gram": (_top_gram(["ab", "cd"], 4, 100), 0.2, _top_gram(["ab", "cd"], 4, 99)),
    "top_3gram": (
        _top_gram(["ab", "cd", "ef"], 9, 400),
        0.18,
        _top_gram(["ab", "cd", "ef"], 9, 399),
    ),
    "top_4gram": (
        _top_gram(["ab", "cd", "ef", "gh"], 4, 275),
        0.16,
        _top_gram(["ab", "cd", "ef", "gh"], 4, 274),
    ),
    "dup_5gram": (_dup_gram(5, 3, 100), 0.15, _dup_gram(5, 3, 99)),
    "dup_6gram": (_dup_gram(6, 7, 300), 0.14, _dup_gram(6, 7, 299)),
    "dup_7gram": (_dup_gram(7, 13, 700), 0.13, _dup_gram(7, 13, 699)),
    "dup_8gram": (_dup_gram(8, 3, 200), 0.12, _dup_gram(8, 3, 199)),
    "dup_9gram": (_dup_gram(9, 11, 900), 0.11, _dup_gram(9, 11, 899)),
    "dup_10gram": (_dup_gram(10, 3, 300), 0.1, _dup_gram(10, 3, 299)),
    # C4: the page-level checks see only lines that reach them.
    "lorem_ipsum": (
        _sentences(5) + "\nLorem ipsum dolor sit amet",  # no final punctuation: the line is gone
        0.0,
        _sentences(5) + "\nLOREM IPSUM dolor sit amet.",
    ),
    "curly_bracket": (
        _sentences(5) + "\nThis needs JavaScript {enabled}.",  # removed as a javascript line
        0.0,
        _sentences(5) + "\nThe set {a, b} has two elements.",
    ),
    "sentences": (
        _sentences(3) + "\nOne two three. Four five six![1]\nToo short.\nNo final mark here",
        5,
        _sentences(4) + "\nThis line ends... \nAccept the privacy policy now.",
    ),
    "line_punct_ratio": (_fineweb_lines(12, 100), 0.12, _fineweb_lines(11, 100)),
    "short_line_ratio": (
        _line_doc(67, 100, "short line", "x" * 31),
        0.67,
        _line_doc(68, 100, "short line.", "y" * 31),
    ),
    "char_dup_ratio": (
        "a" * 980 + "\nabcdefghij\nabcdefghij",
        0.01,
        "a" * 979 + "\nabcdefghij\nabcdefghij",
    ),
    "list_ratio": (
        "one two three four five six seven eight nine ten\n\n\n",
        0.3,
        " ".join(_filler(100)) + "\n" * 31,
    ),
}


def test_every_rule_has_a_known_answer_at_its_edge() -> None:
    assert set(EDGES) == {r.name for rules in RULES.values() for r in rules}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_a_document_just_inside_a_rule_passes_and_one_just_outside_fails(name: str) -> None:
    passing, expected, failing = EDGES[name]
    r = rule(name)
    assert value(name, passing) == expected
    assert keeps(r, value(name, passing))
    assert not keeps(r, value(name, failing))


def test_the_upper_edges_of_the_two_sided_rules() -> None:
    words_rule, length_rule = rule("word_count"), rule("mean_word_length")
    assert keeps(words_rule, value("word_count", "ab " * 100_000))
    assert not keeps(words_rule, value("word_count", "ab " * 100_001))
    assert value("mean_word_length", "abcdefghij " * 60) == 10
    assert keeps(length_rule, 10)
    assert not keeps(length_rule, value("mean_word_length", "abcdefghij " * 59 + "abcdefghijk"))


def test_stop_words_are_case_sensitive_and_distinct() -> None:
    assert value("stop_words", "The THE the the of Of with") == 3


def test_repeated_ngrams_are_counted_once_per_repeat_left_to_right() -> None:
    """datatrove's ``find_all_duplicate`` jumps past a repeated n-gram; a rerun of it is new."""
    text = "a b c d e a b c d e a b c d e"  # 29 characters: two repeats of 5
    assert value("dup_5gram", text) == 10 / 29
    assert value("dup_10gram", text) == 10 / 29  # words 0-9 again at word 5
    assert value("dup_10gram", text + " a b c d e") == 10 / 39  # ... then it jumps to word 15
    # the most frequent 2-gram: "a b" 3 times, ties broken by the first seen
    assert value("top_2gram", text) == 3 * 3 / 29


def test_mean_word_length_leaves_out_punctuation_words() -> None:
    assert value("mean_word_length", "abcd , ... !! ab") == 3.0
    assert value("word_count", "abcd , ... !! ab") == 2


# -- the tokenizer: spaCy's answers ------------------------------------------------------------

SPACY_TOKENS = {
    "Hello, world! It's (really) \"great\"...": [
        "Hello", ",", "world", "!", "It", "'s", "(", "really", ")", '"', "great", '"', "...",
    ],
    "don't can't I'm we'll Mr. Smith e.g. U.S.A. etc.": [
        "do", "n't", "ca", "n't", "I", "'m", "we", "'ll", "Mr.", "Smith", "e.g.", "U.S.A.", "etc", ".",
    ],
    "well-known 5-6 x--y 3.5km $5 US$10 C++ 10:30 #tag @user": [
        "well", "-", "known", "5", "-", "6", "x", "--", "y", "3.5", "km", "$", "5", "US$", "10",
        "C++", "10:30", "#", "tag", "@user",
    ],
    "end.Start foo/bar a,b see http://example.com/a?b=c and libfoo-dev.so or www.x.org.": [
        "end", ".", "Start", "foo", "/", "bar", "a", ",", "b", "see", "http://example.com/a?b=c",
        "and", "libfoo-dev.so", "or", "www.x.org", ".",
    ],
    "£3 20% 5+ 4+3 °C. 100m/s ABC. A. a. (a) [b] {c} 'quoted' “curly” …and… so--on": [
        "£", "3", "20", "%", "5", "+", "4", "+", "3", "°", "C", ".", "100", "m/s", "ABC", ".",
        "A.", "a.", "(", "a", ")", "[", "b", "]", "{", "c", "}", "'", "quoted", "'", "“", "curly",
        "”", "…", "and", "…", "so", "--", "on",
    ],
    "sed -i'' 's/x/y/' file and x'' 's": [
        "sed", "-i", "''", "'", "s", "/", "x", "/", "y/", "'", "file", "and", "x", "''", "'s",
    ],
    "ls(1): and ''quoted'' (d.) e.g., (a) (b)": [
        "ls(1", "):", "and", "''", "quoted", "''", "(", "d.", ")", "e.g.", ",", "(", "a", ")", "(",
        "b", ")",
    ],
    "John's book, the cat's toy and JAMES'S hat; 5$ 5+ A$5 ..hello (hello… x~y a:b <a> a=b 1*2 "
    "2^3 a.B": [
        "John", "'s", "book", ",", "the", "cat", "'s", "toy", "and", "JAMES", "'S", "hat", ";", "5",
        "$", "5", "+", "A$", "5", "..", "hello", "(", "hello", "…", "x", "~", "y", "a", ":", "b", "<",
        "a", ">", "a", "=", "b", "1", "*", "2", "2", "^", "3", "a.", "B",
    ],
    "5kg 3in 2m/s 4MB 7% 20°F. §3 =x +x +5 §§ „quoted“ «guillemets» x——y x—y a–b 3,000 a,b 1,a": [
        "5", "kg", "3", "in", "2", "m/s", "4", "MB", "7", "%", "20", "°", "F", ".", "§", "3", "=",
        "x", "+", "x", "+5", "§", "§", "„", "quoted", "“", "«", "guillemets", "»", "x", "——", "y",
        "x", "—", "y", "a", "–", "b", "3,000", "a", ",", "b", "1,a",
    ],
    "user@example.com:8080/path ftp://files.example.org/x.tar.gz a.b.c.d foo.Bar 1.5.2 "
    "v2.0-rc1 x/y/z": [
        "user@example.com:8080/path", "ftp://files.example.org/x.tar.gz", "a.b.c.d", "foo", ".",
        "Bar", "1.5.2", "v2.0", "-", "rc1", "x", "/", "y", "/", "z",
    ],
    "café naïve Zürich 中文字符 😀emoji 😀 x😀y": [
        "café", "naïve", "Zürich", "中文字符", "😀", "emoji", "😀", "x", "😀", "y",
    ],
}  # fmt: skip


@pytest.mark.parametrize("text", sorted(SPACY_TOKENS))
def test_words_are_spacy_english_tokens(text: str) -> None:
    assert words(text) == SPACY_TOKENS[text]


def test_whitespace_tokens_are_spacys() -> None:
    assert words("a  b\t c\n\nd ", with_space=True) == ["a", " ", "b", "\t ", "c", "\n\n", "d"]


# -- a reference: datatrove's formulas in plain Python -------------------------------------------

SYMBOLS = frozenset(DATATROVE_PUNCTUATION + DATATROVE_TERMINAL_PUNCTUATION)
TERMINAL = tuple(DATATROVE_TERMINAL_PUNCTUATION)
SENTENCE_END = frozenset(SPACY_SENTENCE_PUNCT)
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
POLICY = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


def _ratio(a: float, b: float) -> float:
    return a / b if b else (math.nan if a == 0 else math.inf)


def ref_gopher_quality(text: str) -> Signals:
    found = words(text)
    kept = [w for w in found if any(c not in SYMBOLS for c in w)]
    lines = text.splitlines()
    return {
        "": len(kept),
        "mean_word_length": sum(map(len, kept)) / len(kept) if kept else math.nan,
        "hash_ratio": _ratio(text.count("#"), len(found)),
        "ellipsis_ratio": _ratio(text.count("...") + text.count("…"), len(found)),
        "bullet_lines": _ratio(sum(s.lstrip().startswith(("•", "-")) for s in lines), len(lines)),
        "ellipsis_lines": _ratio(sum(s.rstrip().endswith(("...", "…")) for s in lines), len(lines)),
        "alpha_words": _ratio(sum(any(c.isalpha() for c in w) for w in found), len(found)),
        "stop_words": len(STOP_WORDS & set(found)),
    }


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    repeats = chars = 0
    for item in items:
        if item in seen:
            repeats += 1
            chars += len(item)
        seen.add(item)
    return repeats, chars


def ref_gopher_repetition(text: str) -> Signals:
    n = len(text)
    paragraphs = re.split(r"\n{2,}", text.strip())
    lines = re.split("\n+", text)
    para, para_chars = _find_duplicates(paragraphs)
    line, line_chars = _find_duplicates(lines)
    found = words(text)
    out: Signals = {
        "": line / len(lines),
        "dup_para_fraction": para / len(paragraphs),
        "dup_para_char_fraction": _ratio(para_chars, n),
        "dup_line_fraction": line / len(lines),
        "dup_line_char_fraction": _ratio(line_chars, n),
    }
    for k in (2, 3, 4):
        grams = [" ".join(found[i : i + k]) for i in range(len(found) - k + 1)]
        top = 0
        if grams:
            gram, count = Counter(grams).most_common(1)[0]
            top = len(gram) * count
        out[f"top_{k}gram"] = _ratio(top, n)
    for k in range(5, 11):
        seen: set[str] = set()
        repeated = i = 0
        while i < len(found) - k + 1:
            gram = "".join(found[i : i + k])
            if gram in seen:
                repeated += len(gram)
                i += k
            else:
                seen.add(gram)
                i += 1
        out[f"dup_{k}gram"] = _ratio(repeated, n)
    return out


def _n_sentences(line: str) -> int:
    """spaCy's sentencizer over the line's tokens (whitespace tokens included)."""
    count, seen_end = 1, False
    for token in words(line, with_space=True):
        is_end = token in SENTENCE_END
        if seen_end and not is_end and not all(unicodedata.category(c)[0] == "P" for c in token):
            count, seen_end = count + 1, False
        elif is_end:
            seen_end = True
    return count


def ref_c4_quality(text: str) -> Signals:
    lines = text.splitlines()
    sentences, lorem, curly, terminal, javascript, policy = 0, 0.0, 0.0, 0, 0, 0
    for raw in lines:
        stripped = raw.strip()
        line = CITATION.sub("", stripped)
        lower = line.lower()
        ends = line.endswith((".", "?", "!", '"', "'")) and not line.endswith("...")
        terminal += ends
        javascript += "javascript" in lower
        policy += any(p in lower for p in POLICY)
        if any(len(w) > 1000 for w in stripped.split()) or not ends or len(stripped.split()) < 3:
            continue
        lorem = max(lorem, float("lorem ipsum" in lower))
        if "javascript" in lower:
            continue
        curly = max(curly, float("{" in line))
        if any(p in lower for p in POLICY):
            continue
        sentences += _n_sentences(line)
    n = len(lines)
    return {
        "": sentences,
        "lorem_ipsum": lorem,
        "curly_bracket": curly,
        "terminal_punct_lines": _ratio(terminal, n),
        "javascript_lines": _ratio(javascript, n),
        "policy_lines": _ratio(policy, n),
    }


def ref_fineweb_quality(text: str) -> Signals:
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return dict.fromkeys(
            ("", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"), math.nan
        )
    punct = sum(line.endswith(TERMINAL) for line in lines) / len(lines)
    return {
        "": punct,
        "line_punct_ratio": punct,
        "short_line_ratio": sum(len(line) <= 30 for line in lines) / len(lines),
        "char_dup_ratio": _find_duplicates(lines)[1] / len(text.replace("\n", "")),
        "list_ratio": _ratio(text.count("\n"), len(words(text))),
    }


REFERENCES = {
    "gopher_quality": ref_gopher_quality,
    "gopher_repetition": ref_gopher_repetition,
    "c4_quality": ref_c4_quality,
    "fineweb_quality": ref_fineweb_quality,
}


def _same(a: float | None, b: float | None) -> bool:
    """Equal, both NaN or both null."""
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_matches_reference(texts: list[str]) -> None:
    for name, reference in REFERENCES.items():
        for text, got in zip(texts, scored(name, list(texts)), strict=True):
            expected = reference(text)
            assert set(got) == set(expected)
            wrong = {
                k: (got[k], expected[k]) for k in expected if not _same(got[k], float(expected[k]))
            }
            assert not wrong, (name, text, wrong)


PIECES = [
    "the", "of", "The", "and", "cat", "sat", "don't", "Mr.", "e.g.", "U.S.", "word", "Word",
    "lorem ipsum", "Lorem IPSUM", "javascript", "JavaScript", "uses cookies", "Terms of Use",
    "#", "#tag", "...", "....", "…", "•", "- item", "well-known", "3.5km", "$5", "x--y",
    "http://a.org/x", "a.b", "end.Start", "(a)", "[1]", "[12]", "[edit]", "[citation needed]",
    "{", "}", "e\u0301", "😀", "中文", "İ", "\u212a", "12", ".", "!", "?", '"', "'", "。", "؟",
    "ls(1):", "''", "(d.)", ":)", "can't", "Don't", "10am", "°C.", "www.a.org/b", "x@y.com",
]  # fmt: skip
SEPARATORS = [
    " ", "  ", "\n", "\n\n", "\n\n\n", "\r\n", "\r", "\t", "\u2028", "\u2029", "\u00a0",
    "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u3000", " \n ",
]  # fmt: skip
CHARACTERS = st.characters(blacklist_categories=("Cs",))
DOCUMENTS = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.sampled_from(SEPARATORS),
        st.text(CHARACTERS, max_size=4),
    ),
    max_size=80,
).map("".join)


@settings(max_examples=60)
@given(st.lists(DOCUMENTS, min_size=1, max_size=6))
def test_kernels_equal_the_reference_on_arbitrary_text(texts: list[str]) -> None:
    _assert_matches_reference(texts)


def test_kernels_equal_the_reference_on_repetitive_documents() -> None:
    rng = np.random.default_rng(0)
    vocabulary = [*PIECES[:12], "a", "b", "x"]
    texts = []
    for _ in range(200):
        n = int(rng.integers(0, 150))
        picks = rng.integers(0, len(vocabulary), size=n)
        gaps = rng.choice([" ", " ", " ", "\n", "\n\n", ". "], size=n)
        texts.append("".join(vocabulary[p] + g for p, g in zip(picks, gaps, strict=True)))
    for _ in range(100):  # a few phrases, repeated and interleaved
        phrases = [
            " ".join(rng.choice(vocabulary, size=int(rng.integers(1, 12)))) for _ in range(3)
        ]
        picks = rng.integers(0, 3, size=int(rng.integers(1, 12)))
        gaps = rng.choice([" ", "\n", "\n\n", ". "], size=picks.size)
        texts.append("".join(phrases[p] + g for p, g in zip(picks, gaps, strict=True)))
    texts.append("x" * 1001 + " is a very long word. It is here. One two three.")
    _assert_matches_reference(texts)


# -- outputs, missing values, batches -------------------------------------------------------------


def test_output_fields_are_named_as_the_presets_expect() -> None:
    expected = {
        "gopher_quality": "mean_word_length hash_ratio ellipsis_ratio bullet_lines ellipsis_lines "
        "alpha_words stop_words",
        "gopher_repetition": "dup_para_fraction dup_para_char_fraction dup_line_fraction "
        "dup_line_char_fraction top_2gram top_3gram top_4gram dup_5gram dup_6gram dup_7gram "
        "dup_8gram dup_9gram dup_10gram",
        "c4_quality": "lorem_ipsum curly_bracket terminal_punct_lines javascript_lines policy_lines",
        "fineweb_quality": "line_punct_ratio short_line_ratio char_dup_ratio list_ratio",
    }
    for name, signals in expected.items():
        fields = make_scorer(name).output_fields("col")
        assert [f.name for f in fields] == ["col"] + [f"col_{s}" for s in signals.split()]
        assert all(f.type == pa.float64() for f in fields)


def test_main_columns() -> None:
    text = "a\na\nb\n\n" + _sentences(6)
    for name, signal in (
        ("gopher_repetition", "dup_line_fraction"),
        ("fineweb_quality", "line_punct_ratio"),
    ):
        (row,) = scored(name, [text])
        assert row[""] == row[signal]
    assert scored("c4_quality", [text])[0][""] == 6
    assert scored("gopher_quality", [text])[0][""] == 3 + 6 * 5


def test_a_null_text_has_null_signals_and_an_empty_text_fails_every_rule_set() -> None:
    for name in NAMES:
        null, empty = scored(name, [None, ""])
        assert all(v is None for v in null.values())
        rules = [r for preset in RULES.values() for r in preset if r.scorer == name]
        assert any(not keeps(r, empty["" if r.signal is None else r.signal]) for r in rules), name
    gopher, repetition, c4, fineweb = (scored(name, [""])[0] for name in NAMES)
    assert gopher[""] == 0 and math.isnan(gopher["mean_word_length"])
    assert repetition[""] == 0 and math.isnan(repetition["dup_para_char_fraction"])
    assert c4[""] == 0
    assert all(math.isnan(v) for v in fineweb.values())


def test_splitting_a_batch_changes_no_value() -> None:
    texts = [
        "",
        None,
        *EDGES["dup_7gram"][::2],
        *EDGES["sentences"][::2],
        "x" * 5000,
        "é😀 中文\n" * 40,
    ]
    for name in NAMES:
        scorer = make_scorer(name)
        batch = text_batch(texts)
        whole = scorer.score(batch).to_pylist()
        halves = (
            scorer.score(batch.slice(0, 3)).to_pylist() + scorer.score(batch.slice(3)).to_pylist()
        )
        for a, b in zip(whole, halves, strict=True):
            assert all(_same(a[k], b[k]) for k in a), (name, a, b)
