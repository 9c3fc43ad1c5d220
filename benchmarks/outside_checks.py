"""Three of thresher's selection methods against their outside references, on synthetic data.

1. **Influence against captum.** thresher's ``influence`` scorer (TracIn-CP on
   the proxy's last layer, projection off) and captum 0.9.0's
   ``TracInCPFast`` (``final_fc_layer`` = the proxy's output layer,
   ``CrossEntropyLoss(reduction="sum")``, so per-row gradients) read the same
   proxy checkpoints, each weighted by the learning rate ``proxy.json``
   records for its epoch. Two documented differences are aligned, not
   hidden:

   - *bias*: thresher's last-layer gradient is that of the weights **and the
     bias** (``g (x) [h, 1]``); ``TracInCPFast`` takes the layer's input ``h``
     only (the weights' gradient). The aligned run gives captum a copy of the
     proxy whose output layer has the bias folded into the weights (input
     ``[h, 1]``, no bias term): the same function, and captum's layer
     gradient is then thresher's. The plain run (bias left out) is reported
     too: captum's score is then ``sum_i lr_i ||g_i||^2 ||h_i||^2`` where
     thresher's is ``sum_i lr_i ||g_i||^2 (||h_i||^2 + 1)``.
   - *seeds*: thresher sums over the epochs and **averages over the
     proxy's seeds**; captum sums over every checkpoint it is given, so its
     scores are divided by ``n_seeds``.

   Compared per training row: self-influence (Spearman, maximum relative
   error) and influence on a target set (thresher's ``influence_target``, the
   mean influence on the target rows, against the mean over the rows of
   captum's ``influence`` matrix; error relative to the largest magnitude).
   captum runs in float32 (the usual setting) and in float64; thresher
   computes in float64 and rounds its scores to float32 precision.
   Data: Gaussian classes in ``--influence-width`` dimensions with 10% of
   labels flipped, and a separate target set of 200 clean rows.

2. **SemDeDup against the authors' rule** (facebookresearch/SemDeDup,
   ``semdedup.py`` and ``clustering/sort_clusters.py``): within each
   cluster, rows sorted by cosine distance to the centroid, farthest first
   (``keep_hard``; Python's stable sort keeps ties in row order); ``M[j]`` =
   the largest of 0 and the cosine similarities of row ``j`` to every
   *earlier* row (the upper triangle of the similarity matrix); a row goes at
   ``eps`` when ``M > 1 - eps``, whether or not the earlier row stays.
   Implemented here by brute force in float64 on the clusters thresher's
   selectors fit (their public ``cluster`` step, same seed; checked against
   the clusters the selections report). For each ``eps``:

   - thresher's ``semdedup`` filter drops a row only when it is similar to
     a *kept* earlier row, so it keeps a superset of the authors' rows; the
     extra rows are counted;
   - ``semdedup_rank`` keeps the rows of smallest redundancy (largest
     similarity to any earlier row of the cluster, the authors' ``M`` where
     that is positive). "It drops rows in the order of the authors' eps"
     means: at the budget equal to the authors' kept count at ``eps`` it
     keeps exactly the authors' kept set, for every ``eps``; a row leaves
     the ranking in decreasing ``M``, i.e. at the smallest authors' ``eps``
     first.

   Data: clustered unit vectors with planted chains of near-duplicates
   (consecutive links closer than far ends, so that "against earlier rows"
   and "against kept rows" differ).

3. **CCS stratum budgets against the authors' ``bin_allocate``**
   (haizhongzheng/Coverage-centric-coreset-selection,
   ``core/data/Coreset.py``, ``stratified_sampling``): 50 strata from
   ``min`` to ``max * 1.0001``, counted with ``start <= s < end``, then the
   budget loop (``torch.argsort`` of the counts, smallest first; each takes
   ``min(size, remaining // strata left)``). Compared with the strata that
   thresher's ``ccs`` selector reports (``details["strata"]``), on the same
   scores and budget (``beta = 0``): once with the authors' edges and once
   with the loop run on thresher's stratum sizes (which isolates the budget
   rule). Scores: positive (a skewed EL2N-like mixture) and shifted
   negative (where the authors' top edge ``max * 1.0001`` falls below the
   maximum).

Record size (about a minute on one core)::

    python -m benchmarks.outside_checks

Quick (seconds)::

    python -m benchmarks.outside_checks --quick      # or THRESHER_BENCH_QUICK=1

captum comes from the benchmark-only extra ``bench-influence``; without it
check 1 is reported as not run. The record-size output is written to
``benchmarks/results/outside_checks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

RESULTS = Path(__file__).parent / "results" / "outside_checks.md"

# -- shared helpers -----------------------------------------------------------------------


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of ``values``, ties sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson on average ranks)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))


# -- 1. influence against captum ----------------------------------------------------------

INFLUENCE_PROXY = {
    "features": {"source": "features"},
    "hidden": 32,
    "epochs": 4,
    "n_seeds": 2,
    "batch_size": 64,
    "lr": 0.05,
    "weight_decay": 5e-4,
}
N_TARGET = 200


def labelled_vectors(
    n: int, width: int, n_classes: int, flip: float, seed: int
) -> tuple[pa.Table, np.ndarray]:
    """Rows of Gaussian classes (canonical columns) and which labels were flipped."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.5, size=(n_classes, width))
    truth = rng.integers(0, n_classes, size=n)
    x = means[truth] + rng.normal(size=(n, width))
    flipped = rng.random(n) < flip
    labels = np.where(flipped, (truth + rng.integers(1, n_classes, size=n)) % n_classes, truth)
    table = pa.table(
        {
            "id": [f"r{i:06d}" for i in range(n)],
            "features": pa.array(x.astype(np.float32).tolist(), pa.list_(pa.float32())),
            "label": [f"c{label}" for label in labels],
            "thresher_shard": pa.array(np.zeros(n, dtype=np.int32)),
            "thresher_row": pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    return table, flipped


def _fit_context(table: pa.Table, artifact_dir: Path, seed: int = 0) -> Any:
    from thresher.fitting import FitContext

    return FitContext.of_table(table, artifact_dir, seed)


def _captum_model(metadata: dict[str, Any], fold_bias: bool, dtype: Any) -> Any:
    """The proxy as a torch module; ``fold_bias``: output layer on ``[h, 1]`` without bias."""
    import torch

    width, hidden, n_classes = (
        int(metadata["input_dim"]),
        int(metadata["hidden"]),
        len(metadata["classes"]),
    )

    class Proxy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            inner = hidden or width
            self.hidden = torch.nn.Linear(width, hidden) if hidden else None
            self.out = torch.nn.Linear(inner + int(fold_bias), n_classes, bias=not fold_bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.hidden(x)) if self.hidden is not None else x
            if fold_bias:
                h = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)
            return self.out(h)

    return Proxy().to(dtype)


def _checkpoint_loader(fold_bias: bool, lr_by_epoch: list[float]) -> Any:
    """captum's ``checkpoints_load_func``: load one proxy checkpoint, return its learning rate."""
    import torch

    from thresher.models._safe import load_safetensors

    def load(model: torch.nn.Module, path: str) -> float:
        arrays = load_safetensors(Path(path))
        dtype = next(model.parameters()).dtype
        state = {name: torch.from_numpy(np.asarray(a)).to(dtype) for name, a in arrays.items()}
        if fold_bias:
            weight, bias = state.pop("out.weight"), state.pop("out.bias")
            state["out.weight"] = torch.cat([weight, bias[:, None]], dim=1)
        model.load_state_dict(state)
        epoch = int(Path(path).stem.split("-")[1])
        return float(lr_by_epoch[epoch - 1])

    return load


def run_captum(
    proxy_dir: Path,
    x: np.ndarray,
    y: np.ndarray,
    x_target: np.ndarray,
    y_target: np.ndarray,
    fold_bias: bool,
    dtype: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """captum's TracInCPFast on the proxy's checkpoints: self-influence and mean target influence.

    Both summed over every (seed, epoch) checkpoint (captum's definition).
    """
    import torch
    from captum.influence import TracInCPFast
    from torch.utils.data import DataLoader, TensorDataset

    metadata = json.loads((proxy_dir / "proxy.json").read_text())
    checkpoints = [
        str(proxy_dir / f"seed-{s}" / f"epoch-{e:03d}.safetensors")
        for s in range(int(metadata["n_seeds"]))
        for e in range(1, int(metadata["epochs"]) + 1)
    ]
    model = _captum_model(metadata, fold_bias, dtype)
    tensors = (torch.from_numpy(x).to(dtype), torch.from_numpy(y))
    loader = DataLoader(TensorDataset(*tensors), batch_size=512, shuffle=False)
    tracin = TracInCPFast(
        model,
        final_fc_layer=model.out,
        train_dataset=loader,
        checkpoints=checkpoints,
        checkpoints_load_func=_checkpoint_loader(fold_bias, list(metadata["lr"])),
        loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
        batch_size=512,
    )
    self_influence = tracin.self_influence(loader).detach().double().numpy()
    target = (torch.from_numpy(x_target).to(dtype), torch.from_numpy(y_target))
    matrix = tracin.influence(target).detach().double().numpy()  # (n_target, n_train)
    return self_influence, matrix.mean(axis=0)


def check_influence(n: int, width: int, seed: int = 0) -> dict[str, Any]:
    """thresher's ``influence`` scorer against captum's TracInCPFast (see module docstring)."""
    import pyarrow.parquet as pq
    import torch

    from thresher.models.proxy import ProxyModel
    from thresher.scorers import make_scorer
    from thresher.scorers.influence import InfluenceScorer

    table, flipped = labelled_vectors(n + N_TARGET, width, 3, 0.1, seed)
    train, target = table.slice(0, n), table.slice(n)
    clean = ~flipped[n:]
    target = target.filter(pa.array(clean))
    with tempfile.TemporaryDirectory(prefix="thresher-outside-") as tmp:
        work = Path(tmp)
        target_file = work / "target.parquet"
        pq.write_table(target.select(["features", "label"]), target_file)
        scorer = make_scorer(
            "influence",
            {
                "proxy": INFLUENCE_PROXY,
                "projection_dim": None,
                "target_file": str(target_file),
                "device": "cpu",
            },
        )
        assert isinstance(scorer, InfluenceScorer)
        started = time.perf_counter()
        scorer.fit(_fit_context(train, work / "models" / "influence", seed))
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        batch = pa.RecordBatch.from_arrays(
            [train.column(c).combine_chunks() for c in scorer.input_columns],
            names=list(scorer.input_columns),
        )
        result = scorer.score(batch)
        ours_self = result.field(0).to_numpy()
        ours_target = result.field(1).to_numpy()
        ours_s = time.perf_counter() - started

        proxy_dir = Path(scorer.proxy_path_)
        model = ProxyModel.load(proxy_dir)
        x = model.features(train).numpy()
        y = model.label_indices(train.column("label"))
        x_target = model.features(target).numpy()
        y_target = model.label_indices(target.column("label"))
        n_seeds, lrs = model.n_seeds, sorted({c.lr for c in model.checkpoints})
        runs: dict[str, dict[str, Any]] = {}
        for name, fold, dtype in (
            ("aligned, float32", True, torch.float32),
            ("aligned, float64", True, torch.float64),
            ("bias left out, float32", False, torch.float32),
        ):
            started = time.perf_counter()
            theirs_self, theirs_target = run_captum(
                proxy_dir, x, y, x_target, y_target, fold, dtype
            )
            wall = time.perf_counter() - started
            theirs_self, theirs_target = theirs_self / n_seeds, theirs_target / n_seeds
            runs[name] = {
                "wall_s": wall,
                "self_spearman": spearman(ours_self, theirs_self),
                "self_max_rel_error": float(np.max(np.abs(ours_self - theirs_self) / theirs_self)),
                "self_median_ratio": float(np.median(ours_self / theirs_self)),
                "target_spearman": spearman(ours_target, theirs_target),
                "target_max_error_over_scale": float(
                    np.max(np.abs(ours_target - theirs_target)) / np.max(np.abs(theirs_target))
                ),
                "target_sign_agreement": float(
                    np.mean(np.sign(ours_target) == np.sign(theirs_target))
                ),
            }
    return {
        "n": n,
        "width": width,
        "n_target": target.num_rows,
        "checkpoints": len(model.checkpoints),
        "n_seeds": n_seeds,
        "epochs": model.epochs,
        "hidden": model.hidden,
        "learning_rates": lrs,
        "thresher_fit_s": fit_s,
        "thresher_score_s": ours_s,
        "runs": runs,
    }


# -- 2. SemDeDup against the authors' rule ------------------------------------------------

EPS_LIST = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def chained_embeddings(n_base: int, dim: int, n_chains: int, seed: int) -> np.ndarray:
    """Clustered vectors plus chains of near-duplicates, shuffled (rows, float32).

    Each chain starts at a base row and walks in small steps, so consecutive
    links are more similar than the chain's ends.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    base = centres[rng.integers(0, 8, size=n_base)] + 0.9 * rng.normal(size=(n_base, dim))
    rows = [base]
    for start in rng.choice(n_base, size=n_chains, replace=False):
        length = int(rng.integers(2, 6))
        step = rng.uniform(0.04, 0.25) * np.linalg.norm(base[start]) / np.sqrt(dim)
        walk = base[start] + np.cumsum(step * rng.normal(size=(length, dim)), axis=0)
        rows.append(walk)
    matrix = np.concatenate(rows)
    return matrix[rng.permutation(matrix.shape[0])].astype(np.float32)


def authors_semdedup(unit: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The authors' ``M`` per row: max(0, largest cosine similarity to an earlier row).

    Earlier: in the cluster sorted by cosine distance to its centroid,
    descending (keep_hard), ties in row order. Brute force in float64.
    """
    rows = unit.astype(np.float64)
    cent = centroids.astype(np.float64)
    cent = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-300)
    distance = 1.0 - np.einsum("ij,ij->i", rows, cent[labels])
    m = np.zeros(rows.shape[0])
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        order = sorted(members.tolist(), key=lambda i: distance[i], reverse=True)
        reps = rows[order]
        sims = reps @ reps.T
        np.fill_diagonal(sims, 0.0)
        m[order] = np.triu(sims, k=1).max(axis=0)
    return m


def kept_rows_rule(
    unit: np.ndarray, labels: np.ndarray, centroids: np.ndarray, eps: float
) -> np.ndarray:
    """thresher's documented filter rule by brute force: drop against earlier *kept* rows.

    Same order as :func:`authors_semdedup`; returns the kept row indices, sorted.
    """
    rows = unit.astype(np.float64)
    cent = centroids.astype(np.float64)
    cent = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-300)
    distance = 1.0 - np.einsum("ij,ij->i", rows, cent[labels])
    kept: list[int] = []
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        chosen: list[int] = []
        for i in sorted(members.tolist(), key=lambda i: distance[i], reverse=True):
            if not chosen or np.max(rows[chosen] @ rows[i]) <= 1.0 - eps:
                chosen.append(i)
        kept += chosen
    return np.sort(np.asarray(kept, dtype=np.int64))


