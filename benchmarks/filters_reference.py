"""thresher's rule presets against datatrove's filters: the same keep/drop decisions, and speed.

The same documents go through datatrove 0.10.1's ``GopherQualityFilter``,
``GopherRepetitionFilter``, ``C4QualityFilter`` and ``FineWebQualityFilter``
(default settings; for C4 only its keep/drop decision, not its line removal)
and through thresher's signal scorers (``gopher_quality``,
``gopher_repetition``, ``c4_quality``, ``fineweb_quality``) with the rules of
the presets ``gopher``, ``c4`` and ``fineweb`` at their published thresholds
(:mod:`thresher.scorers.quality_rules`). A document is kept by a rule set when
it passes every rule; the two decisions are compared document by document.

Documents (all made offline on this machine):

- ``sample``: the bundled sample corpus (:mod:`thresher.examples.sample_corpus`:
  clean, edited, spam, gibberish and short documents);
- ``man``: English manual pages rendered whole with ``man -l`` (real prose,
  option lists, code);
- ``debian``: Debian package descriptions, the long ones (paragraphs and
  bullet lists as the maintainers wrote them) from the English translation
  files that ``apt-get update -o Acquire::Languages=en`` fetches, else the
  one-line synopses of ``apt-cache dumpavail`` (empty until ``apt-get
  update`` has run).

Speed is documents per CPU second on one core (the process's CPU time):
datatrove's ``filter`` called per document as its pipeline does, against
thresher's scorers on Arrow batches of 1,024 plus the rules on their columns,
as a worker runs them; numba kernels are compiled before timing.

datatrove and spaCy come from the benchmark-only extra ``bench-filters``
(``pip install -e '.[bench-filters]'``); thresher never imports them.

Full run (a few minutes)::

    python -m benchmarks.filters_reference

Development scale::

    python -m benchmarks.filters_reference --quick

Output: ``benchmarks/results/filters_reference.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.text_scorers import MAN, _render

RESULTS = Path(__file__).parent / "results" / "filters_reference"
BATCH = 1024
SCORERS_OF = {
    "gopher_quality": "GopherQualityFilter",
    "gopher_repetition": "GopherRepetitionFilter",
    "c4_quality": "C4QualityFilter",
    "fineweb_quality": "FineWebQualityFilter",
}


# -- documents -----------------------------------------------------------------------------------


def sample_documents(n: int) -> list[str]:
    from thresher.examples.sample_corpus import generate_records

    return [r["text"] for r in generate_records(n, seed=0) if isinstance(r.get("text"), str)]


def man_documents(n: int, cache: Path) -> list[str]:
    """English manual pages rendered whole (cached as JSON lines)."""
    path = cache / f"man-whole-{n}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    pages = sorted(p for p in MAN.glob("man[1-8]/*") if p.is_file())
    chosen = random.Random(0).sample(pages, min(n, len(pages)))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        texts = [t.strip() for t in pool.map(_render, chosen)]
    texts = [t for t in texts if t]
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts), "utf-8")
    return texts


def _debian_lines() -> list[str]:
    """Package stanzas: the English translation files when present, else ``apt-cache dumpavail``."""
    translations = sorted(Path("/var/lib/apt/lists").glob("*_i18n_Translation-en*"))
    try:
        if translations:
            return subprocess.run(
                ["/usr/lib/apt/apt-helper", "cat-file", *map(str, translations)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
        return subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return []


def debian_documents(n: int) -> list[str]:
    """Debian package descriptions: synopsis, then paragraphs (" ." is a blank line)."""
    documents: list[str] = []
    current: list[str] | None = None
    for line in [*_debian_lines(), ""]:
        if line.startswith(("Description:", "Description-en:")):
            current = [line.split(":", 1)[1].strip()]
        elif current is not None and line.startswith(" "):
            body = line[1:]
            current.append("" if body.strip() == "." else body)
        elif current is not None:
            documents.append("\n".join(current).strip())
            current = None
    unique = sorted(set(documents))
    return random.Random(0).sample(unique, min(n, len(unique)))


# -- the two implementations ---------------------------------------------------------------------


def datatrove_decisions(texts: list[str]) -> dict[str, Any]:
    """Keep/drop and reason per document for each datatrove filter, and its docs per CPU second."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = {
        "GopherQualityFilter": GopherQualityFilter(),
        "GopherRepetitionFilter": GopherRepetitionFilter(),
        "C4QualityFilter": C4QualityFilter(),
        "FineWebQualityFilter": FineWebQualityFilter(),
    }
    out: dict[str, Any] = {}
    for name, step in filters.items():
        step.filter(Document(text="warm up the tokenizer. " * 20, id="warm"))
        kept: list[bool] = []
        reasons: list[str] = []
        cpu = time.process_time()
        for number, text in enumerate(texts):
            verdict = step.filter(Document(text=text, id=str(number)))
            if isinstance(verdict, tuple):
                kept.append(bool(verdict[0]))
                reasons.append(str(verdict[1]))
            else:
                kept.append(bool(verdict))
                reasons.append("")
        cpu = time.process_time() - cpu
        out[name] = {"kept": kept, "reasons": reasons, "docs_per_cpu_s": len(texts) / cpu}
    return out


def _signal_columns(scorer: Any, column: str, texts: list[str]) -> dict[str, np.ndarray]:
    """Every output of a signal scorer over one batch, by column name."""
    fields = [f.name for f in scorer.output_fields(column)]
    result = scorer.score(pa.record_batch([pa.array(texts, pa.string())], ["text"]))
    if isinstance(result, pa.StructArray):
        return {
            name: result.field(k).to_numpy(zero_copy_only=False) for k, name in enumerate(fields)
        }
    return {fields[0]: result.to_numpy(zero_copy_only=False)}


