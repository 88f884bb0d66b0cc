// engine/cuda/skinny_gemm_impl.cuh (internal): the decode step's matmuls with few rows
// (skinny_gemm / skinny_gemm_swiglu of kernels.cuh). Included once, at the end of kernels.cu
// (the engine's CMake lists compile kernels.cu; this keeps the GEMV code in its own file).
//
// Design (memory bound: every weight byte is read once per step):
// - a block owns 8 weight rows (4 at N >= 5: gemv_rows; SwiGLU: half gate, half up rows of the
//   same outputs) and splits the reduction dimension over all its warps (256 threads for N <= 2,
//   128 above: gemv_threads; 128 at N <= 2 too when asked, GemvLaunch::narrow): thread t takes
//   the 16-byte chunks t, t + threads, ... of each of its rows (a warp reads 512 contiguous bytes
//   of a row per load), 1 or 2 chunks per row in flight (gemv_unroll: 8 loads of 16 bytes per
//   thread);
// - weights are streamed with ld.global.nc.L1::no_allocate (they are read once); the N <= 8
//   activation rows are small and re-read by every block, so they go through L1 (coherent
//   loads, not ld.global.nc: under programmatic dependent launch the kernel is alive while the
//   kernel before it still writes them, and the read-only path is only valid for data that
//   does not change during a kernel's lifetime);
// - fp32 accumulators [rows x N] per thread, a transposing warp reduction (31 shuffles
//   for 32 values instead of 5 per value), then the warps' partials summed in shared memory in
//   a fixed order: deterministic, no atomics, and identical activation rows of one call give
//   bit-identical outputs (a batch's rows do not depend on their neighbours);
// - out-of-range rows are clamped for the loads and not stored;
// - the 16-byte path needs in % 8 == 0 and 16-byte aligned W and x; otherwise a scalar kernel
//   with the same structure (any in, any bf16-aligned pointer).
// Epilogues: y = acc, y += acc (cuBLAS beta = 1: the residual), or act = bf16(silu(g) * u) of the
// fused gate|up weights (rows [0, I) gate, [I, 2I) up). x is bf16 or fp32; fp32 is rounded to
// bf16 on load (what to_bf16 + the bf16 cuBLAS call did).
// NORM (fused RMSNorm, up to kGemvFmaMaxRows rows): x is a bf16 copy of the residual stream
// (written beside it by the kernel that wrote the residual: GemvOut::y_bf16), each element is
// multiplied by the bf16 norm weight on load, every thread also sums the squares of the x values
// it loads, and the epilogue scales the block's totals by 1 / sqrt(mean x^2 + eps) (the squares
// reduced beside the products, in a fixed order). Every block reads all of x anyway, so the norm
// costs two FP operations per element instead of a kernel of its own, which in a decode step sat
// alone between two matmuls (3.5 us of a 125 us llama3-8b layer, twice). x and the norm weight
// are bf16 because every block re-reads them through L1: after MAC's kernels (which ask for the
// most shared memory) an SM keeps 28 KB of L1 while kernels overlap, and fp32 x plus an fp32 norm
// weight (32 KB at 4096) missed it: the gate|up matmul then streamed 4-10 us slower.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

