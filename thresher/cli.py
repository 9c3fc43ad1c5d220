"""The ``thresher`` command line: run | score | select | report | eval | inspect | validate.

Environment variables are read here (the edge), not in the library. A
problem the user can fix (a :class:`~thresher.errors.ThresherError`) is
printed as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape

from thresher.errors import ConfigError, ThresherError
from thresher.redact import redact_known, remember_secrets, shown

if TYPE_CHECKING:
    from thresher.config import RunConfig

app = typer.Typer(
    name="thresher",
    help=(
        "Score corpus shards, select a subset, and write a pruned Parquet dataset you can trust.\n\n"
        "A typical session:\n\n"
        "  thresher validate examples/curate.yaml     # check the config, run nothing\n\n"
        "  thresher run examples/curate.yaml          # everything; opens with a report\n\n"
        "  thresher inspect runs/sample               # what was dropped and why\n\n"
        "  thresher select runs/sample --budget 0.3   # re-select from stored scores\n\n"
        "Exit status: 0 done, 2 a problem with the input or config (message on stderr)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

ConfigArg = Annotated[
    str,
    typer.Argument(
        help="Run configuration (YAML; a path or a URI).", show_default=False, metavar="CONFIG"
    ),
]
RunDirArg = Annotated[
    str,
    typer.Argument(
        help="A run directory (run_dir of a config): a path or a URI such as s3://bucket/run.",
        show_default=False,
        metavar="RUN_DIR",
    ),
]
FreshOpt = Annotated[
    bool,
    typer.Option(
        "--fresh",
        help="Start over, discarding earlier intermediate results (thresher run keeps the "
        "published dataset readable until it publishes the new one).",
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        help="Override the engine: local, spark or another registered one.",
        show_default=False,
        metavar="KIND",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress display; only errors and the summary.")
]


def _user_errors(command: F) -> F:
    """Print a ThresherError as one line and exit with status 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ThresherError as error:
            log = getattr(error, "log", None)
            where = f" (details: {log})" if log else ""
            console.print(
                f"[bold red]error[/]: {escape(redact_known(str(error)))}{escape(where)}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return cast(F, wrapper)


def _quiet_prefect(quiet: bool) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # Prefect's temporary server gives up after 20 s by default, which a busy machine
    # (a shared CI runner, a notebook server) can exceed while it starts.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if quiet:
        # The console handler's level, not the loggers': the run's log file
        # (thresher.logs.run_log) still gets every record.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    elif sys.stderr.isatty():
        # The progress bars say what the per-shard task-run lines would.
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


def _engine(engine: str | None) -> str | None:
    """The ``--engine`` option, checked against the engine registry."""
    from thresher.engines.registry import check_engine

    return None if engine is None else check_engine(engine, "--engine")


def _check_before_work(cfg: Any, inputs: bool = True) -> None:
    """Fail fast, before Prefect and Spark start: every input pattern matches, every store answers."""
    from thresher.flows.lifecycle import check_storage

    remember_secrets(cfg.config_dict())  # so that no message or log line quotes one
    if inputs:
        from thresher.preflight import require_input_columns

        require_input_columns(cfg, cfg.input_files())  # a schema column no input has
    _check_eval_sets(cfg)
    check_storage(cfg)


def _check_eval_sets(cfg: RunConfig) -> None:
    """Every evaluation-set pattern of a ``decontaminate`` section matches a file."""
    if cfg.decontaminate is not None:
        from thresher.stages.decontaminate import eval_set_files

        eval_set_files(cfg)


#: Exit status of a run that completed but skipped damaged input files.
EXIT_SKIPPED_INPUTS = 3


def _done(manifest: dict[str, Any], run_dir: Any) -> None:
    """Print the run's summary; exit with status 3 when it skipped damaged inputs.

    Paths are shown without secrets and with their control characters
    escaped (:func:`thresher.redact.shown`): a file name cannot forge a line.
    """
    counts = manifest["counts"]
    console.print(
        f"[bold green]done[/]: kept {counts['kept']:,}, dropped {counts['dropped']['total']:,}, "
        f"quarantined {counts['quarantined']['total']:,} of {counts['input']:,} input records\n"
        f"run directory: {escape(shown(run_dir))}\nreport: {escape(shown(run_dir / 'report.html'))}",
        soft_wrap=True,
    )
    skipped = manifest.get("skipped_inputs") or []
    if skipped:
        names = escape(", ".join(shown(item["path"]) for item in skipped[:3]))
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        console.print(
            f"[bold yellow]completed with skipped inputs[/]: {len(skipped)} damaged file(s) "
            f"({names}{more}); see manifest.json `skipped_inputs`",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_SKIPPED_INPUTS)


@app.command()
@_user_errors
def run(
    config: ConfigArg, fresh: FreshOpt = False, engine: EngineOpt = None, quiet: QuietOpt = False
) -> None:
    """Run a curation job: ingest, score, select, write the pruned dataset, card and report.

    A re-run resumes: shards already ingested and scored are skipped.

    Examples:

      thresher run examples/curate.yaml

      thresher run examples/curate.yaml --engine local --quiet

      thresher run examples/curate.yaml --fresh     # start over
    """
    _quiet_prefect(quiet)
    kind = _engine(engine)
    from thresher.config import load_config
    from thresher.flows.curate import curate
    from thresher.logs import run_log

    cfg = load_config(config)
    _check_before_work(cfg)
    with run_log(cfg.run_path, quiet=quiet):
        manifest = curate(cfg, fresh=fresh, engine=kind, quiet=quiet)
    _done(manifest, cfg.run_path)


@app.command()
@_user_errors
def score(
    config: ConfigArg, fresh: FreshOpt = False, engine: EngineOpt = None, quiet: QuietOpt = False
) -> None:
    """Ingest, fit and score only; select later with `thresher select`.

    The score table (RUN_DIR/scores/) is the reusable asset: selections at
    any budget are made from it without scoring again.

    Examples:

      thresher score examples/curate.yaml

      thresher select runs/sample --budget 0.5
    """
    _quiet_prefect(quiet)
    kind = _engine(engine)
    from thresher.config import load_config
    from thresher.flows.curate import curate
    from thresher.logs import run_log

    cfg = load_config(config)
    _check_before_work(cfg)
    with run_log(cfg.run_path, quiet=quiet):
        summary = curate(cfg, fresh=fresh, engine=kind, stages="score", quiet=quiet)
    console.print(
        f"[bold green]scored[/]: {summary['ingested']:,} records in {summary['shards']} shard(s) "
        f"({summary['quarantined']:,} quarantined)\nrun directory: {escape(shown(cfg.run_path))}\n"
        f"next: thresher select {escape(shown(cfg.run_path))} --budget B",
        soft_wrap=True,
    )


def _budget(text: str | None) -> int | float | dict[str, Any] | None:
    """``--budget``: a count, a fraction, ``tokens=N`` or ``COLUMN=N`` (a sum budget)."""
    from thresher.budget import budget_from_text

    if text is None:
        return None
    try:
        return budget_from_text(text)
    except ValueError as error:
        raise ConfigError(f"--budget {error}") from None


def _params(pairs: list[str]) -> dict[str, Any] | None:
    import yaml

    if not pairs:
        return None
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param must look like KEY=VALUE, got {pair!r}")
        params[key] = yaml.safe_load(value)
    return params


@app.command()
@_user_errors
def select(
    target: Annotated[
        str,
        typer.Argument(
            help="A run directory (uses the configuration it recorded) or a config file.",
            show_default=False,
            metavar="RUN_DIR|CONFIG",
        ),
    ],
    budget: Annotated[
        str | None,
        typer.Option(
            help="New budget: a count (1000), a fraction (0.3), tokens=N or COLUMN=N.",
            show_default=False,
            metavar="B",
        ),
    ] = None,
    selector: Annotated[
        str | None,
        typer.Option(help="Another selector (registry name).", show_default=False, metavar="NAME"),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A selector parameter KEY=VALUE (repeatable).",
            show_default=False,
            metavar="KEY=VALUE",
        ),
    ] = None,
    engine: EngineOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Re-run selection from the stored scores, without scoring again.

    Redoes selection, the pruned dataset, manifest, card and report. No
    input file is read and no scorer is built, fitted or run, so this takes
    seconds whatever the scorers cost.

    Examples:

      thresher select runs/sample --budget 0.3

      thresher select runs/sample --budget 5000 --selector topk --param score=word_count

      thresher select examples/curate.yaml        # after editing the selector in the config
    """
    _quiet_prefect(quiet)
    kind = _engine(engine)
    from thresher.api import target_config, with_selector
    from thresher.flows.curate import curate
    from thresher.io.fs import Location
    from thresher.logs import run_log

    if not Location.of(target).exists():
        raise ConfigError(f"{target} does not exist (expected a run directory or a config file)")
    cfg = with_selector(
        target_config(target),
        budget=_budget(budget),
        selector=selector,
        params=_params(param or []),
    )
    _check_before_work(cfg, inputs=False)
    with run_log(cfg.run_path, quiet=quiet):
        manifest = curate(cfg, engine=kind, stages="select", quiet=quiet)
    _done(manifest, cfg.run_path)


@app.command()
@_user_errors
def report(
    run_dir: RunDirArg,
    output: Annotated[
        str | None,
        typer.Option(
            help="Where to write the page (default RUN_DIR/report.html).", show_default=False
        ),
    ] = None,
) -> None:
    """Rebuild the run report: one self-contained HTML page with plots.

    Examples:

      thresher report runs/sample

      thresher report runs/sample --output /tmp/sample-report.html
    """
    from thresher.api import report as write_report

    path = write_report(run_dir, output)
    console.print(f"[bold green]report[/]: {path}", soft_wrap=True)


@app.command(name="eval")
@_user_errors
def eval_(
    config: Annotated[
        str,
        typer.Argument(
            help="Eval configuration: a run configuration with an `eval` section (YAML).",
            show_default=False,
            metavar="CONFIG",
        ),
    ],
    fresh: FreshOpt = False,
    engine: EngineOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train on each selector's subsets and draw the pruning curve.

    Splits the labelled data (train pool, validation, test), scores the pool
    once, then for every selector, pruning rate and seed selects a subset
    from the stored scores, trains a small classifier on it for a fixed
    number of steps and measures it on the test split. Writes
    RUN_DIR/run/eval/ (results.parquet, summary.csv, pruning_curve.svg) and
    the curve into RUN_DIR/run/report.html. A re-run resumes.

    Examples:

      thresher eval examples/eval-digits.yaml

      thresher eval examples/eval-fashion-mnist.yaml --engine local --quiet

      thresher eval examples/eval-topics.yaml --fresh     # start over
    """
    _quiet_prefect(quiet)
    kind = _engine(engine)
    from thresher.evaluation.config import load_eval_config
    from thresher.evaluation.flow import evaluate_with_runner
    from thresher.evaluation.result import load_evaluation
    from thresher.evaluation.summary import markdown_table
    from thresher.io.fs import Location
    from thresher.logs import run_log
    from thresher.reporting.html import distill_line

    cfg = load_eval_config(config)
    cfg.run.input_files()  # fail fast, before Prefect and Spark start
    with run_log(Location.of(cfg.root), quiet=quiet):
        evaluate_with_runner(cfg, fresh=fresh, engine=kind, quiet=quiet)
    result = load_evaluation(cfg.root)
    for warning in result.record.get("warnings", []):
        console.print(f"[bold red]WARNING[/]: {warning}", soft_wrap=True)
    distilled = distill_line(result.record)
    if distilled is not None:
        out.print(distilled, soft_wrap=True)
    best = result.best
    if not best.empty:
        measured = (
            "per-token loss per held-out set, lower is better"
            if result.record.get("task") == "language_model"
            else "test accuracy"
        )
        out.print(
            f"Best selector per pruning rate ({measured}; margin over random, paired, ± std):"
        )
        out.print(markdown_table(best), highlight=False, soft_wrap=True)
    console.print(
        f"[bold green]evaluated[/]: {len(result.results):,} models\n"
        f"results: {result.dir / 'results.parquet'}\nsummary: {result.dir / 'summary.csv'}\n"
        f"curve: {result.curve}\nreport: {result.report}",
        soft_wrap=True,
    )


@app.command()
@_user_errors
def inspect(
    run_dir: RunDirArg,
    top: Annotated[int, typer.Option(min=1, help="How many reasons to list.")] = 10,
) -> None:
    """Print the funnel and the top drop and quarantine reasons of a run.

    Examples:

      thresher inspect runs/sample

      thresher inspect runs/sample --top 5
    """
    from thresher.reporting.console import render_inspect

    render_inspect(run_dir, out, top=top)


@app.command()
@_user_errors
def validate(config: ConfigArg) -> None:
    """Check a run or eval configuration and its input paths without running anything.

    Every mistake is reported at once, each with its field: bad values, the
    checks across sections, input patterns that match nothing, and schema
    columns that no input file has (read from a sample of the files'
    footers, headers and first records). A file with an `eval:` section is
    checked as an eval job (thresher eval).

    Example:

      thresher validate examples/curate.yaml
      thresher validate examples/eval-digits.yaml
    """
    from thresher.config import format_problems, read_yaml
    from thresher.preflight import input_problems, validate_run_file

    try:
        is_eval = isinstance(data := read_yaml(config), dict) and "eval" in data
    except ConfigError:
        is_eval = False  # validate_run_file reports the missing file or bad YAML
    if is_eval:
        from thresher.evaluation.config import load_eval_config

        cfg = load_eval_config(config).run
        kind = "eval job"
        problems, files, warnings = input_problems(cfg)
        if problems:
            raise ConfigError(format_problems(problems, "eval"))
    else:
        checked = validate_run_file(config)
        cfg, files, warnings, kind = checked.config, checked.files, checked.warnings, "run"
    for warning in warnings:
        console.print(
            f"[bold yellow]warning[/]: {escape(warning)}", highlight=False, soft_wrap=True
        )
    console.print(
        f"[green]valid[/] {kind}: {len(files)} input file(s), run directory "
        f"{escape(shown(cfg.run_path))}"
    )


def main() -> None:
    """Entry point: user errors print one clear line and exit with status 2."""
    try:
        app()
    except ThresherError as error:  # raised outside a command (e.g. while parsing)
        console.print(
            f"[bold red]error[/]: {escape(redact_known(str(error)))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
