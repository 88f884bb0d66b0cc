// src/cuda/device_common.cuh: small device helpers shared by the CUDA kernels: dtype loads
// and stores, the page-table walk, and the tensor-core / async-copy instructions (inline PTX,
// sm_80+). Internal.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace macattn::cuda::detail {

// Programmatic dependent launch (Hopper, sm_90+): a kernel launched with launch_pdl() may
// start while the previous kernel of the stream drains. It must call grid_dependency_wait()
// before it reads anything an earlier kernel wrote (the wait returns once those kernels have
// finished and their writes are visible); what comes before the wait overlaps the previous
// kernel's tail. allow_dependents() lets the next PDL kernel launch once every block of this
// one has called it (or exited). Both are no-ops without PDL and before sm_90.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// DType values of macattn/dtype.hpp, usable on the device.
enum : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

__device__ __forceinline__ float load_float(const void* p, int dtype, std::size_t i) {
  if (dtype == kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  if (dtype == kF16) return __half2float(static_cast<const __half*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_float(void* p, int dtype, std::size_t i, float v) {
  if (dtype == kBF16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else if (dtype == kF16) static_cast<__half*>(p)[i] = __float2half_rn(v);
  else static_cast<float*>(p)[i] = v;
}

// The K/V element type of the tensor-core path and its conversions.
template <typename T> struct Elem;
template <> struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&h);
  }
};
template <> struct Elem<__half> {
  static __device__ __forceinline__ __half from(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&h);
  }
};

/// Device view of FlashInfer's page table (see PagedKVDevice).
struct PagedKVArgs {
  const char* k = nullptr;
  const char* v = nullptr;
  const std::int32_t* indptr = nullptr;
  const std::int32_t* indices = nullptr;
  const std::int32_t* last_page_len = nullptr;
  std::int32_t page_size = 1;
  std::int32_t num_kv_heads = 1;
  std::int32_t hnd = 0;    // 1 = HND pages
  std::int32_t dtype = 0;  // kBF16 or kF16
};

__device__ __forceinline__ std::int64_t seq_len(const PagedKVArgs& kv, int b) {
  const int pages = kv.indptr[b + 1] - kv.indptr[b];
  return pages <= 0 ? 0 : static_cast<std::int64_t>(pages - 1) * kv.page_size + kv.last_page_len[b];
}

/// Row index (multiply by the head dim for elements) of the key at position `pos` of KV head g in
/// the K/V pages, for a sequence whose page list starts at indices[ibase]. Positions fit in 31
/// bits (the entry points check max_seq_len), so the page split is 32-bit (less code).
__device__ __forceinline__ long long paged_row(const PagedKVArgs& kv, int ibase, unsigned pos, int g) {
  const unsigned ps = static_cast<unsigned>(kv.page_size), page_i = pos / ps, in_page = pos - page_i * ps;
  const long long page = kv.indices[ibase + static_cast<int>(page_i)];
  return kv.hnd ? (page * kv.num_kv_heads + g) * kv.page_size + in_page
                : (page * kv.page_size + in_page) * kv.num_kv_heads + g;
}

// --- async copies (cp.async, 16 bytes; src_bytes = 0 zero-fills) ----------------------------
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// --- ldmatrix and mma.sync m16n8k16 ------------------------------------------------------------
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t r[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t r[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <typename T> struct Mma;
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float c[4], const std::uint32_t a[4], std::uint32_t b0, std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct Mma<__half> {
  static __device__ __forceinline__ void run(float c[4], const std::uint32_t a[4], std::uint32_t b0, std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

/// Merges (o2, l2) into (o1, l1) for one element; LSE natural log; -inf = empty.
struct MergeWeights {
  float w1, w2, lse;
};
__device__ __forceinline__ MergeWeights merge_weights(float l1, float l2) {
  const float ninf = -__int_as_float(0x7f800000);
  if (l1 == ninf && l2 == ninf) return {0.f, 0.f, ninf};
  if (l2 == ninf) return {1.f, 0.f, l1};
  if (l1 == ninf) return {0.f, 1.f, l2};
  const float m = fmaxf(l1, l2);
  const float a = expf(l1 - m), c = expf(l2 - m);
  const float inv = 1.f / (a + c);
  return {a * inv, c * inv, m + logf(a + c)};
}

}  // namespace macattn::cuda::detail