namespace macattn::engine::gpu {

namespace {

constexpr int kGemvRows = 4;  // weight rows per block (the scalar kernel; the 16-byte one: gemv_rows)
// Threads per block and chunks per row in flight per thread, by N (measured on the H200 at the
// llama3-8b shapes): N <= 2 256 threads, N 3..4 128 (more registers, fewer blocks per SM), each
// with one chunk of 8 rows in flight (were 2 / 4 chunks of 4 rows); N >= 5 128 x 2 chunks of 4
// rows (registers).
template <int N>
constexpr int gemv_threads() {
  return N <= 2 ? 256 : 128;
}
template <int N>
constexpr int gemv_unroll() {
  return N <= 4 ? 1 : 2;
}
// Weight rows per block of the 16-byte FMA kernel: 8 up to 4 rows, where each activation chunk's
// load and unpacking then serve 8 weight rows instead of 4 (with one chunk per row in flight:
// 8 x 16 bytes a thread, as 4 rows x 2 or 4 chunks did). Measured on the H200 (llama3-8b, exact
// steps at 4K): 4 rows 5.31 -> 4.92 ms (with the weight rows unpacked one at a time), 2 rows
// 4.74-4.76 -> 4.54, 1 row 4.32 -> 4.26; docs/benchmarks/e2e_cuda.md.
template <int N>
constexpr int gemv_rows() {
  return N <= 4 ? 8 : kGemvRows;
}
constexpr int kGemvMaxWarps = 8;

constexpr int pow2_at_least(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

__device__ __forceinline__ uint4 load_stream16(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float bf16_lo(std::uint32_t u) {
  return __uint_as_float(u << 16);
}
__device__ __forceinline__ float bf16_hi(std::uint32_t u) {
  return __uint_as_float(u & 0xffff0000u);
}
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  f[0] = bf16_lo(v.x), f[1] = bf16_hi(v.x), f[2] = bf16_lo(v.y), f[3] = bf16_hi(v.y);
  f[4] = bf16_lo(v.z), f[5] = bf16_hi(v.z), f[6] = bf16_lo(v.w), f[7] = bf16_hi(v.w);
}
__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// A coherent 16-byte load (plain ld.global, cached in L1; see the design note on .nc).
__device__ __forceinline__ uint4 load_coherent16(const void* p) {
  uint4 v;
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ float4 load_coherent16f(const void* p) {
  const uint4 v = load_coherent16(p);
  return make_float4(__uint_as_float(v.x), __uint_as_float(v.y), __uint_as_float(v.z), __uint_as_float(v.w));
}

// The 8 activations of chunk c (elements 8c .. 8c + 7) of row `row` (16-byte aligned).
__device__ __forceinline__ void load_x8(const bf16* row, std::int64_t c, float (&f)[8]) {
  unpack8(load_coherent16(reinterpret_cast<const uint4*>(row) + c), f);
}
__device__ __forceinline__ void load_x8(const float* row, std::int64_t c, float (&f)[8]) {
  const float4 a = load_coherent16f(reinterpret_cast<const float4*>(row) + 2 * c);
  const float4 b = load_coherent16f(reinterpret_cast<const float4*>(row) + 2 * c + 1);
  f[0] = round_bf16(a.x), f[1] = round_bf16(a.y), f[2] = round_bf16(a.z), f[3] = round_bf16(a.w);
  f[4] = round_bf16(b.x), f[5] = round_bf16(b.y), f[6] = round_bf16(b.z), f[7] = round_bf16(b.w);
}
__device__ __forceinline__ float load_x1(const bf16* p) {
  return __bfloat162float(*static_cast<const volatile bf16*>(p));
}
__device__ __forceinline__ float load_x1(const float* p) {
  return round_bf16(*static_cast<const volatile float*>(p));
}

// The fused RMSNorm's input (NORM): the norm weight g [in] bf16 and eps.
struct GemvNorm {
  const bf16* weight = nullptr;
  float eps = 0.f;
};
// The 8 norm weights of chunk c. The model's weights: no kernel writes them, so the read-only
// path is valid.
__device__ __forceinline__ void load_g8(const bf16* g, std::int64_t c, float (&f)[8]) {
  unpack8(__ldg(reinterpret_cast<const uint4*>(g) + c), f);
}
// NORM: the 8 activations of chunk c times the norm weights (fp32 products); ss += the squares of
// the activations (in element order).
__device__ __forceinline__ void load_x8_normed(const bf16* row, std::int64_t c, const float (&g)[8], float (&f)[8],
                                               float& ss) {
  float v[8];
  load_x8(row, c, v);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    ss = __fmaf_rn(v[e], v[e], ss);
    f[e] = v[e] * g[e];
  }
}

// Transposing butterfly over a warp: CNT (a power of two <= 32) values per lane in, and lane
// l ends with the warp's total of value index l >> (5 - log2(CNT)) in v[0]. Each level adds
// partial sums of two lane groups (a + b == b + a in floating point), so the summation tree of
// one value is the same for every CNT.
template <int CNT, int O>
__device__ __forceinline__ void warp_reduce_transposed(float* v, int lane) {
  if constexpr (CNT > 1) {
    constexpr int H = CNT / 2;
    const bool upper = (lane & O) != 0;
#pragma unroll
    for (int i = 0; i < H; ++i) {
      const float send = upper ? v[i] : v[i + H];
      const float keep = upper ? v[i + H] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
    }
    if constexpr (O > 1) warp_reduce_transposed<H, O / 2>(v, lane);
  } else {
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
    if constexpr (O > 1) warp_reduce_transposed<1, O / 2>(v, lane);
  }
}

constexpr int log2_exact(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}

struct GemvOut {
  float* y = nullptr;       // plain: [n, out]
  bf16* y_bf16 = nullptr;   // plain, optional: bf16(y) after the update (a fused norm's input)
  bf16* act = nullptr;      // SwiGLU: [n, out]
  bool accumulate = false;
};

// The block's R rows for output group g: plain, outputs g*R + j; SwiGLU, outputs g*R/2 + p
// with rows (g*R/2 + p) (gate) and out + g*R/2 + p (up). Rows past the end are clamped (loaded,
// never stored).
template <bool SWIGLU, int R = kGemvRows>
__device__ __forceinline__ std::int64_t gemv_row(std::int64_t group, int j, std::int64_t out) {
  if constexpr (SWIGLU) {
    constexpr int P = R / 2;
    const std::int64_t o = min(group * P + (j % P), out - 1);
    return j < P ? o : out + o;
  } else {
    return min(group * R + j, out - 1);
  }
}

// Block reduction of acc [R * N] (index j * N + r; VP = pow2_at_least(R * N) values per thread)
// into red: after it (and its __syncthreads) gemv_block_total(red, j * N + r) is the block's sum
// for weight row j and activation row r, each summed in a fixed order. NORM: ss [N] are the
// thread's sums of squares of activation row r, reduced beside acc into red_ss.
template <int N, int R, bool NORM, int THREADS>
__device__ __forceinline__ void gemv_block_reduce(float (&acc)[pow2_at_least(R * N)], float (&ss)[N],
                                                  float (&red)[THREADS / 32][32],
                                                  float (&red_ss)[NORM ? THREADS / 32 : 1][N]) {
  constexpr int VP = pow2_at_least(R * N);
  static_assert(VP <= 32, "at most 32 accumulators per thread");
  constexpr int kWarps = THREADS / 32;
  static_assert(kWarps <= kGemvMaxWarps);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_reduce_transposed<VP, 16>(acc, lane);
  constexpr int shift = 5 - log2_exact(VP);
  if ((lane & ((1 << shift) - 1)) == 0) red[warp][lane >> shift] = acc[0];
  if constexpr (NORM) {
#pragma unroll
    for (int r = 0; r < N; ++r) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) ss[r] += __shfl_xor_sync(0xffffffffu, ss[r], off);
      if (lane == 0) red_ss[warp][r] = ss[r];
    }
  }
  __syncthreads();
}
template <int kWarps>
__device__ __forceinline__ float gemv_block_total(const float (&red)[kWarps][32], int idx) {
  float s = red[0][idx];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) s += red[w][idx];
  return s;
}
// NORM: activation row r's 1 / sqrt(sum of squares / in + eps) (the formula of rms_norm_kernel);
// otherwise 1.
template <int N, bool NORM, int kWarps>
__device__ __forceinline__ float gemv_norm_scale(const float (&red_ss)[NORM ? kWarps : 1][N], int r, std::int64_t in,
                                                 float eps) {
  if constexpr (NORM) {
    float s = red_ss[0][r];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) s += red_ss[w][r];
    return rsqrtf(s / static_cast<float>(in) + eps);
  } else {
    return 1.0f;
  }
}

// The block reduction and the epilogue. NORM: each output is scaled by its activation row's
// gemv_norm_scale.
template <int N, bool SWIGLU, int R = kGemvRows, bool NORM = false, int THREADS = gemv_threads<N>()>
__device__ __forceinline__ void gemv_finish(float (&acc)[pow2_at_least(R * N)], std::int64_t group,
                                            std::int64_t out, const GemvOut& o, float (&ss)[N], std::int64_t in,
                                            float eps) {
  constexpr int V = R * N;
  constexpr int kWarps = THREADS / 32;
  __shared__ float red[kWarps][32];
  __shared__ float red_ss[NORM ? kWarps : 1][N];
  gemv_block_reduce<N, R, NORM, THREADS>(acc, ss, red, red_ss);
  const int t = threadIdx.x;
  const auto total = [&](int idx) { return gemv_block_total<kWarps>(red, idx); };
  const auto scale = [&](int r) { return gemv_norm_scale<N, NORM, kWarps>(red_ss, r, in, eps); };
  if constexpr (SWIGLU) {
    constexpr int P = R / 2;
    if (t < P * N) {
      const int p = t / N, r = t % N;
      const std::int64_t oi = group * P + p;
      if (oi < out) {
        const float inv = scale(r);
        const float g = total(p * N + r) * inv, u = total((P + p) * N + r) * inv;
        o.act[r * out + oi] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
      }
    }
  } else {
    if (t < V) {
      const int j = t / N, r = t % N;
      const std::int64_t oi = group * R + j;
      if (oi < out) {
        const float s = total(t) * scale(r);
        float* dst = o.y + r * out + oi;
        const float v = o.accumulate ? s + *dst : s;
        *dst = v;
        if (o.y_bf16 != nullptr) o.y_bf16[r * out + oi] = __float2bfloat16_rn(v);
      }
    }
  }
}

