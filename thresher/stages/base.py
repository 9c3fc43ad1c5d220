"""One stage contract, and the one loop that runs any stage.

A flow is a list of stages handed to :func:`run_stages`. A stage is an
object built from the slice of the plan it needs (:mod:`thresher.plan`);
it knows what its result depends on and whether that result is already in
the run directory, and it returns a typed, frozen result that later stages
and the manifest read by attribute. The loop owns everything a stage
should not repeat: the lock check before it starts (a run that lost its
lock stops), the Prefect task (with the stage's retries; user errors are
never retried), the progress display, the timing, and the log line.

Two kinds:

- :class:`ShardStage`: per-shard work that the engine runs where the data
  is (ingest, score, materialise). It lists its items, splits them into
  the ones to do and the results already committed (its ``done`` check),
  and gives the engine a picklable task; each task commits its own output
  with one atomic write.
- :class:`Stage`: work on the whole table, or on the driver (harmonise,
  fit, dedup, decontaminate, select, publish). A whole-table result that
  spans several files is committed with :class:`KeyedResult`: files under
  a prefix named for the result, a summary written last that names its
  key and files, stale prefixes deleted after.

Adding a stage is one module holding its class and one line in a flow's
stage list.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from thresher.errors import ThresherError
from thresher.io.files import read_json_or, write_json_atomic
from thresher.io.fs import Location

if TYPE_CHECKING:
    from thresher.engines.base import Engine
    from thresher.io.lock import RunLock
    from thresher.progress import Progress, StageProgress
    from thresher.run_dir import RunDir

SUMMARY_FILE = "summary.json"


@dataclass
class RunContext:
    """What every stage of one flow run shares: where, with what, and the results so far.

    ``results`` maps a stage's name to its result; a stage reads the
    results of the stages before it from here, by attribute.
    """

    run: RunDir
    engine: Engine
    progress: Progress
    logger: Any
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    lock: RunLock | None = None
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def check_lock(self) -> None:
        """RunStateError when this run lost its lock (the loop calls it before each stage)."""
        if self.lock is not None:
            self.lock.check()

    def result(self, name: str) -> Any:
        """The result of an earlier stage (KeyError naming it when it did not run)."""
        try:
            return self.results[name]
        except KeyError:
            raise KeyError(f"stage {name!r} has not run in this flow") from None


class Stage(ABC):
    """One step of a flow (see module docstring).

    Subclasses set ``name`` and implement :meth:`run`; the rest has
    defaults that fit most stages.
    """

    #: The stage's name: its Prefect task, its progress line, its timing, its result's key.
    name: ClassVar[str]
    #: Prefect retries of the stage's task (user errors are never retried).
    retries: ClassVar[int] = 0
    #: Whether the stage shows a progress line.
    shown: ClassVar[bool] = True
    #: Whether its time goes to the manifest's ``seconds_per_stage`` ...
    timed: ClassVar[bool] = True
    #: ... under this key (default: its name; harmonising counts as ingest).
    timing_key: ClassVar[str | None] = None

    @property
    def timed_as(self) -> str | None:
        """The ``seconds_per_stage`` key of this stage's time, None when it is not timed."""
        if not self.timed:
            return None
        return self.timing_key or self.name

    def wanted(self) -> bool:
        """Whether the config asks for this stage (dedup without ``dedup:`` does not run)."""
        return True

    def clear(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """When not wanted: remove what an earlier run with this stage left behind."""

    def totals(self, ctx: RunContext) -> dict[str, int]:
        """The progress line's totals (``shards``, ``docs``) when known before the stage runs."""
        return {}

    @abstractmethod
    def run(self, ctx: RunContext, bar: StageProgress) -> Any:
        """Do the work (or find it done) and return the stage's result."""

    def describe(self, result: Any) -> str | None:
        """The log line that says what the stage did (None: nothing to say)."""
        return None


class ShardStage(Stage):
    """Per-shard work the engine runs where the data is (see module docstring)."""

    @abstractmethod
    def items(self, ctx: RunContext) -> list[Any]:
        """What the engine works on: shards, or shard keys."""

    def split(self, ctx: RunContext, items: list[Any]) -> tuple[list[Any], list[Any]]:
        """(items still to do, results already committed): the stage's ``done`` check.

        The default does everything; stages whose tasks commit files say
        which are there, from one listing or one index, not a read per item.
        """
        return items, []

    @abstractmethod
    def task(self, ctx: RunContext) -> Callable[[Any], Any]:
        """The picklable function the engine calls once per item."""

    def documents(self, result: Any) -> int:
        """Documents one item's result counts (for the progress line)."""
        return 0

    @abstractmethod
    def collect(self, ctx: RunContext, reused: list[Any], fresh: list[Any]) -> Any:
        """The stage's result from the reused and the new per-item results."""

    def run(self, ctx: RunContext, bar: StageProgress) -> Any:
        pending, reused = self.split(ctx, self.items(ctx))
        bar.reuse(shards=len(reused), docs=sum(self.documents(r) for r in reused))
        fresh = ctx.engine.map_shards(
            self.task(ctx),
            pending,
            bar,
            on_done=lambda r: bar.advance(shards=1, docs=self.documents(r)),
        )
        return self.collect(ctx, reused, fresh)


def run_stages(stages: Sequence[Stage], ctx: RunContext) -> RunContext:
    """Run ``stages`` in order (see module docstring); a result with ``stop`` set ends the list."""
    for stage in stages:
        ctx.check_lock()
        if not stage.wanted():
            stage.clear(ctx)
            continue
        start = time.perf_counter()
        if stage.shown:
            with ctx.progress.stage(stage.name, **stage.totals(ctx)) as bar:
                result = _task_of(stage)(stage, ctx, bar)
        else:
            result = _task_of(stage)(stage, ctx, _NO_BAR)
        if stage.timed_as:
            seconds = time.perf_counter() - start
            ctx.timings[stage.timed_as] = ctx.timings.get(stage.timed_as, 0.0) + seconds
        ctx.results[stage.name] = result
        line = stage.describe(result)
        if line:
            ctx.logger.info(line)
        if getattr(result, "stop", False):
            break
    return ctx


def _run(stage: Stage, ctx: RunContext, bar: StageProgress) -> Any:
    return stage.run(ctx, bar)


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: retry transient failures, never a ThresherError.

    A bad config, a damaged input under ``on_unreadable: fail`` or a held
    lock fails the same way every time; retrying it only repeats the traceback.
    """
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result could not be read: treat the failure as transient
        return True
    return not isinstance(error, ThresherError)


_TASKS: dict[tuple[str, int], Any] = {}


def _task_of(stage: Stage) -> Callable[[Stage, RunContext, StageProgress], Any]:
    """The Prefect task that runs ``stage`` (one per stage name and retry count, made once)."""
    key = (stage.name, stage.retries)
    if key not in _TASKS:
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        _TASKS[key] = task(
            name=stage.name,
            cache_policy=NO_CACHE,
            retries=stage.retries,
            retry_delay_seconds=1,
            retry_condition_fn=retry_unless_user_error,
        )(_run)
    return _TASKS[key]


class _NoBar:
    """The progress of a stage that shows none: every report is dropped."""

    def reuse(self, shards: int = 0, docs: int = 0) -> None:
        pass

    def advance(self, shards: int = 0, docs: int = 0) -> None:
        pass


_NO_BAR: Any = _NoBar()


class _NoEngine:
    """The engine of a flow whose stages need none: asking it for anything is a bug.

    The eval flow runs its stages on the driver; its scoring is a curate
    flow, with an engine of its own.
    """

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"this flow runs no engine (a stage asked for engine.{name})")


#: The ``RunContext.engine`` of a flow that runs no engine.
NO_ENGINE: Any = _NoEngine()


@dataclass(frozen=True)
class KeyedResult:
    """A whole-table result spanning several files, committed by a summary written last.

    The files go under ``root/result-<id>/``; :meth:`commit` writes
    ``root/summary.json`` (naming the key and the files) and then deletes
    every other result prefix: readers trust only what the summary names,
    so a run killed at any point leaves the last committed result readable.
    """

    root: Location

    @property
    def summary(self) -> Location:
        return self.root / SUMMARY_FILE

    def stored(self) -> dict[str, Any] | None:
        """The committed summary (None before the first commit)."""
        found = read_json_or(self.summary, None)
        return found if isinstance(found, dict) else None

    def current(self, key: str) -> dict[str, Any] | None:
        """The committed summary when it was made with ``key`` (its result can be reused)."""
        stored = self.stored()
        return stored if stored is not None and stored.get("key") == key else None

    def prefix(self, name: str | None = None) -> Location:
        """Where a new result writes its files (``result-<name or a fresh id>``)."""
        return self.root / f"result-{name or uuid.uuid4().hex[:8]}"

    def commit(self, summary: dict[str, Any]) -> None:
        """Write the summary, last: from now on readers take the result it names."""
        write_json_atomic(summary, self.summary)

    def retire(self, prefix: Location, keep: Sequence[str] = ()) -> None:
        """After a commit: delete every result but ``prefix`` (and the names in ``keep``)."""
        kept = {prefix.name, SUMMARY_FILE, *keep}
        for child in self.root.children():  # earlier results, now unnamed
            if child.name not in kept:
                child.delete_tree()

    def clear(self) -> None:
        """Remove every result (the stage is no longer configured)."""
        self.root.delete_tree()
