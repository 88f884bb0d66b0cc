#!/usr/bin/env bash
# Session 10, call 1: group finish in the attend kernel (no finish kernel).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/r
S=$out/r/summary.txt
log() { echo "=== $*" | tee -a $S; }
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 ))s; }
log "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) commit ${COMMIT:-?}"
cmake -S .devdeps/googletest -B /tmp/gtest-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/tmp/deps > $out/r/build.log 2>&1 &&
  cmake --build /tmp/gtest-build -j 16 >> $out/r/build.log 2>&1 && cmake --install /tmp/gtest-build >> $out/r/build.log 2>&1
sys=$PWD/.devdeps/sys
cmake -S . -B bd -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=ON -DMACATTN_BUILD_TESTS=ON \
  -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a "-DCMAKE_PREFIX_PATH=/tmp/deps;$PWD/.devdeps/json" \
  -DMACATTN_PCRE2_INCLUDE_DIR="$sys/include" -DMACATTN_PCRE2_LIBRARY="$sys/lib/libpcre2-8.a" \
  -DMACATTN_UTF8PROC_INCLUDE_DIR="$sys/include" -DMACATTN_UTF8PROC_LIBRARY="$sys/lib/libutf8proc.a" >> $out/r/build.log 2>&1 &&
  cmake --build bd -j 16 --target macattn macattn_cuda_tests engine_cuda_tests >> $out/r/build.log 2>&1
rc=$?; log "build rc=$rc $(el)"
if [ $rc -ne 0 ]; then grep -E "error" $out/r/build.log | head -30; exit 1; fi
f=$(find bd -name mac_decode.cu.o | head -1)
cuobjdump -sass $f 2>/dev/null | awk '/Function :/{fn=$3} /STL|LDL/{c[fn]++} END{for (k in c) if (k ~ /attend_kernelILi128ELi2E13/) print "spill insns", k, c[k]}' | tee -a $S
# library tests, 8 shards
for i in 0 1 2 3 4 5 6 7; do GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i ./bd/tests/cuda/macattn_cuda_tests > $out/r/t$i.log 2>&1 & done; wait
log "lib tests $(el): $(cat $out/r/t*.log | grep -E '^\[  PASSED|^\[  FAILED' | awk '{s+=$4} END{print s}') passed; failed: $(cat $out/r/t*.log | grep -c '^\[  FAILED  \].*ms)')"
grep -h -E "^\[  FAILED  \]|Failure" $out/r/t*.log | head -20 | tee -a $S
B=./bd/tools/macattn/macattn
$B bench --backend cuda --contexts 8192,32768,131072 --batches 1,4,16 --hit-rates 0,1 --miss-patterns packed \
  --min-seconds 0.05 --min-reps 30 --json $out/r/h200.json > $out/r/bench.log 2>&1
log "bench rc=$? $(el)"
grep -E "stream|^ *[0-9]+ " $out/r/bench.log | tail -25 | tee -a $S
MACATTN_CUDA_PROFILE=1 $B bench --backend cuda --contexts 131072 --batches 1 --hit-rates 1 --miss-patterns packed \
  --min-seconds 0.01 --min-reps 10 --check off --progress off > $out/r/prof_b1.log 2>&1
sed -n '/^MACATTN_CUDA_PROFILE/,$p' $out/r/prof_b1.log | tee -a $S
./bd/tests/engine/engine_cuda_tests > $out/r/engine_tests.log 2>&1
log "engine tests rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/r/engine_tests.log | tr '\n' ' ')"
$B generate -n 48 -f prompts/passkey_12k.txt --attention both --audit --progress off > $out/r/gen.log 2>&1
log "audit rc=$? $(el): $(grep -i -E 'identical|differ' $out/r/gen.log | head -3 | tr '\n' ' ')"
$B bench-e2e --device cuda --shape llama3-8b --contexts 131072 --batches 1,4 --hit-rates 0,1 --progress off \
  --json $out/r/e2e.json > $out/r/e2e.log 2>&1
log "e2e rc=$? $(el)"
grep -E "^synthetic|floor|stream" $out/r/e2e.log | tee -a $S
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 ./bd/tests/cuda/macattn_cuda_tests \
    --gtest_filter='*MacDecodeMatchesReference*hq12_hkv4_d64*:*InCudaGraph*hq16_hkv2_d128*:*MacDecodeWithSinksAndStaleRing*hq12_hkv4_d64*' > $out/r/san_$tool.log 2>&1
  log "$tool rc=$? $(el): $(grep -E 'ERROR SUMMARY|PASSED|FAILED' $out/r/san_$tool.log | tail -3 | tr '\n' ' ')"
done
cd $out && tar czf r.tgz r && rm -rf r/t*.log
cat $S
