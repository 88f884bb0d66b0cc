// tools/macattn/bench_cuda_unavailable.cpp: `macattn bench --backend cuda` in a build without
// the CUDA backend.
#include <cstdio>

#include "bench.hpp"

namespace macattn_tool {

int run_cuda_bench(const BenchOptions&) {
  std::fprintf(stderr, "macattn bench --backend cuda: this build has no CUDA backend (configure with -DMACATTN_CUDA=ON)\n");
  return 1;
}

}  // namespace macattn_tool
