"""The per-rule counts of a ``rules`` step (a quality preset), as the report, card and funnel read them.

A ``rules`` step (:mod:`thresher.selectors.rules`) records in its details
one entry per rule: its name, the reason its drops carry, the score column,
the bounds (and as text, ``kept``), and three counts over the rows that reached the step:
``failing`` (the rows outside its bounds, whatever the other rules say),
``dropped`` (the rows it removed, being the first rule they fail: these add
up to the step's drops) and ``only`` (the rows failing it and no other).
"""

from __future__ import annotations

from typing import Any

from thresher import reasons as R

#: The report's column headings, in order.
HEADER = ("rule", "kept range", "failing it", "dropped by it (in order)", "failing only it")


def rule_entries(step: dict[str, Any]) -> list[dict[str, Any]]:
    """The rule entries of a step's details ([] for any other step)."""
    details = step.get("details") or {}
    rules = details.get("rules") if str(step.get("step", "")).startswith("rules") else None
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


def rule_reasons(step: dict[str, Any]) -> set[str]:
    """The drop reasons of a ``rules`` filter step (``filter:<preset>.<rule>``)."""
    return {R.filtered(str(rule.get("reason"))) for rule in rule_entries(step)}


def rule_rows(step: dict[str, Any]) -> list[tuple[str, str, int, int, int]]:
    """One row per rule, in order: name, kept range, failing, dropped, failing only it."""
    return [
        (
            str(rule.get("rule")),
            str(rule.get("kept", "")),
            int(rule.get("failing", 0)),
            int(rule.get("dropped", 0)),
            int(rule.get("only", 0)),
        )
        for rule in rule_entries(step)
    ]
