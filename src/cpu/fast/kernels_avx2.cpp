// The fast CPU kernels compiled for avx2 (flags in CMakeLists.txt); see kernels_impl.hpp.
#define MACATTN_ISA_NS avx2
#define MACATTN_ISA_NAME "avx2"
#include "cpu/fast/kernels_impl.hpp"
