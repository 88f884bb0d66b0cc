// The engine's element-wise and per-row kernels (see kernels.cuh for shapes).
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/kernels.cuh"

namespace macattn::engine::gpu {

namespace {

constexpr int kThreads = 256;

int blocks_for(std::int64_t n, int threads = kThreads) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v, float* shared32) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // shared32 may still be read by a previous call
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  float t = 0.f;
  for (int w = 0; w < warps; ++w) t += shared32[w];
  return t;
}

// Thread threadIdx.x of a block walks i = threadIdx.x, + blockDim.x, ... < n in batches of U: the
// batch's U loads (load(i)) are all issued before any is used (use(i, value), in increasing i).
// A loop that loads and uses one element per iteration waits for each load in turn (59 us for
// argmax over 128256 logits in ncu); the order of the uses, and so the result, is the same.
template <int U, typename Load, typename Use>
__device__ __forceinline__ void strided_in_batches(std::int64_t n, Load load, Use use) {
  const std::int64_t stride = blockDim.x;
  for (std::int64_t i0 = threadIdx.x; i0 < n; i0 += stride * U) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t i = i0 + u * stride;
      v[u] = i < n ? load(i) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t i = i0 + u * stride;
      if (i < n) use(i, v[u]);
    }
  }
}
constexpr int kLoadsInFlight = 16;

__global__ void embed_kernel(const std::int32_t* tokens, std::int64_t n, const bf16* embed, std::int64_t vocab,
                             std::int64_t H, float* x, bf16* x_bf16) {
  const std::int64_t r = blockIdx.x;
  const std::int32_t tok = tokens[r];
  const bool ok = tok >= 0 && tok < vocab;
  const bf16* row = embed + (ok ? static_cast<std::int64_t>(tok) * H : 0);
  strided_in_batches<kLoadsInFlight>(
      H, [&](std::int64_t i) { return ok ? __bfloat162float(row[i]) : 0.f; },
      [&](std::int64_t i, float v) {
        x[r * H + i] = v;
        if (x_bf16 != nullptr) x_bf16[r * H + i] = __float2bfloat16_rn(v);
      });
}

// Programmatic dependent launch (sm_90): the decode matmuls may be launched with it
// (MACATTN_ENGINE_PDL, skinny_gemm_impl.cuh) so that they start streaming weights while the
// kernel before them finishes; the kernels before them let them launch from their first
// instruction. No-ops without PDL and before sm_90.
__device__ __forceinline__ void engine_allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void engine_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// One block of kNormThreads per row. PER > 0: each thread holds its PER elements of x and of w in
// registers, loaded all at once, so the row costs one memory round trip (the strided loop
// below waits for each load in turn, twice: 9 us per call at H = 4096 in ncu, with cold caches).
// Each thread sums its elements in increasing index order either way, so both forms give the same
// bits. PER = 0: the loop, for rows longer than kNormThreads * 16.
constexpr int kNormThreads = 512;
template <int PER>
__global__ void rms_norm_kernel(const float* x, std::int64_t H, const float* w, float eps, bf16* y) {
  __shared__ float red[32];
  engine_allow_dependents();
  const std::int64_t r = blockIdx.x;
  const float* xr = x + r * H;
  if constexpr (PER > 0) {
    float xv[PER], wv[PER];
    // The weights are the model's (no kernel writes them): loaded before the wait, so that under
    // programmatic dependent launch they arrive while the kernel before this one finishes.
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const std::int64_t i = threadIdx.x + static_cast<std::int64_t>(j) * kNormThreads;
      wv[j] = i < H ? w[i] : 0.f;
    }
    engine_grid_wait();  // x comes from the kernel before
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const std::int64_t i = threadIdx.x + static_cast<std::int64_t>(j) * kNormThreads;
      xv[j] = i < H ? xr[i] : 0.f;
    }
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < PER; ++j) ss += xv[j] * xv[j];
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / static_cast<float>(H) + eps);
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const std::int64_t i = threadIdx.x + static_cast<std::int64_t>(j) * kNormThreads;
      if (i < H) y[r * H + i] = __float2bfloat16_rn(wv[j] * (xv[j] * inv));
    }
  } else {
    engine_grid_wait();
    float ss = 0.f;
    for (std::int64_t i = threadIdx.x; i < H; i += kNormThreads) ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / static_cast<float>(H) + eps);
    for (std::int64_t i = threadIdx.x; i < H; i += kNormThreads) y[r * H + i] = __float2bfloat16_rn(w[i] * (xr[i] * inv));
  }
}

