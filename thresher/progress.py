"""Progress of long stages: shards and documents done, rate and ETA.

The flow reports to a :class:`Progress` as work completes (a shard future
of the local engine, a Spark task); the stages themselves know nothing
about it. Three implementations:

- :class:`ConsoleProgress`: a live rich bar on a terminal;
- :class:`LogProgress`: one log line every few seconds and at the end of
  each stage, for runs without a terminal (a Prefect deployment, where the
  lines land in Prefect's flow-run logs);
- :class:`NullProgress`: nothing (``--quiet``).

:func:`make_progress` picks one. :func:`watch_spark` polls Spark's status
tracker while a Spark stage runs and reports its task counts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TextIO

#: Seconds between two log lines of the same stage (LogProgress).
LOG_INTERVAL = 10.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass
class Meter:
    """Counts of one stage and the text that describes them.

    ``shards``/``docs`` are totals when known (``None`` otherwise); the rate
    and ETA use documents when their total is known, else shards.
    """

    name: str
    shards: int | None = None
    docs: int | None = None
    clock: Any = time.monotonic
    shards_done: int = 0
    docs_done: int = 0
    shards_reused: int = 0
    docs_reused: int = 0
    tasks_done: int = 0
    tasks_total: int = 0
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self.started, 1e-9)

    @property
    def fraction(self) -> float | None:
        """Share of the stage done, from documents, shards or Spark tasks (None: unknown)."""
        if self.docs:
            return min(1.0, (self.docs_done + self.docs_reused) / self.docs)
        if self.shards:
            return min(1.0, (self.shards_done + self.shards_reused) / self.shards)
        if self.tasks_total:
            return min(1.0, self.tasks_done / self.tasks_total)
        return None

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate of the work done so far (reused work does not count)."""
        if self.docs:
            total, done, reused = self.docs, self.docs_done, self.docs_reused
        elif self.shards:
            total, done, reused = self.shards, self.shards_done, self.shards_reused
        elif self.tasks_total:
            total, done, reused = self.tasks_total, self.tasks_done, 0
        else:
            return None
        left = total - done - reused
        if left <= 0:
            return 0.0
        if done == 0:
            return None
        return self.elapsed * left / done

    def status(self) -> str:
        """E.g. ``3/10 shards · 6,000/20,000 docs · 1,234 docs/s · ETA 0:00:05``.

        Reused work (shards a resumed run finds done) is said apart and left
        out of the rate: ``10 shards reused, 0 done``.
        """
        parts = []
        if self.shards_reused:
            parts.append(f"{self.shards_reused:,} shards reused, {self.shards_done:,} done")
            if self.shards is not None:
                parts[-1] += f" of {self.shards:,}"
        elif self.shards is not None:
            parts.append(f"{self.shards_done:,}/{self.shards:,} shards")
        if self.docs is not None:
            parts.append(f"{self.docs_done + self.docs_reused:,}/{self.docs:,} docs")
        elif self.docs_done:
            parts.append(f"{self.docs_done:,} docs")
        if self.tasks_total:
            parts.append(f"{self.tasks_done:,}/{self.tasks_total:,} Spark tasks")
        if self.docs_done:
            parts.append(f"{self.docs_done / self.elapsed:,.0f} docs/s")
        eta = self.eta
        if eta is not None and self.fraction is not None and self.fraction < 1.0:
            parts.append(f"ETA {_duration(eta)}")
        return " · ".join(parts) or "starting"

    def summary(self) -> str:
        """The closing line of a stage."""
        return f"{self.name}: {self.status()} in {_duration(self.elapsed)}"


class StageProgress(ABC):
    """What the flow reports to while one stage runs."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._lock = threading.Lock()

    def advance(self, shards: int = 0, docs: int = 0) -> None:
        """Record ``shards`` more shards and ``docs`` more documents done."""
        with self._lock:
            self.meter.shards_done += shards
            self.meter.docs_done += docs
            self._show(final=False)

    def reuse(self, shards: int = 0, docs: int = 0) -> None:
        """Record shards found done already (resume): counted apart, not in the rate."""
        with self._lock:
            self.meter.shards_reused += shards
            self.meter.docs_reused += docs
            self._show(final=False)

    def tasks(self, done: int, total: int) -> None:
        """Record Spark task counts (from :func:`watch_spark`)."""
        with self._lock:
            self.meter.tasks_done, self.meter.tasks_total = done, total
            self._show(final=False)

    def finish(self) -> None:
        with self._lock:
            self._show(final=True)

    @abstractmethod
    def _show(self, *, final: bool) -> None:
        """Render the meter (called with the lock held)."""


class Progress(ABC):
    """Makes one :class:`StageProgress` per stage."""

    @contextmanager
    def stage(
        self, name: str, *, shards: int | None = None, docs: int | None = None
    ) -> Iterator[StageProgress]:
        """Report a stage: ``with progress.stage("score", shards=10, docs=20_000) as bar:``."""
        bar = self._open(Meter(name, shards=shards, docs=docs))
        try:
            yield bar
        finally:
            bar.finish()
            self._close(bar)

    @abstractmethod
    def _open(self, meter: Meter) -> StageProgress: ...

    def _close(self, bar: StageProgress) -> None:  # noqa: B027 - optional hook
        """Release what ``_open`` took (a live display)."""


# -- nothing -----------------------------------------------------------------------


class _NullStage(StageProgress):
    def _show(self, *, final: bool) -> None:
        pass


class NullProgress(Progress):
    """Shows nothing (``--quiet``)."""

    def _open(self, meter: Meter) -> StageProgress:
        return _NullStage(meter)


# -- log lines ---------------------------------------------------------------------


class _LogStage(StageProgress):
    def __init__(self, meter: Meter, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        super().__init__(meter)
        self.logger = logger
        self._last = meter.started

    def _show(self, *, final: bool) -> None:
        now = self.meter.clock()
        if final:
            self.logger.info("%s", self.meter.summary())
        elif now - self._last >= LOG_INTERVAL:
            self._last = now
            self.logger.info("%s: %s", self.meter.name, self.meter.status())


class LogProgress(Progress):
    """One log line per stage every :data:`LOG_INTERVAL` seconds, and one at its end.

    With Prefect's run logger the lines appear in the flow run's logs, which
    is where a deployment (no terminal) shows its progress.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.logger = logger

    def _open(self, meter: Meter) -> StageProgress:
        return _LogStage(meter, self.logger)


