"""The report's plots: matplotlib (Agg) figures returned as ``data:`` URIs of SVG images.

An SVG inside an ``<img>`` needs no network, no script and no font file,
scales with the page, and its ids cannot clash with another plot's. Every
figure is drawn from already-binned or already-aggregated numbers, so a
plot's size does not grow with the run.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from thresher.reporting.data import FunnelStep

KEPT = "#2b8a3e"
DROPPED = "#c92a2a"
NEUTRAL = "#5c7cfa"
_STYLE: Any = {
    "svg.fonttype": "none",  # text stays text: small files, the browser's sans-serif font
    "svg.hashsalt": "thresher",  # stable ids, so the same run gives the same report
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}


def to_data_uri(figure: Figure) -> str:
    """Render ``figure`` as SVG and return it as a base64 ``data:`` URI (closes the figure)."""
    buffer = io.BytesIO()
    with plt.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 5.6, height: float = 3.0) -> tuple[Figure, Any]:
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(width, height))
    return figure, axes


def funnel_plot(input_count: int, funnel: list[FunnelStep], kept: int | None) -> str:
    """Horizontal bars: records left after each stage, with what the stage removed."""
    with plt.rc_context(_STYLE):
        labels = ["input", *[_bar_label(step.stage) for step in funnel]]
        values = [input_count, *[step.remaining for step in funnel]]
        if kept is not None and values[-1] != kept:
            labels.append("selected")
            values.append(kept)
        figure, axes = plt.subplots(figsize=(7.2, 0.45 * len(labels) + 0.8))
        positions = np.arange(len(labels))[::-1]
        colours = [NEUTRAL] * (len(labels) - 1) + [KEPT if kept is not None else NEUTRAL]
        axes.barh(positions, values, color=colours, height=0.6)
        axes.set_yticks(positions, labels)
        scale = max(1, *values)
        for position, value, step in zip(positions, values, [None, *funnel], strict=False):
            text = f"{value:,}"
            if step is not None and step.total_removed:
                text += f"  (−{step.total_removed:,})"
            axes.text(value + 0.01 * scale, position, text, va="center", fontsize=8)
        axes.set_xlim(0, scale * 1.25)
        axes.set_xlabel("records")
        axes.set_title("Funnel: records left after each stage")
        return to_data_uri(figure)


def _bar_label(stage: str) -> str:
    return "selected" if stage == "not selected" else f"after {stage}"


def score_histogram(edges: list[float], kept: list[int], dropped: list[int], column: str) -> str:
    """Histogram of one score from its binned counts, kept and dropped rows overlaid."""
    figure, axes = _figure()
    with plt.rc_context(_STYLE):
        bounds = np.asarray(edges, dtype=float)
        widths = np.diff(bounds)
        if not bounds.size or (sum(kept) + sum(dropped)) == 0:
            axes.text(0.5, 0.5, "no finite values", ha="center", transform=axes.transAxes)
        else:
            axes.bar(
                bounds[:-1],
                dropped,
                width=widths,
                align="edge",
                color=DROPPED,
                alpha=0.55,
                label="dropped",
            )
            axes.bar(
                bounds[:-1], kept, width=widths, align="edge", color=KEPT, alpha=0.55, label="kept"
            )
            axes.legend(frameon=False)
        axes.set_title(column)
        axes.set_xlabel(column)
        axes.set_ylabel("documents")
    return to_data_uri(figure)


def cluster_size_plot(sizes: dict[int, int]) -> str:
    """Number of duplicate clusters of each size (log-spaced bins past size 20)."""
    figure, axes = _figure()
    with plt.rc_context(_STYLE):
        values = np.array(sorted(sizes), dtype=np.int64)
        counts = np.array([sizes[v] for v in values.tolist()], dtype=np.int64)
        largest = int(values.max()) if values.size else 2
        if largest <= 20:
            axes.bar(values, counts, color=NEUTRAL, width=0.8)
            axes.set_xticks(range(2, largest + 1))
        else:
            edges = np.unique(np.geomspace(2, largest + 1, num=25).astype(int))
            axes.hist(values, bins=edges, weights=counts, color=NEUTRAL)
            axes.set_xscale("log")
        if counts.size and counts.max() > 100:  # a long tail of rare large clusters
            axes.set_yscale("log")
        else:
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("cluster size (documents)")
        axes.set_ylabel("clusters")
        axes.set_title("Duplicate clusters by size")
    return to_data_uri(figure)


def similarity_histogram(edges: list[float], counts: list[int], threshold: float | None) -> str:
    """Near-removed documents by their similarity to their keeper, the threshold marked.

    ``edges`` are the bin edges (one more than ``counts``), ``counts`` the
    documents in each bin; a dashed vertical line marks ``threshold`` (none
    when it is unknown). Bars left of the line are documents removed with a
    similarity to their keeper below the threshold (through a chain).
    """
    figure, axes = _figure()
    with plt.rc_context(_STYLE):
        bounds = np.asarray(edges, dtype=float)
        values = np.asarray(counts, dtype=np.int64)
        if bounds.size < 2 or int(values.sum()) == 0:
            axes.text(0.5, 0.5, "no near-duplicates removed", ha="center", transform=axes.transAxes)
        else:
            below = (
                bounds[1:] <= threshold if threshold is not None else np.zeros(values.size, bool)
            )
            colours = np.where(below, DROPPED, NEUTRAL).tolist()
            axes.bar(bounds[:-1], values, width=np.diff(bounds), align="edge", color=colours)
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.set_xlim(float(bounds[0]), float(bounds[-1]))
        if threshold is not None:
            axes.axvline(threshold, color=DROPPED, linestyle="--", linewidth=1.2)
            axes.text(
                threshold,
                0.98,
                f"threshold {threshold:g} ",  # left of the line: what stays clear of the bars
                color=DROPPED,
                va="top",
                ha="right",
                fontsize=8,
                transform=axes.get_xaxis_transform(),
            )
        axes.set_xlabel("estimated Jaccard similarity to the cluster's keeper")
        axes.set_ylabel("near-duplicates removed")
        axes.set_title("Removed near-duplicates by similarity to their keeper")
    return to_data_uri(figure)


def strata_plot(strata: list[dict[str, Any]], title: str) -> str:
    """CCS strata: documents in each stratum and how many were selected."""
    figure, axes = _figure(7.2, 3.0)
    with plt.rc_context(_STYLE):
        positions = np.arange(len(strata))
        sizes = [int(s["size"]) for s in strata]
        chosen = [int(s["selected"]) for s in strata]
        axes.bar(positions, sizes, color="#adb5bd", label="in stratum", width=0.85)
        axes.bar(positions, chosen, color=KEPT, label="selected", width=0.85)
        step = max(1, len(strata) // 8)
        ticks = positions[::step]
        axes.set_xticks(ticks, [f"{float(strata[i]['low']):.3g}" for i in ticks])
        axes.set_xlabel("stratum (lower edge of its score range)")
        axes.set_ylabel("documents")
        axes.set_title(title)
        axes.legend(frameon=False)
    return to_data_uri(figure)


def clusters_plot(clusters: list[dict[str, Any]], title: str) -> str:
    """k-means clusters sorted by size: size, selected, and the mean importance weight."""
    ordered = sorted(clusters, key=lambda c: -int(c["size"]))
    figure, axes = _figure(7.2, 3.0)
    with plt.rc_context(_STYLE):
        positions = np.arange(len(ordered))
        axes.bar(positions, [int(c["size"]) for c in ordered], color="#adb5bd", label="size")
        axes.bar(positions, [int(c["selected"]) for c in ordered], color=KEPT, label="selected")
        axes.set_xlabel("cluster (largest first)")
        axes.set_ylabel("documents")
        axes.set_title(title)
        weights = [c.get("weight_mean") for c in ordered]
        if any(w is not None and np.isfinite(w) for w in weights):
            twin = axes.twinx()
            twin.plot(
                positions,
                [np.nan if w is None else float(w) for w in weights],
                color=DROPPED,
                marker=".",
                linewidth=1,
                label="mean weight",
            )
            twin.set_ylabel("mean importance weight")
            twin.spines["top"].set_visible(False)
            handles = axes.get_legend_handles_labels()
            extra = twin.get_legend_handles_labels()
            axes.legend(handles[0] + extra[0], handles[1] + extra[1], frameon=False)
        else:
            axes.legend(frameon=False)
    return to_data_uri(figure)


def pruning_curve(results: pd.DataFrame) -> str:
    """Accuracy against fraction kept, one line per selector (mean ± std over seeds).

    One panel per label-noise level.
    """
    noise_levels = sorted(results["label_noise"].unique())
    with plt.rc_context(_STYLE):
        figure, axes_list = plt.subplots(
            1, len(noise_levels), figsize=(5.6 * len(noise_levels), 3.4), squeeze=False
        )
        for axes, noise in zip(axes_list[0], noise_levels, strict=True):
            subset = results[results["label_noise"] == noise]
            grouped = (
                subset.groupby(["selector", "fraction_kept"])["accuracy"]
                .agg(["mean", "std"])
                .reset_index()
            )
            for selector, line in grouped.groupby("selector", sort=True):
                line = line.sort_values("fraction_kept")
                axes.errorbar(
                    line["fraction_kept"],
                    line["mean"],
                    yerr=line["std"].fillna(0.0),
                    marker="o",
                    markersize=3,
                    capsize=2,
                    linewidth=1.2,
                    label=str(selector),
                    linestyle="--" if selector == "random" else "-",
                )
            axes.set_xlabel("fraction of training data kept")
            axes.set_ylabel("test accuracy")
            axes.set_title(f"Pruning curve (label noise {noise:g})")
            axes.legend(frameon=False, fontsize=8)
    return to_data_uri(figure)


def long_losses(results: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """One row per (model, held-out set): ``selector, fraction_kept, seed, set, loss``."""
    parts = []
    for name in sets:
        column = "loss" if name == "test" else f"loss_{name}"
        part = results[["selector", "prune_rate", "fraction_kept", "seed"]].copy()
        part["set"] = name
        part["loss"] = results[column].astype(float)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def lm_pruning_curve(losses: pd.DataFrame) -> str:
    """Language models: per-token loss against the fraction of tokens kept, one panel per set.

    ``losses`` has one row per (model, held-out set): ``selector,
    fraction_kept, seed, set, loss`` (mean ± std over seeds; lower is
    better; the full-data model is the point at 1.0, random is dashed).
    """
    sets = list(dict.fromkeys(losses["set"]))
    with plt.rc_context(_STYLE):
        figure, axes_list = plt.subplots(
            1, len(sets), figsize=(5.6 * len(sets), 3.4), squeeze=False
        )
        for axes, name in zip(axes_list[0], sets, strict=True):
            subset = losses[losses["set"] == name]
            grouped = (  # a subset's token fraction varies a little with the seed
                subset.groupby(["selector", "prune_rate"])
                .agg(x=("fraction_kept", "mean"), mean=("loss", "mean"), std=("loss", "std"))
                .reset_index()
            )
            for selector, line in grouped.groupby("selector", sort=True):
                line = line.sort_values("x")
                axes.errorbar(
                    line["x"],
                    line["mean"],
                    yerr=line["std"].fillna(0.0),
                    marker="o",
                    markersize=3,
                    capsize=2,
                    linewidth=1.2,
                    label=str(selector),
                    linestyle="--" if selector == "random" else "-",
                )
            axes.set_xlabel("fraction of the pool's tokens kept")
            axes.set_ylabel("per-token loss (nats)")
            axes.set_title("held-out split" if name == "test" else f"target: {name}")
            axes.legend(frameon=False, fontsize=8)
    return to_data_uri(figure)
