"""New selection methods in the Fashion-MNIST and Debian eval grids: each one's margin over random.

The two existing eval grids (``examples/eval-fashion-mnist.yaml``,
``examples/eval-debian.yaml``; their data preparation and configs come from
:mod:`benchmarks.eval_fashion_mnist` and :mod:`benchmarks.eval_text`) are run
at 50/70/90% pruned, 5 seeds, clean labels and 20% of the training labels
flipped, once per *method* of :data:`METHODS`. A method is a row of that
table: the scorers it adds, the eval selector entries that use them, and
options it sets on the whole eval (a filter before every selector,
distillation of every downstream model...). Each method is an eval of its
own (``--work/<dataset>/<method>/noise-<n>``) scoring only what its
selectors read: the same splits, the same (deterministic) scores and the
same seeds, so results can be compared across evals, and adding a method
never invalidates the runs of another.

The ``reference`` eval holds random and the existing best selectors of the
grid (CCS on EL2N, on forgetting events or with an AUM cutoff, as the example
configs have them); its chosen downstream learning rate and weight decay are
given to every other eval of the same dataset and noise, so every model of
a (dataset, noise) trains the same way. A selector's **margin over random**
is paired by seed against the reference eval's random (same selection seed,
same initial weights): the mean and standard deviation of the 5
differences. A method without eval-level options also trains random in its
own eval; those models must equal the reference's (checked and reported).
A method with eval-level options is compared with plain random (what the
option is worth) and its rankings of the selectors it shares with the
reference are listed side by side.

The methods: ``label_issues`` (CCS with confident learning's hard cutoff),
``label_issues_filter`` (the flagged rows removed, then random), ``mimic``
(top-k and CCS on the mimic score), ``ideal`` (the IDEAL selector on the
embedding), ``gradient`` (k-means sensitivity sampling and a DPP on gradient
embeddings, beside the same on the grid's embedding), ``distill`` (random
and the references with knowledge distillation from the full-data model) and
``dynamic`` (dynamic pruning during the downstream training). A method whose
scorer, selector or option a checkout lacks is skipped with the reason (a
registry or import check, then the eval config's own validation).

Writes ``benchmarks/results/eval_methods.md`` (the section printed here),
``eval_methods.csv`` (one row per trained model) and
``eval_methods_summary.csv`` (margins per method, selector and rate);
``_quick`` in each name at the development scale.

Full scale (needs ``make sysdeps-bench`` for Fashion-MNIST, the package index
for Debian, and ``thresher[sentence]`` for the methods that read Debian's
sentence embeddings)::

    python -m benchmarks.eval_methods --methods label_issues,label_issues_filter

Development scale (the two benchmarks' subsamples, 2 rates, 2 seeds)::

    python -m benchmarks.eval_methods --quick --datasets fashion    # or THRESHER_BENCH_QUICK=1

The subsampled pools at the full grid's depth (what ``results/eval_methods_quick.md``
holds: 50/70/90%, 5 seeds)::

    python -m benchmarks.eval_methods --quick --seeds 5 --rates 0.5 0.7 0.9

Runs go to ``--work`` (default ``runs/bench-eval-methods``); a re-run resumes
there (``--fresh`` starts the chosen methods' evals over). An eval refuses a
directory scored with other scorers: after changing a method's scorers,
delete ``--work/<dataset>/<method>`` (the other methods' runs stay valid).

References
----------
Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021.
Zheng, Liu, Li and Prakash, "Coverage-centric Coreset Selection for High
Pruning Rates", ICLR 2023.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import eval_fashion_mnist, eval_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = "eval_methods"
RATES = [0.5, 0.7, 0.9]
#: The eval whose random every margin is paired against, and whose selectors are the references.
REFERENCE = "reference"
RANDOM = "random"


@dataclass(frozen=True)
class Dataset:
    """One eval grid: the benchmark module that prepares its data and config, and its references."""

    key: str
    title: str
    module: ModuleType
    #: Display labels of the example grid's selectors kept as references (random is added).
    references: tuple[str, ...]


DATASETS: dict[str, Dataset] = {
    d.key: d
    for d in (
        Dataset(
            "fashion",
            "Fashion-MNIST",
            eval_fashion_mnist,
            ("ccs(el2n)", "ccs(forgetting)"),
        ),
        Dataset(
            "debian",
            "Debian package descriptions",
            eval_text,
            ("ccs(el2n)", "ccs(el2n, aum cutoff)"),
        ),
    )
}


@dataclass(frozen=True)
class Context:
    """What a method's entries are built from: the dataset's example eval config and its place.

    ``example`` is the dataset benchmark's config (:func:`eval_config`: the
    example YAML pointed at the data, at the development scale when
    ``quick``); ``root`` is the method's eval directory (``run_dir``).
    """

    dataset: Dataset
    example: dict[str, Any]
    root: Path
    quick: bool

    def scorer(self, name: str) -> dict[str, Any]:
        """A copy of the example config's scorer entry ``name``."""
        for entry in self.example["scorers"]:
            if entry["name"] == name and entry.get("column") in (None, name):
                return copy.deepcopy(entry)
        raise KeyError(f"{self.dataset.key}: the example config has no scorer {name!r}")

    def selector(self, label: str) -> dict[str, Any]:
        """A copy of the example config's eval selector entry shown as ``label``."""
        for entry in self.example["eval"]["selectors"]:
            if display(entry) == label:
                return copy.deepcopy(entry)
        raise KeyError(f"{self.dataset.key}: the example config has no selector {label!r}")

    @property
    def proxy(self) -> dict[str, Any]:
        """The EL2N scorer's proxy settings: every proxy-based scorer here trains the same model."""
        return dict(self.scorer("el2n")["params"]["proxy"])

    @property
    def beta_grid(self) -> list[float]:
        """CCS on EL2N's beta grid: a new CCS variant is searched as widely as the reference."""
        return list(self.selector("ccs(el2n)")["search"]["beta"])


