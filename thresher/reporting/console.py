"""``thresher inspect``: a run's funnel and top reasons as rich tables on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from thresher.errors import RunStateError
from thresher.io.files import read_json, read_json_or
from thresher.io.fs import Location
from thresher.reporting.data import build_funnel
from thresher.run_dir import RunDir


def render_inspect(run_dir: str | Location, console: Console, *, top: int = 10) -> None:
    """Print the funnel (records left after each stage) and the ``top`` reasons by count.

    Reads only the manifest, the step details and the ingest markers, never a table.
    """
    run = RunDir(Location.of(run_dir))
    if not run.is_run_dir():
        raise RunStateError(f"{run.root} is not a thresher run directory (no _state/run.json)")
    manifest = read_json_or(run.manifest, None)
    version = run.current()
    steps = read_json(version.steps) if manifest is not None and version is not None else []
    stats = run.stored_ingest_stats()
    funnel, n_input, kept = build_funnel(manifest, stats, steps)

    title = f"{run.root}"
    if manifest is not None:
        title += (
            f"\ncreated {manifest['created']} · engine {manifest['engine']} · "
            f"seed {manifest['seed']} · config {manifest['config_hash'][:12]}"
        )
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("removed", justify="right")
    table.add_column("left", justify="right")
    table.add_column("share of input", justify="right")
    table.add_row("input", "", f"{n_input:,}", "100.0%")
    for step in funnel:
        table.add_row(
            step.stage,
            f"{step.total_removed:,}",
            f"{step.remaining:,}",
            _share(step.remaining, n_input),
        )
    if kept is not None:
        table.add_row(
            "[bold green]selected[/]", "", f"[bold green]{kept:,}[/]", _share(kept, n_input)
        )
    console.print(table)
    tokens = ((manifest or {}).get("counts") or {}).get("tokens")
    if tokens:
        requested = tokens.get("requested")
        wanted = f" of {requested:,} requested" if requested is not None else ""
        console.print(
            f"kept {tokens['kept']:,} {tokens['column']}{wanted} "
            f"({_share(tokens['kept'], tokens['ingested'])} of {tokens['ingested']:,} ingested)",
            soft_wrap=True,
        )

    reasons = [
        (reason, count, "quarantine" if index == 0 else "dropped")
        for index, step in enumerate(funnel)
        for reason, count in step.removed.items()
    ]
    reasons.sort(key=lambda item: (-item[1], item[0]))
    if reasons:
        ranked = Table(title=f"Top {min(top, len(reasons))} reasons", title_justify="left")
        ranked.add_column("reason")
        ranked.add_column("where")
        ranked.add_column("records", justify="right")
        ranked.add_column("share of input", justify="right")
        for reason, count, where in reasons[:top]:
            ranked.add_row(reason, where, f"{count:,}", _share(count, n_input))
        console.print(ranked)
    if manifest is None:
        present = {e.location.name for e in run.scores.list_files(recursive=False)}
        scored = sum(1 for s in stats if run.scores_shard(int(s["index"])).name in present)
        console.print(
            f"not selected yet: {scored} of {len(stats)} shard(s) scored; "
            f"run `thresher select {run.root} --budget B`",
            soft_wrap=True,
        )
    elif run.report.is_file():
        console.print(f"report: {run.report}", soft_wrap=True)


def _share(count: int, total: int) -> str:
    return f"{count / total:.1%}" if total else ""
