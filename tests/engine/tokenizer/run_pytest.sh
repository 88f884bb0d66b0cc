#!/usr/bin/env bash
# Runs test_tokenizer_vs_hf.py under ctest with TOKENIZER_TOOL set (first argument). Without
# pytest or HF `tokenizers` the comparison cannot run: say so and exit 77, which ctest reports
# as skipped (never as passed).
set -u
py="${PYTHON:-python3}"
for module in pytest tokenizers; do
  if ! "$py" -c "import $module" 2>/dev/null; then
    echo "SKIPPED: $module is not installed for $py (pip install pytest tokenizers), so the HF comparison did not run"
    exit 77
  fi
done
export TOKENIZER_TOOL="$1"
exec "$py" -m pytest -q -rs -p no:cacheprovider "$(dirname "$0")/test_tokenizer_vs_hf.py"