// RoPE of one pair (a, b) = (x[i], x[i + D/2]) at position pos with frequency freq = inv_freq[i]
// (HF rotate_half): lo = a cos - b sin, hi = b cos + a sin, angle = fp32(pos * freq) (one fp32
// rounding, as cpu::Rope), cos and sin in double. rope_cos_sin and rope_apply split it so that a
// kernel can compute the angle's cos and sin while it waits for its loads (gemv_qkv_rope_kernel);
// both kernels that apply RoPE use these two, so they give the same bits.
struct RopeCosSin {
  float c = 1.f, s = 0.f;
};
__device__ __forceinline__ RopeCosSin rope_cos_sin(std::int64_t pos, float freq) {
  const float angle = static_cast<float>(pos) * freq;
  double sd, cd;
  sincos(static_cast<double>(angle), &sd, &cd);
  return {static_cast<float>(cd), static_cast<float>(sd)};
}
__device__ __forceinline__ void rope_apply(float a, float b, RopeCosSin cs, float& lo, float& hi) {
  lo = __fsub_rn(__fmul_rn(a, cs.c), __fmul_rn(b, cs.s));
  hi = __fadd_rn(__fmul_rn(b, cs.c), __fmul_rn(a, cs.s));
}

// grid (n, Hq + 2 Hkv), block D threads (D even, 2..256; rounded up to a warp multiple).
__global__ void qkv_kernel(const float* qkv, const std::int64_t* row_pos, const std::int32_t* row_seq, QkvParams p,
                           float* q, float* q_pre) {
  __shared__ float red[32];
  __shared__ float v[256];
  // The attention kernels after this one may launch now (they wait for it before reading q, K
  // or V); with MACATTN_CUDA_PDL=1 the library launches them with programmatic dependence.
  engine_allow_dependents();
  const std::int64_t r = blockIdx.x;
  const int hh = blockIdx.y, D = p.head_dim, Hq = p.num_q_heads, Hkv = p.num_kv_heads;
  const int i = threadIdx.x;
  const std::int64_t width = static_cast<std::int64_t>(Hq + 2 * Hkv) * D;
  const bool is_q = hh < Hq, is_k = !is_q && hh < Hq + Hkv;
  engine_grid_wait();  // qkv comes from the kernel before (launched with PDL: small_kernel_pdl)
  // Every load that depends on nothing is issued first, together (position, sequence, the RoPE
  // frequency), instead of each after the block reduction that precedes its use.
  const std::int64_t pos = row_pos[r];
  const std::int64_t seq = row_seq[r];
  const float freq = (is_q || is_k) && i < D / 2 ? p.inv_freq[i] : 0.f;
  float x = 0.f;
  if (i < D) {
    x = qkv[r * width + static_cast<std::int64_t>(hh) * D + i];
    if (p.bias != nullptr) x += p.bias[hh * D + i];
  }
  const float* norm = is_q ? p.q_norm : (is_k ? p.k_norm : nullptr);
  if (norm != nullptr) {  // uniform per block
    const float ss = block_sum(i < D ? x * x : 0.f, red);
    const float inv = rsqrtf(ss / static_cast<float>(D) + p.eps);
    if (i < D) x = norm[i] * (x * inv);
  }
  if (!is_q && !is_k) {  // V: straight into the page
    if (i < D) {
      const int h = hh - Hq - Hkv;
      const std::int64_t page = seq * p.pages_per_seq + pos / p.page_size, slot = pos % p.page_size;
      p.v_pages[((page * p.page_size + slot) * Hkv + h) * D + i] = __float2bfloat16_rn(x);
    }
    return;
  }
  if (is_q && q_pre != nullptr && i < D) q_pre[(r * Hq + hh) * D + i] = x;
  if (i < D) v[i] = x;
  __syncthreads();
  const int half = D / 2;
  if (i >= half) return;
  float lo, hi;
  rope_apply(v[i], v[i + half], rope_cos_sin(pos, freq), lo, hi);
  if (is_q) {
    float* out = q + (r * Hq + hh) * D;
    out[i] = lo;
    out[i + half] = hi;
  } else {
    const int h = hh - Hq;
    const std::int64_t page = seq * p.pages_per_seq + pos / p.page_size, slot = pos % p.page_size;
    bf16* out = p.k_pages + ((page * p.page_size + slot) * Hkv + h) * D;
    out[i] = __float2bfloat16_rn(lo);
    out[i + half] = __float2bfloat16_rn(hi);
  }
}