def display(entry: dict[str, Any]) -> str:
    """An eval selector entry's display label, as :class:`EvalSelectorConfig` makes it."""
    if entry.get("label"):
        return str(entry["label"])
    score = entry.get("params", {}).get("score")
    return f"{entry['name']}({score})" if isinstance(score, str) else str(entry["name"])


# -- availability checks: None when met, else the reason ------------------------------------
Requirement = Callable[[], "str | None"]


def scorer_registered(name: str) -> Requirement:
    def check() -> str | None:
        from thresher.scorers import SCORERS

        return None if name in SCORERS else f"no scorer {name!r} is registered"

    return check


def selector_registered(name: str) -> Requirement:
    def check() -> str | None:
        from thresher.selectors import SELECTORS

        return None if name in SELECTORS else f"no selector {name!r} is registered"

    return check


def module_importable(dotted: str) -> Requirement:
    def check() -> str | None:
        try:
            found = importlib.util.find_spec(dotted) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"module {dotted} is not importable"

    return check


def downstream_option(name: str) -> Requirement:
    def check() -> str | None:
        from thresher.evaluation.config import DownstreamConfig

        known = name in DownstreamConfig.model_fields
        return None if known else f"eval.model has no option {name!r}"

    return check


# -- the methods ---------------------------------------------------------------------------
def _none(ctx: Context) -> list[dict[str, Any]]:
    return []