def check_semdedup(
    n_base: int, n_chains: int, dim: int, n_clusters: int, seed: int = 0
) -> dict[str, Any]:
    """thresher's ``semdedup`` and ``semdedup_rank`` against the authors' rule, per eps."""
    from thresher.selectors import make_selector
    from thresher.selectors.base import check_random_state
    from thresher.selectors.semdedup import SemDeDupRankSelector

    matrix = chained_embeddings(n_base, dim, n_chains, seed)
    n = matrix.shape[0]
    scores = pa.table({"id": np.arange(n)})
    params: dict[str, Any] = {"n_clusters": n_clusters, "n_iter": 20}
    # the clusters the selectors fit: their public clustering step with the same Generator
    unit, clustering = SemDeDupRankSelector(**params).cluster(matrix, check_random_state(seed))
    started = time.perf_counter()
    m = authors_semdedup(unit, clustering.labels, clustering.centroids)
    reference_s = time.perf_counter() - started
    rows = []
    same_clusters = True
    for eps in EPS_LIST:
        authors_kept = np.flatnonzero(~(m > 1.0 - eps))
        started = time.perf_counter()
        ours = make_selector("semdedup", {**params, "eps": eps}).select(
            scores, matrix, None, random_state=seed
        )
        filter_s = time.perf_counter() - started
        ranked = make_selector("semdedup_rank", params).select(
            scores, matrix, int(authors_kept.size), random_state=seed
        )
        same_clusters &= bool(
            np.array_equal(ours.groups, clustering.labels[ours.indices])
            and np.array_equal(ranked.groups, clustering.labels[ranked.indices])
        )
        filter_kept = np.sort(ours.indices)
        rank_kept = np.sort(ranked.indices)
        greedy = kept_rows_rule(unit, clustering.labels, clustering.centroids, eps)
        rows.append(
            {
                "eps": eps,
                "authors_kept": int(authors_kept.size),
                "filter_kept": int(filter_kept.size),
                "filter_extra": int(filter_kept.size - authors_kept.size),
                "filter_superset": bool(np.isin(authors_kept, filter_kept).all()),
                "filter_equal": bool(np.array_equal(filter_kept, authors_kept)),
                "filter_is_kept_rows_rule": bool(np.array_equal(filter_kept, greedy)),
                "rank_equal": bool(np.array_equal(rank_kept, authors_kept)),
                "filter_s": filter_s,
            }
        )
    return {
        "n": n,
        "dim": dim,
        "n_clusters": n_clusters,
        "n_chains": n_chains,
        "same_clusters": same_clusters,
        "reference_s": reference_s,
        "rows": rows,
    }


