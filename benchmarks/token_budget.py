"""Token budgets against row budgets of the same selectors, measured in the same run.

A synthetic score table of ``--rows`` rows (1,000,000 by default): a score
(normal), a label (three classes, 60/30/10%) and a token count per row
drawn from a lognormal (median about 400 tokens, a long tail, as web
documents have). Each scalar selector runs on the local engine's frame
(:class:`thresher.frame.TableFrame`, the same code Spark executors run)
twice: with a row budget of ``--fraction`` of the rows, and with a token
budget of the same fraction of the tokens (``{tokens: N}``). Reported:
requested and kept tokens (a token budget never goes over; the shortfall
is below one document per group), kept rows, and both wall times with
their ratio. No target is asserted: the token budget's extra descent
(histograms of token sums, then the row cut) is what is measured.

Full scale::

    nice -n 10 python -m benchmarks.token_budget

Development scale (50,000 rows)::

    python -m benchmarks.token_budget --quick      # or THRESHER_BENCH_QUICK=1

The output is written to ``benchmarks/results/token_budget.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

RESULTS = Path(__file__).parent / "results" / "token_budget.md"
TOKENS = "token_count"
CASES: list[tuple[str, dict[str, Any]]] = [
    ("random", {}),
    ("random", {"by_label": True}),
    ("topk", {"score": "score"}),
    ("topk", {"score": "score", "by_label": True, "label_allocation": "equal"}),
    ("quantile_band", {"score": "score", "band": "medium"}),
    ("dsir", {"score": "score"}),
    ("ccs", {"score": "score", "beta": 0.1, "n_strata": 50}),
]


def synthetic(rows: int, seed: int = 0) -> pa.Table:
    """The score table: id, input order, score, label and a lognormal token count."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": pa.array([f"doc-{i:08d}" for i in range(rows)]),
            "thresher_order": pa.array(np.arange(rows, dtype=np.int64)),
            "score": rng.normal(size=rows),
            "label": pa.array(rng.choice(["a", "b", "c"], rows, p=[0.6, 0.3, 0.1])),
            TOKENS: pa.array(
                np.maximum(1, np.round(rng.lognormal(6.0, 1.0, rows))).astype(np.int64)
            ),
        }
    )


def _timed(selector: Any, table: pa.Table, budget: Any, repeats: int) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` selections, and the kept rows (the same every time)."""
    best, kept = float("inf"), np.zeros(0, dtype=np.int64)
    for _ in range(repeats):
        start = time.perf_counter()
        chosen = selector.select(table, None, budget, random_state=0)
        best = min(best, time.perf_counter() - start)
        kept = chosen.indices
    return best, kept


def run(rows: int, fraction: float, repeats: int = 3) -> list[dict[str, Any]]:
    from thresher.selectors import make_selector
    from thresher.selectors.base import SumBudget

    table = synthetic(rows)
    sizes = table.column(TOKENS).to_numpy()
    requested = round(fraction * int(sizes.sum()))
    results = []
    warm = synthetic(1_000, seed=1)  # imports and first calls out of the timings
    for name, params in CASES:
        make_selector(name, params).select(warm, None, SumBudget(TOKENS, 1_000), random_state=0)
    for name, params in CASES:
        selector = make_selector(name, params)
        row_seconds, row_kept = _timed(selector, table, fraction, repeats)
        token_seconds, token_kept = _timed(selector, table, SumBudget(TOKENS, requested), repeats)
        kept_tokens = int(sizes[token_kept].sum())
        if kept_tokens > requested:
            raise AssertionError(f"{name}: kept {kept_tokens} tokens of {requested} requested")
        results.append(
            {
                "selector": name + (" by_label" if params.get("by_label") else ""),
                "requested": requested,
                "kept_tokens": kept_tokens,
                "shortfall": requested - kept_tokens,
                "kept_rows": int(token_kept.size),
                "row_budget_rows": int(row_kept.size),
                "row_budget_tokens": int(sizes[row_kept].sum()),
                "row_seconds": row_seconds,
                "token_seconds": token_seconds,
            }
        )
        print(
            f"{results[-1]['selector']:>22}: tokens {kept_tokens:,}/{requested:,} "
            f"({token_kept.size:,} rows) {token_seconds:.2f}s; rows {row_kept.size:,} "
            f"{row_seconds:.2f}s",
            flush=True,
        )
    return results


def render(results: list[dict[str, Any]], rows: int, fraction: float) -> str:
    lines = [
        "# Token budgets against row budgets",
        "",
        f"`python -m benchmarks.token_budget` on {rows:,} synthetic rows (lognormal token "
        f"counts); each selector with a row budget of {fraction:.0%} of the rows and a token "
        f"budget of {fraction:.0%} of the tokens, local engine, one process, best of 3. Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU cores.",
        "",
        "| selector | requested tokens | kept tokens | shortfall | kept rows | "
        "row budget: rows (tokens) | row budget s | token budget s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['selector']} | {r['requested']:,} | {r['kept_tokens']:,} | {r['shortfall']:,} | "
            f"{r['kept_rows']:,} | {r['row_budget_rows']:,} ({r['row_budget_tokens']:,}) | "
            f"{r['row_seconds']:.2f} | {r['token_seconds']:.2f} | "
            f"{r['token_seconds'] / r['row_seconds']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    rows = args.rows or (50_000 if quick else 1_000_000)
    results = run(rows, args.fraction)
    text = render(results, rows, args.fraction)
    print(text)
    if not quick:
        RESULTS.write_text(text, encoding="utf-8")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
