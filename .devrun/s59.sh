#!/usr/bin/env bash
# Session 13, call 2: speculation, complete parts on their own blocks: tests, grids (hint/off/all), profile, sanitizers, engine.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/r
S=$out/r/summary.txt
log() { echo "=== $*" | tee -a $S; }
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
export MACATTN_GIT_COMMIT=${COMMIT:-unknown}
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
B=./bd/tools/macattn/macattn
T=./bd/tests/cuda/macattn_cuda_tests
timeout 150 $T --gtest_filter='*MissHints*:*SpeculateEvery*:*MacDecodeMatchesReference*' > $out/r/t_spec.log 2>&1
log "spec tests rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED) ' $out/r/t_spec.log | tr '\n' ' ')"
grep -E "Failure|FAILED|Expected|Which is|step " $out/r/t_spec.log | head -20 | tee -a $S
if grep -q "FAILED" $out/r/t_spec.log; then cd $out && tar czf r.tgz r; exit 1; fi
for i in 0 1 2 3 4 5 6 7; do GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 200 $T > $out/r/t$i.log 2>&1 & done; wait
log "all device tests $(el): $(cat $out/r/t?.log | grep -E '^\[  (PASSED|FAILED) ' | awk '{s[$2]+=$4} END {for (k in s) printf "%s %d ", k, s[k]}')"
cat $out/r/t?.log | grep -E "^\[  FAILED  \]" | sort -u | head -20 | tee -a $S
run() {  # name, env, flags...
  local n=$1 e=$2; shift 2
  env $e $B bench --backend cuda --miss-patterns packed --min-seconds 0.03 --min-reps 20 --progress off \
    --json $out/r/$n.json "$@" > $out/r/$n.log 2>&1
  log "$n rc=$? $(el): $e $*"
  grep -E "^llama3" $out/r/$n.log | grep -v " exact - " | awk '{printf "   b%s %s hit %s: exact %s (%s) mac %s %s\n", $2, $3, $4, $7, $8, $9, $10}' | tee -a $S
}
run grid MACATTN_DEFAULTS=1 --contexts 8192,32768,131072 --batches 1,4,16 --hit-rates 0,1
run off MACATTN_CUDA_SPECULATE=off --contexts 8192,32768,131072 --batches 1,4,16 --hit-rates 0,1
run all MACATTN_CUDA_SPECULATE=all --contexts 8192,131072 --batches 1,16 --hit-rates 1
run half MACATTN_DEFAULTS=1 --contexts 32768,131072 --batches 1,16 --hit-rates 0.5
run half_off MACATTN_CUDA_SPECULATE=off --contexts 32768,131072 --batches 1,16 --hit-rates 0.5
for hr in 0 1; do
  MACATTN_CUDA_PROFILE=1 $B bench --backend cuda --contexts 8192 --batches 1 --hit-rates $hr --miss-patterns packed \
    --min-seconds 0.01 --min-reps 5 --progress off > $out/r/prof_$hr.log 2>&1
  log "profile 8K hit $hr rc=$? $(el)"
  sed -n '/^MACATTN_CUDA_PROFILE/,$p' $out/r/prof_$hr.log | grep -E "mac_" | head -14 | tee -a $S
done
if left 430; then
for tool in memcheck racecheck; do
  timeout 100 compute-sanitizer --tool $tool --error-exitcode 9 $T --gtest_filter='*ScrambledMissHints/hq32_hkv8_d128_bf16*:*SpeculateEveryGroupInCudaGraph/hq12_hkv4*:*MacDecodeWithSinksAndStaleRing/hq12_hkv4*' > $out/r/san_$tool.log 2>&1
  log "$tool rc=$? $(el): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' $out/r/san_$tool.log | tail -3 | tr '\n' ' ')"
done
fi
if left 500; then
./bd/tests/engine/engine_cuda_tests > $out/r/engine_tests.log 2>&1
log "engine tests rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $out/r/engine_tests.log | tr '\n' ' ')"
grep -E "FAILED|Failure" $out/r/engine_tests.log | head
fi
if left 520; then
$B bench-e2e --device cuda --shape llama3-8b --contexts 131072 --batches 1,4 --hit-rates 0,1 \
  --progress off --json $out/r/e2e128k_1.json > $out/r/e2e128k_1.log 2>&1
log "128K run rc=$? $(el)"
grep -E "^synthetic|stream" $out/r/e2e128k_1.log | tee -a $S
fi
if left 540; then
MACATTN_CUDA_SPECULATE=off $B bench-e2e --device cuda --shape llama3-8b --contexts 131072 --batches 1,4 --hit-rates 0,1 \
  --progress off --json $out/r/e2e128k_off.json > $out/r/e2e128k_off.log 2>&1
log "128K run spec off rc=$? $(el)"
grep -E "^synthetic" $out/r/e2e128k_off.log | tee -a $S
fi
cd $out && tar czf r.tgz r && rm -f r/*.log
