// tools/macattn/stream_bandwidth_cuda.hpp: the GPU's streaming-read bandwidth, measured the way
// `macattn bench --backend cuda` does (4 GiB read with 16-byte streaming loads, median of 20).
// No CUDA header here: plain C++ callers (bench_e2e_cuda.cpp) include it.
#pragma once

/// GB/s (1e9 bytes per second). Throws std::runtime_error on a CUDA failure.
double measure_stream_read_gbps();
