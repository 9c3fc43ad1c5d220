#!/usr/bin/env bash
# Download the wheels the GPU check needs on a machine that lacks them (no network there).
#
# thresher's scorers need pydantic, which the GPU machine does not have: this fetches, for
# CPython 3.12 on x86-64 Linux, the versions installed in this checkout's environment of
# pydantic, pydantic-core, annotated-types, typing-inspection and typing-extensions into
# .whl/ (ignored by git; about 3 MB). Carry .whl with the check's command; gpu_check.sh
# installs them. Usage: bash benchmarks/gpu_wheels.sh [DEST]   (DEST defaults to .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
dest=${1:-.whl}
mkdir -p "$dest"
packages=$("$python" - <<'PY'
from importlib.metadata import version
names = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"]
print(" ".join(f"{name}=={version(name)}" for name in names))
PY
)
echo "downloading $packages into $dest" >&2
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" $packages
ls -l "$dest"
