#!/usr/bin/env bash
# tools/cuda/device_run.sh: one call on the GPU machine that builds the CUDA backend, runs its
# tests (plus compute-sanitizer memcheck and racecheck on a subset) and the GPU benchmark.
# The machine has nvcc, CMake and a compiler but no GoogleTest or nlohmann-json: the caller
# carries their sources in .devdeps/, made once on a Debian machine with libgtest-dev and
# nlohmann-json3-dev installed, and ignored by git:
#   mkdir -p .devdeps/json/include .devdeps/json/share/cmake && cp -r /usr/src/googletest .devdeps/ &&
#   cp -r /usr/include/nlohmann .devdeps/json/include/ &&
#   cp -r /usr/share/cmake/nlohmann_json .devdeps/json/share/cmake/ && echo /.devdeps/ >> .git/info/exclude
# The engine step (STEPS token "engine") also needs the tokenizer's PCRE2 and utf8proc, which
# the GPU machine lacks: their headers and static libraries (no LD_LIBRARY_PATH needed at run
# time) from Debian's packages go to .devdeps/sys (about 1.2 MB):
#   cd /tmp && apt-get download libpcre2-dev libutf8proc-dev && for f in libpcre2-dev_*.deb libutf8proc-dev_*.deb;
#   do dpkg -x $f /tmp/debx; done && cd - && mkdir -p .devdeps/sys/include .devdeps/sys/lib &&
#   cp /tmp/debx/usr/include/{pcre2.h,utf8proc.h} .devdeps/sys/include/ &&
#   cp /tmp/debx/usr/lib/x86_64-linux-gnu/{libpcre2-8.a,libutf8proc.a} .devdeps/sys/lib/
# then run this script on the GPU machine with .devdeps carried along.
#   usage: tools/cuda/device_run.sh OUTDIR [bench flags...]
# Name the commit in MACATTN_GIT_COMMIT, spelled out where the repository lives: the GPU
# machine's copy may carry stale git metadata (in the eighteenth session `git rev-parse` there
# printed a commit three sessions old), and the JSON files record whatever it says.
#   env:   STEPS="build test sanitize bench" (default; add "python" for the PyTorch extension's
#          tests and the side-by-side benchmark after "build", "engine" for the engine's CUDA tests
#          and bench-e2e --device cuda, "profile" for MACATTN_CUDA_PROFILE=1 block timestamps of
#          the decode kernels at 128K, batch 1 and 16, hit rates 0 and 1; "trace" after "engine" for
#          kernel timelines, through tools/cuda/kernel_trace.cpp, of the engine's decode step and the
#          layer benchmark at 128K, batch 1: exact and MAC all-hit), JOBS (default nproc), E2E_CONTEXTS (default 32768,65536,131072),
#          E2E_BATCHES (default 1,4), E2E_REF_CONTEXTS (default 8192,16000), TEST_SHARDS (default 4: the
#          CUDA tests as that many gtest shards side by side), TORCH_BENCH (default 1; 0 skips the
#          "python" step's side-by-side benchmark and keeps its build and pytest)
set -uo pipefail
out=${1:?usage: device_run.sh OUTDIR [bench flags...]}
shift
steps=${STEPS:-build test sanitize bench}
jobs=${JOBS:-$(nproc)}
mkdir -p "$out"
log() { echo "=== $*" | tee -a "$out/summary.txt"; }
has() { [[ " $steps " == *" $1 "* ]]; }

