// The engine's own causal attention over the paged K/V: prefill (64 consecutive rows of one
// sequence share each K/V tile in shared memory) and the exact decode of head dims the
// library's CUDA kernels do not cover. Correctness first: one thread per query row holds its
// query and output in registers, scores and online softmax in fp32 (one rescale per new
// maximum), K/V converted from bf16 once per tile.
#include <cfloat>

#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/kernels.cuh"

namespace macattn::engine::gpu {

namespace {

constexpr int kRows = 64;  // query rows (threads) per block
// Keys per shared-memory tile: K and V tiles in fp32 stay within 32 KiB of static shared memory.
template <int D>
constexpr int kKeys = D <= 128 ? 32 : 16;

// grid (ceil(n / rows_per_block), Hq); block kRows threads; rows_per_block is kRows (prefill)
// or 1 (decode: the rows may belong to different sequences).
template <int D>
__global__ void causal_attention_kernel(const float* q, std::int64_t n, const std::int64_t* row_pos,
                                        const std::int32_t* row_seq, const bf16* k_pages, const bf16* v_pages,
                                        std::int32_t page_size, std::int64_t pages_per_seq, std::int32_t Hq,
                                        std::int32_t Hkv, float scale, int rows_per_block, float* out) {
  __shared__ float ks[kKeys<D>][D];
  __shared__ float vs[kKeys<D>][D];
  __shared__ std::int64_t last_key;
  const int h = blockIdx.y, kvh = h / (Hq / Hkv);
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * rows_per_block;
  const std::int64_t r = r0 + threadIdx.x;
  const bool active = threadIdx.x < rows_per_block && r < n;
  const std::int64_t seq = row_seq[r0];  // every row of the block is in this sequence
  const std::int64_t my_pos = active ? row_pos[r] : -1;
  if (threadIdx.x == 0) last_key = 0;  // every block has an active row (position >= 0)
  __syncthreads();
  if (active) atomicMax(reinterpret_cast<unsigned long long*>(&last_key), static_cast<unsigned long long>(my_pos));
  __syncthreads();
  const std::int64_t keys = last_key + 1;

  float qr[D], o[D];
  for (int d = 0; d < D; ++d) {
    qr[d] = active ? q[(r * Hq + h) * D + d] * scale : 0.f;
    o[d] = 0.f;
  }
  float m = -FLT_MAX, l = 0.f;
  for (std::int64_t k0 = 0; k0 < keys; k0 += kKeys<D>) {
    __syncthreads();  // the previous tile is consumed
    for (int e = threadIdx.x; e < kKeys<D> * D; e += blockDim.x) {
      const int j = e / D, d = e % D;
      const std::int64_t p = k0 + j;
      float kv = 0.f, vv = 0.f;
      if (p < keys) {
        const std::int64_t page = seq * pages_per_seq + p / page_size, slot = p % page_size;
        const std::int64_t at = ((page * page_size + slot) * Hkv + kvh) * D + d;
        kv = __bfloat162float(k_pages[at]);
        vv = __bfloat162float(v_pages[at]);
      }
      ks[j][d] = kv;
      vs[j][d] = vv;
    }
    __syncthreads();
    if (!active) continue;
    for (int j = 0; j < kKeys<D>; ++j) {
      if (k0 + j > my_pos) break;
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += qr[d] * ks[j][d];
      if (s > m) {
        const float corr = __expf(m - s);
        l *= corr;
        for (int d = 0; d < D; ++d) o[d] *= corr;
        m = s;
      }
      const float pr = __expf(s - m);
      l += pr;
      for (int d = 0; d < D; ++d) o[d] += pr * vs[j][d];
    }
  }
  if (!active) return;
  const float inv = l > 0.f ? 1.f / l : 0.f;
  for (int d = 0; d < D; ++d) out[(r * Hq + h) * D + d] = o[d] * inv;
}

}  // namespace

void causal_attention(const float* q, std::int64_t n, const std::int64_t* row_pos, const std::int32_t* row_seq,
                      const bf16* k_pages, const bf16* v_pages, std::int32_t page_size, std::int64_t pages_per_seq,
                      std::int32_t Hq, std::int32_t Hkv, std::int32_t D, float scale, bool rows_same_seq_sorted,
                      float* out, cudaStream_t s) {
  const int per_block = rows_same_seq_sorted ? kRows : 1;
  const dim3 grid(static_cast<unsigned>((n + per_block - 1) / per_block), static_cast<unsigned>(Hq));
  const int threads = rows_same_seq_sorted ? kRows : 32;
#define ENGINE_ATTN_CASE(DIM)                                                                                  \
  case DIM:                                                                                                    \
    causal_attention_kernel<DIM><<<grid, threads, 0, s>>>(q, n, row_pos, row_seq, k_pages, v_pages, page_size, \
                                                          pages_per_seq, Hq, Hkv, scale, per_block, out);      \
    break;
  switch (D) {
    ENGINE_ATTN_CASE(16)
    ENGINE_ATTN_CASE(32)
    ENGINE_ATTN_CASE(64)
    ENGINE_ATTN_CASE(96)
    ENGINE_ATTN_CASE(128)
    ENGINE_ATTN_CASE(256)
    default:
      throw Error("CUDA engine: causal attention supports head_dim 16, 32, 64, 96, 128, 256, not " + std::to_string(D));
  }
#undef ENGINE_ATTN_CASE
  ENGINE_LAUNCHED("causal_attention_kernel");
}

}  // namespace macattn::engine::gpu
