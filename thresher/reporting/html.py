"""Render a run's :class:`~thresher.reporting.data.ReportData` as one self-contained HTML page.

``write_report(run_dir)`` gathers, renders and writes ``report.html``
atomically; ``thresher report RUN_DIR`` and the curate flow call it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment

from thresher.io.files import write_text_atomic
from thresher.io.fs import Location
from thresher.redact import redact_uris
from thresher.reporting import plots
from thresher.reporting.card import budget_label, dedup_rule, dedup_threshold, dedup_warnings
from thresher.reporting.data import ReportData, gather
from thresher.reporting.diversity import CAPTION as DIVERSITY_CAPTION
from thresher.reporting.diversity import HEADER as DIVERSITY_HEADER
from thresher.reporting.diversity import diversity_rows
from thresher.reporting.inputs import listing
from thresher.reporting.mixture import HEADER as MIXTURE_HEADER
from thresher.reporting.mixture import mixture_of, mixture_rows, mixture_sentences
from thresher.reporting.rules import HEADER as RULE_HEADER
from thresher.reporting.rules import rule_rows
from thresher.reporting.template import STYLE, TEMPLATE
from thresher.run_dir import RunDir

_VERSION_KEYS = ("thresher", "python", "pyarrow", "pyspark", "prefect", "numpy", "pandas", "torch")


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return _fmt(float(value))
    return str(value)


def _fmt(value: float) -> str:
    """A float for a table: 4 significant digits, thousands separated."""
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:,.4g}"


def _environment() -> Environment:
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _number
    return env


def render(data: ReportData, *, examples_per_reason: int = 3, text_limit: int = 600) -> str:
    """The report page for ``data`` (a complete HTML document)."""
    from thresher._version import __version__

    manifest = data.manifest
    context: dict[str, Any] = {
        "version": __version__,
        "style": STYLE,
        "title": redact_uris(str(data.run_dir)).rstrip("/").rsplit("/", 1)[-1],
        "run_dir": redact_uris(str(data.run_dir)),
        "manifest": manifest,
        "notes": data.notes,
        "input_count": data.input_count,
        "cards": _cards(data),
        "funnel": data.funnel,
        "kept": data.kept,
        "funnel_plot": plots.funnel_plot(data.input_count, data.funnel, data.kept),
        "examples_per_reason": examples_per_reason,
        "text_limit": text_limit,
        "stage_times": sorted(
            (manifest or {}).get("seconds_per_stage", {}).items(), key=_stage_order
        ),
        "shards": listing(data.shard_stats),
        "skipped": (manifest or {}).get("skipped_inputs") or [],
        "versions": [
            (k, v) for k, v in (manifest or {}).get("versions", {}).items() if k in _VERSION_KEYS
        ],
        **_scores_context(data),
        "dedup": _dedup_context(data.dedup),
        "contamination": (manifest or {}).get("decontamination"),
        "steps": [_step_context(number, step) for number, step in enumerate(data.steps, 1)],
        "curve": _curve_context(data.eval_results, data.eval_summary, data.eval_record),
        "eval_run": _eval_run_context(data.eval_results),
        "examples": _examples_context(data),
    }
    return _environment().from_string(TEMPLATE).render(**context)


def build_report(run_dir: str | Location, **options: Any) -> str:
    """Gather and render the report of ``run_dir`` (options as in :func:`gather`)."""
    render_options = {k: options[k] for k in ("examples_per_reason", "text_limit") if k in options}
    return render(gather(run_dir, **options), **render_options)


def write_report(
    run_dir: str | os.PathLike[str] | Location,
    output: str | os.PathLike[str] | Location | None = None,
    **options: Any,
) -> Location:
    """Write the report of ``run_dir`` to ``output`` (default ``RUN_DIR/report.html``)."""
    run = RunDir(run_dir)
    target = Location.of(output) if output is not None else run.report
    write_text_atomic(build_report(run.root, **options), target)
    return target


# -- sections ----------------------------------------------------------------------


def _cards(data: ReportData) -> list[dict[str, Any]]:
    quarantined = data.funnel[0].total_removed if data.funnel else 0
    cards = [{"value": quarantined, "label": "quarantined", "kind": "drop"}]
    if data.kept is not None:
        dropped = data.input_count - quarantined - data.kept
        share = data.kept / data.input_count if data.input_count else 0.0
        cards += [
            {"value": dropped, "label": "dropped (duplicates, filters, selector)", "kind": "drop"},
            {"value": data.kept, "label": f"selected ({share:.1%} of input)", "kind": "kept"},
        ]
    tokens = ((data.manifest or {}).get("counts") or {}).get("tokens")
    if tokens:
        column = tokens["column"]
        cards.append({"value": tokens["kept"], "label": f"kept {column} (sum)", "kind": "kept"})
        if tokens.get("requested") is not None:
            cards.append({"value": tokens["requested"], "label": f"requested {column}", "kind": ""})
    return cards


def _scores_context(data: ReportData) -> dict[str, Any]:
    histograms = data.histograms
    if not histograms:
        return {"score_plots": [], "score_table": [], "has_decisions": False}
    table, figures = [], []
    for column, histogram in histograms.items():
        kept, dropped = histogram["kept"], histogram["dropped"]
        table.append(
            {
                "column": column,
                "min": _fmt(histogram["min"]),
                "median": _fmt(histogram["median"]),
                "max": _fmt(histogram["max"]),
                "kept": f"{sum(kept):,}",
                "dropped": f"{sum(dropped):,}",
            }
        )
        figures.append(
            {
                "column": column,
                "uri": plots.score_histogram(histogram["edges"], kept, dropped, column),
            }
        )
    counted = max(h["count"] for h in histograms.values())
    caption = (
        f"Histograms of the {counted:,} scored rows with a finite value, kept and dropped "
        "overlaid, counted where the data is (40 equal bins from the minimum to the "
        "maximum); medians are interpolated within their bin."
    )
    return {
        "score_plots": figures,
        "score_table": table,
        "has_decisions": True,
        "score_caption": caption,
    }


def _dedup_context(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Duplicates section from ``dedup/summary.json`` (None: no clusters to show).

    Keys that a summary of an older run lacks (``rule``, ``threshold``,
    ``similarity_histogram``, ``below_threshold``, the detail of the largest
    clusters, ``warnings``) leave their part of the section out.
    """
    if not summary or not summary.get("clusters"):
        return None
    sizes = {int(k): int(v) for k, v in summary.get("cluster_sizes", {}).items()}
    threshold = dedup_threshold(summary)
    rows = [
        ("duplicate clusters", summary["clusters"]),
        ("documents in clusters", summary["clustered_documents"]),
        ("duplicates removed (all but one keeper per cluster)", summary["duplicates"]),
        ("largest cluster", max(sizes) if sizes else 0),
        ("exact copies removed", summary.get("exact_removed", 0)),
        ("near-duplicates removed", summary.get("near_removed", 0)),
    ]
    if summary.get("below_threshold") is not None:
        rows.append(
            ("near-duplicates removed below the threshold", int(summary["below_threshold"]))
        )
    if threshold is not None:
        rows.append(("similarity threshold (estimated Jaccard)", threshold))
    largest = [_cluster_row(row) for row in summary.get("largest_clusters") or []]
    histogram = summary.get("similarity_histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    similarity_plot = None
    if edges and len(edges) == len(counts) + 1:
        similarity_plot = plots.similarity_histogram(edges, counts, threshold)
    return {
        "rule": dedup_rule(summary),
        "warnings": dedup_warnings(summary),
        "summary": rows,
        "plot": plots.cluster_size_plot(sizes),
        "similarity_plot": similarity_plot,
        "largest": largest,
        "columns": {key: any(row[key] is not None for row in largest) for key in _CLUSTER_DETAIL},
    }


_CLUSTER_DETAIL = ("share", "min_similarity", "members")


def _cluster_row(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the largest clusters table; a detail an older summary lacks is None."""
    size = int(row.get("size", 0))
    share, similarity = row.get("share"), row.get("min_similarity")
    members = row.get("members")
    members = [str(m) for m in members] if isinstance(members, list) else None
    return {
        "cluster": row.get("cluster"),
        "size": size,
        "keeper_id": row.get("keeper_id"),
        "share": None if share is None else _percent(float(share)),
        "min_similarity": None if similarity is None else f"{float(similarity):.3f}",
        "members": members,
        # the keeper and the sampled members are shown; the rest are counted
        "more": max(0, size - 1 - len(members)) if members is not None else 0,
    }


def _percent(share: float) -> str:
    """A share as a percentage with 3 significant digits (``21%``, ``1.23%``, ``0.004%``)."""
    return f"{share * 100:.3g}%"


def _step_context(number: int, step: dict[str, Any]) -> dict[str, Any]:
    details = step.get("details") or {}
    label = step.get("step", "?")
    context: dict[str, Any] = {
        "number": number,
        "role": step.get("role", ""),
        "step": label,
        "params": json.dumps(step.get("params") or {}, sort_keys=True, default=str),
        "budget": "" if step.get("budget") is None else budget_label(step["budget"]),
        "rows_in": step.get("rows_in", ""),
        "kept": step.get("kept", ""),
        "plots": [],
        "tables": [],
        "scalars": [],
        "notes": [],
    }
    mixture = mixture_of(step)
    if mixture is not None:
        context["notes"] = mixture_sentences(mixture, str)
        context["tables"].append(
            {
                "title": f"mixture by {mixture.get('by')}: {len(mixture['groups'])} groups",
                "header": list(MIXTURE_HEADER),
                "rows": [list(map(_number, row)) for row in mixture_rows(mixture)],
                "open": True,
            }
        )
    strata = details.get("strata")
    if isinstance(strata, list) and strata:
        context["plots"].append(
            {"alt": f"strata of {label}", "uri": plots.strata_plot(strata, f"{label}: strata")}
        )
        context["tables"].append(
            _table(f"{len(strata)} strata", strata, ["low", "high", "size", "selected"])
        )
    clusters = details.get("clusters")
    if isinstance(clusters, list) and clusters:
        context["plots"].append(
            {
                "alt": f"clusters of {label}",
                "uri": plots.clusters_plot(clusters, f"{label}: clusters"),
            }
        )
        context["tables"].append(
            _table(
                f"{len(clusters)} clusters",
                clusters,
                ["cluster", "size", "selected", "weight_mean"],
            )
        )
    diversity = diversity_rows(step)
    if diversity:
        context["notes"].append(DIVERSITY_CAPTION)
        context["tables"].append(
            {
                "title": "log-det diversity: kept rows and a random subset",
                "header": list(DIVERSITY_HEADER),
                "rows": [
                    ["all" if group is None else f"group {group}", *map(_number, numbers)]
                    for group, *numbers in diversity
                ],
                "open": True,
            }
        )
    params = step.get("params") or {}
    rules = rule_rows(step)
    if rules:  # a quality preset: its rules as a table, not as parameters
        shown_params = {k: v for k, v in params.items() if k != "rules"}
        context["params"] = json.dumps(shown_params, sort_keys=True) + f" and {len(rules)} rules"
        context["tables"].append(
            {
                "title": f"{len(rules)} rules, in order of checks",
                "header": list(RULE_HEADER),
                "rows": [[name, kept, *map(_number, n)] for name, kept, *n in rules],
                "open": True,
            }
        )
    for key, value in sorted(details.items()):
        if key in ("strata", "clusters", "rules", "mixture", "diversity") or value is None:
            continue  # shown above, or empty
        if params.get(key, ...) == value:
            continue  # already shown as a parameter
        shown = value if isinstance(value, str | int | float | bool) or value is None else None
        if shown is None and value is not None:
            shown = json.dumps(value, sort_keys=True, default=str)
            if len(shown) > 300:
                shown = shown[:300] + "…"
        context["scalars"].append((key, _number(shown) if shown is not None else "null"))
    return context


_STAGES = ("ingest", "fit", "score", "dedup", "decontaminate", "select", "materialize", "report")


def _stage_order(item: tuple[str, Any]) -> tuple[int, str]:
    stage = item[0]
    return (_STAGES.index(stage) if stage in _STAGES else len(_STAGES), stage)


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    return {
        "title": title,
        "header": columns,
        "rows": [[_number(row.get(c)) for c in columns] for row in rows],
    }


def distill_line(record: dict[str, Any]) -> str | None:
    """One sentence on the eval's knowledge distillation (None when it was off).

    ``record`` is ``eval.json``; the report's pruning-curve section and ``thresher eval`` show it.
    """
    distill = record.get("distill")
    if not distill:
        return None
    teacher = distill.get("teacher") or {}
    held = teacher.get("validation_accuracy")
    return (
        f"Knowledge distillation on: every subset's model learns from a teacher trained on the "
        f"whole pool (seed {teacher.get('seed')}"
        + (f", validation accuracy {held:.3f}" if held is not None else "")
        + f") with alpha {distill['alpha']:g} and temperature {distill['temperature']:g}; "
        "the full-data reference is not distilled."
    )


def _curve_context(
    results: pd.DataFrame | None,
    summary: pd.DataFrame | None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if results is None or results.empty:
        return {}
    record = record or {}
    if record.get("task") == "language_model":
        return _lm_curve_context(results, summary, record)
    warnings = [str(w) for w in record.get("warnings", [])]
    model = record.get("model") or {}
    facts = []
    if model.get("lr") is not None:
        how = (
            "given"
            if all((model.get("given") or {}).values())
            else "chosen on the validation split"
        )
        facts.append(
            f"Downstream model: learning rate {model['lr']:g}, weight decay "
            f"{model['weight_decay']:g} ({how})."
        )
    distilled = distill_line(record)
    if distilled is not None:
        facts.append(distilled)
    check = record.get("data_check") or {}
    if check.get("ok") and "diff" in check:
        facts.append(f"Data check: {check['message']}.")
    for proxy in record.get("proxies", []):
        if proxy.get("train_accuracy") is not None:
            held = proxy.get("holdout_accuracy")
            facts.append(
                f"Proxy {proxy['proxy']}: training accuracy {proxy['train_accuracy']:.3f}"
                + (f", held-out accuracy {held:.3f}" if held is not None else "")
                + "."
            )
    n_seeds = results["seed"].nunique() if "seed" in results.columns else None
    caption = (
        "Test accuracy of a model trained on each selector's subset at each fraction kept "
        "(mean ± standard deviation"
        + (f" over {n_seeds} seeds" if n_seeds else "")
        + "; random is dashed)."
    )
    table = None
    if summary is not None and not summary.empty:
        head = summary.head(200)
        table = {
            "header": [str(c) for c in head.columns],
            "rows": [[_number(v) for v in row] for row in head.itertuples(index=False)],
        }
    return {
        "caption": caption,
        "plot": plots.pruning_curve(results),
        "table": table,
        "warnings": warnings,
        "facts": facts,
    }


def _lm_curve_context(
    results: pd.DataFrame, summary: pd.DataFrame | None, record: dict[str, Any]
) -> dict[str, Any]:
    """The language-model eval's curve: per-token loss per held-out set against tokens kept."""
    sets = [str(s) for s in record.get("sets") or ["test"]]
    lm, tuning = record.get("lm") or {}, record.get("model") or {}
    facts = []
    if lm:
        given = tuning.get("given") or {}
        lr = ""
        if tuning.get("lr") is not None:
            how = "given" if all(given.values()) else "chosen on the validation split"
            lr = f", learning rate {tuning['lr']:g}, warm-up {tuning.get('warmup', 0):g} ({how})"
        facts.append(
            f"Language model: {lm['n_layers']} layers of width {lm['d_model']}, context "
            f"{lm['context_length']}, trained from scratch on {lm['train_tokens']:,} tokens per "
            f"subset (a smaller subset is repeated){lr}."
        )
    if "epochs" in results.columns:
        facts.append(
            f"Epochs over the subset: {results['epochs'].min():.2f} to "
            f"{results['epochs'].max():.2f}."
        )
    n_seeds = results["seed"].nunique() if "seed" in results.columns else None
    caption = (
        "Per-token loss (nats; lower is better) of a language model trained on each "
        "selector's subset, on the corpus's held-out split and each target set, against the "
        "fraction of the pool's tokens kept (mean ± standard deviation"
        + (f" over {n_seeds} seeds" if n_seeds else "")
        + "; random is dashed)."
    )
    table = None
    if summary is not None and not summary.empty:
        head = summary.head(300)
        table = {
            "header": [str(c) for c in head.columns],
            "rows": [[_number(v) for v in row] for row in head.itertuples(index=False)],
        }
    return {
        "caption": caption,
        "plot": plots.lm_pruning_curve(plots.long_losses(results, sets)),
        "table": table,
        "warnings": [str(w) for w in record.get("warnings", [])],
        "facts": facts,
    }


def _eval_run_context(results: pd.DataFrame | None) -> dict[str, Any] | None:
    """What the eval of this run compared: its selectors, pruning rates and seeds (None: no eval).

    The run of ``thresher eval`` is scored once and never selected by the eval
    itself (each selection is made and trained in the eval), so its report says
    that rather than "no selection yet".
    """
    if results is None or results.empty:
        return None
    compared = results[results["selector"] != "full"]  # the full-data reference is no selector
    rates: list[str] = []
    if "prune_rate" in compared.columns:
        rates = [f"{rate:g}" for rate in sorted(compared["prune_rate"].dropna().unique())]
    seeds = int(results["seed"].nunique()) if "seed" in results.columns else 0
    return {
        "selectors": [str(s) for s in dict.fromkeys(compared["selector"].tolist())],
        "rates": rates,
        "seeds": seeds,
    }


def _examples_context(data: ReportData) -> list[dict[str, Any]]:
    dropped = (data.manifest or {}).get("counts", {}).get("dropped", {}).get("by_reason", {})
    quarantined = data.funnel[0].removed if data.funnel else {}
    groups = []
    for outcome in sorted(data.examples, key=_outcome_order):
        documents = data.examples[outcome]
        if outcome == "kept":
            title, tag, count = "kept", "kept-tag", data.kept
        elif outcome.startswith("quarantine:"):
            reason = outcome.split(":", 1)[1]
            title, tag, count = f"quarantined: {reason}", "drop-tag", quarantined.get(reason)
        else:
            title, tag, count = f"dropped: {outcome}", "drop-tag", dropped.get(outcome)
        groups.append(
            {
                "title": title,
                "tag": tag,
                "count": count,
                "documents": documents,
                "open": outcome == "kept",
            }
        )
    return groups


def _outcome_order(outcome: str) -> tuple[int, str]:
    if outcome == "kept":
        return (0, outcome)
    if outcome.startswith("quarantine:"):
        return (2, outcome)
    return (1, outcome)
