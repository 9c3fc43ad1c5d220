"""Values of the wrong kind for configuration parameters, shared by the conformance suites."""

from __future__ import annotations


def bad_value(value: object) -> object:
    """A value of the wrong kind for a parameter whose valid value is ``value``."""
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, int | float):
        return "lots"
    if isinstance(value, str):
        return 12345
    if isinstance(value, dict):
        return "not-a-mapping"
    return [["not", "valid"]]  # None (optional) and lists
