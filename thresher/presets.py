"""Quality presets in a run config: ``{preset: gopher, overrides: {...}}`` becomes one ``rules`` step.

A filter entry naming a preset (the rule sets of
:mod:`thresher.scorers.quality_rules`: ``gopher``, ``c4``, ``fineweb``) is
replaced, when the config is parsed, by one filter step of the ``rules``
selector (:mod:`thresher.selectors.rules`) holding the preset's rules in
their order of checks, with the ``overrides`` applied::

    filters:
      - preset: gopher
        overrides:
          stop_words: {min: 1}     # new bounds; a bound not given stays as published
          bullet_lines: null       # disables the rule

The signal scorers the enabled rules read are added to ``scorers`` when the
config does not list them (under their default column, the scorer's name);
a scorer the config lists is read under the column it is given. The parsed
config holds the expanded form, so what a run records (manifest,
``_state/config.json``) shows every rule and threshold used, and parsing it
again gives the same run.
"""

from __future__ import annotations

from typing import Any

#: The keys of a preset entry in ``filters``.
PRESET_KEYS = ("preset", "overrides")
_BOUNDS = ("min", "max")


def is_preset(entry: Any) -> bool:
    """Whether a ``filters`` entry names a preset (rather than a selector)."""
    return isinstance(entry, dict) and "preset" in entry


def expand_presets(data: Any) -> tuple[Any, list[dict[str, Any] | None], list[str]]:
    """The config mapping with its preset filters expanded, where each came from, and the problems.

    Returns ``(expanded, steps, problems)``: ``expanded`` is ``data`` with
    each preset entry of ``filters`` replaced by its ``rules`` step and the
    scorers it needs appended to ``scorers`` (``data`` itself when it has no
    preset); ``steps`` lists, per ``filters`` entry, its step (None for a
    preset entry with a problem); ``problems`` are lines ``<field path>:
    <what is wrong>``. Expanding an expanded config changes nothing.
    """
    filters = data.get("filters") if isinstance(data, dict) else None
    if not isinstance(filters, list) or not any(is_preset(f) for f in filters):
        return data, list(filters or []) if isinstance(filters, list) else [], []
    scorers = data.get("scorers", [])
    listed = scorers if isinstance(scorers, list) else []
    steps: list[dict[str, Any] | None] = []
    added: list[str] = []
    problems: list[str] = []
    for i, entry in enumerate(filters):
        if not is_preset(entry):
            steps.append(entry)
            continue
        step, needed, found = _expand(f"filters[{i}]", entry, listed)
        steps.append(step)
        problems += found
        added += [name for name in needed if name not in added]
    expanded = dict(data)
    expanded["filters"] = [
        {"name": "rules"} if step is None else step for step in steps
    ]  # a bad entry stands as a step that is reported apart
    if isinstance(scorers, list) and added:
        expanded["scorers"] = [*scorers, *({"name": name} for name in added)]
    return expanded, steps, problems


def _expand(
    where: str, entry: dict[str, Any], scorers: list[Any]
) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """One preset entry: its ``rules`` step (None when wrong), the scorers to add, the problems."""
    from thresher.errors import ConfigError
    from thresher.scorers.quality_rules import preset_rules
    from thresher.selectors.rules import range_rule

    unknown = sorted(set(entry) - set(PRESET_KEYS))
    if unknown:
        return (
            None,
            [],
            [f"{where}: unknown key(s) {unknown}; a preset entry has preset, overrides"],
        )
    name = entry["preset"]
    if not isinstance(name, str):
        return None, [], [f"{where}.preset: a preset name, got {name!r}"]
    try:
        rules = preset_rules(name)
    except ConfigError as error:
        return None, [], [f"{where}.preset: {error}"]
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict):
        return None, [], [f"{where}.overrides: a mapping of rule names, got {overrides!r}"]
    names = [rule.name for rule in rules]
    problems = [
        f"{where}.overrides.{key}: preset {name!r} has no rule {key!r}; its rules: "
        + ", ".join(names)
        for key in overrides
        if key not in names
    ]
    columns = _columns(scorers)
    step_rules: list[dict[str, Any]] = []
    needed: list[str] = []
    for rule in rules:
        given = {"min": rule.min, "max": rule.max}
        if rule.name in overrides:
            change = overrides[rule.name]
            if change is None:
                continue  # disabled
            if not isinstance(change, dict) or not change or set(change) - set(_BOUNDS):
                problems.append(
                    f"{where}.overrides.{rule.name}: give new bounds {{min, max}} "
                    f"(null for none) or null to disable the rule, got {change!r}"
                )
                continue
            given.update(change)
        base = columns.get(rule.scorer, rule.scorer)
        score = base if rule.signal is None else f"{base}_{rule.signal}"
        step_rule = {"name": rule.name, "score": score, **given}
        try:
            range_rule(step_rule, owner=f"preset {name!r}")
        except ValueError as error:
            problems.append(f"{where}.overrides.{rule.name}: {error}")
            continue
        step_rules.append(step_rule)
        if rule.scorer not in columns and rule.scorer not in needed:
            needed.append(rule.scorer)
    if not step_rules and not problems:
        problems.append(
            f"{where}.overrides: every rule of preset {name!r} is disabled; remove the preset"
        )
    if problems:
        return None, [], problems
    return {"name": "rules", "params": {"preset": name, "rules": step_rules}}, needed, []


def _columns(scorers: list[Any]) -> dict[str, str]:
    """Scorer name -> the column of the first configured scorer of that name."""
    columns: dict[str, str] = {}
    for scorer in scorers:
        if isinstance(scorer, dict) and isinstance(scorer.get("name"), str):
            column = scorer.get("column") or scorer["name"]
            columns.setdefault(scorer["name"], str(column))
    return columns