__global__ void silu_mul_kernel(const float* gu, std::int64_t n, std::int64_t I, bf16* act) {
  for (std::int64_t k = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; k < n * I;
       k += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t r = k / I, i = k % I;
    const float g = gu[r * 2 * I + i], u = gu[r * 2 * I + I + i];
    act[k] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
  }
}

__global__ void to_bf16_kernel(const float* x, std::int64_t n, bf16* y) {
  for (std::int64_t k = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; k < n;
       k += std::int64_t(gridDim.x) * blockDim.x)
    y[k] = __float2bfloat16_rn(x[k]);
}

__global__ void add_bias_kernel(float* x, std::int64_t n, std::int64_t cols, const float* bias, bf16* x_bf16) {
  for (std::int64_t k = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; k < n * cols;
       k += std::int64_t(gridDim.x) * blockDim.x) {
    const float v = x[k] + bias[k % cols];
    x[k] = v;
    if (x_bf16 != nullptr) x_bf16[k] = __float2bfloat16_rn(v);
  }
}

// One block of 1024 threads per row.
__global__ void argmax_kernel(const float* logits, std::int64_t vocab, std::int32_t* out, std::int32_t* feed) {
  __shared__ float best_v[1024];
  __shared__ std::int32_t best_i[1024];
  const std::int64_t r = blockIdx.x;
  float bv = -FLT_MAX;
  std::int32_t bi = -1;
  // Loads in flight in batches; the comparisons still run in increasing k, so the first maximum
  // stays and NaN never wins.
  strided_in_batches<kLoadsInFlight>(
      vocab, [&](std::int64_t k) { return logits[r * vocab + k]; },
      [&](std::int64_t k, float x) {
        if ((x > bv || bi < 0) && !(x != x)) {
          bv = x;
          bi = static_cast<std::int32_t>(k);
        }
      });
  best_v[threadIdx.x] = bv;
  best_i[threadIdx.x] = bi;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float ov = best_v[threadIdx.x + stride];
      const std::int32_t oi = best_i[threadIdx.x + stride];
      const float mv = best_v[threadIdx.x];
      const std::int32_t mi = best_i[threadIdx.x];
      if (oi >= 0 && (mi < 0 || ov > mv || (ov == mv && oi < mi))) {
        best_v[threadIdx.x] = ov;
        best_i[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const std::int32_t id = best_i[0] < 0 ? 0 : best_i[0];
    out[r] = id;
    if (feed != nullptr) feed[r] = id;
  }
}

// grid B blocks (one per sequence); each block recomputes the (tiny) prefix sum.
__global__ void page_table_kernel(const std::int64_t* pos, std::int32_t B, std::int32_t page_size,
                                  std::int64_t pages_per_seq, std::int32_t* indptr, std::int32_t* indices,
                                  std::int32_t* last_page_len) {
  const int b = blockIdx.x;
  std::int64_t start = 0;
  for (int j = 0; j < b; ++j) start += pos[j] / page_size + 1;
  const std::int64_t pages = pos[b] / page_size + 1;
  if (threadIdx.x == 0) {
    indptr[b] = static_cast<std::int32_t>(start);
    if (b == B - 1) indptr[B] = static_cast<std::int32_t>(start + pages);
    last_page_len[b] = static_cast<std::int32_t>(pos[b] % page_size + 1);
  }
  for (std::int64_t i = threadIdx.x; i < pages; i += blockDim.x)
    indices[start + i] = static_cast<std::int32_t>(b * pages_per_seq + i);
}

__global__ void advance_kernel(std::int64_t* pos, std::int32_t B) {
  if (threadIdx.x < B) pos[threadIdx.x] += 1;
}

// grid L blocks (one per layer), one thread per (sequence, KV head) group; totals added atomically.
__global__ void stats_kernel(const HeadStats* hs, const std::uint8_t* mac_layer, const std::int64_t* pos,
                             std::int32_t L, std::int32_t B, std::int32_t Hq, std::int32_t Hkv, std::int64_t* acc) {
  const int l = blockIdx.x;
  if (l >= L) return;
  const int G = Hq / Hkv;
  std::int64_t heads = 0, hit = 0, groups = 0, all_hit = 0, read = 0, exact = 0;
  for (int k = threadIdx.x; k < B * Hkv; k += blockDim.x) {
    const int b = k / Hkv, g = k % Hkv;
    const std::int64_t t1 = pos[b] + 1;
    groups += 1;
    heads += G;
    exact += t1;
    if (!mac_layer[l]) {
      read += t1;
      continue;
    }
    int nhit = 0;
    std::int64_t longest = 0;
    for (int j = 0; j < G; ++j) {
      const HeadStats& h = hs[(static_cast<std::int64_t>(l) * B + b) * Hq + g * G + j];
      nhit += h.hit ? 1 : 0;
      longest = h.kv_tokens_read > longest ? h.kv_tokens_read : longest;
    }
    hit += nhit;
    if (nhit == G) {
      all_hit += 1;
      read += longest;
    } else {
      read += t1;
    }
  }
  if (groups == 0) return;
  auto* a = reinterpret_cast<unsigned long long*>(acc + 6 * l);
  atomicAdd(a + 0, static_cast<unsigned long long>(heads));
  atomicAdd(a + 1, static_cast<unsigned long long>(hit));
  atomicAdd(a + 2, static_cast<unsigned long long>(groups));
  atomicAdd(a + 3, static_cast<unsigned long long>(all_hit));
  atomicAdd(a + 4, static_cast<unsigned long long>(read));
  atomicAdd(a + 5, static_cast<unsigned long long>(exact));
}

__global__ void diff_norms_kernel(const float* a, const float* b, std::int64_t n, double* sums) {
  __shared__ float red[32];
  float d2 = 0.f, r2 = 0.f;
  for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const float d = a[k] - b[k];
    d2 += d * d;
    r2 += b[k] * b[k];
  }
  d2 = block_sum(d2, red);
  r2 = block_sum(r2, red);
  if (threadIdx.x == 0) {
    sums[0] += d2;
    sums[1] += r2;
  }
}

