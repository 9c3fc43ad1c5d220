"""GPU check: the ``gpu`` tests and short GPU benchmarks, each against the CPU, in one command.

Where CUDA is present this runs, in order (parts in ``benchmarks/_gpu_*.py``):

``tests``
    ``pytest -m gpu`` on the test files that can run on the machine (none
    needing Spark, Prefect, faiss or datasketch when those are absent).
``peak``
    a large bf16 matrix product: the measured peak every MFU divides by.
``perplexity``
    perplexity scorer tokens/s with the run's own reference LM (trained
    here on generated sample-corpus documents).
``gpt2``
    the same scorer with a randomly initialised GPT-2-small-sized
    ``transformers`` model (built from a config, nothing downloaded):
    tokens/s and model FLOP utilisation in bf16 (target >= 30% of the
    measured peak), and the model's forward pass alone.
``el2n``
    EL2N proxy training (examples/s) and scoring (documents/s).
``lm_eval``
    the language-model eval's training loop at a 6-layer, 384-wide size:
    tokens/s against the CPU, MFU, and the known answer (planted-only,
    random and clean-only subsets of equal tokens) at that size.
``embedding``
    the LM embedding scorer, and a sentence-transformers encoder of
    all-MiniLM-L6-v2's shape (random weights), documents/s.
``dpp``
    DPP greedy MAP, thresher's torch path against its numpy reference
    (N = 100,000, d = 256, k = 1,000; target >= 10x).
``kmeans``
    a torch Lloyd k-means on the GPU against faiss-cpu where faiss is
    installed, else against the same torch loop on the CPU (said in the row).

Every GPU figure has the same work timed on the CPU beside it, in the same
run. Each part has a time budget (a part that would overrun the total is
skipped with a note; one that runs past its own is stopped, keeping the
rows it had), so the whole takes under 8 minutes on one H200.

Without CUDA (or with ``--dry-run``) every part runs on the CPU at a tiny
scale, its "GPU" leg too, and the report says "no CUDA": the test suite
runs this dry run, so the check cannot rot.

On a GPU machine, from a bare copy of the repository (thresher need not
be installed; pydantic, which thresher's scorers need, travels as wheels
in ``.whl/``, see ``benchmarks/gpu_wheels.sh``)::

    bash benchmarks/gpu_check.sh            # = PYTHONPATH=. python3 -m benchmarks.gpu

The Markdown table goes to stdout, and with ``$OUT`` (or ``--out DIR``)
set, to ``gpu.md``, ``gpu.json`` and ``gpu-tests.log`` there, rewritten
after every part. Exit status 1 when a part failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stdout
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks._gpu_common import DRY, FULL, Part, Row, Workspace, importable
from benchmarks._gpu_lm import part_lm_eval
from benchmarks._gpu_models import part_el2n, part_embedding, part_gpt2, part_peak, part_perplexity
from benchmarks._gpu_selection import part_dpp, part_kmeans
from benchmarks._gpu_tests import part_tests

#: Seconds the parts may take in all at full scale (the command stays under 8 minutes).
TOTAL_BUDGET = 450.0
#: Each part's budget in a dry run (tiny sizes: a safety net, never reached).
DRY_BUDGET = 120.0
WHEELS_HINT = "carry it as a wheel: bash benchmarks/gpu_wheels.sh"

_SCORERS = ("torch", "pydantic", "safetensors")  # thresher.scorers needs pydantic
#: The parts in the order they run, with their budgets at full scale (seconds).
PARTS: list[Part] = [
    Part("tests", part_tests, 120, ("pytest",)),
    Part("peak", part_peak, 20, ("torch",)),
    Part("perplexity", part_perplexity, 50, _SCORERS),
    Part("gpt2", part_gpt2, 75, (*_SCORERS, "transformers", "tokenizers")),
    Part("el2n", part_el2n, 60, _SCORERS),
    Part("lm_eval", part_lm_eval, 90, ("torch", "pyarrow")),
    Part("embedding", part_embedding, 60, (*_SCORERS, "transformers", "tokenizers")),
    Part("dpp", part_dpp, 60, ("torch",)),
    Part("kmeans", part_kmeans, 40, ("torch",)),
]


class PartOverrun(BaseException):
    """Raised in the main thread when a part runs past its time budget.

    A BaseException, so that library code catching ``Exception`` does not
    swallow it.
    """


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise PartOverrun


def run_parts(parts: list[Part], ws: Workspace, total_budget: float, write: Any = None) -> bool:
    """Run ``parts`` in order within ``total_budget`` seconds; False when a part failed.

    A part starts only if at least half its budget is left in the total;
    it is stopped at ``min(its budget, what is left)`` (``SIGALRM``). A
    missing package, an overrun or an interruption becomes a ``skipped``
    row, an error a ``failed`` row with its traceback on stderr; the other
    parts still run. ``write`` (if given) is called after every part.
    """
    end = time.perf_counter() + total_budget
    ok = True
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for index, part in enumerate(parts):
            budget = DRY_BUDGET if ws.dry else part.budget
            left = end - time.perf_counter()
            missing = [name for name in part.requires if not importable(name)]
            print(f"[{part.name}] budget {budget:.0f} s, {left:.0f} s left", file=sys.stderr)
            if missing:
                ws.emit(_skipped(part, _needs(missing)))
                continue
            if left < 0.5 * budget:
                ws.emit(_skipped(part, f"would overrun: {left:.0f} s of the total budget left"))
                continue
            limit = min(budget, left)
            ws.deadline = time.perf_counter() + limit
            before = len(ws.rows)
            started = time.perf_counter()
            try:
                signal.setitimer(signal.ITIMER_REAL, limit)
                with redirect_stdout(sys.stderr):  # keep library chatter off the report
                    part.run(ws)
            except PartOverrun:
                ws.emit(_skipped(part, f"stopped at its budget of {limit:.0f} s"))
            except ModuleNotFoundError as error:
                ws.emit(_skipped(part, _needs([error.name or str(error)])))
            except KeyboardInterrupt:
                signal.setitimer(signal.ITIMER_REAL, 0)
                for rest in parts[index:]:
                    ws.emit(_skipped(rest, "interrupted"))
                ok = False
                break
            except Exception as error:
                traceback.print_exc(file=sys.stderr)
                message = (str(error).splitlines() or [""])[0][:200]
                ws.emit(
                    Row(
                        part.name,
                        "(part)",
                        status="failed",
                        note=f"{type(error).__name__}: {message}",
                    )
                )
                ok = False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            seconds = time.perf_counter() - started
            print(f"[{part.name}] {seconds:.1f} s", file=sys.stderr, flush=True)
            if len(ws.rows) == before:
                ws.emit(Row(part.name, "(part)", status="failed", note="reported nothing"))
                ok = False
            if write is not None:
                write()
    finally:
        signal.signal(signal.SIGALRM, previous)
    return ok


def _needs(missing: list[str]) -> str:
    hint = f"; {WHEELS_HINT}" if "pydantic" in missing else ""
    return f"needs {', '.join(missing)} (not installed){hint}"


def _skipped(part: Part, note: str) -> Row:
    return Row(part.name, "(part)", status="skipped", note=note)


# -- the report ----------------------------------------------------------------------------------
def environment(device: str) -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return info


def _number(value: float | str | None, unit: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return "nan"
    if unit == "%":
        return f"{value:.1f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[Row], info: dict[str, Any], dry: bool, seconds: float) -> str:
    """The report: a header line on the machine, then one table of every row."""
    lines = ["### GPU check (`python -m benchmarks.gpu`)", ""]
    if dry:
        lines.append(
            f"**no CUDA: dry run.** Every part ran on the CPU at a tiny scale, its GPU column "
            f"too: these figures show that the check runs, they measure no GPU. "
            f"{info['cpu_count']} CPU cores, Python {info['python']}, torch {info['torch']}; "
            f"{info['date']}; {seconds:.0f} s in all."
        )
    else:
        lines.append(
            f"GPU: {info['gpu']} ({info['gpu_memory_gib']} GiB, CUDA {info['cuda']}), "
            f"{info['cpu_count']} CPU cores, Python {info['python']}, torch {info['torch']}; "
            f"{info['date']}; {seconds:.0f} s in all."
        )
    lines += [
        "",
        "| part | measure | workload | unit | GPU | CPU | GPU speed-up | target | status | note |",
        "|---|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        speedup = "" if row.speedup is None else f"{row.speedup:,.1f}x"
        cells = [
            row.part,
            row.measure,
            row.workload,
            row.unit,
            _number(row.gpu, row.unit),
            _number(row.cpu, row.unit),
            speedup,
            row.target,
            row.status,
            row.note,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    out: Path, rows: list[Row], info: dict[str, Any], dry: bool, seconds: float
) -> None:
    """``gpu.md`` (the table) and ``gpu.json`` (rows and machine) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.md").write_text(markdown(rows, info, dry, seconds), encoding="utf-8")
    payload = {
        "mode": "dry run" if dry else "gpu",
        "seconds": round(seconds, 1),
        "environment": info,
        "rows": [asdict(row) for row in rows],
    }
    (out / "gpu.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the parts, print the table (exit 1 if a part failed)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="tiny scale on the CPU")
    parser.add_argument("--parts", help=f"comma-separated subset of {[p.name for p in PARTS]}")
    parser.add_argument("--out", type=Path, help="write gpu.md and gpu.json here (default $OUT)")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET, help="total seconds")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    # The machine may have no network: never let transformers try a hub.
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
    ):
        os.environ.setdefault(name, value)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    parts = PARTS
    if args.parts:
        wanted = set(args.parts.split(","))
        unknown = wanted - {p.name for p in PARTS}
        if unknown:
            parser.error(f"unknown parts {sorted(unknown)}")
        parts = [p for p in PARTS if p.name in wanted]

    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("no CUDA: dry run, every part on the CPU at a tiny scale", file=sys.stderr)
    info = environment(device)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="thresher-gpu-check-"))
    ws = Workspace(FULL if cuda else DRY, device, scratch, out)
    started = time.perf_counter()

    def write() -> None:
        if out is not None:
            write_report(out, ws.rows, info, not cuda, time.perf_counter() - started)

    try:
        ok = run_parts(parts, ws, args.budget if cuda else len(parts) * DRY_BUDGET, write)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write()
    print(markdown(ws.rows, info, not cuda, time.perf_counter() - started), flush=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