@dataclass(frozen=True)
class Method:
    """A selection method to measure: scorers it adds, selectors it compares, eval options.

    Its eval scores with the example grid's scorers named in ``uses`` and
    the method's own ``scorers`` (nothing else: a scorer costs a fit per eval).

    ``options`` is merged into the whole eval config (``{"eval": {"model":
    {...}}}``, ``{"filters": [...]}``): a method with options changes every
    model of its eval, random included, so its own random is a result (e.g.
    random after a filter), paired like the others against the reference
    eval's plain random.
    """

    name: str
    about: str
    selectors: Callable[[Context], list[dict[str, Any]]]
    #: The example grid's scorers the selectors read (``el2n``: EL2N, AUM, forgetting).
    uses: tuple[str, ...] = ("el2n",)
    scorers: Callable[[Context], list[dict[str, Any]]] = _none
    options: dict[str, Any] = field(default_factory=dict)
    requires: tuple[Requirement, ...] = ()

    def missing(self) -> str | None:
        """Why the method cannot run in this checkout (its first unmet requirement), or None."""
        for requirement in self.requires:
            reason = requirement()
            if reason is not None:
                return reason
        return None


def _references(ctx: Context) -> list[dict[str, Any]]:
    return [{"name": RANDOM}] + [ctx.selector(label) for label in ctx.dataset.references]


def _label_issues_scorer(ctx: Context) -> list[dict[str, Any]]:
    # out-of-fold probabilities of the same proxy as EL2N's (5 folds, its seeds and epochs)
    return [{"name": "label_issues", "params": {"proxy": ctx.proxy}}]


def _label_issues_cutoff(ctx: Context) -> list[dict[str, Any]]:
    # CCS's hard cutoff drops the lowest self-confidence (the likely mislabelled) instead of
    # the highest EL2N; strata on EL2N as the reference
    return [
        {
            "name": "ccs",
            "label": "ccs(el2n, label_issues cutoff)",
            "params": {
                "score": "el2n",
                "hard": "high",
                "cutoff_score": "label_issues",
                "cutoff_hard": "low",
            },
            "search": {"beta": ctx.beta_grid},
        }
    ]


#: Confident learning's flagged rows never reach a selector (random and full data included).
FLAGGED_FILTER = {
    "filters": [{"name": "threshold", "params": {"score": "label_issues_flagged", "max": 0.5}}]
}


def _mimic_scorer(ctx: Context) -> list[dict[str, Any]]:
    # the reference model is trained on the eval's validation split: clean labels, never
    # selected from, and written before the scoring run fits
    target = ctx.root / "splits" / "validation.parquet"
    return [{"name": "mimic", "params": {"proxy": ctx.proxy, "target_file": str(target)}}]


def _mimic_selectors(ctx: Context) -> list[dict[str, Any]]:
    return [
        {"name": "topk", "params": {"score": "mimic"}},  # high: moves toward the reference
        {
            "name": "ccs",
            "params": {"score": "mimic", "hard": "low"},  # the cutoff drops the most harmful
            "search": {"beta": ctx.beta_grid},
        },
    ]


def _ideal(ctx: Context) -> list[dict[str, Any]]:
    # the paper's k = 10 neighbours and 10 simulations; partitioned as D2 is in the grid
    entry: dict[str, Any] = {"name": "ideal", "params": {"n_neighbors": 10, "n_simulations": 10}}
    partitions = ctx.selector("d2(el2n)").get("partitions")
    if partitions:
        entry["partitions"] = partitions
    return [entry]


GRADIENT_COLUMN = "gradient_embedding"


def _gradient_scorers(ctx: Context) -> list[dict[str, Any]]:
    gradient = {
        "name": "embedding",
        "column": GRADIENT_COLUMN,
        "params": {"source": "gradient", "proxy": ctx.proxy, "dim": 256},
    }
    return [gradient]


def _gradient_selectors(ctx: Context) -> list[dict[str, Any]]:
    entries = []
    for label in ("kmeans_sensitivity", "dpp"):
        plain = ctx.selector(label)  # on the grid's embedding, for comparison
        gradient = copy.deepcopy(plain)
        gradient.update(label=f"{label}(gradient)", embeddings=GRADIENT_COLUMN)
        entries += [plain, gradient]
    return entries


#: Hinton et al.'s loss, the full-data model as teacher.
DISTILL = {"eval": {"model": {"distill": {"alpha": 0.5, "temperature": 4.0}}}}


