// The fast CPU kernels compiled for portable (flags in CMakeLists.txt); see kernels_impl.hpp.
#define MACATTN_ISA_NS portable
#define MACATTN_ISA_NAME "portable"
#include "cpu/fast/kernels_impl.hpp"