// The 16-byte kernel's block, given its R weight rows wr[j] (16-byte chunks; chunks = in / 8 per
// row): acc [j * N + r] = sum of weight row j times activation row r of x, ss [r] (NORM) = sum of
// the squares of row r's activations, then finish(acc, ss). Thread threadIdx.x takes chunks
// threadIdx.x, + THREADS, ... The block lets dependent kernels launch at once; its first weight
// loads are issued before the grid dependency wait (PDL), and after_wait() runs once, right after
// that wait (where loads of what earlier kernels wrote may start).
template <int N, typename XT, bool NORM, int THREADS, int R, typename AfterWait, typename Finish>
__device__ __forceinline__ void gemv_vec_block(const XT* x, const uint4* const (&wr)[R], std::int64_t in,
                                               std::int64_t chunks, const GemvNorm& norm, AfterWait after_wait,
                                               Finish finish) {
  constexpr int VP = pow2_at_least(R * N);
  float acc[VP];
#pragma unroll
  for (int i = 0; i < VP; ++i) acc[i] = 0.f;
  float ss[N];  // NORM: this thread's sums of squares of each activation row
#pragma unroll
  for (int r = 0; r < N; ++r) ss[r] = 0.f;

  engine_allow_dependents();
  constexpr int kThreads = THREADS, kUnroll = gemv_unroll<N>();
  constexpr bool kHoistX = N <= 4;
  bool waited = false;
  for (std::int64_t c0 = threadIdx.x; c0 < chunks; c0 += kThreads * kUnroll) {
    uint4 wv[kUnroll][R];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t c = c0 + u * kThreads;
#pragma unroll
      for (int j = 0; j < R; ++j) wv[u][j] = c < chunks ? load_stream16(wr[j] + c) : make_uint4(0, 0, 0, 0);
    }
    if (!waited) {  // the first weights are on their way; x (and y) come from earlier kernels
      engine_grid_wait();
      after_wait();
      waited = true;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t c = c0 + u * kThreads;
      if (c < chunks) {
        if constexpr (kHoistX) {
          // Every activation row's chunk in flight before the first FMA; then one weight row at a
          // time unpacked (8 floats live, not 8 rows' 64). Each accumulator sums e = 0..7 in order
          // as in the other branch.
          float xf[N][8];
          if constexpr (NORM) {
            float g8[8];
            load_g8(norm.weight, c, g8);
#pragma unroll
            for (int r = 0; r < N; ++r) load_x8_normed(x + r * in, c, g8, xf[r], ss[r]);
          } else {
#pragma unroll
            for (int r = 0; r < N; ++r) load_x8(x + r * in, c, xf[r]);
          }
#pragma unroll
          for (int j = 0; j < R; ++j) {
            float wj[8];
            unpack8(wv[u][j], wj);
#pragma unroll
            for (int r = 0; r < N; ++r)
#pragma unroll
              for (int e = 0; e < 8; ++e) acc[j * N + r] = __fmaf_rn(wj[e], xf[r][e], acc[j * N + r]);
          }
        } else {
          float wf[R][8];
#pragma unroll
          for (int j = 0; j < R; ++j) unpack8(wv[u][j], wf[j]);
#pragma unroll
          for (int r = 0; r < N; ++r) {
            float xf[8];
            load_x8(x + r * in, c, xf);
#pragma unroll
            for (int j = 0; j < R; ++j)
#pragma unroll
              for (int e = 0; e < 8; ++e) acc[j * N + r] = __fmaf_rn(wf[j][e], xf[e], acc[j * N + r]);
          }
        }
      }
    }
  }
  if (!waited) {
    engine_grid_wait();
    after_wait();
  }
  finish(acc, ss);
}

// The 16-byte path: in % 8 == 0, W and x 16-byte aligned.
// At most 128 registers (512 / threads blocks of `threads` per SM) except fp32 inputs at N >= 7, which
// would spill.
// kHoistX (up to 4 rows): a chunk's activation loads all issued before its FMAs, then one weight
// row unpacked at a time (measured at 4 rows on the H200, llama3-8b 4K exact steps, 4 rows per
// block: 5.406 -> 5.301 ms; 256 threads x 2 chunks instead of 128 x 4 measured 6.11-6.53 ms;
// docs/benchmarks/e2e_cuda.md). R: gemv_rows; N >= 5 keeps the activations per row (registers).
// THREADS: gemv_threads<N>(), or 128 at N <= 2 (GemvLaunch::narrow).
template <int N, typename XT, bool SWIGLU, bool NORM = false, int THREADS = gemv_threads<N>()>
__global__ void __launch_bounds__(THREADS, (N >= 7 && sizeof(XT) == 4) ? 1 : 512 / THREADS)
    gemv_vec_kernel(const XT* x, const bf16* __restrict__ w, std::int64_t out, std::int64_t in,
                    GemvOut o, GemvNorm norm) {
  constexpr int R = gemv_rows<N>();
  static_assert(!NORM || (N <= 4 && sizeof(XT) == 2), "the fused RMSNorm takes up to 4 bf16 rows");
  constexpr int VP = pow2_at_least(R * N);
  const std::int64_t group = blockIdx.x;
  const std::int64_t chunks = in / 8;  // 16-byte chunks per row
  const uint4* wr[R];
#pragma unroll
  for (int j = 0; j < R; ++j) wr[j] = reinterpret_cast<const uint4*>(w + gemv_row<SWIGLU, R>(group, j, out) * in);
  gemv_vec_block<N, XT, NORM, THREADS, R>(x, wr, in, chunks, norm, [] {}, [&](float(&acc)[VP], float(&ss)[N]) {
    gemv_finish<N, SWIGLU, R, NORM, THREADS>(acc, group, out, o, ss, in, norm.eps);
  });
}

// What gemv_qkv_rope_kernel writes besides the product (qkv_rope_append's outputs).
struct QkvRopeOut {
  float* qkv = nullptr;  // [n, (Hq + 2 Hkv) D] fp32: the product, as skinny_gemm_rms_norm writes it
  const std::int64_t* row_pos = nullptr;
  const std::int32_t* row_seq = nullptr;
  QkvParams p;            // no q/k-norm; head_dim % 8 == 0
  float* q = nullptr;     // [n, Hq, D]
  float* q_pre = nullptr;  // [n, Hq, D] or null
};

