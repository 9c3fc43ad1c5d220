"""What the parts of the GPU check (:mod:`benchmarks.gpu`) share: scales, rows, the workspace.

Each part is a function ``part(workspace)`` that emits :class:`Row` objects
through ``workspace.emit`` as soon as each measurement is done, so a part
stopped at its time budget keeps what it measured. A part imports the
thresher modules it needs inside its body: the check runs on a machine
without Spark, Prefect, faiss or datasketch, and a part whose package is
missing is skipped without hiding the others.

The same parts run in a dry run (no CUDA, or ``--dry-run``): the "GPU" leg
then runs on the CPU too, at the tiny :data:`DRY` scale, so that every code
path is exercised where the test suite runs.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent


# -- scales ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """Sizes of one run: :data:`FULL` on a GPU, :data:`DRY` (tiny, CPU only) elsewhere.

    Throughput legs run for about ``leg_seconds`` each (cycling over their
    batches), so their cost is known in advance whatever the device's speed.
    """

    name: str
    leg_seconds: float
    peak_n: int  # bf16 matrix product n x n x n on the GPU
    cpu_peak_n: int  # the same on the CPU
    documents: int  # generated sample-corpus documents (perplexity, embedding)
    lm: dict[
        str, Any
    ]  # the run's reference LM (overrides of thresher.models.lm_training.LM_DEFAULTS)
    gpt2: dict[str, Any]  # transformers.GPT2Config keyword arguments
    gpt2_tokenizer_vocab: int
    joined: int  # sample documents joined into one long document for the GPT-2 model
    encoder: dict[str, Any]  # transformers.BertConfig keyword arguments (sentence-transformers)
    encoder_tokenizer_vocab: int
    proxy_documents: int
    proxy: dict[str, Any] | None  # EL2N proxy settings (None: the scorer's defaults)
    dpp: tuple[int, int, int]  # N, d, k
    kmeans: tuple[int, int, int, int]  # N, d, k, iterations


FULL = Scale(
    name="full",
    leg_seconds=6.0,
    peak_n=8192,
    cpu_peak_n=2048,
    documents=10_000,
    lm={},
    gpt2={"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257},
    gpt2_tokenizer_vocab=16_384,
    joined=6,
    encoder={
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
        "max_position_embeddings": 512,
    },
    encoder_tokenizer_vocab=8192,
    proxy_documents=10_000,
    proxy=None,
    dpp=(100_000, 256, 1_000),
    kmeans=(1_000_000, 256, 1_000, 20),
)
DRY = Scale(
    name="dry run",
    leg_seconds=0.3,
    peak_n=128,
    cpu_peak_n=128,
    documents=240,
    lm={
        "vocab_size": 300,
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "context_length": 64,
        "n_documents": 120,
        "steps": 4,
        "batch_size": 4,
    },
    gpt2={"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128, "vocab_size": 1024},
    gpt2_tokenizer_vocab=400,
    joined=2,
    encoder={
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 2048,
        "max_position_embeddings": 128,
    },
    encoder_tokenizer_vocab=400,
    proxy_documents=240,
    proxy={"features": {"dim": 256}, "hidden": 8, "epochs": 2, "n_seeds": 1, "batch_size": 32},
    dpp=(2_000, 16, 40),
    kmeans=(3_000, 8, 12, 4),
)


# -- rows and the workspace --------------------------------------------------------------------
@dataclass
class Row:
    """One line of the report: a measure on the GPU and on the CPU, and its target.

    ``speedup`` is GPU over CPU throughput (or CPU over GPU seconds);
    ``status`` is ``met``, ``missed``, ``ok`` (no target), ``dry run``,
    ``skipped`` or ``failed``.
    """

    part: str
    measure: str
    workload: str = ""
    unit: str = ""
    gpu: float | str | None = None
    cpu: float | str | None = None
    speedup: float | None = None
    target: str = ""
    status: str = "ok"
    note: str = ""


@dataclass
class Workspace:
    """What the parts share: scale, device, a scratch directory, and things built once.

    ``device`` is ``"cuda"`` on a GPU and ``"cpu"`` in a dry run (the GPU
    leg of every part then runs on the CPU). ``deadline`` is the
    ``time.perf_counter()`` value the running part must end by.
    """

    scale: Scale
    device: str
    directory: Path
    out: Path | None = None
    deadline: float = math.inf
    rows: list[Row] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def dry(self) -> bool:
        return self.device == "cpu"

    def emit(self, row: Row) -> None:
        """Record a row (a dry run never claims a target as met or missed)."""
        if self.dry and row.status in ("met", "missed"):
            row.status = "dry run"
        self.rows.append(row)
        print(f"  {row.part}: {row.measure}: {row.status}", file=sys.stderr, flush=True)

    def seconds_left(self) -> float:
        return self.deadline - time.perf_counter()

    def sync(self, device: str | None = None) -> None:
        """Wait for queued GPU work (timings stop only after it)."""
        if (device or self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def syncer(self, device: str) -> Callable[[], None]:
        """A function that waits for ``device``'s queued work (``timed_loop``'s ``sync``)."""
        return lambda: self.sync(device)

    def corpus(self) -> pa.Table:
        """Generated sample-corpus rows in thresher's canonical columns (built once)."""
        if "corpus" not in self._cache:
            n = max(self.scale.documents, self.scale.proxy_documents)
            self._cache["corpus"] = corpus_table(n)
        table: pa.Table = self._cache["corpus"]
        return table

    def peak_flops(self) -> float:
        """bf16 matrix-product FLOP/s of the GPU leg's device, measured once in this run."""
        if "peak" not in self._cache:
            seconds = min(2.0, self.scale.leg_seconds)
            self._cache["peak"] = matmul_flops(self.scale.peak_n, self.device, seconds)
        peak: float = self._cache["peak"]
        return peak

    def reference_lm(self) -> tuple[Path, float]:
        """The run's own reference LM, trained on the corpus on the GPU leg's device (once)."""
        if "lm" not in self._cache:
            from thresher.models.lm_training import fit_reference_lm

            started = time.perf_counter()
            context = fit_context(self.corpus(), self.directory / "run" / "models" / "perplexity")
            path = fit_reference_lm(context, **{**self.scale.lm, "device": self.device})
            self._cache["lm"] = (path, time.perf_counter() - started)
        lm: tuple[Path, float] = self._cache["lm"]
        return lm


