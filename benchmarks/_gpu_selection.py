"""GPU check parts on selection: DPP greedy MAP and k-means, GPU against the CPU."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np

from benchmarks._gpu_common import Row, Workspace, importable

if TYPE_CHECKING:
    import torch


# -- part: DPP greedy MAP --------------------------------------------------------------------------
def part_dpp(ws: Workspace) -> None:
    """DPP greedy MAP: thresher's torch path on the GPU against the numpy reference on the CPU."""
    from thresher.selectors.dpp import dpp_quality, greedy_map_numpy, greedy_map_torch
    from thresher.selectors.kmeans import normalize_rows

    n, d, k = ws.scale.dpp
    rng = np.random.default_rng(0)
    features = normalize_rows(rng.standard_normal((n, d), dtype=np.float32))
    quality = dpp_quality(rng.random(n), n, 1.0)
    ridge = 1e-3
    greedy_map_torch(features[:1000], quality[:1000], ridge, 10, ws.device)  # warm-up
    started = time.perf_counter()
    gpu_order, _ = greedy_map_torch(features, quality, ridge, k, ws.device)
    gpu_seconds = time.perf_counter() - started

    # The CPU's cost grows as a k + b k^2: time two short runs, run the full one if it fits.
    k1 = max(2, k // 20)
    timings = []
    for steps in (k1, 2 * k1):
        started = time.perf_counter()
        greedy_map_numpy(features, quality, ridge, steps)
        timings.append(time.perf_counter() - started)
    b = max(0.0, (timings[1] - 2 * timings[0]) / (2 * k1**2))
    a = max(0.0, (timings[0] - b * k1**2) / k1)
    predicted = max(a * k + b * k**2, timings[1] * k / (2 * k1))
    if predicted < 0.8 * (ws.seconds_left() - 5):
        started = time.perf_counter()
        cpu_order, _ = greedy_map_numpy(features, quality, ridge, k)
        cpu_seconds = time.perf_counter() - started
        same = np.array_equal(cpu_order, gpu_order)
        note = "same picks in the same order" if same else _first_difference(gpu_order, cpu_order)
        cpu: float | str = cpu_seconds
    else:
        cpu_seconds = predicted
        cpu = f"{predicted:.2f} (est.)"
        note = (
            f"CPU time estimated from k = {k1} and {2 * k1} (the full run would overrun the budget)"
        )
    speedup = cpu_seconds / gpu_seconds
    ws.emit(
        Row(
            "dpp",
            "DPP greedy MAP, float64",
            workload=f"N = {n:,}, d = {d}, k = {k:,}; torch ({ws.device}) against numpy (CPU)",
            unit="s",
            gpu=gpu_seconds,
            cpu=cpu,
            speedup=speedup,
            target=">= 10x",
            status="met" if speedup >= 10 else "missed",
            note=note,
        )
    )


def _first_difference(a: np.ndarray, b: np.ndarray) -> str:
    size = min(len(a), len(b))
    differ = np.flatnonzero(a[:size] != b[:size])
    first = int(differ[0]) if differ.size else size
    return f"picks agree for the first {first} of {max(len(a), len(b))} steps"


# -- part: k-means ----------------------------------------------------------------------------------
def lloyd(
    x: torch.Tensor, centroids: torch.Tensor, iterations: int, chunk_rows: int
) -> tuple[torch.Tensor, list[float]]:
    """Lloyd's k-means in torch on ``x``'s device: final centroids and the objective per iteration.

    ``x`` is ``(n, d)`` float32, ``centroids`` ``(k, d)`` the starting
    centroids. Each iteration assigns every row to its nearest centroid
    (``||x||^2 - 2 x.c + ||c||^2``, ``chunk_rows`` rows at a time) and
    records the sum of squared distances, then moves every centroid to
    the mean of its rows (an empty cluster keeps its centroid).
    """
    import torch

    c = centroids.clone()
    x_sq = (x * x).sum(dim=1)
    n, k = x.shape[0], c.shape[0]
    objective: list[float] = []
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    for _ in range(iterations):
        c_sq = (c * c).sum(dim=1)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for start in range(0, n, chunk_rows):
            block = x[start : start + chunk_rows]
            distances = torch.addmm(c_sq, block, c.T, alpha=-2.0)
            distances += x_sq[start : start + chunk_rows, None]
            best, nearest = distances.min(dim=1)
            labels[start : start + chunk_rows] = nearest
            total += best.clamp_min(0).sum(dtype=torch.float64)
        objective.append(float(total))
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        c = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None], c)
    return c, objective


