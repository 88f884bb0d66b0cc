// The fast CPU kernels compiled for avx512 (flags in CMakeLists.txt); see kernels_impl.hpp.
#define MACATTN_ISA_NS avx512
#define MACATTN_ISA_NAME "avx512"
#include "cpu/fast/kernels_impl.hpp"
