#include "engine/cpu/gemm.hpp"

#include <cstdlib>
#include <cstring>

#include "macattn/error.hpp"

namespace macattn::engine::cpu {

namespace {

bool has_avx512() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const GemmKernels& choose() {
  const char* forced = std::getenv("MACATTN_ENGINE_ISA");
  if (forced != nullptr && std::strcmp(forced, "portable") == 0) return portable::kernels();
  if (forced != nullptr && *forced != '\0' && std::strcmp(forced, "avx512") != 0)
    throw Error(std::string("MACATTN_ENGINE_ISA='") + forced + "': must be avx512 or portable");
  if (has_avx512() && avx512::kernels() != nullptr) return *avx512::kernels();
  if (forced != nullptr && std::strcmp(forced, "avx512") == 0)
    throw Error("MACATTN_ENGINE_ISA=avx512 but this processor lacks AVX-512 F/BW/VL/DQ");
  return portable::kernels();
}

}  // namespace

const GemmKernels& gemm_kernels() {
  static const GemmKernels& k = choose();
  return k;
}

}  // namespace macattn::engine::cpu
