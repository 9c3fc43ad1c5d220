"""Faults with real processes and real signals: a killed run loses nothing and publishes nothing half-done.

A `thresher run` is started as a separate process group (the CLI, its
worker processes, its Spark JVM) and SIGKILLed at a chosen point: watched
through the run directory (after some score shards are committed), or at
one of the named points between the steps of publication, where the
process kills itself (``THRESHER_KILL_AT``, :mod:`thresher.faults`). The
next run must resume (taking over the dead run's lock), redo nothing that
was committed, and end with exactly the dataset an uninterrupted run
writes; a reader following the version pointer must see a complete
version at every moment. The subprocesses report to the test session's
Prefect server, so that none starts its own.

The kill of a Spark worker during a cluster run is in test_cluster.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from thresher import faults
from thresher.config import SchemaConfig
from thresher.errors import RunStateError
from thresher.examples.sample_corpus import write_sample_corpus
from thresher.io import publish
from thresher.io.fs import Location
from thresher.io.lock import RunLock
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.runs import load_run
from thresher.stages.ingest import ingest_to_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

N_SHARDS = 24
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
}


# -- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Many small shards (Parquet, JSONL, JSONL.gz), so that a run can be stopped between them."""
    out = tmp_path_factory.mktemp("fault-corpus")
    write_sample_corpus(out, n_documents=150 * N_SHARDS, n_shards=N_SHARDS, seed=13)
    return out


@pytest.fixture(scope="module")
def child_env(prefect_server: None) -> dict[str, str]:
    """Environment for `thresher run` subprocesses: the test session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def job(corpus: Path, run_dir: Path, engine: str, budget: float = 0.5) -> dict[str, Any]:
    config: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": 21,
        "input": {"paths": [str(corpus / "shard-*")]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [
            {"name": "word_count"},
            {"name": "alpha_fraction"},
            {"name": "mean_word_length"},
            {"name": "repeated_line_fraction"},
        ],
        "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.7}}],
        "selector": {
            "name": "quantile_band",
            "params": {"score": "word_count", "band": "medium"},
            "budget": budget,
        },
        "engine": {"kind": engine, "workers": 1, "batch_size": 8},
    }
    if engine == "spark":
        config["engine"]["spark"] = {"master": "local[2]", "conf": SPARK_CONF}
    return config


def write_job(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_in_process(config: dict[str, Any], base: Path) -> dict[str, Any]:
    from thresher.config import parse_config
    from thresher.flows.curate import curate

    return curate(parse_config(config, base_dir=base))


def start(config_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`thresher run` in its own process group (so that one signal reaches all its processes).

    Its output goes to a file next to the config (a pipe nobody reads could fill and block it).
    """
    with open(config_file.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "thresher", "run", str(config_file), "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def reap(process: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a run's process group (workers, the JVM) after it died."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def kill_when(
    process: subprocess.Popen[bytes], condition: Callable[[], bool], timeout: float = 300
) -> None:
    """SIGKILL the process group of ``process`` as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            log = Path(str(process.args[4])).with_suffix(".log")  # type: ignore[index]
            output = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"the run ended (rc {process.returncode}) before the kill:\n{output}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("the kill condition never held")
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def committed_scores(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Committed score shards: name -> (inode, mtime) of the shard's file."""
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted((run_dir / "scores").glob("shard-*.parquet"))
    }


def linked_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The dataset under the local ``data/`` link (``pd.read_parquet("data/")``)."""
    return ds.dataset(run_dir / "data", format="parquet").to_table().sort_by("id").to_pylist()


def dataset_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The published dataset, read through the pointer; the ``data/`` link must agree."""
    rows = load_run(run_dir).data.sort_by("id").to_pylist()
    assert linked_rows(run_dir) == rows
    return rows


def dropped_rows(run_dir: Path) -> list[dict[str, Any]]:
    return load_run(run_dir).dropped.sort_by("id").to_pylist()


