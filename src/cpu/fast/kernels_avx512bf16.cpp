// The fast CPU kernels compiled for avx512bf16: the avx512 kernels plus vdpbf16ps dot products
// for bf16 K/V (flags in CMakeLists.txt); see kernels_impl.hpp.
#define MACATTN_ISA_NS avx512bf16
#define MACATTN_ISA_NAME "avx512bf16"
#include "cpu/fast/kernels_impl.hpp"
