"""thresher's ``label_issues`` scorer against cleanlab, and against the other mislabel scores.

1. **The flagged set against cleanlab 2.9.0.** thresher fits ``label_issues``
   (out-of-fold probabilities of the proxy, ``n_folds`` folds) and saves the
   probabilities it flagged from (``out_of_fold.parquet``). cleanlab's
   ``filter.find_label_issues(labels, pred_probs)`` with its defaults
   (``filter_by="prune_by_noise_rate"``) runs on exactly those
   probabilities; the two flagged sets are compared row by row, and every
   difference is listed.
2. **Finding flipped labels.** 20% of the labels are moved to another class
   at random; AUROC for "this label was flipped" of: label_issues'
   self-confidence (low first), AUM (low first) and forgetting counts (high
   first) from the ``el2n`` scorer, and TracIn self-influence (high first)
   from the ``influence`` scorer, all on the same rows and proxy settings;
   the flag's precision and recall too.

Data (offline): scikit-learn's bundled digits (1,797 rows, 64 pixels, 10
classes), and Gaussian blobs (3,000 rows, 10 overlapping classes in 16
dimensions). Features go to the proxy as the ``features`` column
(standardised). ``--quick`` runs a few hundred rows and records nothing.
Results: ``benchmarks/results/label_issues.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

RESULTS = Path(__file__).parent / "results" / "label_issues.md"
NOISE = 0.2
#: One proxy for every scorer here (the el2n and influence scorers share its training).
PROXY: dict[str, Any] = {
    "features": {"source": "features"},
    "hidden": 64,
    "epochs": 8,
    "n_seeds": 2,
    "batch_size": 32,
}


def flipped_labels(
    truth: NDArray[np.int64], n_classes: int, noise: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """``noise`` of the labels moved to another class, uniformly; and which ones."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(truth.size) < noise
    shift = rng.integers(1, n_classes, truth.size)
    return np.where(flipped, (truth + shift) % n_classes, truth), flipped


def digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, np.float64), np.asarray(data.target, np.int64)


def blobs(n: int, seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 10, n)
    centres = rng.standard_normal((10, 16)) * 0.6
    return centres[truth] + rng.standard_normal((n, 16)), truth.astype(np.int64)


def as_table(x: NDArray[np.float64], labels: NDArray[np.int64]) -> pa.Table:
    n = labels.size
    return pa.table(
        {
            "id": [f"row{i}" for i in range(n)],
            "features": pa.array(x.astype(np.float32).tolist(), pa.list_(pa.float32())),
            "label": [f"c{v}" for v in labels],
            "thresher_shard": pa.array(np.zeros(n, dtype=np.int32)),
            "thresher_row": pa.array(np.arange(n, dtype=np.int64)),
        }
    )


def _fit_context(table: pa.Table, artifact_dir: Path, seed: int = 0) -> Any:
    from thresher.fitting import FitContext

    return FitContext.of_table(table, artifact_dir, seed)


def _scored(name: str, params: dict[str, Any], table: pa.Table, models: Path) -> dict[str, Any]:
    from thresher.scorers import make_scorer

    scorer = make_scorer(name, {**params, "device": "cpu"})
    started = time.perf_counter()
    scorer.fit(_fit_context(table, models / name))
    columns = scorer.input_columns
    batch = pa.RecordBatch.from_arrays(
        [table.column(c).combine_chunks() for c in columns], names=list(columns)
    )
    result = scorer.score(batch)
    fields = [f.name for f in scorer.output_fields(name)]
    values = (
        {fields[0]: result.to_numpy(zero_copy_only=False)}
        if len(fields) == 1
        else {f: result.field(i).to_numpy(zero_copy_only=False) for i, f in enumerate(fields)}
    )
    return {"scorer": scorer, "values": values, "seconds": time.perf_counter() - started}


def compare_with_cleanlab(fit_path: Path) -> dict[str, Any]:
    """cleanlab's flagged set on thresher's out-of-fold probabilities, against thresher's."""
    from cleanlab.filter import find_label_issues

    table = pq.read_table(fit_path / "out_of_fold.parquet")
    labels = table.column("label_index").to_numpy()
    probs = np.asarray(table.column("probs").to_pylist(), dtype=np.float64)
    ours = table.column("flagged").to_numpy(zero_copy_only=False)
    theirs = find_label_issues(labels, probs, n_jobs=1)
    differ = np.flatnonzero(ours != theirs)
    return {
        "n": int(labels.size),
        "thresher": int(ours.sum()),
        "cleanlab": int(theirs.sum()),
        "differences": [
            {
                "row": int(r),
                "label": int(labels[r]),
                "thresher": bool(ours[r]),
                "cleanlab": bool(theirs[r]),
                "probs": [round(float(p), 6) for p in probs[r]],
            }
            for r in differ
        ],
    }


