#include "engine/cpu/gemm.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

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

bool has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// MACATTN_ENGINE_ISA: unset or empty picks the widest set the processor has; avx512, avx2 or
// portable forces one (an unsupported forced set is an error, not a silent fallback).
const GemmKernels& choose() {
  const char* env = std::getenv("MACATTN_ENGINE_ISA");
  const std::string forced = env == nullptr ? std::string() : std::string(env);
  if (forced == "portable") return portable::kernels();
  if (!forced.empty() && forced != "avx512" && forced != "avx2")
    throw Error("MACATTN_ENGINE_ISA='" + forced + "': must be avx512, avx2 or portable");
  if (forced != "avx2" && has_avx512() && avx512::kernels() != nullptr) return *avx512::kernels();
  if (forced == "avx512") throw Error("MACATTN_ENGINE_ISA=avx512 but this processor lacks AVX-512 F/BW/VL/DQ");
  if (has_avx2() && avx2::kernels() != nullptr) return *avx2::kernels();
  if (forced == "avx2") throw Error("MACATTN_ENGINE_ISA=avx2 but this processor lacks AVX2, FMA or F16C");
  return portable::kernels();
}

}  // namespace

const GemmKernels& gemm_kernels() {
  static const GemmKernels& k = choose();
  return k;
}

}  // namespace macattn::engine::cpu
