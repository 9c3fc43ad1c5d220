"""Why a record was not kept: the one table of reasons the stages, report, card and inspect use.

A record that cannot be used at all is **quarantined** at ingest (it never
reaches a scorer); an ingested record that is not kept is **dropped** at
selection. Every record of the input ends in exactly one of: kept, one
quarantine reason, one drop reason, so that ``input = kept + dropped +
quarantined`` holds in every manifest.
"""

from __future__ import annotations

# -- quarantined at ingest ----------------------------------------------------------
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
#: A CSV/TSV row whose number of fields differs from the header's.
MALFORMED_ROW = "malformed_row"
MISSING_TEXT = "missing_text"
EMPTY_TEXT = "empty_text"
TEXT_NOT_STRING = "text_not_string"
TEXT_TOO_LONG = "text_too_long"
MISSING_ID = "missing_id"
#: An id value of a type that is not a string or a number (a list, a struct).
INVALID_ID = "invalid_id"
MISSING_TEXT_COLUMN = "missing_text_column"
INVALID_FEATURES = "invalid_features"
MISSING_FEATURES_COLUMN = "missing_features_column"
#: A JSON line or a table row larger than ``input.max_record_bytes`` (never read whole).
RECORD_TOO_LARGE = "record_too_large"

QUARANTINE = (
    INVALID_UTF8,
    MALFORMED_JSON,
    MALFORMED_ROW,
    MISSING_TEXT,
    EMPTY_TEXT,
    TEXT_NOT_STRING,
    TEXT_TOO_LONG,
    MISSING_ID,
    INVALID_ID,
    MISSING_TEXT_COLUMN,
    INVALID_FEATURES,
    MISSING_FEATURES_COLUMN,
    RECORD_TOO_LARGE,
)

# -- dropped at selection, in the order the steps run ------------------------------------
#: A row sharing a word n-gram with an evaluation set (detail ``set=<name>; ngram=<n-gram>``).
CONTAMINATED = "contaminated"
#: A row whose id appeared earlier in input order.
DUPLICATE_ID = "duplicate_id"
#: A member of a near- or exact-duplicate cluster that is not its keeper (detail ``keeper=<id>; similarity=<s>``).
DUPLICATE = "duplicate"
#: A NaN, infinite or missing value in a score (or vector) a step reads.
INVALID_SCORE = "invalid_score"
#: Prefix of the reason a filter step gives: ``filter:<selector>(<scores>)``.
FILTER_PREFIX = "filter:"
#: Prefix of the reason the final selector gives: ``not_selected:<selector>(<scores>)``.
NOT_SELECTED_PREFIX = "not_selected:"


def filtered(step: str) -> str:
    """The reason a filter step ``step`` (e.g. ``threshold(word_count)``) gives."""
    return f"{FILTER_PREFIX}{step}"


def not_selected(step: str) -> str:
    """The reason the final selector ``step`` gives to the rows it does not keep."""
    return f"{NOT_SELECTED_PREFIX}{step}"


def is_filter(reason: str) -> bool:
    return reason.startswith(FILTER_PREFIX)


def is_not_selected(reason: str) -> bool:
    return reason.startswith(NOT_SELECTED_PREFIX)