# -- 3. CCS stratum budgets against the authors' bin_allocate ------------------------------

AUTHORS_STRATA = 50


def authors_strata(scores: np.ndarray, n_strata: int = AUTHORS_STRATA) -> np.ndarray:
    """Rows per stratum as ``stratified_sampling`` counts them (edges ``min`` .. ``max * 1.0001``)."""
    import torch

    score = torch.from_numpy(np.asarray(scores, dtype=np.float64))
    low, high = torch.min(score), torch.max(score) * 1.0001
    step = (high - low) / n_strata
    counts = []
    for k in range(n_strata):
        start, end = low + k * step, low + (k + 1) * step
        counts.append(int(torch.logical_and(score >= start, score < end).sum()))
    return np.asarray(counts, dtype=np.int64)


def bin_allocate(num: int, bins: np.ndarray) -> np.ndarray:
    """The authors' budget loop, as written (``torch.argsort``, smallest stratum first)."""
    import torch

    bins_t = torch.from_numpy(np.asarray(bins, dtype=np.int64))
    sorted_index = torch.argsort(bins_t)
    sort_bins = bins_t[sorted_index]
    rest = int(num)
    budgets = []
    for i in range(bins_t.shape[0]):
        avg = rest // (bins_t.shape[0] - i)
        current = min(int(sort_bins[i].item()), avg)
        budgets.append(current)
        rest -= current
    out = torch.zeros(bins_t.shape[0], dtype=torch.int64)
    out[sorted_index] = torch.tensor(budgets, dtype=torch.int64)
    return out.numpy()