def _dynamic(ctx: Context) -> list[dict[str, Any]]:
    # re-scored by EL2N of the model in training every epoch, the hardest (1 - rate) kept
    return [{"name": "dynamic_el2n", "params": {"every": 1}}]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(REFERENCE, "random and the grid's best existing selectors", _references),
        Method(
            "label_issues",
            "CCS on EL2N with the hard cutoff by confident learning's self-confidence",
            _label_issues_cutoff,
            scorers=_label_issues_scorer,
        ),
        Method(
            "label_issues_filter",
            "the rows confident learning flags removed (threshold filter), then random",
            lambda ctx: [{"name": RANDOM}],
            uses=(),
            scorers=_label_issues_scorer,
            options=FLAGGED_FILTER,
        ),
        Method(
            "mimic",
            "top-k and CCS on the mimic score (gradient alignment with a clean model's weights)",
            _mimic_selectors,
            uses=(),
            scorers=_mimic_scorer,
            requires=(scorer_registered("mimic"),),
        ),
        Method(
            "ideal",
            "IDEAL: influence-driven greedy selection on a kNN graph of the embedding",
            _ideal,
            uses=("embedding",),
            requires=(selector_registered("ideal"),),
        ),
        Method(
            "gradient",
            "k-means sensitivity sampling and a DPP on gradient embeddings (and on the grid's)",
            _gradient_selectors,
            uses=("embedding",),
            scorers=_gradient_scorers,
        ),
        Method(
            "distill",
            "random and the references with knowledge distillation from the full-data model",
            lambda ctx: [ctx.selector(label) for label in ctx.dataset.references],
            options=DISTILL,
            requires=(downstream_option("distill"),),
        ),
        Method(
            "dynamic",
            "dynamic pruning: the downstream model re-selects its hardest rows by EL2N as it trains",
            _dynamic,
            uses=(),
            requires=(module_importable("thresher.evaluation.dynamic"),),
        ),
    )
}


