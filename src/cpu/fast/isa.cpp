#include "cpu/fast/isa.hpp"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/check.hpp"
#include "macattn/attention.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace macattn::cpu {

namespace {

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
bool has_avx512bf16() { return has_avx512() && __builtin_cpu_supports("avx512bf16"); }
// F16C from CPUID leaf 1, ECX bit 29: clang 14's __builtin_cpu_supports does not know "f16c".
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c(); }

const KernelTable& choose() {
  const char* forced = std::getenv("MACATTN_CPU_ISA");
  if (forced != nullptr && *forced != '\0') {
    if (std::strcmp(forced, "avx512bf16") == 0) {
      detail::require(has_avx512bf16(), "MACATTN_CPU_ISA=avx512bf16 but this processor lacks AVX-512 F/BW/VL/BF16");
      return avx512bf16::kernel_table();
    }
    if (std::strcmp(forced, "avx512") == 0) {
      detail::require(has_avx512(), "MACATTN_CPU_ISA=avx512 but this processor lacks AVX-512 F/BW/VL");
      return avx512::kernel_table();
    }
    if (std::strcmp(forced, "avx2") == 0) {
      detail::require(has_avx2(), "MACATTN_CPU_ISA=avx2 but this processor lacks AVX2/FMA/F16C");
      return avx2::kernel_table();
    }
    if (std::strcmp(forced, "portable") == 0) return portable::kernel_table();
    detail::fail("MACATTN_CPU_ISA='", forced, "': must be avx512bf16, avx512, avx2 or portable");
  }
  if (has_avx512bf16()) return avx512bf16::kernel_table();
  if (has_avx512()) return avx512::kernel_table();
  if (has_avx2()) return avx2::kernel_table();
  return portable::kernel_table();
}

int g_threads = 0;

CpuProducts initial_products() {
  const char* v = std::getenv("MACATTN_CPU_PRODUCTS");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "fp32") == 0) return CpuProducts::fp32;
  if (std::strcmp(v, "bf16") == 0) return CpuProducts::bf16;
  detail::fail("MACATTN_CPU_PRODUCTS='", v, "': must be fp32 or bf16");
}

std::atomic<CpuProducts>& products_setting() {
  static std::atomic<CpuProducts> p{initial_products()};
  return p;
}

}  // namespace

const KernelTable& active_kernels() {
  static const KernelTable& table = choose();
  return table;
}

bool products_bf16() { return products_setting().load(std::memory_order_relaxed) == CpuProducts::bf16; }

int thread_count() {
#if defined(_OPENMP)
  return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace macattn::cpu

namespace macattn {

void set_num_threads(int n) {
  detail::require(n >= 0, "set_num_threads: n = ", n, ", must be >= 0 (0 = all cores)");
  cpu::g_threads = n;
}

const char* cpu_isa() { return cpu::active_kernels().isa; }

void set_cpu_products(CpuProducts products) {
  detail::require(products == CpuProducts::fp32 || products == CpuProducts::bf16, "set_cpu_products: value ",
                  static_cast<int>(products), " is neither fp32 (0) nor bf16 (1)");
  cpu::products_setting().store(products, std::memory_order_relaxed);
}

CpuProducts cpu_products() { return cpu::products_setting().load(std::memory_order_relaxed); }

const char* cpu_products_name(CpuProducts products) {
  switch (products) {
    case CpuProducts::fp32: return "fp32";
    case CpuProducts::bf16: return "bf16";
  }
  return "invalid";
}

}  // namespace macattn
