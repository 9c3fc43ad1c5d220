"""A mixture's requested and achieved shares, as the report, the card and the manifest read them.

A selector with a mixture (:mod:`thresher.stages.mixture`) records in its
step's details ``mixture: {by, unit, total, max_repeat, groups}``, one
entry per group: its requested ``share``, ``target``, what it held
(``available``), its ``kept_rows``, the largest ``repeat`` among them, what
it ``achieved`` (``repeat x size``, or rows) and that share of the whole,
and the ``shortfall`` a short group could not fill even with ``max_repeat``
epochs. Runs without a mixture have none of it and show none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The columns of the table, in order.
HEADER = (
    "group",
    "requested share",
    "achieved share",
    "target",
    "achieved",
    "available",
    "kept rows",
    "largest repeat",
    "shortfall",
)


def mixture_of(step: dict[str, Any]) -> dict[str, Any] | None:
    """The ``mixture`` details of a step, or None."""
    details = step.get("details") or {}
    mixture = details.get("mixture") if isinstance(details, dict) else None
    return (
        mixture if isinstance(mixture, dict) and isinstance(mixture.get("groups"), list) else None
    )


def percent(share: Any) -> str:
    """A share as a percentage with 3 significant digits (``60%``, ``14.4%``)."""
    return f"{float(share) * 100:.3g}%"


def mixture_rows(
    mixture: dict[str, Any],
) -> list[tuple[str, str, str, int, int, int, int, int, int]]:
    """One row per group (see :data:`HEADER`)."""
    return [
        (
            str(group.get("group")),
            percent(group.get("share", 0.0)),
            percent(group.get("achieved_share", 0.0)),
            int(group.get("target", 0)),
            int(group.get("achieved", 0)),
            int(group.get("available", 0)),
            int(group.get("kept_rows", 0)),
            int(group.get("repeat_max", 0)),
            int(group.get("shortfall", 0)),
        )
        for group in mixture["groups"]
        if isinstance(group, dict)
    ]


def unit_text(mixture: dict[str, Any]) -> str:
    """What the amounts count: a sum budget's column, or rows."""
    return str(mixture.get("column") or "rows") if mixture.get("unit") == "tokens" else "rows"


def mixture_sentences(mixture: dict[str, Any], quote: Callable[[str], str]) -> list[str]:
    """What the table says in words: the request, and one sentence per short group.

    ``quote`` shows a name from the run (the card's code spans, or as it is).
    """
    unit = unit_text(mixture)
    repeat = int(mixture.get("max_repeat", 1))
    epochs = "no repeats" if repeat == 1 else f"up to {repeat} epochs of a short group"
    lines = [
        f"Mixture by {quote(str(mixture.get('by')))}: {int(mixture.get('total', 0)):,} "
        f"{quote(unit) if unit != 'rows' else unit} shared by target shares ({epochs})."
    ]
    shown_unit = quote(unit) if unit != "rows" else unit
    for group in mixture["groups"]:
        if not isinstance(group, dict) or int(group.get("shortfall", 0)) <= 0:
            continue
        lines.append(
            f"Group {quote(str(group.get('group')))} is short: "
            f"{int(group.get('achieved', 0)):,} of its target {int(group.get('target', 0)):,} "
            f"{shown_unit} (it holds {int(group.get('available', 0)):,}, used at most {repeat} "
            f"time(s)); the {int(group.get('shortfall', 0)):,} missing are not given to the "
            "other groups."
        )
    return lines
