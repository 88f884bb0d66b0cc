#!/usr/bin/env bash
# Session 10, call 2: where the group finish's 9 us go (stamps inside it, inline vs call, flush on/off).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/r
S=$out/r/summary.txt
log() { echo "=== $*" | tee -a $S; }
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
log "commit ${COMMIT:-?}"
cmake -S .devdeps/googletest -B /tmp/gtest-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/tmp/deps > $out/r/build.log 2>&1 &&
  cmake --build /tmp/gtest-build -j 16 >> $out/r/build.log 2>&1 && cmake --install /tmp/gtest-build >> $out/r/build.log 2>&1
cmake -S . -B bd -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=OFF -DMACATTN_BUILD_TESTS=ON \
  -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a "-DCMAKE_PREFIX_PATH=/tmp/deps;$PWD/.devdeps/json" >> $out/r/build.log 2>&1 &&
  cmake --build bd -j 16 --target macattn macattn_cuda_tests >> $out/r/build.log 2>&1
rc=$?; log "build rc=$rc $(el)"
if [ $rc -ne 0 ]; then grep -E "error" $out/r/build.log | head -30; exit 1; fi
B=./bd/tools/macattn/macattn
for v in call inline; do
  for fl in on off; do
    MACATTN_CUDA_FINISH=$v MACATTN_CUDA_PROFILE=1 $B bench --backend cuda --contexts 131072 --batches 1 --hit-rates 1 --miss-patterns packed \
      --min-seconds 0.01 --min-reps 10 --check off --progress off --flush $fl > $out/r/prof_${v}_$fl.log 2>&1
    log "profile finish=$v flush=$fl"
    sed -n '/^MACATTN_CUDA_PROFILE/,$p' $out/r/prof_${v}_$fl.log | grep -E "attend|scan_kernel \(direct|complete" | tee -a $S
  done
done
for v in call inline; do
  MACATTN_CUDA_FINISH=$v $B bench --backend cuda --contexts 8192,131072 --batches 1,4,16 --hit-rates 0,1 --miss-patterns packed \
    --min-seconds 0.05 --min-reps 30 --progress off > $out/r/bench_$v.log 2>&1
  log "bench finish=$v rc=$? $(el)"
  grep -E "packed|stream" $out/r/bench_$v.log | tail -14 | tee -a $S
done
for i in 0 1 2 3 4 5 6 7; do GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i ./bd/tests/cuda/macattn_cuda_tests --gtest_filter='*Mac*' > $out/r/t$i.log 2>&1 & done; wait
log "MAC tests $(el): $(cat $out/r/t*.log | grep -E '^\[  PASSED' | awk '{s+=$4} END{print s}') passed; failed: $(cat $out/r/t*.log | grep -c '^\[  FAILED  \].*ms)')"
timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 ./bd/tests/cuda/macattn_cuda_tests \
    --gtest_filter='*MacDecodeWithSinksAndStaleRing*hq12_hkv4_d64*:*MacDecodeInCudaGraph*hq16_hkv2_d128*' > $out/r/san_racecheck.log 2>&1
log "racecheck rc=$? $(el): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' $out/r/san_racecheck.log | tail -3 | tr '\n' ' ')"
grep -m3 -A1 "Race reported" $out/r/san_racecheck.log | grep -o "[a-z_]*\.cuh*:[0-9]*" | head
cd $out && tar czf r.tgz r && rm -rf r/t*.log r/prof_*.log
