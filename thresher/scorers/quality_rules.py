"""The published heuristic quality rules (Gopher, C4, FineWeb) as data.

Each :class:`Rule` names one signal of a signal scorer (see
:mod:`thresher.scorers.quality_signals`) and the bounds inside which a document
is kept. The thresholds are the defaults of datatrove 0.10.1's
``GopherQualityFilter``, ``GopherRepetitionFilter``, ``C4QualityFilter`` and
``FineWebQualityFilter``, which reproduce the papers' values. datatrove drops a
document when ``value < min`` or ``value > max``; a rule here keeps it when
``min <= value <= max`` (both inclusive), which is the same decision. A value
that is NaN (a ratio over zero words or lines) fails every bound.

The rules of a preset are listed in the order datatrove checks them, so the
first failing rule is the drop reason datatrove would give (up to C4's
document-level checks, which datatrove reports in line order).

References
----------
.. [1] Rae, J. W. et al. (2021). "Scaling Language Models: Methods, Analysis &
   Insights from Training Gopher". arXiv:2112.11446 (Gopher quality and
   repetition rules, Table A1).
.. [2] Raffel, C. et al. (2020). "Exploring the Limits of Transfer Learning with
   a Unified Text-to-Text Transformer". JMLR 21(140) (the C4 rules).
.. [3] Penedo, G. et al. (2024). "The FineWeb Datasets: Decanting the Web for
   the Finest Text Data at Scale". arXiv:2406.17557 (the FineWeb rules).
"""

from __future__ import annotations

from dataclasses import dataclass

from thresher.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """One published rule: keep a document when ``min <= value <= max``.

    Attributes
    ----------
    preset : str
        The preset the rule belongs to ("gopher", "c4", "fineweb").
    name : str
        The rule's name; the drop reason is ``f"filter:{preset}.{name}"``.
    scorer : str
        Registry name of the signal scorer that computes the value.
    signal : str or None
        The scorer's output suffix (column ``f"{column}_{signal}"``), or None
        for the scorer's main column.
    min, max : float or None
        Inclusive bounds; None for no bound on that side.
    doc : str
        One line: what the rule removes, in the source's words.
    """

    preset: str
    name: str
    scorer: str
    signal: str | None
    min: float | None
    max: float | None
    doc: str


def _gopher() -> tuple[Rule, ...]:
    quality = [
        Rule(
            "gopher",
            "word_count",
            "gopher_quality",
            None,
            50,
            100_000,
            "documents with fewer than 50 or more than 100,000 words (not counting punctuation)",
        ),
        Rule(
            "gopher",
            "mean_word_length",
            "gopher_quality",
            "mean_word_length",
            3,
            10,
            "documents whose mean word length is outside the range of 3 to 10 characters",
        ),
        Rule(
            "gopher",
            "hash_word_ratio",
            "gopher_quality",
            "hash_ratio",
            None,
            0.1,
            "documents with a symbol-to-word ratio greater than 0.1 for the hash symbol",
        ),
        Rule(
            "gopher",
            "ellipsis_word_ratio",
            "gopher_quality",
            "ellipsis_ratio",
            None,
            0.1,
            "documents with a symbol-to-word ratio greater than 0.1 for the ellipsis",
        ),
        Rule(
            "gopher",
            "bullet_lines",
            "gopher_quality",
            "bullet_lines",
            None,
            0.9,
            "documents with more than 90% of lines starting with a bullet point",
        ),
        Rule(
            "gopher",
            "ellipsis_lines",
            "gopher_quality",
            "ellipsis_lines",
            None,
            0.3,
            "documents with more than 30% of lines ending with an ellipsis",
        ),
        Rule(
            "gopher",
            "alpha_words",
            "gopher_quality",
            "alpha_words",
            0.8,
            None,
            "documents in which fewer than 80% of words contain an alphabetic character",
        ),
        Rule(
            "gopher",
            "stop_words",
            "gopher_quality",
            "stop_words",
            2,
            None,
            "documents that do not contain at least two of the English stop words "
            "the, be, to, of, and, that, have, with",
        ),
    ]
    repetition = [
        ("dup_para_fraction", 0.3, "documents whose duplicate paragraph fraction exceeds 0.30"),
        (
            "dup_para_char_fraction",
            0.2,
            "documents whose duplicate paragraph character fraction exceeds 0.20",
        ),
        ("dup_line_fraction", 0.3, "documents whose duplicate line fraction exceeds 0.30"),
        (
            "dup_line_char_fraction",
            0.2,
            "documents whose duplicate line character fraction exceeds 0.20",
        ),
        ("top_2gram", 0.20, "documents whose top 2-gram character fraction exceeds 0.20"),
        ("top_3gram", 0.18, "documents whose top 3-gram character fraction exceeds 0.18"),
        ("top_4gram", 0.16, "documents whose top 4-gram character fraction exceeds 0.16"),
        ("dup_5gram", 0.15, "documents whose duplicate 5-gram character fraction exceeds 0.15"),
        ("dup_6gram", 0.14, "documents whose duplicate 6-gram character fraction exceeds 0.14"),
        ("dup_7gram", 0.13, "documents whose duplicate 7-gram character fraction exceeds 0.13"),
        ("dup_8gram", 0.12, "documents whose duplicate 8-gram character fraction exceeds 0.12"),
        ("dup_9gram", 0.11, "documents whose duplicate 9-gram character fraction exceeds 0.11"),
        ("dup_10gram", 0.10, "documents whose duplicate 10-gram character fraction exceeds 0.10"),
    ]
    return tuple(quality) + tuple(
        Rule("gopher", name, "gopher_repetition", name, None, bound, doc)
        for name, bound, doc in repetition
    )


