#!/usr/bin/env bash
# tools/cuda/device_run.sh: one call on the GPU machine that builds the CUDA backend, runs its
# tests (plus compute-sanitizer memcheck and racecheck on a subset) and the GPU benchmark.
# The machine has nvcc, CMake and a compiler but no GoogleTest or nlohmann-json: the caller
# carries their sources in .devdeps/, made once on a Debian machine with libgtest-dev and
# nlohmann-json3-dev installed, and ignored by git:
#   mkdir -p .devdeps/json/include .devdeps/json/share/cmake && cp -r /usr/src/googletest .devdeps/ &&
#   cp -r /usr/include/nlohmann .devdeps/json/include/ &&
#   cp -r /usr/share/cmake/nlohmann_json .devdeps/json/share/cmake/ && echo /.devdeps/ >> .git/info/exclude
# then run this script on the GPU machine with .devdeps carried along.
#   usage: tools/cuda/device_run.sh OUTDIR [bench flags...]
#   env:   STEPS="build test sanitize bench" (default all), JOBS (default nproc)
set -uo pipefail
out=${1:?usage: device_run.sh OUTDIR [bench flags...]}
shift
steps=${STEPS:-build test sanitize bench}
jobs=${JOBS:-$(nproc)}
mkdir -p "$out"
log() { echo "=== $*" | tee -a "$out/summary.txt"; }
has() { [[ " $steps " == *" $1 "* ]]; }

log "$(date -u) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
log "$(nvcc --version | tail -1); $(g++ --version | head -1); $(cmake --version | head -1)"

if has build; then
  start=$(date +%s)
  cmake -S .devdeps/googletest -B /tmp/gtest-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/tmp/deps \
      > "$out/build.log" 2>&1 &&
    cmake --build /tmp/gtest-build -j "$jobs" >> "$out/build.log" 2>&1 &&
    cmake --install /tmp/gtest-build >> "$out/build.log" 2>&1 &&
    cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=OFF \
      -DMACATTN_BUILD_TESTS=ON -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
      "-DCMAKE_PREFIX_PATH=/tmp/deps;$PWD/.devdeps/json" >> "$out/build.log" 2>&1 &&
    cmake --build build-device -j "$jobs" --target macattn macattn_cuda_tests >> "$out/build.log" 2>&1
  rc=$?
  log "build rc=$rc in $(( $(date +%s) - start )) s"
  if [ $rc -ne 0 ]; then grep -E "error|Error" "$out/build.log" | head -40; exit 1; fi
fi

if has test; then
  start=$(date +%s)
  ./build-device/tests/cuda/macattn_cuda_tests > "$out/tests.log" 2>&1
  rc=$?
  log "tests rc=$rc in $(( $(date +%s) - start )) s: $(grep -E '^\[  (PASSED|FAILED) ' "$out/tests.log" | tr '\n' ' ')"
  grep -E "FAILED|Failure|error|hits," "$out/tests.log" | head -40
fi

if has sanitize; then
  for tool in memcheck racecheck; do
    start=$(date +%s)
    timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 ./build-device/tests/cuda/macattn_cuda_tests \
      --gtest_filter='*ExactDecode*hq16_hkv2_d128*:*MacDecodeMatchesReference*hq12_hkv4_d64*:*InCudaGraph*hq16_hkv2_d128*' \
      > "$out/sanitize_$tool.log" 2>&1
    rc=$?
    log "compute-sanitizer $tool rc=$rc in $(( $(date +%s) - start )) s: $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$out/sanitize_$tool.log" | tail -3 | tr '\n' ' ')"
  done
fi

if has bench; then
  ./build-device/tools/macattn/macattn bench --backend cuda --json "$out/h200.json" "$@" 2>&1 | tee "$out/bench.log" | tail -80
fi
cat "$out/summary.txt"
