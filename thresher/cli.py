"""The ``thresher`` command line.

Environment variables are read here (the edge), not in the library.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from thresher.errors import ThresherError

app = typer.Typer(
    name="thresher",
    help="Score corpus shards, select a subset, and write a pruned Parquet dataset you can trust.\n\n"
    "Example: thresher run examples/curate.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Run configuration (YAML).", show_default=False)]


def _quiet_prefect(quiet: bool) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@app.command()
def run(
    config: ConfigArg,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete earlier results in the run directory first.")
    ] = False,
    engine: Annotated[str | None, typer.Option(help="Override the engine: local or spark.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only print errors and the summary.")
    ] = False,
) -> None:
    """Run a curation job: ingest, score, select and write the pruned dataset.

    Example: thresher run examples/curate.yaml --engine local
    """
    _quiet_prefect(quiet)
    if engine not in (None, "local", "spark"):
        raise ThresherError(f"--engine must be local or spark, got {engine!r}")
    from thresher.config import load_config
    from thresher.flows.curate import curate

    cfg = load_config(config)
    cfg.input_files()  # fail fast, before Prefect and Spark start
    kind: Literal["local", "spark"] | None = engine  # type: ignore[assignment]
    manifest = curate(cfg, fresh=fresh, engine=kind)
    counts = manifest["counts"]
    console.print(
        f"[bold green]done[/]: kept {counts['kept']:,}, dropped {counts['dropped']['total']:,}, "
        f"quarantined {counts['quarantined']['total']:,} of {counts['input']:,} input records\n"
        f"run directory: {cfg.run_path}"
    )


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a configuration and its input paths without running anything."""
    from thresher.config import load_config

    cfg = load_config(config)
    files = cfg.input_files()
    console.print(f"[green]valid[/]: {len(files)} input file(s), run directory {cfg.run_path}")


def main() -> None:
    """Entry point: user errors print one clear line and exit with status 2."""
    try:
        app()
    except ThresherError as error:
        console.print(f"[bold red]error[/]: {error}", markup=True, highlight=False)
        sys.exit(2)
