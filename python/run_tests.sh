#!/usr/bin/env bash
# Builds macattn_torch in place (against the installed torch) and runs its pytest suite.
# Without torch it builds nothing, says so, and exits 0 (CI installs torch: .ci/run).
#   MACATTN_BUILD_DIR=build  reuse an existing CMake build of the library (see setup.py)
#   MAX_JOBS=2               compile jobs
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -c "import torch" 2>/dev/null; then
  echo "macattn_torch: SKIPPED: the Python package 'torch' is not installed (pip install torch);" \
       "the PyTorch extension was neither built nor tested"
  exit 0
fi
python3 -c "import pytest" 2>/dev/null || { echo "macattn_torch: pytest is not installed (pip install pytest)"; exit 1; }
MAX_JOBS="${MAX_JOBS:-2}" python3 setup.py -q build_ext --inplace
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest -q -rs tests
