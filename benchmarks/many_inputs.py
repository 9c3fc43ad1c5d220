"""Many small inputs: the cost of per-input bookkeeping, first run and a re-run with nothing changed.

A corpus of many small files (a crawl's per-domain dumps, a lake partitioned
by day) must not cost the driver a file read, a manifest line or a card line
per input on every nightly run. This benchmark writes N JSONL inputs of
about 1 KB each (a few documents), runs ``thresher run`` once, then again
with nothing changed, each in a child process, and records for each run:
the wall time, the driver's peak resident memory (``VmHWM`` of the
``thresher run`` process, sampled every 0.1 s), the files in the run
directory and the sizes of the manifest and the card.

Usage::

    python -m benchmarks.many_inputs --inputs 1000,10000,100000 --label after
    python -m benchmarks.many_inputs --quick      # 1,000 inputs

Results: ``benchmarks/results/many_inputs/<label>-<n>-<engine>.json`` and the
table of all of them in ``benchmarks/results/many_inputs.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RAW = RESULTS / "many_inputs"
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "data",
    "model",
    "text",
    "training",
    "selection",
    "corpus",
    "pruning",
    "quality",
]


def ensure_inputs(cache: Path, n_inputs: int) -> Path:
    """``n_inputs`` JSONL files of about 1 KB (4 documents each) in nested day directories."""
    out = cache / f"inputs-{n_inputs}"
    if (out / "_COMPLETE").is_file():
        return out
    for index in range(n_inputs):
        day = out / f"day={index // 1000:04d}"
        day.mkdir(parents=True, exist_ok=True)
        lines = []
        for document in range(4):
            words = [_WORDS[(index * 7 + document * 3 + k * k) % len(_WORDS)] for k in range(35)]
            text = f"document {index}-{document}: " + " ".join(words)
            lines.append(json.dumps({"id": f"{index}-{document}", "text": text}))
        (day / f"part-{index:06d}.jsonl").write_text("\n".join(lines) + "\n")
    (out / "_COMPLETE").write_text("")
    return out


def _peak_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_once(config_file: Path, work: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "thresher", "run", str(config_file), "--quiet"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = 0
    while child.poll() is None:
        peak = max(peak, _peak_of(child.pid))
        time.sleep(0.1)
    stderr = child.stderr.read().decode("utf-8", "replace") if child.stderr else ""
    result: dict[str, Any] = {
        "wall": time.perf_counter() - start,
        "driver_peak_rss": peak,
        "returncode": child.returncode,
    }
    if child.returncode:
        result["error"] = stderr[-2000:]
    return result


def measure(n_inputs: int, engine: str, cache: Path) -> dict[str, Any]:
    import yaml

    corpus = ensure_inputs(cache, n_inputs)
    work = Path(tempfile.mkdtemp(prefix=f"thresher-bench-inputs-{n_inputs}-"))
    try:
        run_dir = work / "run"
        config = {
            "run_dir": str(run_dir),
            "input": {"paths": [str(corpus / "day=*" / "*.jsonl")]},
            "schema": {"id": "id", "text": "text"},
            "scorers": [{"name": "word_count"}],
            "selector": {"name": "random", "budget": 0.5},
            "engine": {"kind": engine},
        }
        config_file = work / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        first = run_once(config_file, work)
        files_first = sum(1 for p in run_dir.rglob("*") if p.is_file())
        rerun = run_once(config_file, work)
        sizes = {
            name: (run_dir / name).stat().st_size if (run_dir / name).is_file() else 0
            for name in ("manifest.json", "README.md", "report.html")
        }
        return {
            "inputs": n_inputs,
            "engine": engine,
            "first": first,
            "rerun": rerun,
            "files_after_first": files_first,
            "files_after_rerun": sum(1 for p in run_dir.rglob("*") if p.is_file()),
            "sizes": sizes,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def report() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(RAW.glob("*.json"))]
    rows.sort(key=lambda r: (r["engine"], r["inputs"], r["label"]))
    lines = [
        "| code | engine | inputs | first run s | re-run s | re-run driver peak RSS | "
        "files in run dir | manifest | card |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        failed = r["rerun"]["returncode"] or r["first"]["returncode"]
        lines.append(
            f"| {r['label']} | {r['engine']} | {r['inputs']:,} | {r['first']['wall']:.0f} | "
            f"{r['rerun']['wall']:.0f} | {_mib(r['rerun']['driver_peak_rss'])} | "
            f"{r['files_after_rerun']:,} | {r['sizes']['manifest.json'] / 1024:.0f} KiB | "
            f"{r['sizes']['README.md'] / 1024:.0f} KiB{' (failed)' if failed else ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default="1000,10000,100000")
    parser.add_argument("--engines", default="local")
    parser.add_argument("--label", default="current")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "thresher-inputs"))
    parser.add_argument("--quick", action="store_true", help="1,000 inputs")
    parser.add_argument("--report", action="store_true", help="only rewrite the table")
    args = parser.parse_args(argv)
    if not args.report:
        for n in [int(x) for x in ("1000" if args.quick else args.inputs).split(",")]:
            for engine in args.engines.split(","):
                result = measure(n, engine, Path(args.cache))
                result["label"] = args.label
                RAW.mkdir(parents=True, exist_ok=True)
                (RAW / f"{args.label}-{n}-{engine}.json").write_text(
                    json.dumps(result, indent=1) + "\n"
                )
                print(
                    f"{args.label} {n:,} inputs {engine}: first {result['first']['wall']:.0f} s, "
                    f"re-run {result['rerun']['wall']:.0f} s, driver "
                    f"{_mib(result['rerun']['driver_peak_rss'])}",
                    flush=True,
                )
    table = report()
    (RESULTS / "many_inputs.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