# -- rich bar ----------------------------------------------------------------------


class _ConsoleStage(StageProgress):
    def __init__(self, meter: Meter, bar: Any) -> None:
        super().__init__(meter)
        self.bar = bar
        self.task = bar.add_task(meter.name, total=None, status="starting")

    def _show(self, *, final: bool) -> None:
        fraction = self.meter.fraction
        if final and fraction is None:
            fraction = 1.0
        update: dict[str, Any] = {"status": self.meter.status()}
        if fraction is not None:
            update.update(total=1000, completed=round(1000 * fraction))
        self.bar.update(self.task, **update)


class ConsoleProgress(Progress):
    """A rich progress bar per stage on ``file`` (standard error by default)."""

    def __init__(self, file: TextIO | None = None, *, force_terminal: bool | None = None) -> None:
        self.file = file
        self.force_terminal = force_terminal

    def _open(self, meter: Meter) -> StageProgress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        console = Console(
            file=self.file or sys.stderr, force_terminal=self.force_terminal, width=None
        )
        bar = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(bar_width=30),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            redirect_stderr=False,
            redirect_stdout=False,
        )
        bar.start()
        return _ConsoleStage(meter, bar)

    def _close(self, bar: StageProgress) -> None:
        if isinstance(bar, _ConsoleStage):
            bar.bar.stop()


def make_progress(
    *, quiet: bool, logger: logging.Logger | logging.LoggerAdapter[Any], tty: bool | None = None
) -> Progress:
    """Progress for a run: nothing when ``quiet``, a bar on a terminal, else log lines."""
    if quiet:
        return NullProgress()
    if tty is None:
        tty = sys.stderr.isatty()
    return ConsoleProgress() if tty else LogProgress(logger)


# -- Spark -------------------------------------------------------------------------


class _SparkTasks:
    """Task counts of the Spark jobs started after it was made (from the status tracker)."""

    def __init__(self, spark_context: Any) -> None:
        self.tracker = spark_context.statusTracker()
        self.before = set(self.tracker.getJobIdsForGroup(None))
        self.stages: dict[int, tuple[int, int]] = {}

    def poll(self, *, final: bool = False) -> tuple[int, int]:
        """Completed and total tasks so far; ``final``: the jobs are over, so a stage
        with no completed task was skipped (its output was reused) and is not counted."""
        stage_ids = set(self.tracker.getActiveStageIds())
        for job_id in set(self.tracker.getJobIdsForGroup(None)) - self.before:
            job = self.tracker.getJobInfo(job_id)
            if job is not None:
                stage_ids.update(job.stageIds)
        for stage_id in stage_ids:
            info = self.tracker.getStageInfo(stage_id)
            if info is not None and info.numTasks:
                self.stages[stage_id] = (info.numCompletedTasks, info.numTasks)
        counted = [(d, t) for d, t in self.stages.values() if d or not final]
        return sum(d for d, _ in counted), sum(t for _, t in counted)


@contextmanager
def watch_spark(
    spark_context: Any, bar: StageProgress, interval: float = 0.5
) -> Iterator[StageProgress]:
    """Report the task counts of Spark jobs that run inside the block to ``bar``.

    A daemon thread polls ``SparkContext.statusTracker()`` every
    ``interval`` seconds (stages are counted from the jobs started after
    the block began, so earlier jobs do not count) and stops when the block
    ends, after one last poll.
    """
    tasks = _SparkTasks(spark_context)
    stop = threading.Event()

    def report(final: bool = False) -> None:
        done, total = tasks.poll(final=final)
        if total:
            bar.tasks(done, total)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                report()
            except Exception:  # the tracker is best effort; never break the stage
                return

    thread = threading.Thread(target=loop, name="thresher-spark-progress", daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        stop.set()
        thread.join()
        with suppress(Exception):  # the tracker is best effort
            report(final=True)
