#!/usr/bin/env bash
# The GPU check from a bare copy of the repository: python3 -m benchmarks.gpu, thresher not installed.
#
# Wheels carried in .whl/ (pydantic and what it needs: benchmarks/gpu_wheels.sh fetches them)
# are installed into a scratch directory first; without them the parts that need pydantic are
# skipped with a note. Extra arguments go to benchmarks.gpu (e.g. --parts dpp,kmeans).
# GPU_CHECK_TIMEOUT (seconds, default 540) stops the whole command in time to read its output.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    site=${TMPDIR:-/tmp}/thresher-gpu-site
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: installing the wheels in .whl/ failed; parts needing them are skipped" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout --signal=INT --kill-after=30 "${GPU_CHECK_TIMEOUT:-540}" \
    "$python" -m benchmarks.gpu "$@"