// skinny_gemm_rms_norm into qkv followed by qkv_rope_append, in one kernel (no q/k-norm). A block
// owns 8 weight rows of one head: the 4 rows i = 4b .. 4b + 3 (b: the block's index within the
// head) and their RoPE partners i + D/2, so that both products of each pair end in the same block
// and its epilogue can rotate them. The products, sums and roundings are those of the two kernels
// (the same main loop and reduction as gemv_vec_kernel, the same rope_cos_sin / rope_apply as
// qkv_kernel), so every output is the same bits. What it saves: the RoPE kernel's launch and run
// between the matmul and the attention (about 2 us of a 120 us llama3-8b layer on the H200).
// The cos and sin of a pair's angle are computed right after the grid dependency wait, while the
// block's first weight loads are in flight. N <= kGemvFmaMaxRows (8 rows per block).
template <int N>
__global__ void __launch_bounds__(gemv_threads<N>(), 512 / gemv_threads<N>())
    gemv_qkv_rope_kernel(const bf16* x, const bf16* __restrict__ w, std::int64_t in, GemvNorm norm, QkvRopeOut o) {
  constexpr int R = gemv_rows<N>(), P = R / 2, THREADS = gemv_threads<N>(), kWarps = THREADS / 32;
  static_assert(R == 8 && P * N <= 32, "8 weight rows per block; the pairs' threads in warp 0");
  constexpr int VP = pow2_at_least(R * N);
  const int D = o.p.head_dim, Hq = o.p.num_q_heads, Hkv = o.p.num_kv_heads;
  const int head = static_cast<int>(blockIdx.x) / (D / R), b = static_cast<int>(blockIdx.x) % (D / R);
  const std::int64_t out = static_cast<std::int64_t>(Hq + 2 * Hkv) * D;
  // Weight row j of the block: j < P the first half of the head (element P b + j), else its partner.
  const auto row_of = [&](int j) {
    return static_cast<std::int64_t>(head) * D + (j < P ? P * b + j : D / 2 + P * b + (j - P));
  };
  const std::int64_t chunks = in / 8;
  const uint4* wr[R];
#pragma unroll
  for (int j = 0; j < R; ++j) wr[j] = reinterpret_cast<const uint4*>(w + row_of(j) * in);
  const bool is_q = head < Hq, is_k = !is_q && head < Hq + Hkv;
  // Thread t < P N: the pair of weight rows (j, j + P), j = t / N, of activation row r = t % N.
  const int t = threadIdx.x, pj = t / N, pr = t % N;
  std::int64_t pos = 0, seq = 0;
  RopeCosSin cs;
  gemv_vec_block<N, bf16, true, THREADS, R>(
      x, wr, in, chunks, norm,
      [&] {
        if (t < P * N) {
          pos = o.row_pos[pr];
          seq = o.row_seq[pr];
          if (is_q || is_k) cs = rope_cos_sin(pos, o.p.inv_freq[P * b + pj]);
        }
      },
      [&](float(&acc)[VP], float(&ss)[N]) {
        __shared__ float red[kWarps][32];
        __shared__ float red_ss[kWarps][N];
        gemv_block_reduce<N, R, true, THREADS>(acc, ss, red, red_ss);
        if (t >= P * N) return;
        const float inv = gemv_norm_scale<N, true, kWarps>(red_ss, pr, in, norm.eps);
        const float ya = gemv_block_total<kWarps>(red, pj * N + pr) * inv;
        const float yb = gemv_block_total<kWarps>(red, (pj + P) * N + pr) * inv;
        const std::int64_t ra = row_of(pj), rb = row_of(pj + P);
        o.qkv[pr * out + ra] = ya;
        o.qkv[pr * out + rb] = yb;
        float a = ya, c = yb;
        if (o.p.bias != nullptr) a += o.p.bias[ra], c += o.p.bias[rb];
        const int i = P * b + pj, half = D / 2;
        const std::int64_t page = seq * o.p.pages_per_seq + pos / o.p.page_size, slot = pos % o.p.page_size;
        if (!is_q && !is_k) {  // V: straight into the page
          bf16* dst = o.p.v_pages + ((page * o.p.page_size + slot) * Hkv + (head - Hq - Hkv)) * D;
          dst[i] = __float2bfloat16_rn(a);
          dst[i + half] = __float2bfloat16_rn(c);
          return;
        }
        float lo, hi;
        rope_apply(a, c, cs, lo, hi);
        if (is_q) {
          const std::int64_t at = (pr * static_cast<std::int64_t>(Hq) + head) * D;
          if (o.q_pre != nullptr) o.q_pre[at + i] = a, o.q_pre[at + i + half] = c;
          o.q[at + i] = lo;
          o.q[at + i + half] = hi;
        } else {
          bf16* dst = o.p.k_pages + ((page * o.p.page_size + slot) * Hkv + (head - Hq)) * D;
          dst[i] = __float2bfloat16_rn(lo);
          dst[i + half] = __float2bfloat16_rn(hi);
        }
      });
}

// The greedy token folded into the lm_head matmul (skinny_gemm_rms_norm_argmax): a 64-bit key per
// row whose largest value is the row's first largest logit. High 32 bits: the logit's bits mapped
// so that unsigned order is float order (-0 read as +0, so that the two tie as in argmax_kernel's
// float compare); low 32 bits: ~index, so that of equal logits the first wins. 0 (the value
// before the first atomicMax) means none: NaN logits never enter, and every non-NaN float maps
// above 0 (-inf to 0x007fffff).
__device__ __forceinline__ unsigned long long argmax_key(float v, std::int64_t index) {
  if (v != v) return 0ull;
  std::uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  u = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(u) << 32) | static_cast<std::uint32_t>(~static_cast<std::uint32_t>(index));
}

// skinny_gemm_rms_norm into y (the lm_head's logits) and each block's largest logit per row folded
// into best[r] (argmax_key, one atomicMax per row and block). gemv_vec_kernel's main loop and
// reduction, so the logits are the same bits. N <= kGemvFmaMaxRows (8 rows per block).
template <int N>
__global__ void __launch_bounds__(gemv_threads<N>(), 512 / gemv_threads<N>())
    gemv_logits_argmax_kernel(const bf16* x, const bf16* __restrict__ w, std::int64_t out, std::int64_t in,
                              GemvNorm norm, float* y, unsigned long long* best) {
  constexpr int R = gemv_rows<N>(), THREADS = gemv_threads<N>(), kWarps = THREADS / 32, V = R * N;
  static_assert(V <= 32, "the block's outputs in warp 0");
  constexpr int VP = pow2_at_least(V);
  const std::int64_t group = blockIdx.x;
  const std::int64_t chunks = in / 8;
  const uint4* wr[R];
#pragma unroll
  for (int j = 0; j < R; ++j) wr[j] = reinterpret_cast<const uint4*>(w + gemv_row<false, R>(group, j, out) * in);
  gemv_vec_block<N, bf16, true, THREADS, R>(x, wr, in, chunks, norm, [] {}, [&](float(&acc)[VP], float(&ss)[N]) {
    __shared__ float red[kWarps][32];
    __shared__ float red_ss[kWarps][N];
    __shared__ unsigned long long keys[V];
    gemv_block_reduce<N, R, true, THREADS>(acc, ss, red, red_ss);
    const int t = threadIdx.x;
    if (t >= 32) return;  // warp 0 only from here
    unsigned long long key = 0ull;
    if (t < V) {
      const int j = t / N, r = t % N;
      const std::int64_t oi = group * R + j;
      if (oi < out) {
        const float v = gemv_block_total<kWarps>(red, t) * gemv_norm_scale<N, true, kWarps>(red_ss, r, in, norm.eps);
        y[r * out + oi] = v;
        key = argmax_key(v, oi);
      }
      keys[t] = key;
    }
    __syncwarp();
    if (t < N) {
      unsigned long long m = 0ull;
#pragma unroll
      for (int j = 0; j < R; ++j) m = keys[j * N + t] > m ? keys[j * N + t] : m;
      if (m != 0ull) atomicMax(best + t, m);
    }
  });
}

