#!/usr/bin/env bash
# Session 11, call 2: instruction-fetch cost probe (tools/bench/probe_icache.cu).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a tools/bench/probe_icache.cu -o /tmp/probe_icache && /tmp/probe_icache | tee $out/probe_icache.txt