def run_dataset(name: str, x: NDArray[np.float64], truth: NDArray[np.int64]) -> dict[str, Any]:
    """Fit the four scorers on ``x`` with 20% flipped labels; compare and rank."""
    from thresher.models.vector_head import roc_auc

    labels, flipped = flipped_labels(truth, int(truth.max()) + 1, NOISE, seed=1)
    table = as_table(x, labels)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        issues = _scored("label_issues", {"proxy": PROXY}, table, models)
        el2n = _scored("el2n", {"proxy": PROXY, "aum": True, "forgetting": True}, table, models)
        influence = _scored("influence", {"proxy": PROXY, "projection_dim": None}, table, models)
        fit_path = Path(issues["scorer"].fit_path_)
        cleanlab = compare_with_cleanlab(fit_path)
        import json

        meta = json.loads((fit_path / "label_issues.json").read_text())
    flag = issues["values"]["label_issues_flagged"] == 1.0
    aurocs = {
        "label_issues (self-confidence)": roc_auc(-issues["values"]["label_issues"], flipped),
        "AUM": roc_auc(-el2n["values"]["el2n_aum"], flipped),
        "forgetting": roc_auc(el2n["values"]["el2n_forgetting"], flipped),
        "influence (self)": roc_auc(influence["values"]["influence"], flipped),
        "EL2N": roc_auc(el2n["values"]["el2n"], flipped),
    }
    return {
        "name": name,
        "n": int(labels.size),
        "n_flipped": int(flipped.sum()),
        "cleanlab": cleanlab,
        "aurocs": aurocs,
        "flagged": int(flag.sum()),
        "precision": float(flipped[flag].mean()) if flag.any() else None,
        "recall": float(flag[flipped].mean()),
        "oof_accuracy": meta["out_of_fold_accuracy"],
        "seconds": {
            "label_issues": issues["seconds"],
            "el2n": el2n["seconds"],
            "influence": influence["seconds"],
        },
    }


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "# label_issues: confident learning against cleanlab 2.9.0, and other mislabel scores",
        "",
        "Written by `python -m benchmarks label_issues` (see the module docstring). "
        f"{NOISE:.0%} of labels flipped to another class at random; proxy: "
        f"`{PROXY}`, 5 folds.",
        "",
        "## Flagged set: thresher against cleanlab on the same out-of-fold probabilities",
        "",
        "| data | rows | thresher flags | cleanlab flags | rows that differ |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["cleanlab"]
        lines.append(
            f"| {r['name']} | {c['n']:,} | {c['thresher']} | {c['cleanlab']} | "
            f"{len(c['differences'])} |"
        )
    for r in results:
        for d in r["cleanlab"]["differences"]:
            lines.append(f"\n{r['name']}: row {d['row']} differs: {d}")
    lines += [
        "",
        "## AUROC for flipped labels (same rows, same proxy settings)",
        "",
        "| data | rows (flipped) | " + " | ".join(results[0]["aurocs"]) + " |",
        "|---|---:|" + "---:|" * len(results[0]["aurocs"]),
    ]
    for r in results:
        cells = " | ".join(f"{v:.3f}" for v in r["aurocs"].values())
        lines.append(f"| {r['name']} | {r['n']:,} ({r['n_flipped']}) | {cells} |")
    lines += [
        "",
        "## The flag against the flipped rows",
        "",
        "| data | out-of-fold accuracy (given labels) | flagged | precision | recall | fit+score s "
        "(label_issues / el2n / influence) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        s = r["seconds"]
        precision = "n/a" if r["precision"] is None else f"{r['precision']:.3f}"
        lines.append(
            f"| {r['name']} | {r['oof_accuracy']:.3f} | {r['flagged']} | {precision} | "
            f"{r['recall']:.3f} | {s['label_issues']:.1f} / {s['el2n']:.1f} / "
            f"{s['influence']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or bool(os.environ.get("THRESHER_BENCH_QUICK"))
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        print("cleanlab is not installed (pip install -e '.[bench-labels]')", file=sys.stderr)
        return
    x, truth = digits()
    blob_x, blob_truth = blobs(600 if quick else 3_000)
    if quick:
        x, truth = x[:400], truth[:400]
    results = []
    for name, features, classes in (("digits", x, truth), ("blobs", blob_x, blob_truth)):
        print(f"label_issues on {name}...", file=sys.stderr, flush=True)
        results.append(run_dataset(name, features, classes))
    text = report(results)
    print(text)
    if not quick:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
