#!/usr/bin/env bash
# Create or refresh the project virtualenv at .venv/ (idempotent; a no-op when nothing changed).
# Installs tomoloop (editable) with its dev extras, PyTorch 2.14.1 and detectron2 as
# ../shared/FACTS.md describes. Re-runs only when pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
STAMP=$VENV/.tomoloop-bootstrap
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
echo "tomoloop: bootstrapping $VENV (first run takes several minutes)..." >&2
# A fresh .venv takes ~7.5 GB (PyTorch's CUDA build alone ~5.5 GB): say so before pip fails.
need_kb=$((8 * 1024 * 1024))
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [[ ! -x $VENV/bin/python && $free_kb -lt $need_kb ]]; then
  echo "tomoloop: a new $VENV needs about 8 GB free on the disk of $PWD; only" \
    "$((free_kb / 1024)) MB are: free some space (old clones, /tmp) and run again." >&2
  exit 1
fi
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
VPY=$VENV/bin/python
"$VPY" -m pip install -qq --upgrade "pip>=25" wheel
"$VPY" -m pip install -qq -e ".[dev,detectron2]"
# nnU-Net's batchgenerators (its dataset check runs in the tests) pulls unittest2 and with
# it PyPI's "argparse" 1.4, which shadows Python's own argparse (Prefect's server then fails
# to start): Python's own is the one to keep.
"$VPY" -m pip uninstall -qq -y argparse 2>/dev/null || true
# detectron2: not on PyPI under its own name. A source build (GPU machines) wins when present.
if ! "$VPY" -c "import detectron2" >/dev/null 2>&1; then
  purelib=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$VPY" -m pip install -qq --no-deps --only-binary=:all: --python-version 3.10 \
    --target "$purelib" --upgrade sal-detectron2==0.7.2
fi
"$VPY" -c "import detectron2, torch, tomoloop.adapters" >/dev/null
echo "$want" > "$STAMP"
echo "tomoloop: $VENV ready" >&2
