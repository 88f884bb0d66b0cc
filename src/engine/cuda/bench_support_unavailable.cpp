// cuda_bench.hpp in a build without CUDA: every function throws.
#include "engine/cuda/cuda_bench.hpp"
#include "macattn/error.hpp"

namespace macattn::engine {

namespace {
[[noreturn]] void unavailable() {
  throw Error("the CUDA engine is not available: this build has no CUDA (configure with -DMACATTN_CUDA=ON)");
}
}  // namespace

void cuda_bench_fill_random_kv(CudaSession&, std::int64_t, std::uint64_t) {
  unavailable();
}
void cuda_bench_force_hits(CudaSession&, std::span<const std::int32_t>, double, bool) {
  unavailable();
}
CudaBenchTiming cuda_bench_time_replays(CudaSession&, std::span<const std::int32_t>, std::int32_t, std::int32_t) {
  unavailable();
}
double cuda_bench_time_decode(CudaSession&, std::span<const std::int32_t>, std::int64_t, std::int64_t) {
  unavailable();
}

}  // namespace macattn::engine

// cuda_gemv_check.hpp in a build without CUDA.
#include "engine/cuda/cuda_gemv_check.hpp"

namespace macattn::engine {

bool cuda_gemv_check(const GemvCheck&, std::span<const float>, std::span<const float>, std::vector<float>&,
                     std::span<const float>, std::vector<float>*) {
  throw Error("the CUDA engine is not available: this build has no CUDA (configure with -DMACATTN_CUDA=ON)");
}

QkvRopeResult cuda_qkv_rope_check(const QkvRopeCheck&, std::span<const float>, std::span<const float>,
                                  std::span<const float>, std::span<const float>, std::span<const float>,
                                  std::span<const std::int64_t>, std::span<const std::int32_t>) {
  throw Error("the CUDA engine is not available: this build has no CUDA (configure with -DMACATTN_CUDA=ON)");
}

ArgmaxCheckResult cuda_argmax_check(std::int64_t, std::int64_t, std::int64_t, std::span<const float>,
                                    std::span<const float>, std::span<const float>, float, std::int64_t) {
  throw Error("the CUDA engine is not available: this build has no CUDA (configure with -DMACATTN_CUDA=ON)");
}

}  // namespace macattn::engine
