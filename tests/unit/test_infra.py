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
