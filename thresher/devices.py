"""Where torch code runs: device choice and CPU thread budget.

Torch scorers take ``device="auto"``: the GPU that Spark assigned to this
task when there is one, else the first CUDA device, else the CPU. On the
CPU a worker uses only its share of the cores (the local engine sets
``THRESHER_WORKER_THREADS`` in each worker process), so that several
workers do not oversubscribe the machine.
"""

from __future__ import annotations

import os
from typing import Any


def _spark_task() -> Any:
    """The running Spark task's TaskContext, or None outside a Spark task."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    return TaskContext.get()


def spark_task_gpu() -> int | None:
    """The GPU address Spark assigned to the running task, if any."""
    context = _spark_task()
    if context is None:
        return None
    gpus = context.resources().get("gpu")
    if gpus is None or not gpus.addresses:
        return None
    return int(gpus.addresses[0])


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda:N"`` (Spark's assignment, else 0) or ``"cpu"``; others unchanged."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    assigned = spark_task_gpu()
    return f"cuda:{assigned if assigned is not None else 0}"


def worker_threads() -> int:
    """CPU threads this worker may use (its share of the cores).

    ``THRESHER_WORKER_THREADS`` when set (the local engine sets it); inside a
    Spark task, the CPUs Spark gave the task (``spark.task.cpus``, default 1),
    since each of an executor's concurrent tasks runs its own Python worker;
    else every core.
    """
    configured = os.environ.get("THRESHER_WORKER_THREADS")
    if configured:
        return max(1, int(configured))
    task_cpus = spark_task_cpus()
    if task_cpus is not None:
        return task_cpus
    return max(1, os.cpu_count() or 1)


def spark_task_cpus() -> int | None:
    """CPUs Spark assigned to the running task, if this runs inside one."""
    context = _spark_task()
    if context is None:
        return None
    return max(1, int(context.cpus()))


def configure_torch(device: str) -> Any:
    """Cap torch's CPU threads to the worker's share; return the torch.device."""
    import torch

    if device == "cpu" and torch.get_num_threads() != worker_threads():
        torch.set_num_threads(worker_threads())
    return torch.device(device)


def autocast_dtype(device_type: str, bf16_supported: bool) -> Any:
    """Half precision for inference on CUDA (bf16 where supported, else fp16); none on CPU."""
    import torch

    if device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


def bf16_supported(device: Any) -> bool:
    """Whether ``device`` (a ``torch.device``) is a CUDA device with bf16 support."""
    import torch

    return device.type == "cuda" and bool(torch.cuda.is_bf16_supported())