log "$(date -u) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
[ -n "${MACATTN_GIT_COMMIT:-}" ] || log "warning: MACATTN_GIT_COMMIT is not set; the results will carry this copy's git metadata, which may be stale"
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
  # The suite in TEST_SHARDS gtest shards side by side (one GPU; the tests are independent): run
  # one after another it no longer fits a device call's 600 s, four shards took 210 s (h200.md,
  # seventeenth session).
  start=$(date +%s)
  shards=${TEST_SHARDS:-4}
  # gtest prints a failed or skipped test twice: when it ends, with its time, and in the summary.
  count_tests() { grep -E "^\[  $1 *\] [A-Z]" "$out/tests.log" | sed 's/ (.*//' | sort -u | wc -l; }
  pids=()
  for ((i = 0; i < shards; ++i)); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i ./build-device/tests/cuda/macattn_cuda_tests \
        > "$out/tests_$i.log" 2>&1 &
    pids+=($!)
  done
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  cat "$out"/tests_*.log > "$out/tests.log"
  log "tests rc=$rc in $(( $(date +%s) - start )) s, $shards shards: $(grep -cE '^\[       OK \]' "$out/tests.log") passed, $(count_tests FAILED) failed, $(count_tests SKIPPED) skipped"
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
if has profile; then
  # One process per configuration: the summary is per kernel and grid, and hit rates 0 and 1
  # launch the same grids. Eager calls and the captured graphs' last replays are summarised apart.
  for batch in 1 16; do
    for hit in 0 1; do
      log "profile: batch $batch, 128K, hit rate $hit"
      MACATTN_CUDA_PROFILE=1 ./build-device/tools/macattn/macattn bench --backend cuda --contexts 131072 \
          --batches "$batch" --hit-rates "$hit" --miss-patterns packed --min-seconds 0.01 --min-reps 10 --check off \
          --progress off > "$out/profile_b${batch}_hit${hit}.log" 2>&1
      sed -n '/^MACATTN_CUDA_PROFILE/,$p' "$out/profile_b${batch}_hit${hit}.log" | tee -a "$out/summary.txt"
    done
  done
fi
if has python; then
  # The PyTorch extension against build-device's libmacattn.a (the "build" step; its
  # macattn_static target is built here if missing), its pytest suite, and the side-by-side
  # benchmark; FlashInfer from .fiw/ when carried (tools/bench/make_flashinfer_carry.sh).
  # Built with the system compiler: the image's default g++ wrapper links libstdc++ statically
  # into extensions, and that copy crashed (python/README.md).
  cmake --build build-device -j "$jobs" --target macattn_static >> "$out/build.log" 2>&1
  start=$(date +%s)
  (cd python && CC=gcc CXX=g++ LDSHARED="g++ -shared" MAX_JOBS="$jobs" MACATTN_BUILD_DIR="$PWD/../build-device" \
     python3 setup.py -q build_ext --inplace > "$out/py_build.log" 2>&1 &&
   PYTHONPATH="$PWD" python3 -m pytest -q -rs -p no:cacheprovider tests > "$out/py_tests.log" 2>&1)
  log "python ext build + pytest rc=$? in $(( $(date +%s) - start )) s: $(tail -1 "$out/py_tests.log")"
