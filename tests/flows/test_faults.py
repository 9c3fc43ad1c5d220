"""Faults with real processes and real signals: a killed run loses nothing and publishes nothing half-done.

A `thresher run` is started as a separate process group (the CLI, its
worker processes, its Spark JVM), watched through the run directory, and
SIGKILLed at a chosen point: after some score shards are committed, or
while the new dataset is being staged. The next run must resume (taking
over the dead run's lock), redo nothing that was committed, and end with
exactly the dataset an uninterrupted run writes. The subprocesses report to
the test session's Prefect server, so that none starts its own.

The kill of a Spark worker during a cluster run is in test_cluster.py.
"""

from __future__ import annotations

import hashlib
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

from thresher.config import SchemaConfig
from thresher.errors import RunStateError
from thresher.io.files import publish_directory, recover_published
from thresher.io.shards import Shard
from thresher.sample_corpus import write_sample_corpus
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
    found = {}
    for shard in sorted((run_dir / "scores").glob("shard-*")):
        stat = (shard / "part-0.parquet").stat() if shard.is_dir() else None
        if stat is not None:
            found[shard.name] = (stat.st_ino, stat.st_mtime_ns)
    return found


def scores_of(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Like committed_scores, for the Spark engine's part files (any name)."""
    found = {}
    for shard in sorted((run_dir / "scores").glob("shard-*")):
        for part in sorted(shard.glob("*.parquet")):
            stat = part.stat()
            found[f"{shard.name}/{part.name}"] = (stat.st_ino, stat.st_mtime_ns)
    return found


def dataset_rows(run_dir: Path) -> list[dict[str, Any]]:
    table = ds.dataset(run_dir / "data", format="parquet").to_table()
    return table.sort_by("id").to_pylist()


def dropped_rows(run_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(run_dir / "dropped").sort_by("id").to_pylist()


def assert_clean(run_dir: Path) -> None:
    """No staging, no temporary or retired file, no lock left behind by a finished run."""
    assert not (run_dir / "_staging").exists()
    assert not (run_dir / "_state" / "lock").exists()
    leftovers = [p for p in run_dir.rglob("*") if ".tmp-" in p.name or ".retired-" in p.name]
    assert leftovers == []
    published = run_dir / "data"
    assert not any(p.name == "_temporary" for p in published.rglob("*"))
    visible = {p.name for p in published.iterdir() if not p.name.startswith(".")}
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


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def copy_run(reference: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run directory, and the base directory its config must use.

    A run directory remembers the config's base directory (relative input
    paths depend on it), so configs for the copy are resolved from the
    reference's base directory.
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
    assert not (run_dir / "data").exists()

    manifest = run_in_process(config, tmp_path)
    after = committed_scores(run_dir)
    assert len(after) == N_SHARDS
    assert {name: after[name] for name in before} == before  # committed shards not redone
    assert_same_result(run_dir, local_reference, manifest)
    assert_clean(run_dir)


@pytest.mark.spark
def test_killed_while_scoring_spark_resumes_and_overwrites_cleanly(
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
    kill_when(process, lambda: len(scores_of(run_dir)) >= 4)  # a first wave of shards

    before = scores_of(run_dir)
    committed = {name.split("/")[0] for name in before}
    assert 4 <= len(committed) < N_SHARDS, "the kill must land in the middle of scoring"

    manifest = run_in_process(config, tmp_path)
    after = scores_of(run_dir)
    assert {name.split("/")[0] for name in after} == {f"shard-{i:05d}" for i in range(N_SHARDS)}
    assert {name: after[name] for name in before} == before  # committed shards not redone
    assert_same_result(run_dir, local_reference, manifest)
    assert_clean(run_dir)

    # Publishing over an existing dataset leaves none of its files behind.
    smaller = run_in_process(job(fault_corpus, run_dir, "spark", budget=0.2), tmp_path)
    kept = ds.dataset(run_dir / "data", format="parquet").to_table(columns=["id"])
    selection = pq.read_table(run_dir / "selection" / "selection.parquet")
    expected = selection.filter(selection.column("keep")).column("id").to_pylist()
    assert sorted(kept.column("id").to_pylist()) == sorted(expected)
    assert smaller["counts"]["kept"] == len(expected) < manifest["counts"]["kept"]
    assert_clean(run_dir)


# -- SIGKILL while publishing ------------------------------------------------------------------


def test_killed_while_staging_the_dataset_keeps_the_previous_one(
    local_reference: Path, fault_corpus: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    previous = snapshot(run_dir / "data")
    previous_rows = dataset_rows(run_dir)

    config = job(fault_corpus, run_dir, "local", budget=0.25)
    process = start(write_job(base / f"{tmp_path.name}.yaml", config), child_env)
    staged = run_dir / "_staging"
    kill_when(process, lambda: any(staged.glob("data-*")))  # materialisation has begun

    assert any(staged.glob("data-*")), "the kill must land before the publish"
    assert snapshot(run_dir / "data") == previous  # unchanged, byte for byte
    assert dataset_rows(run_dir) == previous_rows  # and readable

    manifest = run_in_process(config, base)
    rows = dataset_rows(run_dir)
    selection = pq.read_table(run_dir / "selection" / "selection.parquet")
    expected = sorted(selection.filter(selection.column("keep")).column("id").to_pylist())
    assert [row["id"] for row in rows] == expected  # the new dataset, no stale part
    assert manifest["counts"]["kept"] == len(rows) < len(previous_rows)
    assert_clean(run_dir)


PUBLISH_CHILD = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    from thresher.io import files

    staging, target, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "after-swap":  # killed before the old copy is deleted
        shutil.rmtree = die
        files.publish_directory(staging, target)
    else:  # the fallback without an atomic swap, killed between its two renames
        real_replace = os.replace

        def replace_then_die(source, destination):
            real_replace(source, destination)
            die()

        os.replace = replace_then_die
        files._replace_by_renames(staging, target, target.with_name(".data.retired-dead"))
    """
)


def _dataset(directory: Path, version: str, n_files: int = 3) -> Path:
    directory.mkdir(parents=True)
    for index in range(n_files):
        table = pa.table({"id": [f"{version}-{index}-{row}" for row in range(10)]})
        pq.write_table(table, directory / f"part-{index}.parquet")
    (directory / "_SUCCESS").write_text(version)
    return directory


@pytest.mark.parametrize("mode", ["after-swap", "between-renames"])
def test_publish_killed_at_its_worst_moment(mode: str, tmp_path: Path) -> None:
    target = _dataset(tmp_path / "data", "old")
    old = snapshot(target)
    staging = _dataset(tmp_path / "_staging" / "data-new", "new", n_files=2)
    new = snapshot(staging)
    child = subprocess.run(
        [sys.executable, "-c", PUBLISH_CHILD, str(staging), str(target), mode], check=False
    )
    assert child.returncode == -signal.SIGKILL
    retired = list(tmp_path.glob(".data.retired-*"))
    assert len(retired) == 1
    if mode == "after-swap":
        assert snapshot(target) == new  # the complete new dataset, at once
        assert snapshot(retired[0]) == old
    else:
        assert not target.exists()  # the window the atomic swap closes
        assert snapshot(retired[0]) == old
    recover_published(target)  # what the next run does first
    assert not list(tmp_path.glob(".data.retired-*"))
    assert snapshot(target) == (new if mode == "after-swap" else old)


READER_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    marker = Path(sys.argv[1]) / "_SUCCESS"
    seen, deadline = set(), time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        seen.add(marker.read_text())  # raises if the published directory is ever missing
    print(len(seen))
    """
)


def test_readers_never_see_the_published_directory_missing(tmp_path: Path) -> None:
    target = _dataset(tmp_path / "data", "v0", n_files=1)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_CHILD, str(target), "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    version = 0
    time.sleep(0.3)  # let the reader start
    while reader.poll() is None:
        version += 1
        publish_directory(_dataset(tmp_path / f"stage-{version}", f"v{version}", n_files=1), target)
    output, errors = reader.communicate()
    assert reader.returncode == 0, errors
    assert int(output) > 1 and version > 10  # it saw several versions, never a gap


# -- resume is keyed on the run directory (why Prefect's task cache is not used) ------------


def test_resume_trusts_the_files_not_a_cache(
    local_reference: Path, fault_corpus: Path, tmp_path: Path
) -> None:
    run_dir, base = copy_run(local_reference, tmp_path)
    config = job(fault_corpus, run_dir, "local")
    before = committed_scores(run_dir)
    shutil.rmtree(run_dir / "scores" / "shard-00002")  # lost, e.g. by a disk clean-up

    manifest = run_in_process(config, base)
    after = committed_scores(run_dir)
    assert set(after) == set(before)
    redone = {name for name in before if after[name] != before[name]}
    assert redone == {"shard-00002"}
    assert_same_result(run_dir, local_reference, manifest)

    # The ingest marker holds the input's fingerprint: a changed file is refused, by name.
    shard = tmp_path / "shard-00.parquet"
    shutil.copy(fault_corpus / "shard-00.parquet", shard)
    copy = Shard(0, str(shard), shard.name, "parquet")
    schema = SchemaConfig(label="topic")
    first = ingest_to_run(copy, schema, str(tmp_path / "run3"))
    assert ingest_to_run(copy, schema, str(tmp_path / "run3")) == first  # done: skipped
    pq.write_table(pq.read_table(shard).slice(1), shard)
    with pytest.raises(RunStateError, match=r"shard-00\.parquet changed since it was ingested"):
        ingest_to_run(copy, schema, str(tmp_path / "run3"))
