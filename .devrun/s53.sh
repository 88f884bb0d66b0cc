#!/usr/bin/env bash
# Session 12, call 1: short bands in the finish kernel: tests, bench A/B, profile, sanitizers.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/r
S=$out/r/summary.txt
log() { echo "=== $*" | tee -a $S; }
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
export MACATTN_GIT_COMMIT=${COMMIT:-unknown}
cmake -S .devdeps/googletest -B /tmp/gtest-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/tmp/deps > $out/r/build.log 2>&1 &&
  cmake --build /tmp/gtest-build -j 16 >> $out/r/build.log 2>&1 && cmake --install /tmp/gtest-build >> $out/r/build.log 2>&1
cmake -S . -B bd -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=OFF -DMACATTN_BUILD_TESTS=ON \
  -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a "-DCMAKE_PREFIX_PATH=/tmp/deps;$PWD/.devdeps/json" >> $out/r/build.log 2>&1 &&
  cmake --build bd -j 16 --target macattn macattn_cuda_tests >> $out/r/build.log 2>&1
rc=$?; log "build rc=$rc $(el)"
if [ $rc -ne 0 ]; then grep -E "error" $out/r/build.log | head -30; cd $out && tar czf r.tgz r; exit 1; fi
B=./bd/tools/macattn/macattn
T=./bd/tests/cuda/macattn_cuda_tests
timeout 120 $T --gtest_filter='*Bands*' > $out/r/t_band.log 2>&1
log "band tests rc=$? $(el): $(grep -E '^\[  (PASSED|FAILED) ' $out/r/t_band.log | tr '\n' ' ')"
grep -E "Failure|FAILED|Expected|Which is|step |info" $out/r/t_band.log | head -20 | tee -a $S
for i in 0 1 2 3 4 5 6 7; do GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 200 $T > $out/r/t$i.log 2>&1 & done; wait
log "all device tests $(el): $(cat $out/r/t?.log | grep -E '^\[  (PASSED|FAILED) ' | awk '{s[$2]+=$4} END {for (k in s) printf "%s %d ", k, s[k]}')"
cat $out/r/t?.log | grep -E "^\[  FAILED  \]" | sort -u | head -20 | tee -a $S
run() {  # name, env, flags...
  local n=$1 e=$2; shift 2
  env $e $B bench --backend cuda --hit-rates 0,1 --miss-patterns packed --min-seconds 0.04 --min-reps 20 --progress off \
    --json $out/r/$n.json "$@" > $out/r/$n.log 2>&1
  log "$n rc=$? $(el): $e $*"
  grep -E "^llama3" $out/r/$n.log | awk '{printf "   b%s %s hit %s: exact %s (%s) mac %s %s\n", $2, $3, $4, $7, $8, $9, $10}' | tee -a $S
}
run band8 MACATTN_CUDA_FINISH_BAND=8 --contexts 8192,32768,131072 --batches 1,4,16
run band0 MACATTN_CUDA_FINISH_BAND=0 --contexts 8192,131072 --batches 1,4
for fb in 8 0; do for hr in 1 0; do
  MACATTN_CUDA_FINISH_BAND=$fb MACATTN_CUDA_PROFILE=1 $B bench --backend cuda --contexts 131072 --batches 1 --hit-rates $hr --miss-patterns packed \
    --min-seconds 0.01 --min-reps 5 --progress off > $out/r/prof_${fb}_$hr.log 2>&1
  log "profile band $fb hit $hr rc=$? $(el)"
  sed -n '/^MACATTN_CUDA_PROFILE/,$p' $out/r/prof_${fb}_$hr.log | grep -E "mac_|exact" | head -12 | tee -a $S
done; done
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $T --gtest_filter='*ShortBandsInFinishInCudaGraph/hq32_hkv8_d128_bf16*:*ShortBandsInFinishInCudaGraph/hq16_hkv1*:*MacDecodeWithSinksAndStaleRing/hq12_hkv4*:*MacDecodeMatchesReference/hq32_hkv8_d128_bf16*' > $out/r/san_$tool.log 2>&1
  log "$tool rc=$? $(el): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' $out/r/san_$tool.log | tail -3 | tr '\n' ' ')"
done
cd $out && tar czf r.tgz r && rm -f r/*.log r/*.json
