"""One real curated run shared by the report, card, CLI, API and notebook tests.

The corpus is the session's ``small_corpus`` plus a shard of hostile
documents (HTML and script in their text, a duplicated id, a broken JSON
line holding a script), so that escaping is tested on what a real run
writes. The run is made once per test session (through the public API,
local engine) and cached under pytest's base temporary directory; tests
that change a run work on a copy (:func:`copy_run`).

:func:`add_contract_files` writes small hand-made files in the formats of
TEAM contracts 3 (dedup clusters), 4 (selector details) and 5 (eval
results), which other workstreams produce.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

#: Texts that must reach the report only as text.
SCRIPT_TEXT = "<script>alert('kept or dropped')</script>"
IMG_TEXT = '</pre><img src=x onerror="alert(1)"><script>document.title="pwned"</script>'
FILLER = (
    "The committee reviewed the annual budget and the members agreed that the report was clear. "
    * 8
)


def write_hostile_shard(path: Path) -> None:
    """A JSONL shard: a document, two hostile ones repeating its id, a broken line.

    The two hostile documents are the only ``duplicate_id`` drops of the
    run, so the report always shows both among its examples.
    """
    rows = [
        {"id": "hostile-1", "text": FILLER, "topic": "finance", "url": None},
        {"id": "hostile-1", "text": f"{SCRIPT_TEXT} {FILLER}", "topic": "finance", "url": None},
        {"id": "hostile-1", "text": f"{IMG_TEXT} {FILLER}", "topic": "finance", "url": None},
    ]
    lines = [json.dumps(row) for row in rows]
    lines.append('{"id": "hostile-2", "text": "<script>alert(2)</script> cut here')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_config(corpus: Path, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The configuration of the shared run (a mapping for ``thresher.run``)."""
    config: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": 3,
        "input": {"paths": [str(corpus / "*.jsonl*"), str(corpus / "*.parquet")]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [{"name": "word_count"}, {"name": "alpha_fraction"}],
        "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}}],
        "selector": {"name": "random", "budget": 0.5},
        "engine": {"kind": "local", "workers": 1},
    }
    config.update(overrides)
    return config


def hostile_corpus(base: Path, small_corpus: Path) -> Path:
    """``small_corpus`` (linked) plus ``hostile.jsonl``, in ``base/corpus``."""
    corpus = base / "corpus"
    if not corpus.is_dir():
        corpus.mkdir(parents=True)
        for shard in small_corpus.glob("shard-*"):
            (corpus / shard.name).symlink_to(shard)
        write_hostile_shard(corpus / "hostile.jsonl")
    return corpus


def curated_run(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    """The shared run directory (made on first use in a test session, then reused)."""
    import thresher

    base = tmp_path_factory.getbasetemp() / "thresher-curated"
    run_dir = base / "run"
    if not (run_dir / "report.html").is_file():
        corpus = hostile_corpus(base, small_corpus)
        thresher.run(run_config(corpus, run_dir), quiet=True)
    return run_dir


def copy_run(run_dir: Path, target: Path) -> Path:
    """A copy of a run directory that a test may change."""
    shutil.copytree(run_dir, target, symlinks=True)
    return target


STRATA = [
    {"low": 0.0 + i * 0.1, "high": 0.1 + i * 0.1, "size": 40 + 7 * i, "selected": 10 + i}
    for i in range(8)
]
CLUSTERS = [
    {"cluster": c, "size": size, "selected": sel, "weight_mean": w}
    for c, (size, sel, w) in enumerate([(120, 20, 6.0), (60, 15, 4.0), (30, 12, 2.5)])
]


def add_contract_files(run_dir: Path) -> dict[str, Any]:
    """Write dedup (contract 3), selector details (4) and eval (5) files; return what was written."""
    dedup = run_dir / "dedup"
    dedup.mkdir(exist_ok=True)
    # clusters of sizes 2, 2, 3 and 5 (12 documents), one keeper each
    sizes = [2, 2, 3, 5]
    rows: dict[str, list[Any]] = {k: [] for k in ("id", "cluster", "cluster_size", "keeper")}
    kinds, keepers, shards, positions = [], [], [], []
    for cluster, size in enumerate(sizes):
        for member in range(size):
            rows["id"].append(f"dup-{cluster}-{member}")
            rows["cluster"].append(cluster)
            rows["cluster_size"].append(size)
            rows["keeper"].append(member == 0)
            keepers.append(f"dup-{cluster}-0")
            kinds.append("exact" if cluster == 0 else "near")
            shards.append(0)
            positions.append(cluster * 10 + member)
    table = pa.table(
        {
            "id": pa.array(rows["id"], pa.string()),
            "thresher_shard": pa.array(shards, pa.int32()),
            "thresher_row": pa.array(positions, pa.int64()),
            "cluster": pa.array(rows["cluster"], pa.int64()),
            "cluster_size": pa.array(rows["cluster_size"], pa.int64()),
            "keeper": pa.array(rows["keeper"]),
            "keeper_id": pa.array(keepers, pa.string()),
            "kind": pa.array(kinds, pa.string()),
        }
    )
    target = dedup / "clusters.parquet"  # a directory of Parquet files, as the dedup stage writes
    target.mkdir()
    pq.write_table(table, target / "part-00000.parquet")
    (target / "_SUCCESS").touch()

    steps_path = run_dir / "selection" / "steps.json"
    steps = json.loads(steps_path.read_text())
    steps[-1]["details"] = {
        "strata": STRATA,
        "clusters": CLUSTERS,
        "beta": 0.1,
        "n_strata": len(STRATA),
    }
    steps_path.write_text(json.dumps(steps))

    eval_dir = run_dir / "eval"
    eval_dir.mkdir(exist_ok=True)
    records = []
    for selector, quality in (("random", 0.0), ("ccs", 0.02)):
        for fraction in (0.1, 0.3, 0.5):
            for seed in range(3):
                records.append(
                    {
                        "selector": selector,
                        "prune_rate": 1 - fraction,
                        "fraction_kept": fraction,
                        "seed": seed,
                        "label_noise": 0.0,
                        "accuracy": 0.6 + 0.3 * fraction + quality + 0.01 * seed,
                    }
                )
    pq.write_table(pa.Table.from_pylist(records), eval_dir / "results.parquet")
    (eval_dir / "summary.csv").write_text(
        "selector,fraction_kept,mean,std,diff_vs_random\n"
        "ccs,0.1,0.67,0.01,0.02\nrandom,0.1,0.65,0.01,0.0\n",
        encoding="utf-8",
    )
    return {"clusters": len(sizes), "documents": sum(sizes), "strata": len(STRATA)}


@contextmanager
def collect_flow_log() -> Iterator[list[str]]:
    """Lines the flow's run logger emits at INFO (where progress goes without a terminal)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("prefect.flow_runs")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
