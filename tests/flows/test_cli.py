"""The command line: every command, help with examples, clear errors with exit status 2.

In-process tests use typer's CliRunner under the session's Prefect test
server; the exit-status tests of `main()` (errors raised before a command
runs) use a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers.curated_run import collect_flow_log, curated_run, hostile_corpus, run_config
from thresher.cli import app
from thresher.io import ingest_index
from thresher.io.files import read_json

COMMANDS = ("run", "score", "select", "report", "eval", "inspect", "validate")


def _thresher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thresher", *args], capture_output=True, text=True, timeout=120
    )


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_lists_every_command_with_examples() -> None:
    code, output = invoke("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in output
        code, text = invoke(command, "--help")
        assert code == 0 and "Example" in text, command


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


def test_validate_reports_a_missing_evaluation_set_with_its_field(
    small_corpus: Path, tmp_path: Path
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(
        f"run_dir: r\ninput: {{paths: ['{small_corpus}/shard-*']}}\n"
        "decontaminate: {sets: {mmlu: {paths: [absent/*.jsonl], text: question}}}\n",
        encoding="utf-8",
    )
    result = _thresher("validate", str(config))
    assert result.returncode == 2
    assert "decontaminate.sets.mmlu.paths[0]: 'absent/*.jsonl' matches no file" in result.stderr


def test_run_reports_missing_input_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("run_dir: r\ninput: {paths: ['absent/*.jsonl']}\n", encoding="utf-8")
    result = _thresher("run", str(config))
    assert result.returncode == 2
    assert "absent/*.jsonl" in result.stderr
    assert not (tmp_path / "r").exists()


def test_validate_accepts_the_example_config(small_corpus: Path, tmp_path: Path) -> None:
    example = (Path(__file__).parents[2] / "examples" / "curate.yaml").read_text(encoding="utf-8")
    (tmp_path / "sample_corpus").symlink_to(small_corpus)
    (tmp_path / "curate.yaml").write_text(example, encoding="utf-8")
    result = _thresher("validate", str(tmp_path / "curate.yaml"))
    assert result.returncode == 0, result.stderr
    assert "4 input file(s)" in result.stderr


def test_eval_reports_a_missing_config_with_exit_2(tmp_path: Path) -> None:
    code, output = invoke("eval", str(tmp_path / "eval.yaml"))
    assert code == 2 and "config file not found" in output


def test_inspect_prints_the_funnel_and_top_reasons(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> None:
    run_dir = curated_run(tmp_path_factory, small_corpus)
    counts = read_json(run_dir / "manifest.json")["counts"]
    code, output = invoke("inspect", str(run_dir), "--top", "3")
    assert code == 0
    assert "quarantine" in output and "not selected" in output and "selected" in output
    assert f"{counts['kept']:,}" in output and f"{counts['input']:,}" in output
    ranked = output.split("Top 3 reasons")[1]
    assert ranked.index("not_selected:ccs(word_count)") < ranked.index("duplicate")
    assert "report: " in output


def test_user_errors_exit_2_with_one_line(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> None:
    run_dir = curated_run(tmp_path_factory, small_corpus)
    cases = [
        (("select", str(run_dir.parent / "absent")), "does not exist"),
        (("select", str(run_dir), "--budget", "half"), "--budget must be a count"),
        (("select", str(run_dir), "--budget", "2.5"), "a fraction budget must be in (0, 1]"),
        (("select", str(run_dir), "--selector", "nope"), "unknown selector 'nope'"),
        (("select", str(run_dir), "--param", "oops"), "KEY=VALUE"),
        (("select", str(small_corpus)), "not a thresher run directory"),
        (("inspect", str(small_corpus)), "not a thresher run directory"),
        (("report", str(small_corpus)), "not a thresher run directory"),
        (("run", str(run_dir), "--engine", "gpu"), "--engine must be local or spark"),
    ]
    for args, message in cases:
        code, output = invoke(*args)
        assert code == 2, (args, output)
        assert output.startswith("error: ") and message in output, (args, output)
        assert "Traceback" not in output


def test_score_then_select_at_a_new_budget_without_scoring(
    tmp_path: Path, small_corpus: Path, prefect_server: None
) -> None:
    corpus = hostile_corpus(tmp_path, small_corpus)
    run_dir = tmp_path / "run"
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(run_config(corpus, run_dir)), encoding="utf-8")

    with collect_flow_log() as flow_log:
        code, output = invoke("score", str(config))
    assert code == 0, output
    assert "scored:" in output and f"thresher select {run_dir} --budget B" in output
    assert not (run_dir / "manifest.json").exists() and not (run_dir / "_staging").exists()
    assert any(line.startswith("ingest: 5/5 shards") for line in flow_log), flow_log
    assert any(line.startswith("score: 5/5 shards · 603/603 docs") for line in flow_log)

    code, output = invoke("inspect", str(run_dir))
    assert code == 0 and "not selected yet: 5 of 5 shard(s) scored" in output
    code, output = invoke("report", str(run_dir))
    assert code == 0 and "No selection yet" in (run_dir / "report.html").read_text()

    scores = sorted((run_dir / "scores").glob("*.parquet"))
    stamps = [(p, p.stat().st_mtime_ns) for p in scores]
    shutil.move(corpus, tmp_path / "elsewhere")  # selection must not read the input at all

    with collect_flow_log() as flow_log:
        code, output = invoke("select", str(run_dir), "--budget", "0.25")
    assert code == 0, output
    manifest = read_json(run_dir / "manifest.json")
    steps = manifest["selection_steps"]
    assert steps[-1]["budget"] == 0.25
    kept = manifest["counts"]["kept"]
    assert kept == int(steps[-1]["rows_in"] * 0.25 + 0.5) and manifest["counts"]["reconciles"]
    # no ingest, fit or score (dedup from the stored signatures, at its first selection)
    assert set(manifest["seconds_per_stage"]) == {"dedup", "select", "materialize"}
    assert [(p, p.stat().st_mtime_ns) for p in scores] == stamps
    assert ds.dataset(run_dir / "data", format="parquet").count_rows() == kept
    assert (run_dir / "report.html").is_file() and (run_dir / "README.md").is_file()
    assert "No selection yet" not in (run_dir / "report.html").read_text()
    assert any(
        line.startswith(f"materialize: 5/5 shards · {kept}/{kept} docs") for line in flow_log
    )
    assert not any(line.startswith(("ingest:", "score:")) for line in flow_log)


def test_budget_and_param_parsing() -> None:
    from thresher.cli import _budget, _params

    assert _budget("0.25") == 0.25 and _budget("1.0") == 1.0 and _budget("5000") == 5000
    assert _budget("1e-1") == 0.1 and _budget(None) is None
    assert _params(["band=high", "n=3", "beta=0.1"]) == {"band": "high", "n": 3, "beta": 0.1}


def test_a_run_that_skipped_damaged_inputs_exits_with_status_3(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(
        pa.table({"id": ["a", "b"], "text": ["one short text", "another short text"]}),
        corpus / "good.parquet",
    )
    (corpus / "broken.parquet").write_bytes(b"PAR1 this file was cut")
    config = tmp_path / "c.yaml"
    base = {
        "run_dir": str(tmp_path / "run"),
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": 1.0},
        "engine": {"kind": "local", "workers": 1},
    }
    config.write_text(json.dumps({**base, "input": {"paths": [str(corpus)]}}))
    code, output = invoke("run", str(config), "--quiet")
    assert code == 2
    assert "error: corpus/broken.parquet: unreadable Parquet file" in output
    log = output.split("(details: ")[1].split(")")[0]
    assert log.startswith(str(tmp_path / "run" / "logs")) and "Traceback" in Path(log).read_text()
    assert "Traceback" not in output
    skip = {**base, "input": {"paths": [str(corpus)], "on_unreadable": "skip"}}
    config.write_text(json.dumps(skip))
    code, output = invoke("run", str(config), "--quiet")
    assert code == 3, output
    assert "completed with skipped inputs: 1 damaged file(s) (corpus/broken.parquet)" in output


def _small_job(tmp_path: Path, corpus: Path, **input_options: Any) -> Path:
    """A local-engine job over ``corpus`` (one config file, rewritten by each call)."""
    config = tmp_path / "job.yaml"
    job = {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": [str(corpus)], **input_options},
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": 1.0},
        "engine": {"kind": "local", "workers": 1},
    }
    config.write_text(json.dumps(job), encoding="utf-8")
    return config


def _good_texts(n: int, prefix: str = "g") -> list[dict[str, str]]:
    return [
        {"id": f"{prefix}{i}", "text": f"a short document number {i} for the tests"}
        for i in range(n)
    ]


def test_validate_reports_every_mistake_at_once_with_its_field(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(_good_texts(3)), corpus / "a.parquet")
    config = tmp_path / "job.yaml"
    config.write_text(
        f"run_dir: run\ninput: {{paths: ['{corpus}']}}\nschema: {{text: txt}}\n"
        "scorers: [{name: perplexityy}]\nselector: {name: random, budget: 1.5}\n",
        encoding="utf-8",
    )
    code, output = invoke("validate", str(config))
    assert code == 2
    assert output.startswith("error: invalid run configuration:")
    assert "  selector.budget: a fraction budget must be in (0, 1], got 1.5" in output
    assert "  scorers[0].name: unknown scorer 'perplexityy'" in output
    assert "  schema.text: no input file has a column 'txt'" in output
    assert "their columns: id, text; did you mean 'text'?" in output


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz", "csv"])
def test_a_schema_column_no_input_has_is_refused_before_any_work(tmp_path: Path, fmt: str) -> None:
    import gzip

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{**row, "topic": "news"} for row in _good_texts(3)]
    path = corpus / f"part.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "csv":
        path.write_text(
            "id,text,topic\n" + "".join(f"{r['id']},{r['text']},news\n" for r in rows),
            encoding="utf-8",
        )
    else:
        payload = "".join(json.dumps(row) + "\n" for row in rows).encode()
        path.write_bytes(gzip.compress(payload) if fmt.endswith(".gz") else payload)
    config = _small_job(tmp_path, corpus)
    job = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps({**job, "schema": {"text": "body"}}), encoding="utf-8")
    for command in ("validate", "run"):
        code, output = invoke(command, str(config))
        assert code == 2, (command, output)
        assert "schema.text: no input file has a column 'body'" in output, output
        assert f"{path.name}" in output and "their columns: id, text, topic" in output
        assert not (tmp_path / "run").exists()  # nothing was started


def test_the_curate_flow_refuses_a_schema_column_no_input_has(
    tmp_path: Path, prefect_server: None
) -> None:
    from thresher.config import load_config
    from thresher.errors import ConfigError
    from thresher.flows.curate import curate

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(_good_texts(3)), corpus / "a.parquet")
    config = _small_job(tmp_path, corpus)
    job = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps({**job, "schema": {"label": "topic"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"schema\.label: no input file has a column 'topic'"):
        curate(load_config(config))
    assert not (tmp_path / "run").exists()


def test_a_run_over_the_quarantine_limit_publishes_nothing_and_a_raised_limit_reuses_it(
    tmp_path: Path, prefect_server: None
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(_good_texts(4)), corpus / "a.parquet")
    config = _small_job(tmp_path, corpus)
    run_dir = tmp_path / "run"
    code, output = invoke("run", str(config), "--quiet")
    assert code == 0, output
    published = (run_dir / "CURRENT").read_bytes()

    # a new file whose six records all have empty text: 6 of 10 records quarantined
    empty = [json.dumps({"id": f"e{i}", "text": "  "}) for i in range(6)]
    (corpus / "b.jsonl").write_text("\n".join(empty) + "\n", encoding="utf-8")
    code, output = invoke("run", str(config), "--quiet")
    assert code == 2, output
    assert "6 of 10 input records (60.0%) were quarantined" in output
    assert "more than input.max_quarantined_fraction (0.5) allows" in output
    assert "top reasons: empty_text (6)" in output and "Nothing was published" in output
    assert (run_dir / "CURRENT").read_bytes() == published  # the previous version stays
    assert len(list((run_dir / "versions").iterdir())) == 1
    ingested = sorted((run_dir / "ingested").glob("*.parquet"))
    assert len(ingested) == 2  # what was computed stays for the next run
    assert len(ingest_index.load(run_dir / "_state" / "ingest")) == 2
    stamps = [m.stat().st_mtime_ns for m in ingested]

    config = _small_job(tmp_path, corpus, max_quarantined_fraction=0.8)
    code, output = invoke("run", str(config), "--quiet")
    assert code == 0, output
    assert (run_dir / "CURRENT").read_bytes() != published
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["counts"]["quarantined"]["by_reason"] == {"empty_text": 6}
    assert manifest["counts"]["kept"] == 4
    assert [m.stat().st_mtime_ns for m in ingested] == stamps  # ingest was reused


def test_quiet_keeps_the_console_short_but_writes_the_log_file(
    tmp_path: Path, prefect_server: None
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(_good_texts(3)), corpus / "a.parquet")
    code, output = invoke("run", str(_small_job(tmp_path, corpus)), "--quiet")
    assert code == 0, output
    (log,) = (tmp_path / "run" / "logs").glob("*.log")
    text = log.read_text(encoding="utf-8")
    assert "INFO    prefect.flow_runs: Beginning flow run" in text
    assert "kept 3, dropped 0, quarantined 0 of 3 input records" in text


def test_a_run_that_skipped_most_of_its_inputs_publishes_nothing(
    tmp_path: Path, prefect_server: None
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(_good_texts(3)), corpus / "a.parquet")
    (corpus / "b.parquet").write_bytes(b"PAR1 this file was cut")
    (corpus / "c.parquet").write_bytes(b"")
    config = _small_job(tmp_path, corpus, on_unreadable="skip")
    code, output = invoke("run", str(config), "--quiet")
    assert code == 2, output
    assert "2 of 3 input file(s) (66.7%) were skipped as unreadable" in output
    assert "corpus/b.parquet, corpus/c.parquet" in output
    assert "input.max_quarantined_fraction (0.5)" in output
    assert not (tmp_path / "run" / "CURRENT").exists()