def published_version(run_dir: Path) -> str:
    return json.loads((run_dir / "CURRENT").read_text())["version"]


def assert_clean(run_dir: Path) -> None:
    """No scratch, temporary file, lock or unpublished version left behind by a finished run."""
    assert not (run_dir / "_staging").exists()
    assert not (run_dir / "_state" / "lock").exists()
    leftovers = [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    pointer = json.loads((run_dir / "CURRENT").read_text())
    versions = sorted(p.name for p in (run_dir / "versions").iterdir())
    assert set(versions) == {pointer["version"], pointer["previous"]} - {None}  # at most two
    assert os.readlink(run_dir / "data") == f"versions/{pointer['version']}/data"
    published = run_dir / "versions" / pointer["version"] / "data"
    visible = {p.name for p in published.iterdir()}
    assert "_SUCCESS" in visible
    assert all(n == "_SUCCESS" or n.endswith(".parquet") for n in visible), visible
    for part in published.glob("*.parquet"):
        pq.read_metadata(part)  # complete files only


def assert_same_result(run_dir: Path, reference: Path, manifest: dict[str, Any]) -> None:
    rows = dataset_rows(run_dir)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert rows == dataset_rows(reference)
    assert dropped_rows(run_dir) == dropped_rows(reference)
    assert manifest["counts"]["reconciles"]
    assert manifest["counts"]["kept"] == len(rows)


def copy_run(reference: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run directory, and the base directory its config must use.

    Input names are relative to the config's directory, so configs for the
    copy are resolved from the reference's base directory.
    """
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, symlinks=True)
    return run_dir, reference.parent


@pytest.fixture(scope="module")
def local_reference(fault_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted local run of the fault job."""
    work = tmp_path_factory.mktemp("reference-local")
    run_in_process(job(fault_corpus, work / "run", "local"), work)
    return work / "run"


# -- SIGKILL while scoring ------------------------------------------------------------------


def test_killed_while_scoring_local_resumes_without_redoing_committed_shards(
    fault_corpus: Path, local_reference: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config = job(fault_corpus, run_dir, "local")
    process = start(write_job(tmp_path / "job.yaml", config), child_env)
    kill_when(process, lambda: len(committed_scores(run_dir)) >= 3)

    before = committed_scores(run_dir)
    assert 3 <= len(before) < N_SHARDS, "the kill must land in the middle of scoring"
    assert (run_dir / "_state" / "lock").exists()  # the dead run's lock is still there
    assert not (run_dir / "CURRENT").exists()

    manifest = run_in_process(config, tmp_path)
    after = committed_scores(run_dir)
    assert len(after) == N_SHARDS
    assert {name: after[name] for name in before} == before  # committed shards not redone
    assert_same_result(run_dir, local_reference, manifest)
    assert_clean(run_dir)


@pytest.mark.spark
def test_killed_while_scoring_spark_resumes_and_publishes_cleanly(
    fault_corpus: Path,
    local_reference: Path,
    child_env: dict[str, str],
    tmp_path: Path,
    spark: Any,
) -> None:
    """The reference is the uninterrupted local run: both engines write the same rows."""
    run_dir = tmp_path / "run"
    config = job(fault_corpus, run_dir, "spark")
    process = start(write_job(tmp_path / "job.yaml", config), child_env)
    kill_when(process, lambda: len(committed_scores(run_dir)) >= 4)

    before = committed_scores(run_dir)
    assert 4 <= len(before) < N_SHARDS, "the kill must land in the middle of scoring"

    manifest = run_in_process(config, tmp_path)
    after = committed_scores(run_dir)
    assert set(after) == {f"shard-{i:05d}.parquet" for i in range(N_SHARDS)}
    assert {name: after[name] for name in before} == before  # committed shards not redone
    assert_same_result(run_dir, local_reference, manifest)
    assert_clean(run_dir)

    # Publishing over an existing dataset leaves none of its files behind.
    smaller = run_in_process(job(fault_corpus, run_dir, "spark", budget=0.2), tmp_path)
    selection = load_run(run_dir).selection
    expected = selection.filter(selection.column("keep")).column("id").to_pylist()
    assert [row["id"] for row in dataset_rows(run_dir)] == sorted(expected)
    assert smaller["counts"]["kept"] == len(expected) < manifest["counts"]["kept"]
    assert_clean(run_dir)


# -- SIGKILL between the steps of publication --------------------------------------------------


@pytest.mark.parametrize("point", faults.POINTS)
def test_killed_between_the_steps_of_publication(
    point: str,
    local_reference: Path,
    fault_corpus: Path,
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    old_version = published_version(run_dir)
    old_rows = dataset_rows(run_dir)

    config = job(fault_corpus, run_dir, "local", budget=0.25)
    config_file = write_job(base / f"{tmp_path.name}.yaml", config)
    process = start(config_file, {**child_env, faults.KILL_AT_ENV: point})
    process.wait(timeout=300)
    reap(process)
    assert process.returncode == -signal.SIGKILL, config_file.with_suffix(".log").read_text()

    # What a reader sees at that moment: one complete version, through either path.
    seen = published_version(run_dir)
    by_pointer = load_run(run_dir).data.sort_by("id").to_pylist()
    by_link = linked_rows(run_dir)
    if point == "publish:after-data":
        assert seen == old_version and by_pointer == old_rows == by_link
        assert len(list((run_dir / "versions").iterdir())) == 2  # the new one, unnamed
    elif point == "publish:after-pointer":  # the link moves next: it still shows the old
        assert seen != old_version and len(by_pointer) < len(old_rows)
        assert by_link == old_rows
    else:
        assert seen != old_version and len(by_pointer) < len(old_rows)
        assert by_link == by_pointer
    assert (run_dir / "_state" / "lock").exists()  # the dead run's lock

    manifest = run_in_process(config, base)
    rows = dataset_rows(run_dir)
    selection = load_run(run_dir).selection
    expected = sorted(selection.filter(selection.column("keep")).column("id").to_pylist())
    assert [row["id"] for row in rows] == expected  # the new dataset, no stale part
    assert manifest["counts"]["kept"] == len(rows) < len(old_rows)
    assert_clean(run_dir)


READER_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    root, reads = Path(sys.argv[1]), Path(sys.argv[3])
    seen, deadline, count = set(), time.monotonic() + float(sys.argv[2]), 0
    while time.monotonic() < deadline:
        name = json.loads((root / "CURRENT").read_text())["version"]
        # raises if the version the pointer names is ever incomplete or gone
        seen.add((root / "versions" / name / "data" / "_SUCCESS").read_text())
        seen.add((root / "data" / "_SUCCESS").read_text())  # and the local link
        count += 1
        reads.with_suffix(".tmp").write_text(str(count))
        reads.with_suffix(".tmp").replace(reads)  # tells the writer one read finished
    print(len(seen))
    """
)


def test_readers_never_see_a_missing_or_partial_version(tmp_path: Path) -> None:
    root = Location.of(tmp_path)

    def publish_one(tag: str) -> None:
        version = publish.new_version(root)
        for index in range(2):
            table = pa.table({"id": [f"{tag}-{index}-{row}" for row in range(10)]})
            pq.write_table(table, tmp_path / "x.parquet")
            (version.data / f"part-{index}.parquet").write_bytes(
                (tmp_path / "x.parquet").read_bytes()
            )
        (version.data / "_SUCCESS").write_text(tag)
        publish.publish(root, version, {})

    publish_one("v0")
    reads = tmp_path.parent / f"{tmp_path.name}-reads"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_CHILD, str(tmp_path), "3", str(reads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finished_reads() -> int:
        return int(reads.read_text()) if reads.exists() else 0

    count = 0
    # The guarantee: a reader who followed the pointer just before it moved can finish.
    # So the writer publishes as fast as it can, but not twice within one read of the
    # reader (on a loaded machine a read can outlast several publications).
    while reader.poll() is None:
        count += 1
        done = finished_reads()
        publish_one(f"v{count}")
        while reader.poll() is None and finished_reads() <= done:
            time.sleep(0.001)
    output, errors = reader.communicate()
    assert reader.returncode == 0, errors
    assert int(output) > 1 and count > 10  # it saw several versions, never a gap
    assert len(list((tmp_path / "versions").iterdir())) == 2  # current and previous only


# -- resume is keyed on the run directory (why Prefect's task cache is not used) ------------


def test_resume_trusts_the_files_not_a_cache(
    local_reference: Path, fault_corpus: Path, tmp_path: Path
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    config = job(fault_corpus, run_dir, "local")
    before = committed_scores(run_dir)
    (run_dir / "scores" / "shard-00002.parquet").unlink()  # lost, e.g. by a disk clean-up

    manifest = run_in_process(config, base)
    after = committed_scores(run_dir)
    assert set(after) == set(before)
    redone = {name for name in before if after[name] != before[name]}
    assert redone == {"shard-00002.parquet"}
    assert_same_result(run_dir, local_reference, manifest)

    # The ingest marker holds the input's listing fingerprint: a changed file is refused, by name.
    shard = tmp_path / "shard-00.parquet"
    shutil.copy(fault_corpus / "shard-00.parquet", shard)
    run3 = RunDir(tmp_path / "run3")

    def listed() -> Shard:
        entry = Location.of(shard).info()
        assert entry is not None
        return Shard(0, str(shard), shard.name, "parquet", entry.fingerprint())

    schema = SchemaConfig(label="topic")
    first = ingest_to_run(listed(), schema, run3)
    assert ingest_to_run(listed(), schema, run3)["reused"]  # done: skipped
    assert not first["reused"]
    pq.write_table(pq.read_table(shard).slice(1), shard)
    with pytest.raises(RunStateError, match=r"shard-00\.parquet changed since it was ingested"):
        ingest_to_run(listed(), schema, run3)


# -- one writer: a run that lost its lock publishes nothing ----------------------------------


def wait_for_pause(process: subprocess.Popen[bytes], paused: Path, timeout: float = 300) -> None:
    """Until a task of ``process`` holds at its pause point (it writes a file into ``paused``)."""
    deadline = time.monotonic() + timeout
    while not (paused.exists() and any(paused.iterdir())):
        if process.poll() is not None:
            log = Path(str(process.args[4])).with_suffix(".log")  # type: ignore[index]
            pytest.fail(
                f"the run ended (rc {process.returncode}) before its pause:\n{log.read_text()}"
            )
        assert time.monotonic() < deadline, "the run never reached its pause point"
        time.sleep(0.02)


def root_files(run_dir: Path) -> dict[str, bytes]:
    """What a reader of the run directory's root sees besides the data."""
    names = ("CURRENT", "manifest.json", "README.md", "report.html")
    return {name: (run_dir / name).read_bytes() for name in names}


def test_a_run_whose_lock_is_taken_over_stops_and_publishes_nothing(
    local_reference: Path, fault_corpus: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    (run_dir / "scores" / "shard-00003.parquet").unlink()  # one shard to score again
    before, old_rows = root_files(run_dir), dataset_rows(run_dir)

    paused = tmp_path / "paused"
    config = job(fault_corpus, run_dir, "local", budget=0.25)
    process = start(
        write_job(base / f"{tmp_path.name}.yaml", config),
        {**child_env, faults.PAUSE_AT_ENV: f"score:shard:4:{paused}"},
    )
    try:
        wait_for_pause(process, paused)
        # Its heartbeat looks stalled (the store says its lock was last written 700 s
        # ago), so another run takes the directory over, the way a real one would.
        lock_file = run_dir / "_state" / "lock"
        os.utime(lock_file, (time.time() - 700,) * 2)
        taker = RunLock(lock_file, stale_seconds=600)
        taker.acquire()
        assert taker.taken_over is not None and taker.taken_over["pid"] != os.getpid()
        process.wait(timeout=300)
    finally:
        reap(process)
    log = config_log(base, tmp_path)
    assert process.returncode == 2, log
    assert "this run lost its lock" in log and "without publishing anything" in log
    assert f"pid {os.getpid()}" in log  # names the run that holds it now
    assert root_files(run_dir) == before  # no pointer moved, no root file rewritten
    assert dataset_rows(run_dir) == old_rows
    assert published_version(run_dir) in {p.name for p in (run_dir / "versions").iterdir()}
    assert json.loads(lock_file.read_text())["token"] == taker.token  # the loser left it alone
    taker.release()


def config_log(base: Path, tmp_path: Path) -> str:
    return (base / f"{tmp_path.name}.log").read_text(errors="replace")


# -- --fresh: the published dataset stays readable until the new one is published ----------------


def test_fresh_keeps_the_published_dataset_until_it_publishes_the_new_one(
    local_reference: Path, fault_corpus: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    before, old_rows = root_files(run_dir), dataset_rows(run_dir)
    old_version = published_version(run_dir)
    old_scores = committed_scores(run_dir)

    paused = tmp_path / "paused"
    config = job(fault_corpus, run_dir, "local", budget=0.25)
    config_file = write_job(base / f"{tmp_path.name}.yaml", config)
    with open(config_file.with_suffix(".log"), "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "thresher", "run", str(config_file), "--quiet", "--fresh"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**child_env, faults.PAUSE_AT_ENV: f"score:shard:0.2:{paused}"},
            start_new_session=True,
        )
    try:
        wait_for_pause(process, paused)
        # Started over: the earlier scores are gone and being redone...
        rescored = committed_scores(run_dir)
        assert len(rescored) < N_SHARDS and not set(rescored.items()) & set(old_scores.items())
        # ...while readers still get the published dataset, by the pointer and the link,
        # and the root files that describe it.
        assert dataset_rows(run_dir) == old_rows
        assert root_files(run_dir) == before
        process.wait(timeout=300)
    finally:
        reap(process)
    assert process.returncode == 0, config_log(base, tmp_path)
    assert published_version(run_dir) != old_version
    assert len(dataset_rows(run_dir)) < len(old_rows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["version"] == published_version(run_dir)
    assert old_version in {p.name for p in (run_dir / "versions").iterdir()}  # the previous one
    assert_clean(run_dir)


# -- the root manifest, card and report follow CURRENT ----------------------------------------------


def test_root_files_left_behind_by_a_kill_are_rewritten_by_the_next_run(
    local_reference: Path, fault_corpus: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    old_version = published_version(run_dir)
    config = job(fault_corpus, run_dir, "local", budget=0.25)
    config_file = write_job(base / f"{tmp_path.name}.yaml", config)
    process = start(config_file, {**child_env, faults.KILL_AT_ENV: "publish:after-link"})
    process.wait(timeout=300)
    reap(process)
    assert process.returncode == -signal.SIGKILL, config_log(base, tmp_path)

    # Killed after the pointer moved: the root copies still describe the old version
    # (readers trust CURRENT and versions/<v>/manifest.json)...
    new_version = published_version(run_dir)
    assert new_version != old_version
    assert json.loads((run_dir / "manifest.json").read_text())["version"] == old_version
    assert f"version `{old_version}`" in (run_dir / "README.md").read_text()
    report = (run_dir / "report.html").stat().st_mtime_ns

    # ...until the next run starts, even one that publishes nothing (scoring only).
    from thresher.config import parse_config
    from thresher.flows.curate import curate

    curate(parse_config(config, base_dir=base), stages="score")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest == json.loads(
        (run_dir / "versions" / new_version / "manifest.json").read_text()
    )
    assert f"version `{new_version}`" in (run_dir / "README.md").read_text()
    assert (run_dir / "report.html").stat().st_mtime_ns != report
    assert published_version(run_dir) == new_version