__device__ float hash_unit(std::uint64_t i, std::uint64_t seed) {  // splitmix64 -> [-1, 1)
  std::uint64_t z = i + seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_random_kernel(bf16* p, std::int64_t n, std::uint64_t seed, float scale) {
  for (std::int64_t k = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; k < n;
       k += std::int64_t(gridDim.x) * blockDim.x)
    p[k] = __float2bfloat16_rn(hash_unit(static_cast<std::uint64_t>(k), seed) * scale);
}

__global__ void fill_f32_kernel(float* p, std::int64_t n, float value) {
  for (std::int64_t k = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; k < n;
       k += std::int64_t(gridDim.x) * blockDim.x)
    p[k] = value;
}

// Whether the per-row kernels that precede a matmul or the attention (RMSNorm, q|k|v + RoPE) are
// launched with programmatic dependent launch: MACATTN_ENGINE_PDL_SMALL on sm_90+ (an
// experiment; off by default): "1" both, "norm" the RMSNorms only, "qkv" the q|k|v kernel only.
// They wait (griddepcontrol.wait) before reading what the kernel before them wrote, so either
// launch gives the same results.
enum class SmallKernel { norm = 1, qkv = 2 };
bool small_kernel_pdl(SmallKernel k) {
  static const int v = [] {
    const char* e = std::getenv("MACATTN_ENGINE_PDL_SMALL");
    if (e == nullptr || !skinny_gemm_pdl_supported()) return 0;
    if (std::strcmp(e, "1") == 0) return 3;
    if (std::strcmp(e, "norm") == 0) return 1;
    if (std::strcmp(e, "qkv") == 0) return 2;
    return 0;
  }();
  return (v & static_cast<int>(k)) != 0;
}

}  // namespace

void embed_rows(const std::int32_t* tokens, std::int64_t n, const bf16* embed, std::int64_t vocab, std::int64_t H,
                float* x, cudaStream_t s, bf16* x_bf16) {
  embed_kernel<<<static_cast<unsigned>(n), kThreads, 0, s>>>(tokens, n, embed, vocab, H, x, x_bf16);
  ENGINE_LAUNCHED("embed_kernel");
}

void rms_norm_bf16(const float* x, std::int64_t n, std::int64_t H, const float* w, float eps, bf16* y, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(n)), block(kNormThreads);
  const char* name = "rms_norm_kernel";
  const bool pdl = small_kernel_pdl(SmallKernel::norm);
  if (H <= kNormThreads * 2) launch_kernel(name, rms_norm_kernel<2>, grid, block, s, pdl, x, H, w, eps, y);
  else if (H <= kNormThreads * 4) launch_kernel(name, rms_norm_kernel<4>, grid, block, s, pdl, x, H, w, eps, y);
  else if (H <= kNormThreads * 8) launch_kernel(name, rms_norm_kernel<8>, grid, block, s, pdl, x, H, w, eps, y);
  else if (H <= kNormThreads * 16) launch_kernel(name, rms_norm_kernel<16>, grid, block, s, pdl, x, H, w, eps, y);
  else launch_kernel(name, rms_norm_kernel<0>, grid, block, s, pdl, x, H, w, eps, y);
}

