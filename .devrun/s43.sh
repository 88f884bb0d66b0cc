#!/usr/bin/env bash
# Session 10, call 5: hoisted activation loads as the default at 3-4 rows (checks), and 8 rows per block.
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
log "engine tests (default) rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/r/engine_tests.log | tr '\n' ' ')"
MACATTN_ENGINE_GEMV_ROWS=8 ./bd/tests/engine/engine_cuda_tests --gtest_filter='*Skinny*:*GraphReplay*:*LogitsMatchCpu*' > $out/r/t8.log 2>&1
log "engine tests subset rows8 rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED) ' $out/r/t8.log | tr '\n' ' ')"
$B generate -n 48 -f prompts/passkey_12k.txt --attention both --audit --progress off > $out/r/gen.log 2>&1
log "audit rc=$? $(el): $(grep -i -E 'identical|differ' $out/r/gen.log | head -2 | tr '\n' ' ')"
for rows in 4 8 4 8; do
  MACATTN_ENGINE_GEMV_ROWS=$rows $B bench-e2e --device cuda --shape llama3-8b --contexts 4096 --batches 1,4 --attention exact \
    --progress off > $out/r/e2e4k.log 2>&1
  log "rows $rows 4K exact ms/step b1 $(awk '$1=="synthetic" && $3==1 {print $7}' $out/r/e2e4k.log) b4 $(awk '$1=="synthetic" && $3==4 {print $7}' $out/r/e2e4k.log) $(el)"
done
for rows in 4 8; do
  MACATTN_ENGINE_GEMV_ROWS=$rows $B bench-e2e --device cuda --shape llama3-8b --contexts 131072 --batches 1,4 --hit-rates 0,1 \
    --progress off --json $out/r/e2e128k_rows$rows.json > $out/r/e2e128k.log 2>&1
  log "128K rows $rows $(el)"
  grep -E "^synthetic|stream" $out/r/e2e128k.log | tee -a $S
done
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./bd/tests/engine/engine_cuda_tests \
  --gtest_filter='*CudaSkinnyGemm.RowsAreIndependentOfBatch*' > $out/r/san.log 2>&1
log "memcheck GEMV rc=$? $(el): $(grep -E 'ERROR SUMMARY|PASSED|FAILED' $out/r/san.log | tail -2 | tr '\n' ' ')"
cd $out && tar czf r.tgz r && rm -f r/*.log
