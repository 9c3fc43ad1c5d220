"""The GPU check (benchmarks/gpu.py): its dry run, its runner, and its imports on a GPU machine.

The GPU machine has no pyspark, prefect, faiss, datasketch or fastText: the
subprocess tests refuse those imports, so a module-level import of one of
them on the check's path fails here as it would there.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu
from benchmarks._gpu_common import DRY, Part, Row, Workspace
from benchmarks._gpu_models import forward_flops
from benchmarks._gpu_selection import lloyd
from tests.helpers.blocked_imports import NOT_ON_GPU_MACHINE, ROOT, blocking_env

#: What the GPU check imports, the test modules its pytest run collects, and their conftest.
CHECK_MODULES = [
    "benchmarks.gpu",
    "benchmarks._gpu_common",
    "benchmarks._gpu_models",
    "benchmarks._gpu_selection",
    "benchmarks._gpu_tests",
    "thresher.scorers",
    "thresher.selectors",
    "thresher.models.lm",
    "thresher.models.lm_training",
    "thresher.models._hf",
    "thresher.models.proxy",
    "thresher.scorers.perplexity",
    "thresher.scorers.el2n",
    "thresher.scorers.embedding",
    "thresher.selectors.dpp",
    "thresher.selectors.kmeans",
    "thresher.examples.sample_corpus",
    "tests.conftest",
    "tests.unit.test_el2n",
    "tests.unit.test_perplexity",
    "tests.unit.test_selectors_dpp",
]


def test_the_check_imports_without_spark_prefect_faiss_or_datasketch(tmp_path: Path) -> None:
    code = f"""
import importlib, json, sys
for name in {CHECK_MODULES!r}:
    importlib.import_module(name)
from benchmarks._gpu_tests import gpu_test_files
from thresher.devices import resolve_device
files, excluded = gpu_test_files()
print(json.dumps({{
    "loaded": sorted(m for m in {list(NOT_ON_GPU_MACHINE)!r} if m in sys.modules),
    "device": resolve_device("cpu"),
    "files": sorted(p.name for p in files),
    "excluded": {{p.name: why for p, why in excluded.items()}},
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=blocking_env(tmp_path / "site"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["device"] == "cpu"
    assert {"test_el2n.py", "test_perplexity.py", "test_selectors_dpp.py"} <= set(report["files"])
    for why in report["excluded"].values():  # a gpu test that needs Spark, say, is left out
        assert set(why.removeprefix("needs ").split(", ")) <= set(NOT_ON_GPU_MACHINE), why


def test_the_blocker_refuses_what_it_names(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import numpy"],
        env=blocking_env(tmp_path / "site", ["numpy"]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "No module named 'numpy' (blocked)" in result.stderr


@pytest.mark.slow
def test_dry_run_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        env=blocking_env(tmp_path / "site"),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "no CUDA" in result.stdout
    report = json.loads((out / "gpu.json").read_text())
    assert report["mode"] == "dry run"
    rows = [Row(**row) for row in report["rows"]]
    assert not [row for row in rows if row.status == "failed"]
    for part in gpu.PARTS:
        measured = [r for r in rows if r.part == part.name and r.status != "skipped"]
        assert measured, f"part {part.name} measured nothing: {rows}"
    table = (out / "gpu.md").read_text()
    for row in rows:
        line = next(line for line in table.splitlines() if line.startswith(f"| {row.part} |"))
        assert line in result.stdout  # the same table is printed
        assert f"| {row.part} | {row.measure} |" in table
    # a dry run never claims a target
    assert not [row for row in rows if row.status in ("met", "missed")]
    assert "collected" in next(r for r in rows if r.part == "tests").gpu  # type: ignore[operator]
    assert (out / "gpu-tests.log").is_file()
    print(f"dry run: {seconds:.1f} s")


def test_runner_skips_missing_packages_and_failures_and_stops_overruns(tmp_path: Path) -> None:
    def measured(ws: Workspace) -> None:
        ws.emit(Row("fine", "a measure", gpu=1.0, cpu=2.0))

    def broken(ws: Workspace) -> None:
        raise RuntimeError("boom")

    def slow(ws: Workspace) -> None:
        ws.emit(Row("slow", "first measure"))
        time.sleep(5)
        ws.emit(Row("slow", "never reached"))

    def imports_missing(ws: Workspace) -> None:
        import thresher_no_such_package  # noqa: F401

    parts = [
        Part("needs", measured, 10, ("thresher_no_such_package",)),
        Part("lazy", imports_missing, 10),
        Part("broken", broken, 10),
        Part("slow", slow, 0.5),
        Part("fine", measured, 10),
        Part("late", measured, 100),
    ]
    # device "cuda": part budgets apply as on a GPU (the fake parts never touch a device)
    ws = Workspace(DRY, "cuda", tmp_path)
    writes: list[int] = []
    ok = gpu.run_parts(parts, ws, total_budget=20, write=lambda: writes.append(len(ws.rows)))
    assert not ok  # a part failed
    by_part: dict[str, list[Row]] = defaultdict(list)
    for row in ws.rows:
        by_part[row.part].append(row)
    assert by_part["needs"][0].status == "skipped"
    assert "thresher_no_such_package" in by_part["needs"][0].note
    assert by_part["lazy"][0].status == "skipped" and "needs" in by_part["lazy"][0].note
    assert by_part["broken"][0].status == "failed" and "boom" in by_part["broken"][0].note
    assert [r.measure for r in by_part["slow"]] == ["first measure", "(part)"]
    assert by_part["slow"][1].status == "skipped" and "budget" in by_part["slow"][1].note
    assert by_part["fine"][0].status == "ok"
    # fewer than half of its 100 s budget is left of the 20 s total: not started
    assert by_part["late"][0].status == "skipped" and "overrun" in by_part["late"][0].note
    assert len(writes) == 4  # after each part that ran (skipped before starting: no write)
    assert "| fine | a measure |" in gpu.markdown(ws.rows, gpu.environment("cpu"), True, 1.0)


def test_flop_count_of_scored_windows() -> None:
    shape = (1000, 2, 8)  # matmul parameters, layers, width
    # 11 ids: 10 targets, in windows of 4, 4 and 2 inputs; a 1-id document predicts nothing
    tokens, flops = forward_flops([11, 1], 4, shape)
    assert tokens == 10
    per_window = [2 * 1000 * t + 4 * 2 * 8 * t * t for t in (4, 4, 2)]
    assert flops == pytest.approx(sum(per_window))


def test_torch_lloyd_matches_a_numpy_lloyd() -> None:
    import torch

    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 3)).astype(np.float32) + np.repeat(
        10 * np.eye(3, dtype=np.float32), 100, axis=0
    )
    start = x[[0, 1, 150]].copy()
    centroids, objective = lloyd(torch.from_numpy(x), torch.from_numpy(start), 5, 64)
    expected = start.astype(np.float64)
    for _ in range(5):
        labels = ((x[:, None, :] - expected[None]) ** 2).sum(-1).argmin(1)
        expected = np.stack(
            [x[labels == j].mean(0) if (labels == j).any() else expected[j] for j in range(3)]
        )
    np.testing.assert_allclose(centroids.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(objective))
