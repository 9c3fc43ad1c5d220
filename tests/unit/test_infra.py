"""What can be validated of infra/ without a cluster: manifests, scripts, image, deployments."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml

ROOT = Path(__file__).parents[2]
INFRA = ROOT / "infra"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            docs.append((path.name, doc))
    return docs


def test_kubernetes_manifests_parse_and_are_complete() -> None:
    docs = _documents()
    assert len(docs) >= 9
    for name, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), name
        assert doc["metadata"].get("name") or doc["kind"] == "Pod", name
        if doc["kind"] != "Namespace" and doc["kind"] != "Pod":
            assert doc["metadata"]["namespace"] == "thresher", name


def test_gpu_spark_application_requests_gpus_the_way_spark_expects() -> None:
    apps = {d["metadata"]["name"]: d for _, d in _documents() if d["kind"] == "SparkApplication"}
    gpu = apps["thresher-score-gpu"]["spec"]
    conf = gpu["sparkConf"]
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert float(conf["spark.task.resource.gpu.amount"]) <= 1
    assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    script = conf["spark.executor.resource.gpu.discoveryScript"]
    assert (
        script.startswith("/opt/thresher/")
        and (ROOT / script.removeprefix("/opt/thresher/")).is_file()
    )
    assert gpu["executor"]["gpu"] == {"name": "nvidia.com/gpu", "quantity": 1}
    for spec in (gpu, apps["thresher-curate"]["spec"]):
        assert spec["mainApplicationFile"] == "local:///opt/thresher/infra/spark/driver.py"
        assert spec["arguments"][0] == "run"
        assert (INFRA / "spark" / "driver.py").is_file()
    template = next(d for n, d in _documents() if n == "gpu-executor-pod-template.yaml")
    assert template["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_spark_defaults_are_spark_properties() -> None:
    for path in (INFRA / "spark").glob("*.conf"):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, value = line.split(None, 1)
                assert key.startswith("spark.") and value.strip(), (path.name, line)


def _discovery(path_dirs: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PATH": os.pathsep.join(path_dirs)}
    out = subprocess.run(
        ["bash", str(INFRA / "spark" / "gpu-discovery.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_gpu_discovery_script_prints_valid_json(tmp_path: Path) -> None:
    assert _discovery(["/usr/bin", "/bin"]) == {"name": "gpu", "addresses": []}
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert _discovery([str(tmp_path), "/usr/bin", "/bin"]) == {
        "name": "gpu",
        "addresses": ["0", "1"],
    }


def test_dockerfile_installs_as_the_readme_does() -> None:
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    # The README's commands set up through `make venv`; the image runs the same target.
    assert re.search(r"^demo: venv", makefile, re.M) and re.search(r"^test: venv", makefile, re.M)
    assert re.search(r"make venv VENV=/opt/venv", dockerfile)
    venv_recipe = makefile.split("$(VENV)/.installed: pyproject.toml", 1)[1].split("\n\n", 1)[0]
    assert venv_recipe.index("torch==2.13.0") < venv_recipe.index('-e ".[$(EXTRAS)]"')
    copied = " ".join(re.findall(r"^COPY (?!--from)(.*)$", dockerfile, re.M))
    for needed in ("Makefile", "pyproject.toml", "README.md", "thresher", "infra"):
        assert needed in copied
    assert "openjdk-17" in dockerfile  # Spark needs Java 17
    assert "/opt/entrypoint.sh" in dockerfile  # Spark on Kubernetes starts executors with it


def test_prefect_deployments_point_at_real_flows_and_pools() -> None:
    import importlib

    from prefect import Flow

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    workers = (INFRA / "k8s" / "prefect-workers.yaml").read_text()
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), deployment["name"]
        for schedule in deployment.get("schedules", []):
            assert len(schedule["cron"].split()) == 5
    for pool in pools:
        assert f'--pool", "{pool}"' in workers
        assert (INFRA / "prefect" / f"{pool.removeprefix('thresher-')}-job-template.json").is_file()


def _deployments() -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_every_deployment_the_docs_name_exists() -> None:
    deployments = _deployments()
    docs = "\n".join(
        (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "infra/README.md")
    )
    named = set(re.findall(r"curate/([a-z0-9-]+)", docs))
    named |= set(re.findall(r"--name ([a-z0-9-]+)", docs))
    assert {"nightly-curate", "score-models-gpu"} <= named
    assert named <= set(deployments), named - set(deployments)
    # what the docs say prefect.yaml holds: scheduled curation on the CPU pool, GPU scoring
    # on the GPU pool
    assert deployments["nightly-curate"]["work_pool"]["name"] == "thresher-cpu"
    assert deployments["nightly-curate"]["schedules"]
    assert deployments["score-models-gpu"]["work_pool"]["name"] == "thresher-gpu"
    assert "curate-models" in deployments["score-models-gpu"]["parameters"]["config"]


def test_deployments_use_their_own_run_directories() -> None:
    run_dirs = [d["parameters"]["run_dir"] for d in _deployments().values()]
    assert len(set(run_dirs)) == len(run_dirs)
    assert "runs/sample" not in run_dirs  # `make demo`'s


def test_automations_parse_and_act_on_the_deployments_runs() -> None:
    from prefect.events.schemas.automations import AutomationCore

    spec = yaml.safe_load((INFRA / "prefect" / "automations.yaml").read_text())
    automations = [AutomationCore.model_validate(a) for a in spec["automations"]]
    assert len(automations) == 3
    deployments = _deployments().values()
    for automation in automations:
        tags = automation.trigger.match_related
        assert tags is not None and "prefect.tag.thresher" in str(tags), automation.name
        assert all("thresher" in d["tags"] for d in deployments)
    by_state = {a.actions[0].state.value: a for a in automations}  # type: ignore[union-attr]
    crash = by_state["CRASHED"].trigger
    beat = min(
        int(d["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
        for d in deployments
    )
    # a run is declared dead only after missing at least two heartbeats
    assert crash.within.total_seconds() >= 3 * beat  # type: ignore[union-attr]
    retry = by_state["SCHEDULED"].trigger
    assert "prefect.flow-run.Crashed" in retry.expect  # type: ignore[union-attr]
    assert retry.match.root["prefect.run-count"] == ["1", "2"]  # type: ignore[union-attr]


def test_deployment_steps_name_thresher_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thresher.errors import ConfigError
    from thresher.flows.deployment import check_home, enter_home

    unfilled = "{{ $THRESHER_HOME }}"
    for step in (check_home, enter_home):
        with pytest.raises(ConfigError, match="THRESHER_HOME is not set"):
            step(unfilled)
    with pytest.raises(ConfigError, match="THRESHER_HOME='relative' is not an absolute path"):
        check_home("relative")
    assert check_home("/opt/thresher") == {"thresher_home": "/opt/thresher"}  # need not exist here
    with pytest.raises(ConfigError, match="does not hold the thresher package"):
        enter_home(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert enter_home(str(ROOT)) == {"directory": str(ROOT.resolve())}
    assert Path.cwd() == ROOT.resolve()


def test_prefect_yaml_steps_are_thresher_s() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (build,) = spec["build"]
    (pull,) = spec["pull"]
    assert build == {"thresher.flows.deployment.check_home": {"directory": "{{ $THRESHER_HOME }}"}}
    assert pull == {"thresher.flows.deployment.enter_home": {"directory": "{{ $THRESHER_HOME }}"}}


@pytest.mark.usefixtures("prefect_server")
def test_work_pool_templates_render_with_prefect_kubernetes() -> None:
    import asyncio
    import inspect

    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async def render(template: dict[str, Any]) -> Any:
        result = KubernetesWorkerJobConfiguration.from_template_and_values(
            template, {"image": "x:1"}
        )
        return await result if inspect.isawaitable(result) else result

    for kind in ("cpu", "gpu"):
        template = json.loads((INFRA / "prefect" / f"{kind}-job-template.json").read_text())
        config = asyncio.run(render(template))
        pod = config.job_manifest["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"].get("limits", {})
        assert ("nvidia.com/gpu" in limits) == (kind == "gpu")
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "thresher-data"


@pytest.mark.slow
@pytest.mark.spark
def test_thresher_submit_runs_a_job_through_spark_submit(
    tmp_path: Path, small_corpus: Path
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "input": {"paths": [str(small_corpus / "shard-*")]},
                "scorers": [{"name": "word_count"}],
                "selector": {"name": "random", "budget": 0.3},
                "engine": {"kind": "spark", "spark": {"conf": {"spark.ui.enabled": "false"}}},
            }
        )
    )
    env = {**os.environ, "THRESHER_PYTHON": sys.executable}
    result = subprocess.run(
        [str(INFRA / "spark" / "thresher-submit"), "--master", "local[2]", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["reconciles"]
    rows = ds.dataset(tmp_path / "run" / "data", format="parquet").count_rows()
    assert rows == manifest["counts"]["kept"] > 0


def test_the_object_storage_job_needs_no_volume_and_takes_credentials_from_a_secret() -> None:
    (doc,) = yaml.safe_load_all((INFRA / "k8s" / "spark-application-s3.yaml").read_text())
    spec = doc["spec"]
    assert "volumes" not in spec
    assert all("volumeMounts" not in spec[role] for role in ("driver", "executor"))
    assert all(a.startswith("s3://") for a in spec["arguments"][1:])
    for role in ("driver", "executor"):  # the same credentials on both sides
        assert spec[role]["envFrom"] == [{"secretRef": {"name": "thresher-s3", "optional": True}}]
    text = (INFRA / "k8s" / "spark-application-s3.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY=..." in text  # documented, never a real value
