#!/usr/bin/env bash
# The GPU run (issue 20, target 7): every figure beside its CPU baseline, measured in the same
# run; exit status 1 when a path fails. On a machine with one CUDA GPU, from the repository:
#   bench/gpu.sh                  # about 5 minutes on an H100-class GPU with 16 cores
#   bench/gpu.sh --quick --device cpu   # tiny sizes, CPU only (a smoke test)
# Options are bench/gpu.py's (--device, --quick, --paths, --tile, --out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh  # the project virtualenv (a no-op when it is up to date)
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec .venv/bin/python bench/gpu.py "$@"
