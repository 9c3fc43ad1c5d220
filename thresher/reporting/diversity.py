"""An embedding step's log-det diversity, as the report and the card show it.

A step that reads an embedding column records ``diversity: {logdet_kept,
logdet_random, sample}`` in its details (:mod:`thresher.stages.diversity`);
in a mixture, each group's details hold its own. Higher is more diverse:
about 0 for mutually orthogonal vectors, about -6.9 for identical ones.
Steps without it show nothing.
"""

from __future__ import annotations

from typing import Any

#: The columns of the table, in order.
HEADER = ("rows", "sample", "log-det kept", "log-det random", "kept - random")
#: What the numbers are, for a caption.
CAPTION = (
    "Log-det diversity per row (mean log eigenvalue of the cosine-similarity kernel "
    "plus 0.001) of a seeded sample of the kept rows, and of a random subset of the same "
    "size from the rows the step saw: higher is more diverse (0: orthogonal, -6.9: identical)."
)


def diversity_rows(step: dict[str, Any]) -> list[tuple[str | None, int, float, float, float]]:
    """One row per diversity a step recorded: the step's own, or each mixture group's.

    Each row: the group (None for the step's rows), sample size, the kept
    and random values and their difference; none for a step without one
    or with an empty sample.
    """
    details = step.get("details") or {}
    if not isinstance(details, dict):
        return []
    found: list[tuple[str | None, Any]] = [(None, details.get("diversity"))]
    groups = details.get("groups")
    if isinstance(groups, dict):
        found += [
            (str(name), part.get("diversity"))
            for name, part in groups.items()
            if isinstance(part, dict)
        ]
    rows = []
    for scope, block in found:
        if not isinstance(block, dict) or not block.get("sample"):
            continue
        kept, random = block.get("logdet_kept"), block.get("logdet_random")
        if isinstance(kept, int | float) and isinstance(random, int | float):
            rows.append((scope, int(block["sample"]), float(kept), float(random), kept - random))
    return rows