def skewed_scores(n: int, seed: int) -> np.ndarray:
    """An EL2N-like mixture: most rows easy (near 0), a long tail of hard ones."""
    rng = np.random.default_rng(seed)
    easy = rng.gamma(1.5, 0.08, size=n)
    hard = rng.uniform(0.2, 1.4, size=n)
    return np.where(rng.random(n) < 0.8, easy, hard)


def check_ccs(n: int, fractions: tuple[float, ...], seed: int = 0) -> dict[str, Any]:
    """thresher's ``ccs`` strata and budgets against ``bin_allocate``, per score set and budget."""
    from thresher.selectors import make_selector

    base = skewed_scores(n, seed)
    cases = []
    for kind, values in (("positive", base), ("negative (shifted by -2)", base - 2.0)):
        authors_sizes = authors_strata(values)
        for fraction in fractions:
            budget = round(fraction * n)
            selection = make_selector("ccs", {"score": "s", "n_strata": AUTHORS_STRATA}).select(
                pa.table({"s": values}), None, budget, random_state=seed
            )
            strata = selection.details["strata"]
            ours_sizes = np.asarray([s["size"] for s in strata], dtype=np.int64)
            ours_budgets = np.asarray([s["selected"] for s in strata], dtype=np.int64)
            authors_budgets = bin_allocate(budget, authors_sizes)
            on_ours = bin_allocate(budget, ours_sizes)
            differ = np.flatnonzero(
                (authors_sizes != ours_sizes) | (authors_budgets != ours_budgets)
            )
            cases.append(
                {
                    "scores": kind,
                    "budget": budget,
                    "kept": len(selection),
                    "authors_kept": int(authors_budgets.sum()),
                    "authors_rows_in_strata": int(authors_sizes.sum()),
                    "sizes_equal": bool(np.array_equal(authors_sizes, ours_sizes)),
                    "budgets_equal": bool(np.array_equal(authors_budgets, ours_budgets)),
                    "loop_on_our_sizes_equal": bool(np.array_equal(on_ours, ours_budgets)),
                    "differences": [
                        {
                            "stratum": int(s),
                            "ours": (int(ours_sizes[s]), int(ours_budgets[s])),
                            "authors": (int(authors_sizes[s]), int(authors_budgets[s])),
                        }
                        for s in differ
                    ],
                    "ours_budgets": ours_budgets.tolist(),
                }
            )
    return {"n": n, "n_strata": AUTHORS_STRATA, "cases": cases}


