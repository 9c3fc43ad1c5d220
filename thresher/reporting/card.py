"""The dataset card (``README.md`` of a run), in the Hugging Face dataset card layout.

A YAML header (``configs`` pointing at the Parquet files, so the Hub and
``datasets`` find them) and sections: source, method and parameters,
columns, counts, how to load it (pyarrow, pandas, polars, ``datasets``),
and lineage (the manifest's config hash). The card names the published
version's files (``versions/<v>/data/``, immutable while they exist, deleted
as the ``retention`` setting says); for a local run
directory the paths are relative to it, where the card lives, and for a
run directory on an object store they are full URIs, so the load snippets
work as written.

Every string taken from the corpus or the configuration (file names,
column names, reasons, step names, parameters, errors, paths) is shown as
an inline code span (:func:`code`): no renderer reads it as HTML, a link, a
heading or a table cell, and a newline in it is shown as ``\\n``. Paths are
shown without the user information of their URIs (:mod:`thresher.redact`).

References
----------
Hugging Face, "Dataset Cards" and "Manual Configuration" (the ``configs``
YAML field), https://huggingface.co/docs/hub/datasets-cards.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import yaml

from thresher.io import schema as S
from thresher.io.files import data_files, read_json, read_schema, write_text_atomic
from thresher.io.fs import Location
from thresher.redact import redact_uris, shown
from thresher.reporting.diversity import diversity_rows
from thresher.reporting.inputs import listing
from thresher.reporting.mixture import HEADER as MIXTURE_HEADER
from thresher.reporting.mixture import mixture_of, mixture_rows, mixture_sentences
from thresher.reporting.rules import HEADER as RULE_HEADER
from thresher.reporting.rules import rule_rows
from thresher.run_dir import RunDir

_BACKTICKS = re.compile(r"`+")
logger = logging.getLogger(__name__)


def code(text: Any, *, table: bool = False) -> str:
    """``text`` as a Markdown inline code span that every renderer shows literally.

    The fence is one backtick longer than the longest run of backticks in
    the text (CommonMark), padded with a space where the text starts or
    ends with a backtick or a space; line breaks and other control
    characters are escaped (``\\n``), so the span stays on its line; in a
    table cell (``table``) a ``|`` is escaped, as GFM tables require even
    inside code.
    """
    body = shown(text)
    if table:
        body = body.replace("|", "\\|")
    if not body:
        return "` `"
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(body)), default=0))
    # CommonMark strips one space from each end when both ends have one (not when all are)
    pad = (body[0] == "`" or body[-1] == "`" or body[0] == " " or body[-1] == " ") and bool(
        body.strip(" ")
    )
    return f"{fence} {body} {fence}" if pad else f"{fence}{body}{fence}"


def _literal(text: str) -> str:
    """A Python string literal of ``text`` (for the load snippets): quotes and newlines escaped."""
    return json.dumps(text, ensure_ascii=False)


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` records."""
    buckets = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")]
    buckets += [(1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]
    buckets += [(100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for limit, name in buckets:
        if n < limit:
            return name
    return "n>1B"


def _header(manifest: dict[str, Any], data: str) -> str:
    header = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{data}*.parquet"}],
            }
        ],
        "size_categories": [size_category(int(manifest["counts"]["kept"]))],
        "tags": ["thresher", "data-pruning"],
        "thresher": {"config_hash": manifest["config_hash"], "seed": manifest["seed"]},
    }
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---"


