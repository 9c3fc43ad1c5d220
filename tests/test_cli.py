"""The command line: help for every command, clear errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from thresher.cli import app


def _thresher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thresher", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate"):
        assert command in result.output


def test_validate_reports_unknown_scorer_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(
        "run_dir: r\ninput: {paths: ['*.jsonl']}\nscorers: [{name: perplexityy}]\n",
        encoding="utf-8",
    )
    result = _thresher("validate", str(config))
    assert result.returncode == 2
    assert "unknown scorer 'perplexityy'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_reports_missing_input_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("run_dir: r\ninput: {paths: ['absent/*.jsonl']}\n", encoding="utf-8")
    result = _thresher("run", str(config))
    assert result.returncode == 2
    assert "absent/*.jsonl" in result.stderr
    assert not (tmp_path / "r").exists()


def test_validate_accepts_the_example_config(small_corpus: Path, tmp_path: Path) -> None:
    example = (Path(__file__).parents[1] / "examples" / "curate.yaml").read_text(encoding="utf-8")
    (tmp_path / "sample_corpus").symlink_to(small_corpus)
    (tmp_path / "curate.yaml").write_text(example, encoding="utf-8")
    result = _thresher("validate", str(tmp_path / "curate.yaml"))
    assert result.returncode == 0, result.stderr
    assert "4 input file(s)" in result.stderr
