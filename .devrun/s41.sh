#!/usr/bin/env bash
# Session 10, call 3: page sizes, layouts, page order, f16 K/V, batch 64 (three-kernel MAC as at e9a0e33).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/r
S=$out/r/summary.txt
log() { echo "=== $*" | tee -a $S; }
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
export MACATTN_GIT_COMMIT=${COMMIT:-unknown}
cmake -S . -B bd -DCMAKE_BUILD_TYPE=Release -DMACATTN_CUDA=ON -DMACATTN_BUILD_ENGINE=OFF -DMACATTN_BUILD_TESTS=OFF \
  -DMACATTN_BUILD_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES=90a "-DCMAKE_PREFIX_PATH=$PWD/.devdeps/json" > $out/r/build.log 2>&1 &&
  cmake --build bd -j 16 --target macattn >> $out/r/build.log 2>&1
rc=$?; log "build rc=$rc $(el)"
if [ $rc -ne 0 ]; then grep -E "error" $out/r/build.log | head -30; exit 1; fi
B=./bd/tools/macattn/macattn
run() {  # name, flags...
  local n=$1; shift
  $B bench --backend cuda --hit-rates 0,1 --miss-patterns packed --min-seconds 0.04 --min-reps 20 --progress off \
    --json $out/r/$n.json "$@" > $out/r/$n.log 2>&1
  log "$n rc=$? $(el): $*"
  grep -E "^llama3|^shape" $out/r/$n.log | grep -v "^shape" | awk '{printf "   %s b%s %s hit %s: exact %s (%s) mac %s %s\n", $1, $2, $3, $4, $7, $8, $9, $10}' | tee -a $S
}
for ps in 16 1 64; do
  for lay in nhd hnd; do
    run p${ps}_$lay --contexts 131072 --batches 1,16 --page-size $ps --kv-layout $lay
  done
done
run p16_shuf --contexts 131072 --batches 1,16 --page-size 16 --page-order shuffled
run p1_shuf --contexts 131072 --batches 1,16 --page-size 1 --page-order shuffled
run f16 --contexts 131072 --batches 1,16 --dtypes f16
run b64 --contexts 32768 --batches 64
cd $out && tar czf r.tgz r && rm -f r/*.log
