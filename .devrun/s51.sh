#!/usr/bin/env bash
# Session 11, call 5: the engine with the smaller attention core: tests, audit, 128K e2e.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/r
S=$out/r/summary.txt
log() { echo "=== $*" | tee -a $S; }
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
export MACATTN_GIT_COMMIT=${COMMIT:-unknown}
cmake -S .devdeps/googletest -B /tmp/gtest-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/tmp/deps > $out/r/build.log 2>&1 &&
  cmake --build /tmp/gtest-build -j 16 >> $out/r/build.log 2>&1 && cmake --install /tmp/gtest-build >> $out/r/build.log 2>&1
sys=$PWD/.devdeps/sys
cmake -S . -B bd -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=ON -DMACATTN_BUILD_TESTS=ON \
  -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a "-DCMAKE_PREFIX_PATH=/tmp/deps;$PWD/.devdeps/json" \
  -DMACATTN_PCRE2_INCLUDE_DIR="$sys/include" -DMACATTN_PCRE2_LIBRARY="$sys/lib/libpcre2-8.a" \
  -DMACATTN_UTF8PROC_INCLUDE_DIR="$sys/include" -DMACATTN_UTF8PROC_LIBRARY="$sys/lib/libutf8proc.a" >> $out/r/build.log 2>&1 &&
  cmake --build bd -j 16 --target macattn engine_cuda_tests >> $out/r/build.log 2>&1
rc=$?; log "build rc=$rc $(el)"
if [ $rc -ne 0 ]; then grep -E "error" $out/r/build.log | head -30; exit 1; fi
B=./bd/tools/macattn/macattn
./bd/tests/engine/engine_cuda_tests > $out/r/engine_tests.log 2>&1
log "engine tests rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/r/engine_tests.log | tr '\n' ' ')"
grep -E "FAILED|Failure" $out/r/engine_tests.log | head
$B generate -n 48 -f prompts/passkey_12k.txt --attention both --audit --progress off > $out/r/gen.log 2>&1
log "audit rc=$? $(el): $(grep -i -E 'identical|differ' $out/r/gen.log | head -2 | tr '\n' ' ')"
$B bench-e2e --device cuda --shape llama3-8b --contexts 131072 --batches 1,4 --hit-rates 0,1 \
  --progress off --json $out/r/e2e128k.json > $out/r/e2e128k.log 2>&1
log "128K run rc=$? $(el)"
grep -E "^synthetic|stream" $out/r/e2e128k.log | tee -a $S
cd $out && tar czf r.tgz r
