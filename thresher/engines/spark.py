"""The Spark engine: per-shard work as Spark tasks, frames as DataFrames, I/O through thresher's layer.

``local[*]`` by default, or any master URL (standalone, Kubernetes).
Executors read and write every file through :mod:`thresher.io.fs` (Python
on the executors, the same code the local engine runs), so object stores
need no Hadoop connector and a cluster needs no shared volume. Spark moves
rows between executors (shuffles, joins) and schedules, retries and
parallelises the work; the driver sees only small results.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from thresher import errors
from thresher.engines.base import Engine, EngineSettings
from thresher.engines.spark_options import SparkConfig
from thresher.frame import Frame, JoinKind
from thresher.io.files import write_parquet_atomic
from thresher.io.formats import carried
from thresher.io.fs import Location
from thresher.tables import conform_to

if TYPE_CHECKING:
    from thresher.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")
_THRESHER_ERROR = re.compile(r"thresher\.[\w.]*?(\w+Error): (.+)")
#: Rows per Arrow batch handed to and from Python on the executors.
BATCH_ROWS = 8192


def spark_safe(schema: pa.Schema) -> pa.Schema:
    """The schema with types Spark can carry (no large or unsigned types)."""

    def safe(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            return pa.string()
        if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
            return pa.binary()
        if pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            return pa.list_(safe(kind.value_type))
        if pa.types.is_list(kind):
            return pa.list_(safe(kind.value_type))
        if pa.types.is_unsigned_integer(kind):
            raise TypeError(f"Spark has no unsigned integers ({kind})")
        if pa.types.is_null(kind):
            return pa.string()
        if pa.types.is_dictionary(kind):
            return safe(kind.value_type)
        return kind

    return pa.schema([pa.field(f.name, safe(f.type)) for f in schema])


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


class SparkFrame(Frame):
    """A DataFrame whose rows are only ever touched by Arrow functions."""

    def __init__(self, engine: SparkEngine, df: Any, schema: pa.Schema) -> None:
        self.engine = engine
        self.df = df
        self._schema = schema

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def _wrap(self, df: Any, schema: pa.Schema) -> SparkFrame:
        return SparkFrame(self.engine, df, schema)

    def map_batches(self, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> Frame:
        safe = spark_safe(schema)

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                out = conform_to(fn(pa.Table.from_batches([batch])), safe)
                yield from out.to_batches(max_chunksize=BATCH_ROWS)

        return self._wrap(self.df.mapInArrow(run, _spark_schema(safe)), safe)

    def map_groups(
        self, keys: Sequence[str], fn: Callable[[pa.Table], pa.Table], schema: pa.Schema
    ) -> Frame:
        safe = spark_safe(schema)
        source = self._schema

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            tables = [pa.Table.from_batches([b]) for b in batches]
            if not tables:
                return
            whole = pa.concat_tables([conform_to(t, source) for t in tables])
            out = conform_to(fn(whole), safe)
            yield from out.to_batches(max_chunksize=BATCH_ROWS)

        partitions = max(self.engine.parallelism, planned_partitions(self.df))
        grouped = self.df.repartition(partitions, *keys)
        return self._wrap(grouped.mapInArrow(run, _spark_schema(safe)), safe)

    def aggregate(self, partial: Callable[[pa.Table], T], combine: Callable[[list[T]], T]) -> T:
        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            parts = [partial(pa.Table.from_batches([b])) for b in batches if b.num_rows]
            if parts:
                value = pickle.dumps(combine(parts))
                yield pa.RecordBatch.from_arrays([pa.array([value], pa.binary())], ["value"])

        with user_errors():
            values = self.df.mapInArrow(run, "value binary").toArrow().column("value").to_pylist()
        return combine([pickle.loads(v) for v in values])

    def join(self, other: Frame, on: Sequence[str], how: JoinKind = "inner") -> Frame:
        assert isinstance(other, SparkFrame)
        keys = list(on)
        if how in ("left_anti", "left_semi"):
            schema = self._schema
        else:
            extra = [f for f in other.schema if f.name not in keys]
            schema = pa.schema([*self._schema, *extra])
        return self._wrap(self.df.join(other.df, on=keys, how=how), schema)

    def union(self, other: Frame) -> Frame:
        assert isinstance(other, SparkFrame)
        schema = pa.unify_schemas([self._schema, other.schema], promote_options="permissive")
        df = self.df.unionByName(other.df, allowMissingColumns=True)
        return self._wrap(df, spark_safe(schema))

    def select(self, columns: Sequence[str]) -> Frame:
        names = list(columns)
        return self._wrap(self.df.select(*names), pa.schema([self._schema.field(c) for c in names]))

    def where(self, column: str) -> Frame:
        from pyspark.sql import functions as F

        return self._wrap(self.df.filter(F.coalesce(F.col(column), F.lit(False))), self._schema)

    def count(self) -> int:
        with user_errors():
            return int(self.df.count())

    def cache(self) -> Frame:
        return self._wrap(self.df.persist(), self._schema)

    def release(self) -> None:
        self.df.unpersist()

    def to_table(self, max_rows: int) -> pa.Table:
        # One job: a count first would run the plan twice (and its side effects, such as
        # the files a grouped step writes); at most max_rows + 1 rows reach the driver.
        with user_errors():
            table = self.df.limit(max_rows + 1).toArrow()
        if table.num_rows > max_rows:
            raise ValueError(f"{self.count()} rows exceed the driver limit of {max_rows}")
        return conform_to(table, self._schema)

    def write(self, directory: Location) -> list[Location]:
        schema = self._schema

        def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            tables = [pa.Table.from_batches([b]) for b in batches]
            if not tables:
                return
            name = f"part-{uuid.uuid4().hex[:12]}.parquet"
            table = pa.concat_tables([conform_to(t, schema) for t in tables])
            if table.num_rows:
                write_parquet_atomic(table, directory / name)
                yield pa.RecordBatch.from_arrays([pa.array([name])], ["file"])

        with user_errors():
            names = self.df.mapInArrow(write, "file string").toArrow().column("file").to_pylist()
        return [directory / n for n in sorted(names)]

    def checkpoint(self, directory: Location) -> SparkFrame:
        """Write the rows under ``directory`` and read them back: a durable cut of a long lineage."""
        files = self.write(directory)
        if not files:
            return self._wrap(
                self.engine.spark.createDataFrame([], _spark_schema(self._schema)), self._schema
            )
        frame = self.engine.read(files, self._schema)
        assert isinstance(frame, SparkFrame)
        return frame


class SparkEngine(Engine):
    """Runs stages as Spark jobs on a session built from ``SparkConfig``."""

    kind = "spark"

    def __init__(
        self,
        config: SparkConfig,
        workers: int | None = None,
        batch_size: int = 1024,
        driver_max_rows: int | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.batch_size = batch_size
        if driver_max_rows is not None:
            self.driver_max_rows = driver_max_rows
        self._spark: Any = None
        self._owns_session = False
        self._driver_log: Path | None = None

    @classmethod
    def from_config(cls, config: EngineSettings) -> SparkEngine:
        options = config.options(cls.kind)
        assert isinstance(options, SparkConfig)
        return cls(
            options,
            workers=config.workers,
            batch_size=config.batch_size,
            driver_max_rows=config.driver_max_rows,
        )

    def log_to(self, log_file: Path) -> bool:
        """Send the driver's log4j output to ``log_file`` and turn Spark's console progress off.

        For runs nobody watches (a deployment's flow run), whose stdout is a
        worker's: there Spark's warnings and stage bars would be mixed into
        the worker's output instead of the run's log, while thresher already
        reports progress through its own log lines. It only takes effect if
        this engine starts the JVM, so call it before the first use of
        :attr:`spark`; returns whether it will (not under spark-submit, not
        on a session someone else started).
        """
        from pyspark.sql import SparkSession

        if self._spark is not None or _under_spark_submit():
            return False
        if SparkSession.getActiveSession() is not None:
            return False
        self._driver_log = log_file
        return True

    def _log_conf(self, conf: dict[str, str]) -> dict[str, str]:
        """``conf`` with the driver's log4j configuration (the user's own settings kept).

        With :meth:`log_to`, the driver's warnings go to that file; otherwise
        to the console, without the start-up noise (:data:`QUIET_LOGGERS`),
        unless the user's ``extraJavaOptions`` name a log4j configuration.
        """
        java_options = conf.get("spark.driver.extraJavaOptions", "")
        if self._driver_log is not None:
            properties = write_log4j_properties(self._driver_log)
        elif "log4j2.configurationFile" in java_options:
            return conf
        else:
            properties = write_console_log4j_properties()
        option = f"-Dlog4j2.configurationFile={properties.as_uri()}"
        return {**conf, "spark.driver.extraJavaOptions": f"{java_options} {option}".strip()}

    @property
    def spark(self) -> Any:
        if self._spark is None:
            from pyspark.sql import SparkSession

            # Python workers must run this interpreter (where thresher is installed);
            # pyspark's RDD API reads only the environment variable.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            self._owns_session = SparkSession.getActiveSession() is None
            builder = SparkSession.builder.appName(self.config.app_name)
            master = self.config.master or (None if _under_spark_submit() else "local[*]")
            if master is not None:
                builder = builder.master(master)
            defaults = {
                "spark.pyspark.python": sys.executable,
                "spark.pyspark.driver.python": sys.executable,
                "spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS),
                "spark.sql.session.timeZone": "UTC",
                # Lets adaptive execution coalesce the shuffles of cached frames too.
                "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
                # One progress display: thresher's own (bars or log lines, with Spark's
                # task counts); Spark's console bars would be drawn across them.
                "spark.ui.showConsoleProgress": "false",
            }
            for key, value in self._log_conf({**defaults, **self.config.conf}).items():
                builder = builder.config(key, value)
            self._spark = builder.getOrCreate()
            if self._owns_session:
                self._spark.sparkContext.setLogLevel("WARN")
        return self._spark

    @property
    def parallelism(self) -> int:
        return int(self.spark.sparkContext.defaultParallelism)

    def watch(self, progress: StageProgress | None) -> AbstractContextManager[Any]:
        """Report the task counts of the Spark jobs run inside the block to ``progress``."""
        if progress is None:
            return nullcontext()
        from thresher.progress import watch_spark

        return watch_spark(self.spark.sparkContext, progress)

    def map_shards(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        progress: StageProgress | None = None,
        on_done: Callable[[R], None] | None = None,
    ) -> list[R]:
        if not items:
            return []
        rdd = self.spark.sparkContext.parallelize(list(items), numSlices=len(items))
        with self.watch(progress), user_errors():
            # The formats registered in this process, known on the executors.
            results: list[R] = rdd.map(carried(fn)).collect()
        if on_done is not None:
            for result in results:
                on_done(result)
        return results

    def read(
        self,
        files: Sequence[Location],
        schema: pa.Schema,
        transform: Callable[[pa.Table], pa.Table] | None = None,
    ) -> Frame:
        safe = spark_safe(schema)
        names = set(schema.names)
        options = files[0].options if files else None
        uris = [f.uri for f in files]

        def load(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            from thresher.io.files import parquet_batches, parquet_file

            for batch in batches:
                for uri in batch.column(0).to_pylist():
                    location = Location(uri, options) if options else Location.of(uri)
                    source = parquet_file(location)
                    available = [c for c in source.schema_arrow.names if c in names]
                    # A batch at a time (the transforms are row by row): a task holds a batch.
                    for part in parquet_batches(source, columns=available or None):
                        table = pa.Table.from_batches([part])
                        if transform is not None:
                            table = transform(table)
                        yield from conform_to(table, safe).to_batches(max_chunksize=BATCH_ROWS)

        context = self.spark.sparkContext
        rdd = context.parallelize([(uri,) for uri in uris], numSlices=max(1, len(uris)))
        listing = self.spark.createDataFrame(rdd, "uri string")
        return SparkFrame(self, listing.mapInArrow(load, _spark_schema(safe)), safe)

    def from_table(self, table: pa.Table) -> Frame:
        safe = spark_safe(table.schema)
        df = self.spark.createDataFrame(conform_to(table, safe))
        return SparkFrame(self, df, safe)

    def close(self) -> None:
        if self._spark is not None and self._owns_session:
            self._spark.stop()
        self._spark = None


def planned_partitions(df: Any) -> int:
    """The number of partitions ``df``'s physical plan will have, found without running it.

    ``df.rdd.getNumPartitions()`` would run every shuffle of an adaptive plan
    to learn its final partitions (and the rows are computed again by the
    action that follows); the planned output partitioning is known at once.
    """
    plan = df._jdf.queryExecution().executedPlan()
    if plan.getClass().getSimpleName() == "AdaptiveSparkPlanExec":
        plan = plan.inputPlan()
    return _partitions_of(plan)


def _partitions_of(plan: Any) -> int:
    """Planned output partitions; a union's (unknown partitioning) is its children's sum."""
    planned = int(plan.outputPartitioning().numPartitions())
    if planned > 0:
        return planned
    children = plan.children()
    return sum(_partitions_of(children.apply(i)) for i in range(children.size()))


@contextmanager
def user_errors() -> Iterator[None]:
    """Re-raise a thresher error raised inside a Spark worker as itself, not a Java trace."""
    try:
        yield
    except Exception as error:
        match = _THRESHER_ERROR.search(str(error))
        if match is None:
            raise
        cls = getattr(errors, match.group(1), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.ThresherError)):
            cls = errors.ThresherError
        raise cls(match.group(2).strip()) from error


#: JVM loggers whose warnings say nothing a thresher user can act on; only their errors show.
#: The Hadoop client has no native library here and uses its Java code (NativeCodeLoader);
#: Spark's Utils warns at start-up that the host name resolves to a loopback address and
#: how to pick another (SPARK_LOCAL_IP), and that a UI port is taken and the next one used.
QUIET_LOGGERS = (
    "org.apache.hadoop.util.NativeCodeLoader",
    "org.apache.spark.util.Utils",
)


def console_log4j_properties() -> str:
    """A log4j2 configuration: warnings and errors on standard error, known noise at ERROR.

    The loggers Spark's own default profile quiets stay quiet, and its
    console layout is kept; what is left are the warnings that matter.
    """
    quiet = {
        "org.sparkproject.jetty": "warn",
        "org.sparkproject.jetty.util.component.AbstractLifeCycle": "error",
        "org.apache.parquet.CorruptStatistics": "error",
        "parquet.CorruptStatistics": "error",
        **dict.fromkeys(QUIET_LOGGERS, "error"),
    }
    lines = [
        "rootLogger.level = warn",
        "rootLogger.appenderRef.console.ref = console",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.target = SYSTEM_ERR",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex",
    ]
    for number, (name, level) in enumerate(quiet.items()):
        lines += [f"logger.quiet{number}.name = {name}", f"logger.quiet{number}.level = {level}"]
    return "\n".join([*lines, ""])


def write_console_log4j_properties() -> Path:
    """Write :func:`console_log4j_properties` to a file of this user's temporary directory."""
    directory = Path(tempfile.gettempdir()) / f"thresher-{os.getuid()}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "log4j2-console.properties"
    text = console_log4j_properties()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = directory / f".log4j2-console.{uuid.uuid4().hex[:8]}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def write_log4j_properties(log_file: Path) -> Path:
    """Write a log4j2 configuration that appends the driver's warnings to ``log_file``; return it.

    The file lies beside the log (``<log>.log4j2.properties``); the JVM reads
    it once, when it starts.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    properties = log_file.with_name(f"{log_file.name}.log4j2.properties")
    properties.write_text(
        "\n".join(
            [
                "rootLogger.level = warn",
                "rootLogger.appenderRef.file.ref = file",
                "appender.file.type = File",
                "appender.file.name = file",
                f"appender.file.fileName = {log_file}",
                "appender.file.append = true",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = %d{yyyy-MM-dd HH:mm:ss} %p %c{1}: %m%n%ex",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return properties


def _under_spark_submit() -> bool:
    """True when spark-submit launched this driver (it then provides the master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
