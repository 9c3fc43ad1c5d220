"""GPU check part ``tests``: ``pytest -m gpu`` on the test files that can run on the machine."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._gpu_common import ROOT, Row, Workspace, importable

# -- part: the gpu-marked tests --------------------------------------------------------------
#: Test fixtures (tests/conftest.py) and the package each needs.
FIXTURE_PACKAGES = {
    "spark": "pyspark",
    "spark_engine": "pyspark",
    "prefect_server": "prefect",
    "s3": "moto",
}
_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")
_COLLECTED = re.compile(r"(\d+)(?:/\d+)? tests? collected")


def gpu_test_files(root: Path = ROOT) -> tuple[list[Path], dict[Path, str]]:
    """Test files with ``gpu``-marked tests: those that can run here, and why others cannot.

    A file cannot run when a module it imports at module level (followed
    through ``tests``, ``thresher`` and ``benchmarks`` modules), or a
    fixture one of its ``gpu`` tests takes, needs a package that is not
    installed (on the GPU machine: pyspark, prefect, faiss, datasketch).
    """
    runnable: list[Path] = []
    excluded: dict[Path, str] = {}
    seen: dict[str, set[str]] = {}
    for path in sorted((root / "tests").rglob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        if "mark.gpu" not in source:
            continue
        missing = set(_missing_imports(root / "tests" / "conftest.py", root, seen))
        missing |= _missing_imports(path, root, seen)
        missing |= {
            package
            for fixture, package in FIXTURE_PACKAGES.items()
            if fixture in _gpu_fixtures(ast.parse(source)) and not importable(package)
        }
        if missing:
            excluded[path] = "needs " + ", ".join(sorted(missing))
        else:
            runnable.append(path)
    return runnable, excluded


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _missing_imports(path: Path, root: Path, seen: dict[str, set[str]]) -> set[str]:
    """Packages not installed that importing ``path`` would import at module level."""
    key = str(path)
    if key in seen:
        return seen[key]
    seen[key] = set()  # cycles end here
    missing: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in tree.body:  # module level only: imports inside functions are lazy
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names:
        top = name.split(".")[0]
        if top in ("tests", "thresher", "benchmarks"):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # a package's __init__ runs first
                module = _module_file(".".join(parts[:depth]), root)
                if module is not None:
                    missing |= _missing_imports(module, root, seen)
        elif top != "__future__" and not importable(top):
            missing.add(top)
    seen[key] = missing
    return missing


def _gpu_fixtures(tree: ast.Module) -> set[str]:
    """Argument names of the test functions marked ``gpu`` (the fixtures they take)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            "gpu" in ast.unparse(decorator) for decorator in node.decorator_list
        ):
            names |= {arg.arg for arg in node.args.args}
    return names


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def part_tests(ws: Workspace) -> None:
    """``pytest -m gpu`` on the test files that can run here (collection only in a dry run)."""
    files, excluded = gpu_test_files()
    note = "; ".join(f"{p.name} not run: {why}" for p, why in excluded.items())
    if not files:
        ws.emit(Row("tests", "pytest -m gpu", status="skipped", note=note or "no gpu tests"))
        return
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", *[str(p.relative_to(ROOT)) for p in files]]
    if ws.dry:
        command.append("--collect-only")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(10.0, ws.seconds_left() - 5),
            check=False,
        )
        stdout, stderr, returncode = result.stdout, result.stderr, result.returncode
    except subprocess.TimeoutExpired as expired:
        stdout, stderr, returncode = _text(expired.stdout), _text(expired.stderr), -1
        stdout += "\n= pytest stopped at the part's time budget ="
    seconds = time.perf_counter() - started
    log = f"$ {' '.join(command)}\n{stdout}\n{stderr}"
    if ws.out is not None:
        (ws.out / "gpu-tests.log").write_text(log, encoding="utf-8")
    lines = [line for line in stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"no output (exit {returncode})"
    counts = {kind.rstrip("s"): int(n) for n, kind in _SUMMARY.findall(summary)}
    collected = _COLLECTED.search(summary)
    names = ", ".join(p.name for p in files)
    if ws.dry:
        shown: str = f"{collected.group(1) if collected else 0} collected"
        status = "ok" if returncode == 0 and collected else "failed"
        target = "collected (no CUDA: not run)"
    else:
        passed = counts.get("passed", 0)
        bad = sum(counts.get(k, 0) for k in ("failed", "skipped", "error", "xfailed"))
        shown = f"{passed} passed"
        status = "met" if returncode == 0 and passed and not bad else "missed"
        target = "all pass, none skipped"
    ws.emit(
        Row(
            "tests",
            "pytest -m gpu",
            workload=names,
            unit="tests",
            gpu=shown,
            target=target,
            status=status,
            note="; ".join(filter(None, [f"{summary} ({seconds:.0f} s)", note])),
        )
    )
