"""Real curated runs shared by the report, card, CLI, API and notebook tests.

The corpus is the session's ``small_corpus`` plus a shard of hostile
documents (HTML and script in their text, a duplicated id, a broken JSON
line holding a script), so that escaping is tested on what a real run
writes. :func:`curated_run` is one run with MinHash dedup and CCS;
:func:`curated_eval_run` is a ``thresher eval`` over the same corpus whose
scoring run is then selected with dedup and CCS, so that its report has
every section (funnel, scores, duplicates, strata, pruning curve,
examples) from real outputs. Each is made once per test session (through
the public API, local engine) and cached under pytest's base temporary
directory; tests that change a run work on a copy (:func:`copy_run`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        "scorers": [
            {"name": "word_count"},
            {"name": "alpha_fraction"},
            {"name": "minhash", "params": {"num_perm": 64}},
        ],
        "dedup": {"threshold": 0.5},
        "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}}],
        "selector": {
            "name": "ccs",
            "params": {"score": "word_count", "n_strata": 8},
            "budget": 0.5,
        },
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


def eval_config(corpus: Path, root: Path) -> dict[str, Any]:
    """An eval over the hostile corpus (topics as labels, hashed n-gram features)."""
    config = run_config(corpus, root)
    config.pop("selector")
    config["seed"] = 5
    config["eval"] = {
        "test": {"fraction": 0.25},
        "validation": 0.0,
        "rates": [0.5, 0.8],
        "seeds": 2,
        "selectors": [{"name": "ccs", "params": {"score": "word_count", "n_strata": 8}}],
        "model": {
            "features": {"dim": 256},
            "hidden": 0,
            "steps": 60,
            "lr": 0.5,
            "weight_decay": 0.0,
        },
    }
    return config


def curated_eval_run(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    """The scoring run of an eval, selected with dedup and CCS (made once per session)."""
    import thresher

    base = tmp_path_factory.getbasetemp() / "thresher-curated"
    root = base / "eval"
    run_dir = root / "run"
    if not (run_dir / "CURRENT").is_file():
        corpus = hostile_corpus(base, small_corpus)
        thresher.evaluate(eval_config(corpus, root), quiet=True)
        thresher.select(
            run_dir,
            selector="ccs",
            params={"score": "word_count", "n_strata": 8},
            budget=0.5,
            quiet=True,
        )
    return run_dir


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