def part_kmeans(ws: Workspace) -> None:
    """k-means: a torch Lloyd loop on the GPU against faiss-cpu (or the same loop on the CPU)."""
    import torch

    n, d, k, iterations = ws.scale.kmeans
    generator = torch.Generator(device=ws.device).manual_seed(0)
    centers = 4.0 * torch.randn(k, d, device=ws.device, generator=generator)
    owner = torch.randint(0, k, (n,), device=ws.device, generator=generator)
    x = centers[owner] + torch.randn(n, d, device=ws.device, generator=generator)
    start = x[torch.randperm(n, device=ws.device, generator=generator)[:k]]
    x_cpu, start_cpu = x.cpu().numpy(), start.cpu().numpy()
    lloyd(x[:1024], start, 1, 1024)  # warm-up
    ws.sync()
    started = time.perf_counter()
    _, gpu_objective = lloyd(x, start, iterations, 262_144)
    ws.sync()
    gpu_seconds = time.perf_counter() - started
    if importable("faiss"):
        import faiss

        reference = "faiss-cpu"
        kmeans = faiss.Kmeans(
            d,
            k,
            niter=iterations,
            seed=1,
            verbose=False,
            min_points_per_centroid=1,
            max_points_per_centroid=n // k + 1,  # train on every row, like the torch loop
        )
        started = time.perf_counter()
        kmeans.train(x_cpu, init_centroids=start_cpu)
        cpu_seconds = time.perf_counter() - started
        cpu_objective = float(kmeans.obj[-1])  # type: ignore[index]
        cpu: float | str = cpu_seconds
        estimated = ""
    else:
        reference = "the same torch loop on the CPU (faiss is not installed here)"
        x_host, c = torch.from_numpy(x_cpu), torch.from_numpy(start_cpu)
        objective: list[float] = []
        started = time.perf_counter()
        budget = max(ws.scale.leg_seconds, 0.4 * (ws.seconds_left() - 5))
        while len(objective) < iterations and (
            not objective or time.perf_counter() - started < budget
        ):
            c, step = lloyd(x_host, c, 1, 65_536)
            objective += step
        per_iteration = (time.perf_counter() - started) / len(objective)
        cpu_seconds = per_iteration * iterations
        cpu_objective = objective[-1] if len(objective) == iterations else math.nan
        done = len(objective)
        estimated = (
            "" if done == iterations else f"; CPU timed on {done} of {iterations} iterations"
        )
        cpu = cpu_seconds if not estimated else f"{cpu_seconds:.2f} (est.)"
    agreement = (
        f"final objective GPU {gpu_objective[-1]:.4g}, CPU {cpu_objective:.4g}"
        if math.isfinite(cpu_objective)
        else f"final objective GPU {gpu_objective[-1]:.4g}"
    )
    ws.emit(
        Row(
            "kmeans",
            "k-means, Lloyd iterations",
            workload=f"N = {n:,}, d = {d}, k = {k:,}, {iterations} iterations, float32, same start; "
            f"torch ({ws.device}) against {reference}",
            unit="s",
            gpu=gpu_seconds,
            cpu=cpu,
            speedup=cpu_seconds / gpu_seconds,
            note=agreement + estimated,
        )
    )