# -- configs -------------------------------------------------------------------------------
def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mappings key by key (a copy)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def method_config(
    dataset: Dataset,
    method: Method,
    data: Path,
    work: Path,
    noise: float,
    quick: bool,
    model: dict[str, float] | None = None,
    grid: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The eval config of ``method`` on ``dataset`` at ``noise`` (a mapping, not validated).

    The dataset benchmark's own config (data preparation and development
    scale included), with the example grid's scorers the method uses plus its own,
    the method's selectors, its options, rates 50/70/90% (50/90% when quick)
    and, when given, the downstream ``model`` settings (``lr``, ``weight_decay``).
    """
    example = dataset.module.eval_config(data, work / dataset.key / method.name, noise, quick)
    root = Path(example["run_dir"])
    ctx = Context(dataset, example, root, quick)
    config = copy.deepcopy(example)
    config["scorers"] = [ctx.scorer(name) for name in method.uses]
    for entry in method.scorers(ctx):
        if entry not in config["scorers"]:
            config["scorers"].append(entry)
    section = config["eval"]
    section["selectors"] = method.selectors(ctx)
    if not quick:
        section["rates"] = list(RATES)
    section.update(grid or {})  # --seeds, --rates: a development-size pool at full grid depth
    if model:
        section["model"].update(model)
    return _merge(config, method.options)


def build(
    dataset: Dataset,
    method: Method,
    data: Path,
    work: Path,
    noise: float,
    quick: bool,
    model: dict[str, float] | None = None,
    grid: dict[str, Any] | None = None,
) -> tuple[Any, str | None]:
    """The validated eval config of ``method`` (an EvalConfig), or None and why it cannot run here.

    Unmet requirements are checked first (a clearer reason), then the eval
    config's own validation (registry names, parameters, score columns).
    """
    from thresher.errors import ConfigError
    from thresher.evaluation.config import parse_eval_config

    missing = method.missing()
    if missing is not None:
        return None, missing
    try:
        raw = method_config(dataset, method, data, work, noise, quick, model, grid)
        return parse_eval_config(raw, base_dir=ROOT), None
    except (ConfigError, KeyError) as error:
        return None, " ".join(str(error).split())


def choose_methods(text: str) -> list[str]:
    """Method names from ``--methods`` (comma-separated; ``all``), the reference first."""
    names = list(METHODS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return [REFERENCE] + [n for n in names if n != REFERENCE]


def choose_datasets(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    return names


# -- margins -------------------------------------------------------------------------------
MARGIN_COLUMNS = [
    "dataset",
    "label_noise",
    "method",
    "selector",
    "prune_rate",
    "n_seeds",
    "mean",
    "std",
    "margin",
    "margin_std",
    "wins",
    "vs_best_reference",
    "vs_best_reference_std",
    "best_reference",
    "params",
]


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def has_options(method: str) -> bool:
    """Whether the method changes the whole eval (so its own random is not plain random)."""
    return method in METHODS and bool(METHODS[method].options)


def margins(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, noise, method, selector, rate): accuracy and margins, paired by seed.

    ``results`` holds every eval's model rows with ``dataset`` and ``method``
    columns. The margin is against the reference eval's random at the same
    rate and seed; ``vs_best_reference`` against the reference selector
    (random excluded) with the best mean at that rate. A method without
    eval-level options has no random row of its own here (it equals the
    reference's); a method with options keeps its random (e.g. random after
    a filter), measured against the plain one.
    """
    rows = []
    pruned = results[results["prune_rate"] > 0]
    for (dataset, noise), part in pruned.groupby(["dataset", "label_noise"], sort=True):
        reference = part[part["method"] == REFERENCE]
        random = reference[reference["selector"] == RANDOM]
        candidates = reference[reference["selector"] != RANDOM]
        for (method, selector, rate), group in part.groupby(
            ["method", "selector", "prune_rate"], sort=False
        ):
            if selector == RANDOM and method != REFERENCE and not has_options(method):
                continue
            by_seed = group.set_index("seed")["accuracy"]
            base = random[random["prune_rate"] == rate].set_index("seed")["accuracy"]
            paired = (by_seed - base).dropna()
            at_rate = candidates[candidates["prune_rate"] == rate]
            best = (
                at_rate.groupby("selector")["accuracy"].mean().sort_index().idxmax()
                if not at_rate.empty
                else None
            )
            versus = pd.Series([], dtype=float)
            if best is not None and (method, selector) != (REFERENCE, best):
                best_seed = at_rate[at_rate["selector"] == best].set_index("seed")["accuracy"]
                versus = (by_seed - best_seed).dropna()
            own = method == REFERENCE and selector == RANDOM
            rows.append(
                {
                    "dataset": dataset,
                    "label_noise": float(noise),
                    "method": method,
                    "selector": selector,
                    "prune_rate": float(rate),
                    "n_seeds": int(by_seed.size),
                    "mean": float(by_seed.mean()),
                    "std": _std(by_seed),
                    "margin": np.nan if own else float(paired.mean()),
                    "margin_std": np.nan if own else _std(paired),
                    "wins": np.nan if own else int((paired > 0).sum()),
                    "vs_best_reference": float(versus.mean()) if len(versus) else np.nan,
                    "vs_best_reference_std": _std(versus) if len(versus) else np.nan,
                    "best_reference": best,
                    "params": str(group["params"].iloc[0]) if "params" in group else "",
                }
            )
    frame = pd.DataFrame(rows, columns=MARGIN_COLUMNS)
    order = {name: i for i, name in enumerate(METHODS)}
    frame["_method"] = frame["method"].map(lambda m: order.get(m, len(order)))
    frame["_random"] = frame["selector"] != RANDOM  # random first within a method
    datasets = {name: i for i, name in enumerate(DATASETS)}
    frame["_dataset"] = frame["dataset"].map(lambda d: datasets.get(d, len(datasets)))
    keys = ["_dataset", "label_noise", "_method", "_random", "selector", "prune_rate"]
    frame = frame.sort_values(keys, kind="stable")
    return frame.drop(columns=["_dataset", "_method", "_random"]).reset_index(drop=True)