# -- report -------------------------------------------------------------------------------


def report(influence: dict[str, Any] | str, semdedup: dict[str, Any], ccs: dict[str, Any]) -> str:
    lines = ["# thresher's selection methods against outside references", ""]
    lines += ["## 1. Influence (TracIn-CP) against captum 0.9.0 `TracInCPFast`", ""]
    if isinstance(influence, str):
        lines += [f"Not run: {influence}", ""]
    else:
        i = influence
        lines += [
            f"{i['n']:,} training rows, {i['width']} features, 3 classes (10% labels flipped), "
            f"{i['n_target']} clean target rows; proxy: hidden {i['hidden']}, {i['epochs']} "
            f"epochs x {i['n_seeds']} seeds = {i['checkpoints']} checkpoints, learning rate "
            f"{', '.join(f'{lr:g}' for lr in i['learning_rates'])} (constant); projection off. "
            f"captum's sums are divided by n_seeds = {i['n_seeds']} (thresher averages seeds). "
            f"thresher: fit {i['thresher_fit_s']:.1f} s, score {i['thresher_score_s']:.2f} s.",
            "",
            "| captum run | self: Spearman | self: max rel. error | self: median thresher/captum "
            "| target: Spearman | target: max abs. error / max abs. | target: same sign | wall s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in i["runs"].items():
            lines.append(
                f"| {name} | {r['self_spearman']:.6f} | {r['self_max_rel_error']:.2e} | "
                f"{r['self_median_ratio']:.4f} | {r['target_spearman']:.6f} | "
                f"{r['target_max_error_over_scale']:.2e} | {r['target_sign_agreement']:.4f} | "
                f"{r['wall_s']:.2f} |"
            )
        lines += [
            "",
            "Aligned: captum's output layer takes `[h, 1]` with the bias folded into its "
            "weights, so its last-layer gradient is thresher's (weights and bias). Bias left "
            "out: captum's `TracInCPFast` as usually called, whose gradient is the weights' "
            "only; thresher's self-influence is then larger by `sum_i lr_i ||g_i||^2` per row.",
            "",
        ]
    s = semdedup
    lines += [
        "## 2. SemDeDup against the authors' rule (facebookresearch/SemDeDup)",
        "",
        f"{s['n']:,} rows ({s['n_chains']} planted near-duplicate chains), {s['dim']} "
        f"dimensions, {s['n_clusters']} clusters (thresher's spherical k-means, same seed"
        f"{'' if s['same_clusters'] else '; CLUSTERS DIFFER'}); authors' rule by brute force "
        f"in float64 ({s['reference_s']:.2f} s).",
        "",
        "| eps | authors keep | `semdedup` keeps | extra rows kept | superset | equal "
        "| `semdedup` = kept-rows rule | `semdedup_rank` at the authors' count = authors' set |",
        "|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['eps']:g} | {r['authors_kept']:,} | {r['filter_kept']:,} | "
            f"{r['filter_extra']:,} ({100 * r['filter_extra'] / s['n']:.2f}% of rows) | "
            f"{'yes' if r['filter_superset'] else 'NO'} | {'yes' if r['filter_equal'] else 'no'} | "
            f"{'yes' if r['filter_is_kept_rows_rule'] else 'NO'} | "
            f"{'yes' if r['rank_equal'] else 'NO'} |"
        )
    lines += [
        "",
        "`semdedup` drops a row only against an earlier *kept* row; the authors drop it "
        "against any earlier row, so a chain A ~ B ~ C (A and C apart) loses B and C there "
        "and only B in `semdedup`. The kept-rows rule column is that rule written out by "
        "brute force (thresher's documented filter). `semdedup_rank` ranks by the authors' "
        "`M` and keeps exactly the authors' set at every eps.",
        "",
        "## 3. CCS stratum budgets against the authors' `bin_allocate` (Coreset.py)",
        "",
        f"{ccs['n']:,} scores, {ccs['n_strata']} strata, beta = 0.",
        "",
        "| scores | budget | thresher keeps | authors keep | authors' rows in strata "
        "| sizes equal | budgets equal | loop on thresher's sizes equal |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for c in ccs["cases"]:
        lines.append(
            f"| {c['scores']} | {c['budget']:,} | {c['kept']:,} | {c['authors_kept']:,} | "
            f"{c['authors_rows_in_strata']:,} | {'yes' if c['sizes_equal'] else 'no'} | "
            f"{'yes' if c['budgets_equal'] else 'no'} | "
            f"{'yes' if c['loop_on_our_sizes_equal'] else 'NO'} |"
        )
    lines += [
        "",
        "The budget loop is the same rule: run on thresher's stratum sizes, `bin_allocate` "
        "gives thresher's budgets in every case, and it always spends the whole budget (so "
        "thresher's pass for budget left by rounding never adds a row for a row budget). "
        "Where sizes differ, the edges do: the authors' top edge is `max * 1.0001`, which "
        "for negative scores lies below the maximum (the rows at the maximum fall in no "
        "stratum: authors' rows in strata < n) and changes the strata width, moving rows "
        "near an edge to the next stratum; each budget difference follows from those sizes.",
    ]
    for c in ccs["cases"]:
        if c["differences"]:
            shown = "; ".join(
                f"stratum {d['stratum']}: thresher size/budget {d['ours'][0]}/{d['ours'][1]}, "
                f"authors {d['authors'][0]}/{d['authors'][1]}"
                for d in c["differences"][:6]
            )
            more = len(c["differences"]) - 6
            lines.append(
                f"\n{c['scores']}, budget {c['budget']:,}: {shown}"
                + (f" (and {more} more)" if more > 0 else "")
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--influence-rows", type=int, default=None)
    parser.add_argument("--influence-width", type=int, default=16)
    parser.add_argument("--semdedup-rows", type=int, default=None)
    parser.add_argument("--ccs-rows", type=int, default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or bool(os.environ.get("THRESHER_BENCH_QUICK"))
    record = not quick and all(
        v is None for v in (args.influence_rows, args.semdedup_rows, args.ccs_rows)
    )
    n_influence = args.influence_rows or (300 if quick else 2_000)
    n_semdedup = args.semdedup_rows or (400 if quick else 4_000)
    n_ccs = args.ccs_rows or (2_000 if quick else 20_000)

    influence: dict[str, Any] | str
    try:
        import captum  # noqa: F401
    except ImportError:
        influence = "captum is not installed (pip install -e '.[bench-influence]')"
    else:
        print("influence against captum...", file=sys.stderr, flush=True)
        influence = check_influence(n_influence, args.influence_width)
    print("semdedup against the authors' rule...", file=sys.stderr, flush=True)
    semdedup = check_semdedup(n_semdedup, max(4, n_semdedup // 20), 32, max(2, n_semdedup // 200))
    print("ccs against bin_allocate...", file=sys.stderr, flush=True)
    ccs = check_ccs(n_ccs, (0.01, 0.1, 0.3, 0.5, 0.9))
    text = report(influence, semdedup, ccs)
    print(text)
    if record:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
