#!/usr/bin/env bash
# Runs the Python tests under ctest: the files given, or every test in this folder. Without
# pytest they cannot run: say so and exit 77, which ctest reports as skipped (never as passed).
set -u
py="${PYTHON:-python3}"
if ! "$py" -c "import pytest" 2>/dev/null; then
  echo "SKIPPED: pytest is not installed for $py (pip install pytest tokenizers), so tests/python did not run"
  exit 77
fi
if [ $# -eq 0 ]; then set -- "$(dirname "$0")"; fi
exec "$py" -m pytest -q -rs -p no:cacheprovider "$@"
