#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with asciiray and its test tools.
# Where no NVIDIA GPU is present the CPU build of PyTorch is installed first, so
# the dependency range never pulls a multi-GB CUDA build onto a CPU machine.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/pip install -q "torch==2.13.0"
fi
.venv/bin/pip install -q -e ".[test]"
