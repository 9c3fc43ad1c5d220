"""Inputs as the card and the report list them: every one of a few, a summary of many.

A corpus of 200,000 small files must not make a card or a report of
200,000 lines: beyond :data:`LISTED` inputs, the list shows the inputs
that need attention first (skipped as damaged, then the most quarantined
records), then the first of the rest by name, and says how many it leaves
out; the totals always cover every input. The manifest keeps every input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Inputs listed one by one in the card and the report.
LISTED = 40


@dataclass(frozen=True)
class InputListing:
    """The inputs to show, how many were left out, and totals over all of them."""

    shown: list[dict[str, Any]]
    left_out: int
    total: int
    formats: dict[str, int]


def listing(
    inputs: list[dict[str, Any]], quarantined: str = "quarantined", limit: int = LISTED
) -> InputListing:
    """Choose the inputs to list (see module docstring); ``quarantined`` names the count key."""
    formats: dict[str, int] = {}
    for item in inputs:
        fmt = str(item.get("format"))
        formats[fmt] = formats.get(fmt, 0) + 1
    if len(inputs) <= limit:
        return InputListing(list(inputs), 0, len(inputs), dict(sorted(formats.items())))

    def attention(position: int) -> tuple[int, int, int]:
        item = inputs[position]
        return (0 if item.get("unreadable") else 1, -int(item.get(quarantined) or 0), position)

    chosen = sorted(sorted(range(len(inputs)), key=attention)[:limit])
    return InputListing(
        [inputs[i] for i in chosen], len(inputs) - limit, len(inputs), dict(sorted(formats.items()))
    )