// out[r] (and feed[r] when not null) = the index in best[r] (0 where no logit was a number, as
// argmax_kernel); best[r] = 0 for the next step.
__global__ void argmax_take_kernel(unsigned long long* best, std::int64_t n, std::int32_t* out, std::int32_t* feed) {
  const std::int64_t r = threadIdx.x;
  if (r >= n) return;
  const unsigned long long key = best[r];
  const std::int32_t id = key == 0ull ? 0 : static_cast<std::int32_t>(~static_cast<std::uint32_t>(key & 0xffffffffull));
  out[r] = id;
  if (feed != nullptr) feed[r] = id;
  best[r] = 0ull;
}

// The scalar path: any in, any (element-aligned) pointers.
template <int N, typename XT, bool SWIGLU, bool NORM = false>
__global__ void __launch_bounds__(gemv_threads<N>())
    gemv_scalar_kernel(const XT* x, const bf16* __restrict__ w, std::int64_t out, std::int64_t in,
                       GemvOut o, GemvNorm norm) {
  constexpr int VP = pow2_at_least(kGemvRows * N);
  engine_allow_dependents();
  engine_grid_wait();
  const std::int64_t group = blockIdx.x;
  const bf16* wr[kGemvRows];
#pragma unroll
  for (int j = 0; j < kGemvRows; ++j) wr[j] = w + gemv_row<SWIGLU>(group, j, out) * in;
  float acc[VP];
#pragma unroll
  for (int i = 0; i < VP; ++i) acc[i] = 0.f;
  float ss[N];
#pragma unroll
  for (int r = 0; r < N; ++r) ss[r] = 0.f;
  for (std::int64_t k = threadIdx.x; k < in; k += gemv_threads<N>()) {
    float wf[kGemvRows];
#pragma unroll
    for (int j = 0; j < kGemvRows; ++j) wf[j] = __bfloat162float(wr[j][k]);
#pragma unroll
    for (int r = 0; r < N; ++r) {
      float xv;
      if constexpr (NORM) {
        const float raw = load_x1(x + r * in + k);
        ss[r] = __fmaf_rn(raw, raw, ss[r]);
        xv = raw * __bfloat162float(__ldg(norm.weight + k));
      } else {
        xv = load_x1(x + r * in + k);
      }
#pragma unroll
      for (int j = 0; j < kGemvRows; ++j) acc[j * N + r] = __fmaf_rn(wf[j], xv, acc[j * N + r]);
    }
  }
  gemv_finish<N, SWIGLU, kGemvRows, NORM>(acc, group, out, o, ss, in, norm.eps);
}

// ---------------------------------------------------------------------------------------
// The tensor-core path (mma.sync m16n8k16, bf16 in, fp32 accumulate; sm_80 and later).
// A block of kMmaWarps warps owns one tile of 16 weight rows (SwiGLU: 8 gate rows and the 8 up
// rows of the same outputs, so that one thread ends with both factors of an output) and splits
// the reduction dimension over its warps in steps of 64 (a warp reads one 128-byte line of each
// of its 16 rows per step). The activation rows are the mma's B columns (columns >= N are zero).
// Why: at N >= 3 the FMA kernel's unpacking and FMAs (about 80 instructions per 16 weight bytes
// at N = 4) come close to the memory time; here 16 weight bytes cost one load and a quarter mma.
// Measured, it streams weights slower than the FMA kernel (whole llama3-8b steps at 4K: 5.22 vs
// 4.61 ms at 1 row, 5.74 vs 5.67 at 4) and beats it and cuBLAS only at 8 rows; not profiled
// (docs/benchmarks/e2e_cuda.md). GemvKernel::automatic uses it above 4 rows.
//
// The mma's k order is free (a dot product does not care), so each thread feeds it what a 16-byte
// load gives: thread (g = lane / 4, c = lane % 4) loads elements [8c, 8c + 8) of rows g and g + 8
// (and of activation row g) at both halves of a step, and the first four of them are the mma's
// logical k 2c, 2c + 1, 2c + 8, 2c + 9 of one mma, the last four of the next.
// Warps per tile and steps of 64 in flight per warp (16 loads of 16 bytes per thread). Measured on
// the H200 (llama3-8b, 8 rows, whole decode steps at 4K, with PDL): 8 x 4 and 4 x 4 best (5.94 /
// 5.91 ms), 8 x 2 6.27, 16 x 2 6.44, 16 x 4 6.34 (docs/benchmarks/e2e_cuda.md).
constexpr int kMmaWarps = 8;
constexpr int kMmaUnroll = 4;

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], std::uint32_t a0, std::uint32_t a1, std::uint32_t a2,
                                               std::uint32_t a3, std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // the host refuses this path below sm_80 (skinny_gemm_mma_supported)
#endif
}

// 8 activations of chunk c of row `row` as 4 packed bf16 pairs (fp32 rounded to nearest even).
__device__ __forceinline__ uint4 load_x8_bf16(const bf16* row, std::int64_t c) {
  return load_coherent16(reinterpret_cast<const uint4*>(row) + c);
}
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}
__device__ __forceinline__ uint4 load_x8_bf16(const float* row, std::int64_t c) {
  const float4 a = load_coherent16f(reinterpret_cast<const float4*>(row) + 2 * c);
  const float4 b = load_coherent16f(reinterpret_cast<const float4*>(row) + 2 * c + 1);
  return make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
}

// The two mmas of one 16-byte chunk: A rows g (wg) and g + 8 (w8), B column g (xb).
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const uint4& wg, const uint4& w8, const uint4& xb) {
  mma_bf16_16816(acc, wg.x, w8.x, wg.y, w8.y, xb.x, xb.y);
  mma_bf16_16816(acc, wg.z, w8.z, wg.w, w8.w, xb.z, xb.w);
}