void qkv_rope_append(const float* qkv, std::int64_t n, const std::int64_t* row_pos, const std::int32_t* row_seq,
                     const QkvParams& p, float* q, float* q_pre, cudaStream_t s) {
  if (p.head_dim < 2 || p.head_dim > 256 || p.head_dim % 2 != 0)
    throw Error("CUDA engine: head_dim " + std::to_string(p.head_dim) + " is not an even number in [2, 256]");
  const int threads = (p.head_dim + 31) / 32 * 32;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(p.num_q_heads + 2 * p.num_kv_heads));
  launch_kernel("qkv_kernel", qkv_kernel, grid, dim3(static_cast<unsigned>(threads)), s,
                small_kernel_pdl(SmallKernel::qkv), qkv, row_pos, row_seq, p, q, q_pre);
}

void silu_mul_bf16(const float* gu, std::int64_t n, std::int64_t I, bf16* act, cudaStream_t s) {
  silu_mul_kernel<<<blocks_for(n * I), kThreads, 0, s>>>(gu, n, I, act);
  ENGINE_LAUNCHED("silu_mul_kernel");
}

void to_bf16(const float* x, std::int64_t n, bf16* y, cudaStream_t s) {
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, y);
  ENGINE_LAUNCHED("to_bf16_kernel");
}

void add_bias_rows(float* x, std::int64_t n, std::int64_t cols, const float* bias, cudaStream_t s, bf16* x_bf16) {
  add_bias_kernel<<<blocks_for(n * cols), kThreads, 0, s>>>(x, n, cols, bias, x_bf16);
  ENGINE_LAUNCHED("add_bias_kernel");
}

void argmax_rows(const float* logits, std::int64_t n, std::int64_t vocab, std::int32_t* out, std::int32_t* feed,
                 cudaStream_t s) {
  argmax_kernel<<<static_cast<unsigned>(n), 1024, 0, s>>>(logits, vocab, out, feed);
  ENGINE_LAUNCHED("argmax_kernel");
}

void build_page_table(const std::int64_t* pos, std::int32_t B, std::int32_t page_size, std::int64_t pages_per_seq,
                      std::int32_t* indptr, std::int32_t* indices, std::int32_t* last_page_len, cudaStream_t s) {
  page_table_kernel<<<B, 1024, 0, s>>>(pos, B, page_size, pages_per_seq, indptr, indices, last_page_len);
  ENGINE_LAUNCHED("page_table_kernel");
}

void advance_positions(std::int64_t* pos, std::int32_t B, cudaStream_t s) {
  advance_kernel<<<1, 32 * ((B + 31) / 32), 0, s>>>(pos, B);
  ENGINE_LAUNCHED("advance_kernel");
}

void accumulate_stats(const HeadStats* head_stats, const std::uint8_t* mac_layer, const std::int64_t* pos,
                      std::int32_t L, std::int32_t B, std::int32_t Hq, std::int32_t Hkv, std::int64_t* acc,
                      cudaStream_t s) {
  stats_kernel<<<L, 128, 0, s>>>(head_stats, mac_layer, pos, L, B, Hq, Hkv, acc);
  ENGINE_LAUNCHED("stats_kernel");
}

void diff_norms(const float* a, const float* b, std::int64_t n, double* sums, cudaStream_t s) {
  diff_norms_kernel<<<1, 1024, 0, s>>>(a, b, n, sums);
  ENGINE_LAUNCHED("diff_norms_kernel");
}

void fill_random_bf16(bf16* p, std::int64_t n, std::uint64_t seed, float scale, cudaStream_t s) {
  fill_random_kernel<<<blocks_for(n), kThreads, 0, s>>>(p, n, seed, scale);
  ENGINE_LAUNCHED("fill_random_kernel");
}

void fill_f32(float* p, std::int64_t n, float value, cudaStream_t s) {
  fill_f32_kernel<<<blocks_for(n), kThreads, 0, s>>>(p, n, value);
  ENGINE_LAUNCHED("fill_f32_kernel");
}

}  // namespace macattn::engine::gpu

// The decode matmuls (skinny_gemm*): in their own file, compiled in this translation unit.
#include "engine/cuda/skinny_gemm_impl.cuh"