def _counts_table(rows: list[tuple[str, int]]) -> str:
    """Rows of (already escaped) labels and counts."""
    lines = ["| | records |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in rows]
    return "\n".join(lines)


def _sources(manifest: dict[str, Any]) -> str:
    """One line per input, or, for many inputs, the ones needing attention and a summary."""
    inputs = listing(manifest["inputs"])
    lines = [
        f"- {code(i['path'])} ({code(i['format'])}, {i['rows']:,} records, xxh3 "
        f"{code((i.get('content') or {}).get('xxh3_64', '?'))})"
        for i in inputs.shown
    ]
    if inputs.left_out:
        formats = ", ".join(f"{code(fmt)} {n:,}" for fmt, n in inputs.formats.items())
        lines.append(
            f"- ... and {inputs.left_out:,} more inputs (damaged and most quarantined are "
            f"listed first); every input, with its fingerprint and digest, is in "
            f"`manifest.json`. Formats of all {inputs.total:,}: {formats}."
        )
    return "\n".join(lines)


def _params(params: dict[str, Any]) -> str:
    return f" with {code(json.dumps(params, sort_keys=True))}" if params else ""


def _scorers(config: dict[str, Any]) -> str:
    lines = []
    for scorer in config["scorers"]:
        column = scorer.get("column") or scorer["name"]
        lines.append(f"- {code(column)}: scorer {code(scorer['name'])}{_params(scorer['params'])}")
    return "\n".join(lines) or "- none"


#: The rule of each ``dedup.clusters`` setting, for the report and (short) for the card;
#: ``{threshold}`` and ``{chained}`` are filled in by :func:`dedup_rule`.
_RULES = {
    "keeper": (
        "A document is removed only when its signature-estimated Jaccard similarity with its "
        "own cluster's keeper is at least {threshold}; no document is removed through a chain "
        "of similar documents.",
        "A document is removed only when its estimated Jaccard similarity with its cluster's "
        "keeper is at least {threshold}, never through a chain of similar documents.",
    ),
    "components": (
        "Clusters are connected components of similar pairs: every member but the keeper is "
        "removed, also members linked only through a chain{chained}.",
        "Clusters are connected components of similar pairs: every member but the keeper is "
        "removed, also through a chain{chained}.",
    ),
}


def dedup_threshold(summary: dict[str, Any]) -> float | None:
    """The similarity threshold of a dedup summary (an older one has it under ``lsh``)."""
    value = summary.get("threshold")
    if value is None:
        value = (summary.get("lsh") or {}).get("threshold")
    return None if value is None else float(value)


def dedup_rule(
    summary: dict[str, Any], *, short: bool = False, quote: Callable[[str], str] = str
) -> str | None:
    """One sentence saying which documents dedup removed (None: the summary has no ``rule``).

    ``short`` gives the card's wording; ``quote`` shows a rule this version
    does not know (the card passes :func:`code`).
    """
    rule = summary.get("rule")
    if rule is None:
        return None
    if rule not in _RULES:
        return f"Duplicate clusters were formed by the rule {quote(str(rule))}."
    threshold = dedup_threshold(summary)
    below = summary.get("below_threshold")
    chained = ""
    if below is not None:
        documents = "document is" if int(below) == 1 else "documents are"
        chained = (
            f" ({int(below):,} removed {documents} less similar to their keeper than the threshold)"
        )
    sentence = _RULES[rule][1 if short else 0]
    return sentence.format(
        threshold="the threshold" if threshold is None else f"{threshold:g}", chained=chained
    )


def dedup_warnings(summary: dict[str, Any]) -> list[str]:
    """The summary's ``warnings`` as strings (none in a summary of an older run)."""
    warnings = summary.get("warnings") or []
    if isinstance(warnings, str):
        warnings = [warnings]
    return [str(warning) for warning in warnings]


def _dedup(
    config: dict[str, Any], counts: dict[str, Any], summary: dict[str, Any] | None = None
) -> str:
    """What dedup removed and by which rule; each of the summary's warnings as a block quote.

    A warning quotes ids from the corpus, so it is shown as code, like every
    other string from the run.
    """
    removed = {
        reason: n
        for reason, n in counts["dropped"]["by_reason"].items()
        if reason.split(":")[0] in ("duplicate_id", "duplicate", "exact_duplicate")
    }
    settings = config.get("dedup")
    summary = summary if settings else None  # a summary left by an earlier configuration
    lines = []
    warnings: list[str] = []
    if settings:
        given = {k: v for k, v in settings.items() if v is not None}
        lines.append(f"Near-duplicate removal: {code(json.dumps(given, sort_keys=True))}.")
        lines.append("One keeper per duplicate cluster is kept (`dedup/clusters/`).")
    else:
        lines.append("No near-duplicate removal configured.")
    if summary:
        rule = dedup_rule(summary, short=True, quote=code)
        if rule:
            lines.append(rule)
        lines.append(_dedup_counts(summary))
        warnings = dedup_warnings(summary)
    lines.append("Rows whose id repeats an earlier row's are dropped as `duplicate_id`.")
    if removed:
        lines.append(
            "Removed: " + ", ".join(f"{code(r)} {n:,}" for r, n in sorted(removed.items())) + "."
        )
    return " ".join(lines) + "".join(f"\n\n> **Warning:** {code(w)}" for w in warnings)


def _dedup_counts(summary: dict[str, Any]) -> str:
    """The clusters dedup found and what it removed, from its summary."""
    clusters = int(summary.get("clusters", 0))
    found = f"Dedup found {clusters:,} duplicate cluster{'s' if clusters != 1 else ''}"
    if "exact_removed" in summary and "near_removed" in summary:
        return (
            f"{found} and removed {int(summary['exact_removed']):,} exact copies and "
            f"{int(summary['near_removed']):,} near-duplicates."
        )
    return f"{found} and removed {int(summary.get('duplicates', 0)):,} duplicates."


def budget_label(budget: Any) -> str:
    """A step's budget for people: ``0.3``, ``1000`` or ``token_count <= 2,000,000``."""
    if isinstance(budget, dict):
        return f"{budget['sum']} <= {int(budget['total']):,}"
    return str(budget)


def _decontamination(manifest: dict[str, Any]) -> str:
    """Per evaluation set: the documents dropped as ``contaminated`` and those matching it."""
    section = manifest.get("decontamination")
    if not section:
        return ""
    lines = [
        f"Decontamination: documents sharing a {section['ngram']}-word n-gram (lowercased, "
        "punctuation removed, whitespace collapsed; an item shorter than that counts as one "
        "n-gram) with an evaluation set are dropped as `contaminated` "
        f"({section['contaminated']:,} in all).",
        "",
        "| evaluation set | items | dropped (first match) | matching |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {code(name, table=True)} | {info['items']:,} | {info['documents']:,} "
        f"| {info['matched']:,} |"
        for name, info in section["sets"].items()
    ]
    return "\n".join(lines) + "\n\n"


def _steps(manifest: dict[str, Any]) -> str:
    lines = []
    tables = []
    for number, step in enumerate(manifest["selection_steps"], start=1):
        budget = f", budget {_budget(step['budget'])}" if step["budget"] is not None else ""
        params = step.get("params") or {}
        rules = rule_rows(step)
        if rules:  # a quality preset: its rules in a table below, not as parameters
            params = {k: v for k, v in params.items() if k != "rules"}
            tables.append(_rules_table(number, step, rules))
        lines.append(
            f"{number}. **{_word(step['role'])}** {code(step['step'])}"
            f"{_params(params)}{' and the rules below' if rules else ''}"
            f"{budget}: {step['rows_in']:,} rows in, {step['kept']:,} kept"
        )
        lines += _diversity_lines(step)
        mixture = mixture_of(step)
        if mixture is not None:
            tables.append(_mixture_table(number, step, mixture))
    return "\n".join(lines) + "".join(tables)


def _diversity_lines(step: dict[str, Any]) -> list[str]:
    """The step's log-det diversity, kept rows against chance, as sub-items of its line."""
    return [
        f"   - log-det diversity{'' if group is None else f' of group {code(group)}'} "
        f"({sample:,}-row samples; higher is more diverse): kept {kept:.3f}, "
        f"a random subset {random:.3f}"
        for group, sample, kept, random, _ in diversity_rows(step)
    ]


def _mixture_table(number: int, step: dict[str, Any], mixture: dict[str, Any]) -> str:
    """Requested and achieved share per group of a mixture, repeats and shortfalls."""
    header = " | ".join(MIXTURE_HEADER)
    lines = [
        "",
        "",
        f"Step {number} ({code(step['step'])}) mixes groups. "
        + " ".join(mixture_sentences(mixture, code)),
        "",
        f"| {header} |",
        "|---|" + "---:|" * (len(MIXTURE_HEADER) - 1),
    ]
    lines += [
        f"| {code(group, table=True)} | {requested} | {achieved_share} | {target:,} "
        f"| {achieved:,} | {available:,} | {rows:,} | {repeat:,} | {shortfall:,} |"
        for group, requested, achieved_share, target, achieved, available, rows, repeat, shortfall in mixture_rows(
            mixture
        )
    ]
    return "\n".join(lines)


def _rules_table(number: int, step: dict[str, Any], rules: list[Any]) -> str:
    """The rules of a ``rules`` step, in order of checks, with their thresholds and counts."""
    header = " | ".join(RULE_HEADER)
    lines = [
        "",
        "",
        f"Rules of step {number} ({code(step['step'])}), in order; a dropped row's reason is "
        f"the first rule it fails, {code('filter:<preset>.<rule>')}:",
        "",
        f"| {header} |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {code(name, table=True)} | {code(kept, table=True)} | {failing:,} | {dropped:,} "
        f"| {only:,} |"
        for name, kept, failing, dropped, only in rules
    ]
    return "\n".join(lines)


def _budget(budget: Any) -> str:
    """A budget in the card: a number as it is, a sum (its column's name) as code."""
    if isinstance(budget, dict):
        return code(budget_label(budget))
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        return str(budget)
    return code(budget)


def _word(text: Any) -> str:
    """A word thresher writes (a step's role) as it is; anything else as code."""
    text = str(text)
    return text if re.fullmatch(r"[A-Za-z_]+", text) else code(text)


def _columns(schema: pa.Schema | None) -> str:
    if schema is None:
        return ""
    lines = ["## Columns", ""]
    for field in schema:
        note = ""
        if field.name == S.IMPORTANCE_WEIGHT:
            note = ": importance weight (see below)"
        lines.append(f"- {code(field.name)} ({_word(field.type)}){note}")
    return "\n".join(lines) + "\n"


def _skipped(manifest: dict[str, Any]) -> str:
    """The damaged input files the run skipped (``input.on_unreadable: skip``), if any."""
    skipped = manifest.get("skipped_inputs") or []
    if not skipped:
        return ""
    lines = [
        "",
        f"**{len(skipped)} input file(s) were damaged and skipped** after the records read "
        "before the damage (those count as input above):",
        "",
        "| file | records read | error |",
        "|---|---:|---|",
    ]
    for item in skipped:
        lines.append(
            f"| {code(item['path'], table=True)} | {item['rows_read']:,} "
            f"| {code(item['error'], table=True)} |"
        )
    return "\n".join(lines) + "\n"


def _weights(weighted: bool) -> str:
    if not weighted:
        return ""
    return f"""
## Importance weights

The column `{S.IMPORTANCE_WEIGHT}` holds each row's importance weight from the
selector (for sensitivity sampling, 1 / (budget x the row's sampling
probability)). Use it as a sample weight: the weighted mean of a loss over
this subset estimates the mean over the full corpus. For example, in
PyTorch: `loss = (per_example_loss * weight).sum() / weight.sum()`.
"""


def _retention(manifest: dict[str, Any]) -> str:
    """How long this version stays readable, from the run's ``retention`` setting."""
    setting = manifest.get("config", {}).get("retention") or {}
    versions = int(setting.get("versions", 1))
    hours = float(setting.get("hours", 0.0))
    nth = {1: "second", 2: "third", 3: "fourth"}.get(versions, f"{versions + 1}th")
    later = (
        f", or a later run if this version was replaced less than {hours:g} h before"
        if hours
        else ""
    )
    return (
        "Their content never changes, but they are not kept forever: the run that publishes "
        f"the {nth} version after this one deletes them{later} (setting `retention`). "
        "Copy them to keep them longer."
    )


def _load(weighted: bool, data: str, root: str, local: bool, retention: str = "") -> str:
    weight_line = (
        f'\nweights = df["{S.IMPORTANCE_WEIGHT}"]  # sample weights, see below\n'
        if weighted
        else ""
    )
    where = (
        "From this directory (the one holding this card):"
        if local
        else "From anywhere with read access to the bucket (pandas and `datasets` use fsspec: "
        "`pip install s3fs` / `gcsfs`; a custom endpoint such as MinIO is read from "
        "`AWS_ENDPOINT_URL`):"
    )
    latest = (
        '`data/` is a link to the current version\'s data, so `pd.read_parquet("data/")` '
        "also works here and follows later runs."
        if local
        else ""
    )
    return f"""## Load it

{where}

```python
import pandas as pd
df = pd.read_parquet({_literal(data)})
```

```python
import pyarrow.dataset as ds
table = ds.dataset({_literal(data)}, format="parquet").to_table()
```

```python
import polars as pl
df = pl.read_parquet({_literal(data + "*.parquet")})
```

```python
from datasets import load_dataset
dataset = load_dataset("parquet", data_files={_literal(data + "*.parquet")}, split="train")
```
{weight_line}
These files are version {code(data.rstrip("/").split("/")[-2])} of the run. {retention}
A later run publishes a new version and moves the pointer {code(root + "CURRENT")} (a
small JSON file naming the current version); {code(f"thresher.load_run({_literal(root or '.')}).data")}
follows it. {latest}

What was not kept is in {code(data[: -len("data/")] + "dropped/")} (`id, reason, detail` for
every dropped row) and {code(root + "quarantine/")} (rows that could not be used at all,
with the reason and the raw record).
"""


def _handoff(manifest: dict[str, Any], root: str) -> str:
    """The training hand-off: its splits and files, and a tested loader per format."""
    from thresher.export.snippets import loader_snippets

    output = manifest.get("output")
    if not output:
        return ""
    formats = [fmt for fmt in output["formats"] if fmt != "delta"]
    header = "| split | rows | files | rows per file | tokens | " + " | ".join(
        f"{fmt} bytes" for fmt in formats
    )
    lines = [header + " |", "|---" * (5 + len(formats)) + "|"]
    for name, split in output["splits"].items():
        per_file = f"{split['file_rows']['min']:,}-{split['file_rows']['max']:,}"
        tokens = f"{split['tokens']:,}" if "tokens" in split else "-"
        sizes = " | ".join(f"{split['bytes'][fmt]:,}" for fmt in formats)
        lines.append(
            f"| {code(name, table=True)} | {split['rows']:,} | {split['files']:,} | {per_file} | "
            f"{tokens} | {sizes} |"
        )
    where = "this directory" if not root else "anywhere with read access to the bucket"
    snippets = "\n".join(
        f"{code(fmt)}:\n\n```python\n{text}```\n"
        for fmt, text in loader_snippets(output, root).items()
    )
    tokenizer = output.get("tokenizer")
    token_note = (
        f" Token ids come from the run's tokenizer ({code(tokenizer['kind'])}, vocabulary "
        f"{tokenizer['vocab_size']:,}), each document followed by the end-of-document token "
        f"{code(tokenizer['eod'])}."
        if tokenizer
        else ""
    )
    validation = (
        f" {output['validation']:.2%} of the documents are held out by a second hash of the "
        "id (`validation/`, the same formats)."
        if output.get("validation")
        else ""
    )
    return f"""## Train on it

The kept rows again, ready for a trainer: ordered by a seeded hash of their id (seed
{code(output["seed"])}: the same order on every engine and every re-run), a row the
selection repeats appearing once per repeat, each at its own place, and cut into files
that are contiguous runs of that order.{validation}{token_note}

{chr(10).join(lines)}

Load the train split from {where}; each snippet runs as written:

{snippets}"""


def render_card(
    manifest: dict[str, Any],
    schema: pa.Schema | None = None,
    root: str = "",
    dedup: dict[str, Any] | None = None,
) -> str:
    """The card's Markdown from a run's manifest (and the pruned dataset's schema, if known).

    ``root`` is the run directory's URI with a trailing slash for a run on
    an object store, and empty for a local one (paths relative to the card).
    ``dedup`` is the run's ``dedup/summary.json`` (its rule, counts and
    warnings; None: the card says what the manifest says).
    Every string from the manifest or the schema is escaped (:func:`code`).
    """
    data = f"{root}{manifest.get('data', 'data/')}"
    local = not root
    counts = manifest["counts"]
    config = manifest["config"]
    weighted = bool(manifest.get("weighted"))
    rows = [
        ("input records", counts["input"]),
        ("quarantined (unusable)", counts["quarantined"]["total"]),
        ("dropped", counts["dropped"]["total"]),
        ("kept", counts["kept"]),
        *[
            (f"dropped: {code(r, table=True)}", n)
            for r, n in counts["dropped"]["by_reason"].items()
        ],
        *[
            (f"quarantined: {code(r, table=True)}", n)
            for r, n in counts["quarantined"]["by_reason"].items()
        ],
    ]
    tokens = counts.get("tokens")
    if tokens:
        column = code(tokens["column"], table=True)
        rows.insert(4, (f"kept {column} (sum)", tokens["kept"]))
        if tokens.get("requested") is not None:
            rows.insert(5, (f"requested {column} (budget)", tokens["requested"]))
    balance = (
        f"{counts['input']:,} = {counts['kept']:,} + {counts['dropped']['total']:,} + "
        f"{counts['quarantined']['total']:,}"
    )
    version = manifest.get("versions", {}).get("thresher") or "unknown"
    return f"""{_header(manifest, data)}

# Pruned dataset

Selected by thresher from {len(manifest["inputs"])} input shard(s): {counts["kept"]:,} of
{counts["input"]:,} input records kept ({counts["kept"] / max(counts["input"], 1):.1%}).
Load it in one line: {code(f"pd.read_parquet({_literal(data)})")} (pandas).
The run report with plots is {code(root + "report.html")}.

## Source

{_sources(manifest)}

## Method and parameters

Scores (one column per scorer in {code(root + "scores/")}):

{_scorers(config)}

Duplicates: {_dedup(config, counts, dedup)}

{_decontamination(manifest)}Selection, in order (each step sees the rows the previous one kept):

{_steps(manifest)}

Seed {code(manifest["seed"])}, engine {code(manifest["engine"])}.

{_columns(schema)}{_weights(weighted)}
## Counts

{_counts_table(rows)}

Every input record is kept, dropped (`dropped/` of the version, with its reason) or
quarantined (`quarantine/`, with its reason): {balance}.
{_skipped(manifest)}
{_load(weighted, data, root, local, _retention(manifest))}
{_handoff(manifest, root)}
## Lineage

Config hash {code(manifest["config_hash"])} (SHA-256 of the canonical JSON of the
configuration), made by thresher {version} on {manifest["created"]}. The full
configuration, input fingerprints and package versions are in {code(root + "manifest.json")}.
"""


def data_schema(run_dir: str | Location) -> pa.Schema | None:
    """The schema of the published dataset (its first Parquet file), None if there is none."""
    run = RunDir(run_dir)
    version = run.current()
    files = data_files(version.data) if version is not None else []
    return read_schema(files[0]) if files else None


def write_card(run_dir: str | Location, manifest: dict[str, Any] | None = None) -> Location:
    """Write ``RUN_DIR/README.md`` from the manifest and the published dataset."""
    run = RunDir(run_dir)
    manifest = manifest if manifest is not None else read_json(run.manifest)
    root = "" if run.root.is_local else redact_uris(run.root.uri.rstrip("/")) + "/"
    card = render_card(manifest, data_schema(run.root), root, _dedup_summary(run))
    write_text_atomic(card, run.card)
    return run.card


def _dedup_summary(run: RunDir) -> dict[str, Any] | None:
    """The run's dedup summary; None when there is none or it cannot be read.

    A summary that cannot be read leaves the card as the manifest makes it
    (its counts still say what was removed), so publishing never fails on it.
    """
    path = run.dedup / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = read_json(path)
    except Exception as error:
        logger.warning(
            "card: %s could not be read (%s: %s)", path.name, type(error).__name__, error
        )
        return None
    return summary if isinstance(summary, dict) else None