template <int N, typename XT, bool SWIGLU>
__global__ void __launch_bounds__(kMmaWarps * 32) gemv_mma_kernel(const XT* x, const bf16* __restrict__ w,
                                                                  std::int64_t out, std::int64_t in, GemvOut o) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c4 = lane & 3;
  const std::int64_t tile = blockIdx.x;
  // This thread's two weight rows (clamped: rows past the end are loaded, never stored).
  std::int64_t row_g, row_8;
  if constexpr (SWIGLU) {
    const std::int64_t oi = min(tile * 8 + g, out - 1);
    row_g = oi;        // gate
    row_8 = out + oi;  // up
  } else {
    row_g = min(tile * 16 + g, out - 1);
    row_8 = min(tile * 16 + g + 8, out - 1);
  }
  const uint4* wg = reinterpret_cast<const uint4*>(w + row_g * in);
  const uint4* w8 = reinterpret_cast<const uint4*>(w + row_8 * in);
  const bool has_x = g < N;
  const XT* xr = x + (has_x ? g : 0) * in;
  const std::int64_t chunks = in / 8, steps = (chunks + 7) / 8;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const uint4 zero = make_uint4(0, 0, 0, 0);
  engine_allow_dependents();
  bool waited = false;
  for (std::int64_t s0 = warp; s0 < steps; s0 += kMmaWarps * kMmaUnroll) {
    uint4 a[kMmaUnroll][2][2], b[kMmaUnroll][2];  // [step][half][row g / g + 8], [step][half]
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const std::int64_t c = (s0 + static_cast<std::int64_t>(u) * kMmaWarps) * 8 + hf * 4 + c4;
        const bool ok = c < chunks;
        a[u][hf][0] = ok ? load_stream16(wg + c) : zero;
        a[u][hf][1] = ok ? load_stream16(w8 + c) : zero;
      }
    }
    if (!waited) {  // the first weights are on their way; x (and y) come from earlier kernels
      engine_grid_wait();
      waited = true;
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const std::int64_t c = (s0 + static_cast<std::int64_t>(u) * kMmaWarps) * 8 + hf * 4 + c4;
        b[u][hf] = c < chunks && has_x ? load_x8_bf16(xr, c) : zero;
      }
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) mma_chunk(acc, a[u][hf][0], a[u][hf][1], b[u][hf]);
  }
  if (!waited) engine_grid_wait();
  // acc: [0] row g col 2c4, [1] row g col 2c4 + 1, [2] row g + 8 col 2c4, [3] row g + 8 col 2c4 + 1.
  // The warps' partials are summed in a fixed order (deterministic).
  __shared__ float red[kMmaWarps][4][32];
#pragma unroll
  for (int e = 0; e < 4; ++e) red[warp][e][lane] = acc[e];
  __syncthreads();
  const int e = threadIdx.x >> 5;  // threads [0, 128): element e of lane `lane`'s fragment
  if (e >= 4) return;
  const auto total = [&](int ei) {
    float sum = red[0][ei][lane];
#pragma unroll
    for (int wi = 1; wi < kMmaWarps; ++wi) sum += red[wi][ei][lane];
    return sum;
  };
  const int col = 2 * c4 + (e & 1);
  if (col >= N) return;
  if constexpr (SWIGLU) {
    if (e >= 2) return;  // the thread of e (gate) also reads e + 2 (up)
    const std::int64_t oi = tile * 8 + g;
    if (oi < out) {
      const float gt = total(e), up = total(e + 2);
      o.act[col * out + oi] = __float2bfloat16_rn(gt / (1.0f + expf(-gt)) * up);
    }
  } else {
    const std::int64_t oi = tile * 16 + g + 8 * (e >> 1);
    if (oi < out) {
      const float sum = total(e);
      float* dst = o.y + col * out + oi;
      const float v = o.accumulate ? sum + *dst : sum;
      *dst = v;
      if (o.y_bf16 != nullptr) o.y_bf16[col * out + oi] = __float2bfloat16_rn(v);
    }
  }
}

// launch_kernel for the matmul kernels, which first sets the kernel's preferred carveout
// (GemvLaunch::carveout) where it differs from what this process last set on this device.
template <typename... KArgs, typename... Args>
void launch_gemv(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t s, bool pdl,
                 int carveout, Args... args) {
  if (carveout < -1 || carveout > 100)
    throw Error("CUDA engine: skinny_gemm with carveout " + std::to_string(carveout) + " (-1..100)");
  {
    static std::mutex m;
    static std::map<std::pair<int, const void*>, int> set;
    int dev = 0;
    ENGINE_CUDA(cudaGetDevice(&dev));
    const std::lock_guard<std::mutex> lock(m);
    const auto [it, fresh] = set.try_emplace({dev, reinterpret_cast<const void*>(kernel)}, carveout);
    if (fresh || it->second != carveout) {
      ENGINE_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, carveout));
      it->second = carveout;
    }
  }
  launch_kernel(name, kernel, grid, block, s, pdl, args...);
}

template <int N, typename XT, bool SWIGLU, bool NORM>
void gemv_launch_n(GemvKernel kernel, const GemvLaunch& how, std::int64_t out, const XT* x, const bf16* w,
                   std::int64_t in, const GemvOut& o, const GemvNorm& norm, cudaStream_t s) {
  const bool pdl = how.pdl, narrow_request = how.narrow;
  const int cv = how.carveout;
  // 128 threads per block instead of 256 (plain matmuls at 1-2 rows only): twice the blocks
  // resident per SM, so a matmul of about one wave of 256-thread blocks runs in one.
  constexpr bool kCanNarrow = N <= 2 && !SWIGLU && !NORM && gemv_threads<N>() != 128;
  const bool narrow = kCanNarrow && narrow_request;
  const int rows = kernel == GemvKernel::fma ? gemv_rows<N>() : kGemvRows;  // the scalar kernel: 4
  const std::int64_t per_block = kernel == GemvKernel::mma ? (SWIGLU ? 8 : 16) : (SWIGLU ? rows / 2 : rows);
  const std::int64_t blocks = (out + per_block - 1) / per_block;
  if (blocks > 0x7fffffffLL) throw Error("CUDA engine: skinny_gemm with too many outputs: " + std::to_string(out));
  // With PDL the kernels wait for the previous kernel after their first weight loads.
  const dim3 grid(static_cast<unsigned>(blocks));
  if constexpr (NORM) {  // no tensor-core form (the caller refuses mma)
    if (kernel == GemvKernel::fma)
      launch_gemv("gemv_vec_kernel", gemv_vec_kernel<N, XT, SWIGLU, true>, grid, dim3(gemv_threads<N>()), s, pdl, cv,
                  x, w, out, in, o, norm);
    else
      launch_gemv("gemv_scalar_kernel", gemv_scalar_kernel<N, XT, SWIGLU, true>, grid, dim3(gemv_threads<N>()), s,
                  pdl, cv, x, w, out, in, o, norm);
  } else if (kernel == GemvKernel::mma) {
    launch_gemv("gemv_mma_kernel", gemv_mma_kernel<N, XT, SWIGLU>, grid, dim3(kMmaWarps * 32), s, pdl, cv, x, w, out,
                in, o);
  } else if (kernel == GemvKernel::fma && narrow) {
    if constexpr (kCanNarrow)
      launch_gemv("gemv_vec_kernel", gemv_vec_kernel<N, XT, SWIGLU, false, 128>, grid, dim3(128), s, pdl, cv, x, w,
                  out, in, o, norm);
  } else if (kernel == GemvKernel::fma) {
    launch_gemv("gemv_vec_kernel", gemv_vec_kernel<N, XT, SWIGLU>, grid, dim3(gemv_threads<N>()), s, pdl, cv, x, w,
                out, in, o, norm);
  } else {
    launch_gemv("gemv_scalar_kernel", gemv_scalar_kernel<N, XT, SWIGLU>, grid, dim3(gemv_threads<N>()), s, pdl, cv, x,
                w, out, in, o, norm);
  }
}

