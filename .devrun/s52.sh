#!/usr/bin/env bash
# Session 11, call 6: the probes after moving their timer into probe_graph_timer.cuh.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
for f in probe_icache probe_gpu_floor; do
  nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a tools/bench/$f.cu -o /tmp/$f && /tmp/$f | tee $out/$f.txt
done