def _c4() -> tuple[Rule, ...]:
    return (
        Rule(
            "c4",
            "lorem_ipsum",
            "c4_quality",
            "lorem_ipsum",
            None,
            0,
            'pages where the phrase "lorem ipsum" appeared (in a line C4 keeps so far)',
        ),
        Rule(
            "c4",
            "curly_bracket",
            "c4_quality",
            "curly_bracket",
            None,
            0,
            "pages that contained a curly bracket (in a line C4 keeps so far)",
        ),
        Rule(
            "c4",
            "sentences",
            "c4_quality",
            None,
            5,
            None,
            "pages with fewer than 5 sentences in the lines kept (lines ending in terminal "
            "punctuation, with at least 3 words, no word over 1000 characters, no javascript "
            "and no cookie or terms-of-use wording)",
        ),
    )


def _fineweb() -> tuple[Rule, ...]:
    return (
        Rule(
            "fineweb",
            "line_punct_ratio",
            "fineweb_quality",
            "line_punct_ratio",
            0.12,
            None,
            "documents in which fewer than 12% of non-blank lines end in terminal punctuation",
        ),
        Rule(
            "fineweb",
            "short_line_ratio",
            "fineweb_quality",
            "short_line_ratio",
            None,
            0.67,
            "documents in which more than 67% of non-blank lines have at most 30 characters",
        ),
        Rule(
            "fineweb",
            "char_dup_ratio",
            "fineweb_quality",
            "char_dup_ratio",
            None,
            0.01,
            "documents in which duplicated lines hold more than 1% of the characters",
        ),
        Rule(
            "fineweb",
            "list_ratio",
            "fineweb_quality",
            "list_ratio",
            None,
            0.3,
            "documents with more than 0.3 newlines per word (list-like documents)",
        ),
    )


#: Preset name -> its rules, in the order datatrove checks them.
RULES: dict[str, tuple[Rule, ...]] = {"gopher": _gopher(), "c4": _c4(), "fineweb": _fineweb()}


def preset_rules(name: str) -> tuple[Rule, ...]:
    """The rules of preset ``name``, in datatrove's order of checks.

    Raises
    ------
    ConfigError
        For an unknown preset; the message names the known ones.
    """
    try:
        return RULES[name]
    except KeyError:
        known = ", ".join(sorted(RULES))
        raise ConfigError(f"unknown quality preset {name!r}; known presets: {known}") from None


__all__ = ["RULES", "Rule", "preset_rules"]