// Whether the 16-byte kernels apply: in % 8 == 0 and W, x and the norm weight (null: none)
// 16-byte aligned.
bool gemv_vec_aligned(std::int64_t in, const void* w, const void* x, const void* norm_weight) {
  return in % 8 == 0 && reinterpret_cast<std::uintptr_t>(w) % 16 == 0 &&
         reinterpret_cast<std::uintptr_t>(x) % 16 == 0 && reinterpret_cast<std::uintptr_t>(norm_weight) % 16 == 0;
}
void check_norm_eps(float eps) {
  if (!(eps >= 0.0f))
    throw Error("CUDA engine: skinny_gemm with a fused RMSNorm and eps " + std::to_string(eps) + " (>= 0)");
}
void check_pdl(const GemvLaunch& how) {
  if (how.pdl && !skinny_gemm_pdl_supported())
    throw Error("CUDA engine: skinny_gemm with programmatic dependent launch needs compute capability 9.0 or later");
}

template <typename XT, bool SWIGLU, bool NORM = false>
GemvKernel gemv_launch(const XT* x, std::int64_t n, const bf16* w, std::int64_t out, std::int64_t in,
                       const GemvOut& o, cudaStream_t s, GemvLaunch how, const GemvNorm& norm = {}) {
  if (n < 1 || n > kSkinnyGemmMaxRows)
    throw Error("CUDA engine: skinny_gemm with " + std::to_string(n) + " rows (1.." +
                std::to_string(kSkinnyGemmMaxRows) + ")");
  if (NORM && n > kGemvFmaMaxRows)
    throw Error("CUDA engine: skinny_gemm with a fused RMSNorm takes at most " + std::to_string(kGemvFmaMaxRows) +
                " rows, not " + std::to_string(n));
  if (NORM && norm.weight == nullptr) throw Error("CUDA engine: skinny_gemm with a fused RMSNorm and no norm weight");
  if (NORM) check_norm_eps(norm.eps);
  if (NORM && how.kernel == GemvKernel::mma)
    throw Error("CUDA engine: skinny_gemm's tensor-core kernel has no fused RMSNorm (use fma or automatic)");
  if (out < 0 || in < 1) throw Error("CUDA engine: skinny_gemm with out " + std::to_string(out) + ", in " +
                                     std::to_string(in) + " (out >= 0, in >= 1)");
  if (w == nullptr || x == nullptr || (SWIGLU ? o.act == nullptr : o.y == nullptr))
    throw Error("CUDA engine: skinny_gemm with a null pointer");
  GemvKernel kernel = how.kernel;
  if (kernel != GemvKernel::automatic && kernel != GemvKernel::mma && kernel != GemvKernel::fma &&
      kernel != GemvKernel::scalar)
    throw Error("CUDA engine: skinny_gemm with an unknown kernel " + std::to_string(static_cast<int>(kernel)));
  if (kernel == GemvKernel::automatic)
    kernel = !NORM && n > kGemvFmaMaxRows && skinny_gemm_mma_supported() ? GemvKernel::mma : GemvKernel::fma;
  if (kernel == GemvKernel::mma && !skinny_gemm_mma_supported())
    throw Error("CUDA engine: skinny_gemm's tensor-core kernel needs compute capability 8.0 or later");
  check_pdl(how);
  // Both 16-byte kernels need in % 8 == 0 and 16-byte aligned W and x (and the norm weight);
  // otherwise the scalar one.
  if (!gemv_vec_aligned(in, w, x, NORM ? norm.weight : nullptr)) kernel = GemvKernel::scalar;
  if (out == 0) return kernel;
  switch (n) {
    case 1: gemv_launch_n<1, XT, SWIGLU, NORM>(kernel, how, out, x, w, in, o, norm, s); break;
    case 2: gemv_launch_n<2, XT, SWIGLU, NORM>(kernel, how, out, x, w, in, o, norm, s); break;
    case 3: gemv_launch_n<3, XT, SWIGLU, NORM>(kernel, how, out, x, w, in, o, norm, s); break;
    case 4: gemv_launch_n<4, XT, SWIGLU, NORM>(kernel, how, out, x, w, in, o, norm, s); break;
    default:
      if constexpr (!NORM) {
        switch (n) {
          case 5: gemv_launch_n<5, XT, SWIGLU, false>(kernel, how, out, x, w, in, o, norm, s); break;
          case 6: gemv_launch_n<6, XT, SWIGLU, false>(kernel, how, out, x, w, in, o, norm, s); break;
          case 7: gemv_launch_n<7, XT, SWIGLU, false>(kernel, how, out, x, w, in, o, norm, s); break;
          default: gemv_launch_n<8, XT, SWIGLU, false>(kernel, how, out, x, w, in, o, norm, s); break;
        }
      }
      break;
  }
  return kernel;
}

}  // namespace

namespace {
int device_major() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return 0;
  return major;
}
}  // namespace

bool skinny_gemm_mma_supported() { return device_major() >= 8; }
bool skinny_gemm_pdl_supported() { return device_major() >= 9; }

GemvKernel skinny_gemm(const bf16* x, std::int64_t n, const bf16* w, std::int64_t out, std::int64_t in, float* y,
                       bool accumulate, cudaStream_t s, GemvLaunch how, bf16* y_bf16) {
  GemvOut o;
  o.y = y;
  o.y_bf16 = y_bf16;
  o.accumulate = accumulate;
  return gemv_launch<bf16, false>(x, n, w, out, in, o, s, how);
}

