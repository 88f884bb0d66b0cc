// src/cpu/fast/isa.hpp: run-time choice of the fast CPU kernels. Internal.
#pragma once

#include "cpu/fast/kernels.hpp"

namespace macattn::cpu {

/// The best table this processor runs: avx512bf16 (AVX-512 F/BW/VL + BF16: bf16 K/V through
/// vdpbf16ps), else avx512 (AVX-512 F/BW/VL), else avx2 (AVX2 + FMA + F16C), else portable. The
/// environment variable MACATTN_CPU_ISA=avx512bf16|avx512|avx2|portable forces one (an
/// unknown name or one the processor lacks is an error).
const KernelTable& active_kernels();

/// Threads used by the fast CPU backend (macattn::set_num_threads; 0 = OpenMP's default).
int thread_count();

/// True when macattn::cpu_products() is bf16.
bool products_bf16();

}  // namespace macattn::cpu