def random_mismatch(results: pd.DataFrame) -> pd.DataFrame:
    """Largest |accuracy difference| of each option-free method's random from the reference's.

    The evals share splits, scores and seeds, so the two must be the same models.
    """
    rows = []
    randoms = results[(results["selector"] == RANDOM) & (results["prune_rate"] > 0)]
    keys = ["dataset", "label_noise", "prune_rate", "seed"]
    reference = randoms[randoms["method"] == REFERENCE].set_index(keys)["accuracy"]
    for method, part in randoms.groupby("method"):
        if method == REFERENCE or has_options(str(method)):
            continue
        diff = (part.set_index(keys)["accuracy"] - reference).dropna()
        rows.append(
            {"method": method, "models": int(diff.size), "max_abs": float(diff.abs().max())}
        )
    return pd.DataFrame(rows, columns=["method", "models", "max_abs"])


def rankings(results: pd.DataFrame, method: str) -> list[str]:
    """Per (dataset, noise, rate): the shared selectors ranked by mean accuracy, plain and ``method``."""
    lines = []
    pruned = results[results["prune_rate"] > 0]
    for (dataset, noise, rate), part in pruned.groupby(["dataset", "label_noise", "prune_rate"]):
        plain = part[part["method"] == REFERENCE].groupby("selector")["accuracy"].mean()
        other = part[part["method"] == method].groupby("selector")["accuracy"].mean()
        shared = sorted(set(plain.index) & set(other.index))
        if len(shared) < 2:
            continue
        first = plain[shared].sort_values(ascending=False)
        second = other[shared].sort_values(ascending=False)
        same = list(first.index) == list(second.index)
        lines.append(
            f"- {DATASETS[dataset].title if dataset in DATASETS else dataset}, noise {noise:g}, "
            f"{100 * rate:g}% pruned: plain {_order(first)}; {method} {_order(second)} "
            f"({'same order' if same else 'order changed'})"
        )
    return lines


def _order(means: pd.Series) -> str:
    return " > ".join(f"{name} {100 * value:.2f}" for name, value in means.items())


# -- report --------------------------------------------------------------------------------
def _pm(mean: float, std: float) -> str:
    return "" if np.isnan(mean) else f"{100 * mean:+.2f} ± {100 * std:.2f}"


