#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with asciiray, its test tools and TensorBoard.
#
# PyTorch: on a machine with an NVIDIA GPU (nvidia-smi present), pip picks the torch build that
# satisfies the package's range from your index (a CUDA build on Linux x86_64). Without a GPU,
# torch 2.13.0 is installed first, from TORCH_INDEX_URL when you set it, e.g.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ./setup.sh     # the small CPU-only wheel
# and otherwise from pip's configured index (on PyPI for Linux x86_64 that is the CUDA build,
# which runs on a CPU too; a local wheel cache or mirror may hold the CPU build instead).
# The last line says which build was installed.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
if ! command -v nvidia-smi >/dev/null 2>&1; then
  index="${TORCH_INDEX_URL:-the configured pip index}"
  echo "setup: no NVIDIA GPU found; installing torch 2.13.0 from $index" \
       "(TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu picks the CPU-only build)"
  .venv/bin/pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
.venv/bin/pip install -q -e ".[test]"
.venv/bin/python - <<'PY'
import torch

build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
where = "a GPU is available" if torch.cuda.is_available() else "no GPU: training runs on the CPU"
print(f"setup: torch {torch.__version__} ({build}); {where}")
PY
