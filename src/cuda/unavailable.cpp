// src/cuda/unavailable.cpp: the CUDA API in a build without CUDA: available() is false and
// every other call throws macattn::Error saying so.
#include "core/check.hpp"
#include "macattn/cuda.hpp"

namespace macattn::cuda {

namespace {
[[noreturn]] void no_cuda(const char* fn) {
  macattn::detail::fail(fn, ": this build of macattn has no CUDA backend (configure with -DMACATTN_CUDA=ON)");
}
}  // namespace

bool available() { return false; }
std::string device_description() { return "this build of macattn has no CUDA backend"; }
Workspace::~Workspace() = default;
void Workspace::release() {}
void Workspace::reserve(const AttentionShape&, std::int32_t, std::int64_t, std::int32_t) {
  no_cuda("cuda::Workspace::reserve");
}
void exact_decode(const AttentionShape&, const PagedKVDevice&, ConstTensor, Tensor, float*, Workspace&, void*) {
  no_cuda("cuda::exact_decode");
}
void mac_decode(const AttentionShape&, const MacConfig&, const PagedKVDevice&, ConstTensor, ConstTensor,
                const MacRingsDevice&, Tensor, float*, HeadStats*, Workspace&, void*) {
  no_cuda("cuda::mac_decode");
}
void mac_scan(const AttentionShape&, const MacConfig&, const PagedKVDevice&, ConstTensor, std::int64_t,
              const MacRingsDevice&, bool, Workspace&, void*) {
  no_cuda("cuda::mac_scan");
}
void mac_prefill_init(const AttentionShape&, const MacConfig&, const PagedKVDevice&, ConstTensor, ConstTensor,
                      const std::int32_t*, std::int32_t, const MacRingsDevice&, Workspace&, void*) {
  no_cuda("cuda::mac_prefill_init");
}
void mac_rings_reset(const MacRingsDevice&, void*) { no_cuda("cuda::mac_rings_reset"); }
std::int32_t planned_splits(const AttentionShape&, std::int32_t, std::int64_t) { no_cuda("cuda::planned_splits"); }

}  // namespace macattn::cuda