def corpus_table(n_documents: int) -> pa.Table:
    """``n_documents`` generated documents: id, text, label (topic), shard and row positions."""
    from thresher.examples.sample_corpus import generate_records
    from thresher.io import schema as S

    records = [
        r for r in generate_records(n_documents, 0) if isinstance(r["text"], str) and r["text"]
    ]
    return pa.table(
        {
            S.ID: [str(r["id"]) for r in records],
            S.TEXT: [r["text"] for r in records],
            S.LABEL: [r["topic"] for r in records],
            S.SHARD: pa.array(np.zeros(len(records), dtype=np.int32)),
            S.ROW: pa.array(np.arange(len(records), dtype=np.int64)),
        }
    )


def fit_context(table: pa.Table, artifact_dir: Path, seed: int = 0) -> Any:
    """A ``thresher.fitting.FitContext`` drawing its samples from ``table``, as the fit stage does."""
    from thresher.fitting import FitContext

    return FitContext.of_table(table, artifact_dir, seed)


def record_batches(table: pa.Table, columns: Sequence[str], rows: int) -> list[pa.RecordBatch]:
    """``table``'s ``columns`` in record batches of ``rows`` rows (a scorer's input)."""
    view = table.select(list(columns)).combine_chunks()
    return view.to_batches(max_chunksize=max(1, rows))


def timed_loop(
    run: Callable[[Any], Any], items: Sequence[Any], seconds: float, sync: Callable[[], None]
) -> tuple[list[int], float]:
    """Run ``items`` in turn (cycling) until ``seconds`` have passed; at least one.

    Returns the indices run, in order, and the elapsed seconds (after ``sync``).
    """
    done: list[int] = []
    started = time.perf_counter()
    while not done or time.perf_counter() - started < seconds:
        index = len(done) % len(items)
        run(items[index])
        done.append(index)
    sync()
    return done, time.perf_counter() - started


def importable(name: str) -> bool:
    """Whether ``import name`` can work here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def matmul_flops(n: int, device: str, seconds: float) -> float:
    """FLOP/s of ``n x n`` bf16 matrix products on ``device`` (random data, after warm-up)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=generator)
    out = torch.empty(n, n, device=device, dtype=torch.bfloat16)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):
        torch.matmul(a, b, out=out)
    sync()
    repeats, started = 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - started < seconds:
        for _ in range(10 if device.startswith("cuda") else 1):
            torch.matmul(a, b, out=out)
            repeats += 1
        sync()
    return 2.0 * n**3 * repeats / (time.perf_counter() - started)


# -- parts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """A part of the check: its function, time budget at full scale, and the packages it needs.

    ``requires`` are checked before the part starts (a missing one skips
    it with a note); ``thresher.scorers`` needs pydantic, which the GPU
    machine lacks unless it is carried as a wheel.
    """

    name: str
    run: Callable[[Workspace], None]
    budget: float
    requires: tuple[str, ...] = ()