def margin_table(summary: pd.DataFrame) -> str:
    """Rows (method, selector); per rate the margin over random, points (mean ± std)."""
    rates = sorted(summary["prune_rate"].unique())
    lines = [
        "| method | selector | " + " | ".join(f"{100 * r:g}% pruned" for r in rates) + " |",
        "|---|---" + "|---" * len(rates) + "|",
    ]
    for (method, selector), group in summary.groupby(["method", "selector"], sort=False):
        by_rate = group.set_index("prune_rate")
        cells = []
        for rate in rates:
            if rate not in by_rate.index:
                cells.append("")
                continue
            row = by_rate.loc[rate]
            if method == REFERENCE and selector == RANDOM:
                cells.append(f"{100 * row['mean']:.2f}% ± {100 * row['std']:.2f} (accuracy)")
            else:
                cells.append(_pm(row["margin"], row["margin_std"]))
        lines.append(f"| {method} | {selector} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_new_table(summary: pd.DataFrame) -> str:
    """Per rate: the best new selector, its margin over random and over the best reference."""
    lines = [
        "| pruned | best new (method: selector) | margin over random | best reference "
        "| its margin | new - reference (paired) |",
        "|---|---|---|---|---|---|",
    ]
    new = summary[summary["method"] != REFERENCE]
    reference = summary[summary["method"] == REFERENCE]
    for rate in sorted(summary["prune_rate"].unique()):
        at = new[new["prune_rate"] == rate]
        if at.empty:
            continue
        best = at.sort_values(["mean", "selector"], ascending=[False, True]).iloc[0]
        ref = reference[
            (reference["prune_rate"] == rate) & (reference["selector"] == best["best_reference"])
        ]
        ref_margin = _pm(ref["margin"].item(), ref["margin_std"].item()) if len(ref) else ""
        lines.append(
            f"| {100 * rate:g}% | {best['method']}: {best['selector']} | "
            f"{_pm(best['margin'], best['margin_std'])} | {best['best_reference']} | "
            f"{ref_margin} | {_pm(best['vs_best_reference'], best['vs_best_reference_std'])} |"
        )
    return "\n".join(lines)


def full_table(results: pd.DataFrame) -> str:
    full = results[results["selector"] == "full"]
    lines = ["| dataset | noise | method | full-data accuracy % |", "|---|---|---|---|"]
    for (dataset, noise, method), group in full.groupby(
        ["dataset", "label_noise", "method"], sort=False
    ):
        if method != REFERENCE and not has_options(str(method)):
            continue
        acc = group["accuracy"]
        title = DATASETS[dataset].title if dataset in DATASETS else dataset
        lines.append(
            f"| {title} | {noise:g} | {method} | {100 * acc.mean():.2f} ± {100 * _std(acc):.2f} |"
        )
    return "\n".join(lines)


def report(
    results: pd.DataFrame,
    summary: pd.DataFrame,
    timings: list[dict[str, Any]],
    skipped: dict[str, str],
    quick: bool,
    total: float,
) -> str:
    """The Markdown section written to ``benchmarks/results/eval_methods.md``."""
    seeds = int(results["seed"].nunique())
    lines = [
        f"## New selection methods in the eval grids{' (quick scale)' if quick else ''}",
        "",
        f"{seeds} seeds; test accuracy of the grid's downstream model, the same number of "
        "steps on every subset. Each cell: the paired difference against random at the same "
        "rate and seed (the reference eval's random), in points, mean ± std over seeds; "
        "random's own row gives its accuracy. Every method is an eval of its own on the same "
        "splits, scores and seeds, the downstream learning rate and weight decay chosen once by "
        f"the reference eval. This invocation: {total / 60:.1f} min on {os.cpu_count()} cores.",
        "",
        "Methods measured:",
        "",
    ]
    measured = [m for m in METHODS if m in set(results["method"])]
    lines += [f"- `{m}`: {METHODS[m].about}" for m in measured]
    if skipped:
        lines += ["", "Not measured (not in this checkout):", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
    for (dataset, noise), part in summary.groupby(["dataset", "label_noise"], sort=False):
        title = DATASETS[dataset].title
        lines += [
            "",
            f"### {title}, {'clean labels' if noise == 0 else f'{100 * noise:g}% labels flipped'}",
            "",
            margin_table(part),
            "",
            best_new_table(part),
        ]
    lines += ["", "### Full-data models", "", full_table(results)]
    for method in measured:
        if method != REFERENCE and has_options(method):
            found = rankings(results, method)
            if found:
                lines += ["", f"### Rankings with and without `{method}`", "", *found]
    mismatch = random_mismatch(results)
    if not mismatch.empty:
        worst = float(mismatch["max_abs"].max())
        lines += [
            "",
            f"Random in the methods' own evals against the reference's: largest difference "
            f"{100 * worst:.4f} points over {int(mismatch['models'].sum())} models "
            f"({'the same models' if worst == 0 else 'NOT the same models'}).",
        ]
    lines += [
        "",
        "### Timings",
        "",
        "Minutes per eval: its longest run (a resumed run only does what was left).",
        "",
        "| dataset | noise | method | models | minutes |",
    ]
    lines += ["|---|---|---|---|---|"]
    lines += [
        f"| {t['dataset']} | {t['noise']:g} | {t['method']} | {t['models']} | "
        f"{t['seconds'] / 60:.1f} |"
        for t in timings
    ]
    return "\n".join(lines)


def eval_time(work: Path, root: Path, seconds: float, fresh: bool) -> float:
    """The longest time recorded for the eval at ``root`` (this run's with ``fresh``).

    A resumed eval takes only the time of what was left; ``work/timings.json``
    keeps the time of the run that did the work.
    """
    import json

    path = work / "timings.json"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    key = str(root.relative_to(work)) if root.is_relative_to(work) else str(root)
    stored[key] = seconds if fresh else max(seconds, float(stored.get(key, 0.0)))
    path.write_text(json.dumps(stored, indent=1, sort_keys=True), encoding="utf-8")
    return float(stored[key])


def run_grid(
    datasets: list[str],
    methods: list[str],
    noises: list[float],
    work: Path,
    quick: bool,
    fresh: bool,
    grid: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, str]]:
    """Run (or resume) every eval; model rows of all, their timings, and the skipped methods."""
    from thresher.evaluation.flow import evaluate_with_runner
    from thresher.evaluation.result import load_evaluation

    frames, timings, skipped = [], [], {}
    for key in datasets:
        dataset = DATASETS[key]
        data = dataset.module.prepare_data(work / key, quick)
        for noise in noises:
            model: dict[str, float] | None = None
            for name in methods:
                # every eval after the reference trains with the reference's chosen settings
                config, reason = build(
                    dataset, METHODS[name], data, work, noise, quick, model, grid
                )
                if config is None:
                    skipped[name] = reason or "unknown"
                    print(f"skipped {name} on {key}: {reason}", flush=True)
                    continue
                begun = time.perf_counter()
                evaluate_with_runner(config, fresh=fresh, quiet=True)
                seconds = time.perf_counter() - begun
                evaluation = load_evaluation(config.root)
                record = evaluation.record
                if name == REFERENCE:
                    model = {
                        "lr": record["model"]["lr"],
                        "weight_decay": record["model"]["weight_decay"],
                    }
                frames.append(evaluation.results.assign(dataset=key, method=name))
                timings.append(
                    {
                        "dataset": key,
                        "noise": noise,
                        "method": name,
                        "models": int(record["models"]),
                        "seconds": eval_time(work, config.root, seconds, fresh),
                    }
                )
                print(
                    f"{key} noise {noise:g} {name}: {record['models']} models in "
                    f"{seconds / 60:.1f} min, stages {record['seconds_per_stage']}",
                    flush=True,
                )
    return pd.concat(frames, ignore_index=True), timings, skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="development scale")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-eval-methods")
    parser.add_argument(
        "--methods", default="all", help=f"comma-separated, or all: {', '.join(METHODS)}"
    )
    parser.add_argument("--datasets", default="fashion,debian", help="fashion, debian")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--fresh", action="store_true", help="discard earlier runs in --work")
    parser.add_argument("--seeds", type=int, help="seeds per (selector, rate); default by scale")
    parser.add_argument("--rates", type=float, nargs="+", help="fractions pruned; default by scale")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    methods, datasets = choose_methods(args.methods), choose_datasets(args.datasets)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    started = time.perf_counter()
    work = args.work.resolve()
    grid = {key: value for key, value in (("seeds", args.seeds), ("rates", args.rates)) if value}
    results, timings, skipped = run_grid(
        datasets, methods, args.noise, work, quick, args.fresh, grid
    )
    summary = margins(results)
    total = time.perf_counter() - started

    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    first = ["dataset", "method"]
    results[first + [c for c in results.columns if c not in first]].to_csv(
        RESULTS / f"{NAME}{suffix}.csv", index=False
    )
    summary.to_csv(RESULTS / f"{NAME}{suffix}_summary.csv", index=False)
    text = report(results, summary, timings, skipped, quick, total)
    (RESULTS / f"{NAME}{suffix}.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
