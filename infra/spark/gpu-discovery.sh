#!/usr/bin/env bash
# Spark GPU discovery script: prints the GPUs this executor can use as
#   {"name": "gpu", "addresses": ["0", "1"]}
# Spark runs it when an executor starts (spark.executor.resource.gpu.discoveryScript).
# In a Kubernetes pod, only the GPUs allocated to the pod are visible to nvidia-smi.
# Without nvidia-smi (a CPU node) it reports no GPU rather than failing.
set -euo pipefail
addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
  addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null \
    | tr -d ' ' | grep -E '^[0-9]+$' | sed 's/.*/"&"/' | paste -sd, - || true)
fi
printf '{"name": "gpu", "addresses": [%s]}\n' "${addresses}"
