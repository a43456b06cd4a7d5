#!/usr/bin/env bash
# Create (or update) .venv with a pinned torch, this package and its test tools.
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0: the CUDA build from PyPI on a
# normal machine, the local CPU wheel on our dev/CI machines). Never leave torch unpinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[test]"
echo "ready: $(.venv/bin/python -c 'import torch, zoedepth_ros; print("torch", torch.__version__)')"