def _first_failing(values: dict[str, np.ndarray], column: str, rules: list[Any]) -> list[str]:
    """The first rule each row fails (``""`` when it passes all), as the ``rules`` step decides."""
    n = len(next(iter(values.values())))
    first = np.full(n, "", dtype=object)
    for rule in rules:
        v = values[column if rule.signal is None else f"{column}_{rule.signal}"]
        v = v.astype(np.float64)
        fails = ~np.isfinite(v)
        if rule.min is not None:
            fails |= v < rule.min
        if rule.max is not None:
            fails |= v > rule.max
        first[(first == "") & fails] = f"{rule.preset}.{rule.name}"
    return list(first)


def thresher_decisions(texts: list[str]) -> dict[str, Any]:
    """Keep/drop and first failing rule per document for each signal scorer's rules, and speed."""
    from thresher.scorers import make_scorer
    from thresher.scorers.quality_rules import RULES

    rules_of: dict[str, list[Any]] = {}
    for rules in RULES.values():
        for rule in rules:
            rules_of.setdefault(rule.scorer, []).append(rule)
    out: dict[str, Any] = {}
    for name, rules in rules_of.items():
        scorer = make_scorer(name, {})
        scorer.setup()
        _first_failing(_signal_columns(scorer, name, texts[:BATCH]), name, rules)  # compile
        reasons: list[str] = []
        batches: list[dict[str, np.ndarray]] = []
        cpu = time.process_time()
        for start in range(0, len(texts), BATCH):
            values = _signal_columns(scorer, name, texts[start : start + BATCH])
            reasons.extend(_first_failing(values, name, rules))
            batches.append(values)
        cpu = time.process_time() - cpu
        signals = [
            dict(zip(values, row, strict=True))
            for values in batches
            for row in zip(*(v.tolist() for v in values.values()), strict=True)
        ]
        out[SCORERS_OF[name]] = {
            "kept": [not r for r in reasons],
            "reasons": reasons,
            "signals": signals,
            "docs_per_cpu_s": len(texts) / cpu,
        }
    return out


# -- comparison ----------------------------------------------------------------------------------


def compare(
    corpus: str, texts: list[str], ours: dict[str, Any], theirs: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for name, reference in theirs.items():
        mine = ours[name]
        agree = [a == b for a, b in zip(mine["kept"], reference["kept"], strict=True)]
        kinds = Counter(
            (reference["reasons"][i] or "kept", mine["reasons"][i] or "kept")
            for i, same in enumerate(agree)
            if not same
        )
        examples = [
            {
                "datatrove": reference["reasons"][i] or "kept",
                "thresher": mine["reasons"][i] or "kept",
                "text": texts[i][:300],
                "signals": {k: round(v, 4) for k, v in mine["signals"][i].items()},
            }
            for i, same in enumerate(agree)
            if not same
        ][:8]
        rows.append(
            {
                "corpus": corpus,
                "filter": name,
                "documents": len(texts),
                "kept_datatrove": int(sum(reference["kept"])),
                "kept_thresher": int(sum(mine["kept"])),
                "agreement": float(np.mean(agree)) if agree else 1.0,
                "disagreements": int(len(agree) - sum(agree)),
                "by_kind": {f"{a} / {b}": c for (a, b), c in kinds.most_common()},
                "examples": examples,
                "datatrove_docs_per_cpu_s": reference["docs_per_cpu_s"],
                "thresher_docs_per_cpu_s": mine["docs_per_cpu_s"],
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# thresher's presets against datatrove 0.10.1's filters",
        "",
        "| corpus | datatrove filter | documents | kept (datatrove) | kept (thresher) "
        "| agreement | datatrove docs/CPU-s | thresher docs/CPU-s | speed ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["thresher_docs_per_cpu_s"] / r["datatrove_docs_per_cpu_s"]
        lines.append(
            f"| {r['corpus']} | {r['filter']} | {r['documents']:,} | {r['kept_datatrove']:,} "
            f"| {r['kept_thresher']:,} | {100 * r['agreement']:.2f}% "
            f"| {r['datatrove_docs_per_cpu_s']:,.0f} | {r['thresher_docs_per_cpu_s']:,.0f} "
            f"| {ratio:.1f}x |"
        )
    lines += ["", "## Disagreements (datatrove's reason / thresher's first failing rule)", ""]
    if not any(r["disagreements"] for r in rows):
        lines.append("None: every document is decided the same way.")
    for r in rows:
        if r["disagreements"]:
            kinds = "; ".join(f"{k}: {c}" for k, c in r["by_kind"].items())
            lines.append(f"- {r['corpus']}, {r['filter']}: {kinds}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", default=bool(os.environ.get("THRESHER_BENCH_QUICK"))
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench"
    )
    args = parser.parse_args()
    scale = (
        {"sample": 2_000, "man": 300, "debian": 2_000}
        if args.quick
        else {
            "sample": 20_000,
            "man": 1_000,
            "debian": 20_000,
        }
    )
    corpora: dict[str, list[str]] = {
        "sample": sample_documents(scale["sample"]),
        "man": man_documents(scale["man"], args.cache),
        "debian": debian_documents(scale["debian"]),
    }
    rows: list[dict[str, Any]] = []
    for corpus, texts in corpora.items():
        if not texts:
            print(f"{corpus}: no documents on this machine, skipped", file=sys.stderr)
            continue
        print(f"{corpus}: {len(texts):,} documents", file=sys.stderr)
        rows += compare(corpus, texts, thresher_decisions(texts), datatrove_decisions(texts))
    text = report(rows)
    print(text)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.with_suffix(".md").write_text(text, "utf-8")
        RESULTS.with_suffix(".json").write_text(json.dumps(rows, indent=1), "utf-8")


if __name__ == "__main__":
    main()