fi
# The side-by-side grid takes minutes: TORCH_BENCH=0 runs the extension's tests alone, so that
# the build, the tests and the sanitizers still fit one device call.
if has python && [ "${TORCH_BENCH:-1}" != 0 ]; then
  site=""
  if ls .fiw/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fisite .fiw/*.whl &&
      mkdir -p /tmp/fi && python3 -m tarfile --filter data -e .fiw/flashinfer-*-decode.tar.xz /tmp/fi && site=":/tmp/fisite:/tmp/fi"
  fi
  (cd python && PYTHONPATH="$PWD$site" FLASHINFER_WORKSPACE_BASE=/tmp/fiws FLASHINFER_CUDA_ARCH_LIST=9.0a \
     TVM_FFI_CACHE_DIR=/tmp/fiws/tvm-ffi PYTHONUNBUFFERED=1 python3 ../tools/bench/torch_side_by_side.py \
     --contexts "${TORCH_CONTEXTS:-32768,65536,131072}" --batches 1,4,16 --reps 20 --out "$out/h200_torch" \
     > "$out/torch_bench.log" 2>&1)
  log "torch_side_by_side.py rc=$?"
  head -12 "$out/h200_torch.md" 2>/dev/null
fi
if has engine; then
  # The engine (src/engine, its CUDA forward pass) and the macattn tool with generate/bench-e2e.
  start=$(date +%s)
  if [ ! -d /tmp/deps/lib/cmake/GTest ] && [ ! -d /tmp/deps/lib64/cmake/GTest ]; then
    cmake -S .devdeps/googletest -B /tmp/gtest-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/tmp/deps \
        > "$out/engine_build.log" 2>&1 &&
      cmake --build /tmp/gtest-build -j "$jobs" >> "$out/engine_build.log" 2>&1 &&
      cmake --install /tmp/gtest-build >> "$out/engine_build.log" 2>&1
  fi
  sys=$PWD/.devdeps/sys
  cmake -S . -B build-device-engine -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=ON \
      -DMACATTN_BUILD_TESTS=ON -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
      "-DCMAKE_PREFIX_PATH=/tmp/deps;$PWD/.devdeps/json" \
      -DMACATTN_PCRE2_INCLUDE_DIR="$sys/include" -DMACATTN_PCRE2_LIBRARY="$sys/lib/libpcre2-8.a" \
      -DMACATTN_UTF8PROC_INCLUDE_DIR="$sys/include" -DMACATTN_UTF8PROC_LIBRARY="$sys/lib/libutf8proc.a" \
      >> "$out/engine_build.log" 2>&1 &&
    cmake --build build-device-engine -j "$jobs" --target macattn engine_cuda_tests macattn_static \
      $(has trace && echo macattn_kernel_trace) >> "$out/engine_build.log" 2>&1
  rc=$?
  log "engine build rc=$rc in $(( $(date +%s) - start )) s"
  if [ $rc -ne 0 ]; then grep -E "error|Error" "$out/engine_build.log" | head -40; cat "$out/summary.txt"; exit 1; fi
  start=$(date +%s)
  ./build-device-engine/tests/engine/engine_cuda_tests > "$out/engine_tests.log" 2>&1
  rc=$?
  log "engine CUDA tests rc=$rc in $(( $(date +%s) - start )) s: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/engine_tests.log" | tr '\n' ' ')"
  grep -E "FAILED|Failure|error|\[ info \]" "$out/engine_tests.log" | head -60
  tool=./build-device-engine/tools/macattn/macattn
  start=$(date +%s)
  $tool generate -n 48 -f prompts/passkey_12k.txt --attention both --audit --progress off \
      --json "$out/generate_cuda.json" > "$out/generate_cuda.log" 2>&1
  log "generate --device auto (cuda) --attention both --audit rc=$? in $(( $(date +%s) - start )) s"
  tail -30 "$out/generate_cuda.log"
  start=$(date +%s)
  $tool bench-e2e --device cuda --shape llama3-8b --contexts "${E2E_CONTEXTS:-32768,65536,131072}" \
      --batches "${E2E_BATCHES:-1,4}" --hit-rates 0,0.5,1 --progress off --json "$out/e2e_cuda_llama3_8b.json" \
      2>&1 | tee "$out/e2e_cuda_llama3_8b.log" | tail -30
  log "bench-e2e --shape llama3-8b rc=${PIPESTATUS[0]} in $(( $(date +%s) - start )) s"
  start=$(date +%s)
  $tool bench-e2e --device cuda --contexts "${E2E_REF_CONTEXTS:-8192,16000}" --batches "${E2E_BATCHES:-1,4}" \
      --steps 64 --warmup 4 --progress off --json "$out/e2e_cuda_ref.json" \
      2>&1 | tee "$out/e2e_cuda_ref.log" | tail -20
  log "bench-e2e models/macattn-ref rc=${PIPESTATUS[0]} in $(( $(date +%s) - start )) s"
fi
if has trace; then
  # Kernel timelines (h200.md, "Kernel timelines"): the CUPTI library the driver loads, one traced
  # process per configuration, a median timeline of each (tracing adds about 0.4 us per kernel).
  tool=./build-device-engine/tools/macattn/macattn
  lib=$PWD/build-device-engine/tools/libmacattn_kernel_trace.so
  if [ ! -x "$tool" ]; then
    log "trace: $tool is missing (the trace step needs the engine step); skipped"
  elif [ ! -f "$lib" ]; then
    log "trace: $lib was not built (CUPTI not found by CMake?); skipped"
  else
    for mode in exact mac; do
      CUDA_INJECTION64_PATH=$lib MACATTN_TRACE_OUT="$out/trace_e2e_$mode.csv" $tool bench-e2e --device cuda \
          --shape llama3-8b --contexts 131072 --batches 1 --attention $mode --hit-rates 1 --progress off \
          > "$out/trace_e2e_$mode.log" 2>&1
      log "traced bench-e2e --attention $mode rc=$?"
      python3 tools/cuda/kernel_timeline.py "$out/trace_e2e_$mode.csv" --layers | tail -16 | tee -a "$out/summary.txt"
    done
    CUDA_INJECTION64_PATH=$lib MACATTN_TRACE_OUT="$out/trace_layer.csv" $tool bench --backend cuda --contexts 131072 \
        --batches 1 --hit-rates 0,1 --miss-patterns packed --min-seconds 0.04 --min-reps 20 > "$out/trace_layer.log" 2>&1
    log "traced layer bench rc=$?"
    python3 tools/cuda/kernel_timeline.py "$out/trace_layer.csv" --min-kernels 2 | tee -a "$out/summary.txt"
    gzip -f "$out"/trace_*.csv
  fi
fi
cat "$out/summary.txt"