GemvKernel skinny_gemm(const float* x, std::int64_t n, const bf16* w, std::int64_t out, std::int64_t in, float* y,
                       bool accumulate, cudaStream_t s, GemvLaunch how, bf16* y_bf16) {
  GemvOut o;
  o.y = y;
  o.y_bf16 = y_bf16;
  o.accumulate = accumulate;
  return gemv_launch<float, false>(x, n, w, out, in, o, s, how);
}

GemvKernel skinny_gemm_swiglu(const bf16* x, std::int64_t n, const bf16* w_gate_up, std::int64_t I,
                              std::int64_t in, bf16* act, cudaStream_t s, GemvLaunch how) {
  GemvOut o;
  o.act = act;
  return gemv_launch<bf16, true>(x, n, w_gate_up, I, in, o, s, how);
}

GemvKernel skinny_gemm_rms_norm(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps, const bf16* w,
                                std::int64_t out, std::int64_t in, float* y, cudaStream_t s, GemvLaunch how) {
  GemvOut o;
  o.y = y;
  return gemv_launch<bf16, false, true>(x, n, w, out, in, o, s, how, GemvNorm{norm_weight, eps});
}

namespace {
// f(std::integral_constant<int, n>{}) for n in [1, kGemvFmaMaxRows] (n > 4 as 4: the callers check
// n first): the row counts of the fused-norm kernels' instantiations.
template <typename F>
void with_fused_norm_rows(std::int64_t n, F f) {
  static_assert(kGemvFmaMaxRows == 4);
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

// Whether skinny_gemm_rms_norm_qkv_rope fuses for these rows and this model (before the pointers'
// alignment): n in [1, kGemvFmaMaxRows], no q/k-norm, head_dim a multiple of 8 in [8, 256], the
// FMA kernel (how.kernel automatic or fma).
bool qkv_rope_fusable(std::int64_t n, const QkvParams& p, GemvLaunch how) {
  return n >= 1 && n <= kGemvFmaMaxRows && p.q_norm == nullptr && p.k_norm == nullptr && p.head_dim >= 8 &&
         p.head_dim <= 256 && p.head_dim % 8 == 0 &&
         (how.kernel == GemvKernel::automatic || how.kernel == GemvKernel::fma);
}
}  // namespace

bool skinny_gemm_rms_norm_qkv_rope(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps, const bf16* w_qkv,
                                   std::int64_t in, float* qkv, const std::int64_t* row_pos,
                                   const std::int32_t* row_seq, const QkvParams& p, float* q, float* q_pre,
                                   cudaStream_t s, GemvLaunch how) {
  const std::int64_t out = static_cast<std::int64_t>(p.num_q_heads + 2 * p.num_kv_heads) * p.head_dim;
  if (!qkv_rope_fusable(n, p, how) || !gemv_vec_aligned(in, w_qkv, x, norm_weight) || p.num_q_heads < 1 ||
      p.num_kv_heads < 1) {
    skinny_gemm_rms_norm(x, n, norm_weight, eps, w_qkv, out, in, qkv, s, how);
    qkv_rope_append(qkv, n, row_pos, row_seq, p, q, q_pre, s);
    return false;
  }
  if (in < 1) throw Error("CUDA engine: q|k|v matmul with in " + std::to_string(in) + " (>= 1)");
  check_norm_eps(eps);
  if (x == nullptr || w_qkv == nullptr || norm_weight == nullptr || qkv == nullptr || row_pos == nullptr ||
      row_seq == nullptr || q == nullptr || p.inv_freq == nullptr || p.k_pages == nullptr || p.v_pages == nullptr)
    throw Error("CUDA engine: q|k|v matmul with RoPE given a null pointer");
  if (p.page_size < 1 || p.pages_per_seq < 1)
    throw Error("CUDA engine: q|k|v matmul with RoPE given page_size " + std::to_string(p.page_size) +
                " and pages_per_seq " + std::to_string(p.pages_per_seq) + " (both >= 1)");
  check_pdl(how);
  QkvRopeOut o;
  o.qkv = qkv;
  o.row_pos = row_pos;
  o.row_seq = row_seq;
  o.p = p;
  o.q = q;
  o.q_pre = q_pre;
  const GemvNorm norm{norm_weight, eps};
  const dim3 grid(static_cast<unsigned>(out / 8));
  with_fused_norm_rows(n, [&](auto rows) {
    constexpr int N = decltype(rows)::value;
    launch_gemv("gemv_qkv_rope_kernel", gemv_qkv_rope_kernel<N>, grid, dim3(gemv_threads<N>()), s, how.pdl,
                how.carveout, x, w_qkv, in, norm, o);
  });
  return true;
}

bool skinny_gemm_rms_norm_argmax(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps, const bf16* w,
                                 std::int64_t out, std::int64_t in, float* y, unsigned long long* best,
                                 std::int32_t* tokens, std::int32_t* feed, cudaStream_t s, GemvLaunch how) {
  const bool fusable = n >= 1 && n <= kGemvFmaMaxRows && out >= 1 && out <= 0x7fffffffLL &&
                       gemv_vec_aligned(in, w, x, norm_weight) &&
                       (how.kernel == GemvKernel::automatic || how.kernel == GemvKernel::fma);
  if (!fusable) {
    skinny_gemm_rms_norm(x, n, norm_weight, eps, w, out, in, y, s, how);
    argmax_rows(y, n, out, tokens, feed, s);
    return false;
  }
  check_norm_eps(eps);
  if (x == nullptr || w == nullptr || norm_weight == nullptr || y == nullptr || best == nullptr || tokens == nullptr)
    throw Error("CUDA engine: lm_head matmul with argmax given a null pointer");
  check_pdl(how);
  const GemvNorm norm{norm_weight, eps};
  const dim3 grid(static_cast<unsigned>((out + 7) / 8));
  with_fused_norm_rows(n, [&](auto rows) {
    constexpr int N = decltype(rows)::value;
    launch_gemv("gemv_logits_argmax_kernel", gemv_logits_argmax_kernel<N>, grid, dim3(gemv_threads<N>()), s,
                how.pdl, how.carveout, x, w, out, in, norm, y, best);
  });
  argmax_take_kernel<<<1, 32, 0, s>>>(best, n, tokens, feed);
  ENGINE_LAUNCHED("argmax_take_kernel");
  return true;
}

GemvKernel skinny_gemm_swiglu_rms_norm(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps,
                                       const bf16* w_gate_up, std::int64_t I, std::int64_t in, bf16* act,
                                       cudaStream_t s, GemvLaunch how) {
  GemvOut o;
  o.act = act;
  return gemv_launch<bf16, true, true>(x, n, w_gate_up, I, in, o, s, how, GemvNorm{norm_weight, eps});
}

}  // namespace macattn::engine::gpu
