// The GPU benchmark's hooks into a CudaSession (see cuda_bench.hpp).
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/cuda/cuda_bench.hpp"
#include "engine/cuda/cuda_gemv_check.hpp"
#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/cuda_session_impl.cuh"

namespace macattn::engine {

namespace {

using gpu::bf16;

__device__ void store(void* base, std::size_t i, int dtype, float v) {
  if (dtype == 2)
    static_cast<bf16*>(base)[i] = __float2bfloat16_rn(v);
  else if (dtype == 1)
    static_cast<__half*>(base)[i] = __float2half_rn(v);
  else
    static_cast<float*>(base)[i] = v;
}

struct RingFill {
  void* qring = nullptr;
  void* oring = nullptr;
  float* lring = nullptr;
  std::int64_t* position = nullptr;
  std::uint8_t* ready = nullptr;
  int dtype = 2;                           // 0 f32, 1 f16, 2 bf16
  const float* q_pre = nullptr;            // recorded pre-RoPE queries [L, B, Hq, D]
  const std::uint8_t* layer_on = nullptr;  // [L]: fill this layer
  std::int32_t L = 0, B = 0, W = 0, Hq = 0, Hkv = 0, D = 0, hit_groups = 0;
  std::int64_t t = 0;
  bool only_step_slot = false;  // restore: only slot t % W (the one a step overwrites)
  bool far = false;             // non-matching rows q_pre + 100 (else q_pre +/- sqrt(2))
};

// +1 or -1 from a hash of a ring element's index (the same on every fill, so a restore
// rebuilds the slot it overwrote exactly).
__device__ float hash_sign(std::uint64_t i) {
  i ^= i >> 33;
  i *= 0xff51afd7ed558ccdull;
  i ^= i >> 33;
  i *= 0xc4ceb9fe1a85ec53ull;
  i ^= i >> 33;
  return (i & 1) ? 1.0f : -1.0f;
}

// grid (L, B * Hq), block 256: the ring rows of positions [t - W, t) of each (layer, b, head).
__global__ void ring_fill_kernel(RingFill f) {
  const int l = blockIdx.x;
  if (!f.layer_on[l]) return;
  const int b = blockIdx.y / f.Hq, h = blockIdx.y % f.Hq;
  const bool hit_head = h / (f.Hq / f.Hkv) < f.hit_groups;
  const std::int64_t cell0 = ((static_cast<std::int64_t>(l) * f.B + b) * f.W) * f.Hq;  // slot 0, head 0
  const float* qp = f.q_pre + ((static_cast<std::int64_t>(l) * f.B + b) * f.Hq + h) * f.D;
  const std::int64_t base = f.t - f.W;
  const int s_begin = f.only_step_slot ? static_cast<int>(f.t % f.W) : 0;
  const int s_end = f.only_step_slot ? s_begin + 1 : f.W;
  for (int s = s_begin; s < s_end; ++s) {
    const std::int64_t p = base + ((s - base % f.W) % f.W + f.W) % f.W;  // the position in [t - W, t) of slot s
    const std::int64_t cell = cell0 + static_cast<std::int64_t>(s) * f.Hq + h;
    const bool valid = p >= 0;
    const bool match = hit_head && p == f.t - 1;
    for (int d = threadIdx.x; d < f.D; d += blockDim.x) {
      const float miss = f.far ? 100.0f : hash_sign(static_cast<std::uint64_t>(cell) * f.D + d) * 1.41421356f;
      const float qv = valid ? (match ? qp[d] : qp[d] + miss) : 0.0f;
      store(f.qring, cell * f.D + d, f.dtype, qv);
      store(f.oring, cell * f.D + d, f.dtype, valid ? 0.01f * static_cast<float>((d * 7 + s) % 13 - 6) : 0.0f);
    }
    if (threadIdx.x == 0) f.lring[cell] = valid ? 0.0f : -INFINITY;
  }
  if (h == 0 && threadIdx.x == 0) {
    f.position[static_cast<std::int64_t>(l) * f.B + b] = f.t;
    f.ready[static_cast<std::int64_t>(l) * f.B + b] = 1;
  }
}

int dtype_code(DType d) {
  return d == DType::bf16 ? 2 : (d == DType::f16 ? 1 : 0);
}

void check_tokens(const CudaSession::Impl& m, std::span<const std::int32_t> tokens, const char* fn) {
  if (static_cast<std::int32_t>(tokens.size()) != m.B)
    throw Error(std::string(fn) + ": " + std::to_string(tokens.size()) + " tokens for a batch of " +
                std::to_string(m.B));
  for (const std::int32_t t : tokens)
    if (t < 0 || t >= m.V) throw Error(std::string(fn) + ": token " + std::to_string(t) + " is out of range");
}

// Device state the force-hits procedure keeps alive for the restore kernel (owned by the
// session's bench_restore closure).
struct BenchState {
  gpu::DeviceBuffer q_pre_rec, layer_on;
};

}  // namespace

void cuda_bench_fill_random_kv(CudaSession& session, std::int64_t context, std::uint64_t seed) {
  CudaSession::Impl& m = session.impl();
  if (context < 1 || context > m.capacity)
    throw Error("cuda_bench_fill_random_kv: context " + std::to_string(context) + " is not in [1, capacity " +
                std::to_string(m.capacity) + "]");
  for (std::int32_t l = 0; l < m.L; ++l) {
    const std::int64_t n = static_cast<std::int64_t>(m.k_pages[l].bytes() / 2);
    gpu::fill_random_bf16(m.k_pages[l].as<bf16>(), n, seed * 7919 + 2 * l, 1.0f, m.stream);
    gpu::fill_random_bf16(m.v_pages[l].as<bf16>(), n, seed * 7919 + 2 * l + 1, 1.0f, m.stream);
  }
  std::fill(m.pos_host.begin(), m.pos_host.end(), context - 1);
  ENGINE_CUDA(cudaMemcpyAsync(m.pos.as<void>(), m.pos_host.data(), m.B * 8, cudaMemcpyHostToDevice, m.stream));
  for (std::int32_t l = 0; l < m.L; ++l)
    if (m.mac_layer[l]) macattn::cuda::mac_rings_reset(m.rings(l), m.stream);
  ENGINE_CUDA(cudaMemsetAsync(m.stats_acc.as<void>(), 0, m.stats_acc.bytes(), m.stream));
  m.bench_restore = nullptr;
  m.clear_graphs();
  m.sync();
}

void cuda_bench_force_hits(CudaSession& session, std::span<const std::int32_t> tokens, double group_hit_rate,
                           bool far_miss_rows) {
  CudaSession::Impl& m = session.impl();
  check_tokens(m, tokens, "cuda_bench_force_hits");
  if (m.options.session.attention.mode != AttentionMode::mac) throw Error("cuda_bench_force_hits: not a MAC session");
  if (!(group_hit_rate >= 0.0 && group_hit_rate <= 1.0))
    throw Error("cuda_bench_force_hits: hit rate " + std::to_string(group_hit_rate) + " is not in [0, 1]");
  for (std::int32_t b = 1; b < m.B; ++b)
    if (m.pos_host[b] != m.pos_host[0]) throw Error("cuda_bench_force_hits: the sequences are at different positions");
  auto st = std::make_shared<BenchState>();
  const std::size_t per_layer = static_cast<std::size_t>(m.B) * m.QD;
  st->q_pre_rec = gpu::DeviceBuffer(per_layer * m.L * 4);
  st->layer_on = gpu::DeviceBuffer(m.L);
  ENGINE_CUDA(cudaMemsetAsync(st->layer_on.as<void>(), 0, m.L, m.stream));
  ENGINE_CUDA(cudaMemcpyAsync(m.tokens.as<void>(), tokens.data(), m.B * 4, cudaMemcpyHostToDevice, m.stream));

  RingFill f;
  f.qring = m.qring.as<void>();
  f.oring = m.oring.as<void>();
  f.lring = m.lring.as<float>();
  f.position = m.ring_position.as<std::int64_t>();
  f.ready = m.ring_ready.as<std::uint8_t>();
  f.dtype = dtype_code(m.ring_dtype);
  f.q_pre = st->q_pre_rec.as<float>();
  f.layer_on = st->layer_on.as<std::uint8_t>();
  f.L = m.L;
  f.B = m.B;
  f.W = m.window;
  f.Hq = m.Hq;
  f.Hkv = m.Hkv;
  f.D = m.D;
  f.hit_groups = static_cast<std::int32_t>(std::lround(group_hit_rate * m.Hkv));
  f.t = m.pos_host[0];
  f.far = far_miss_rows;
  const dim3 grid(static_cast<unsigned>(m.L), static_cast<unsigned>(m.B * m.Hq));
  const std::uint8_t one = 1;
  for (std::int32_t l = 0; l < m.L; ++l) {
    if (!m.mac_layer[l]) continue;
    // The rings recorded so far (layers < l), whole, then one step: layer l's queries now
    // follow the MAC outputs of the layers before it.
    f.only_step_slot = false;
    ring_fill_kernel<<<grid, 256, 0, m.stream>>>(f);
    ENGINE_LAUNCHED("ring_fill_kernel");
    m.decode_step(gpu::StepKind::decode, false, false, false);
    ENGINE_CUDA(cudaMemcpyAsync(st->q_pre_rec.as<float>() + per_layer * l, m.q_pre_layers.as<float>() + per_layer * l,
                                per_layer * 4, cudaMemcpyDeviceToDevice, m.stream));
    ENGINE_CUDA(cudaMemcpyAsync(st->layer_on.as<std::uint8_t>() + l, &one, 1, cudaMemcpyHostToDevice, m.stream));
    m.sync();
  }
  f.only_step_slot = false;
  ring_fill_kernel<<<grid, 256, 0, m.stream>>>(f);
  ENGINE_LAUNCHED("ring_fill_kernel");
  ENGINE_CUDA(cudaMemsetAsync(m.stats_acc.as<void>(), 0, m.stats_acc.bytes(), m.stream));
  m.sync();
  f.only_step_slot = true;
  m.bench_restore = [f, grid, st](cudaStream_t s) {
    ring_fill_kernel<<<grid, 256, 0, s>>>(f);
    ENGINE_LAUNCHED("ring_fill_kernel (restore)");
  };
  m.clear_graphs();
}

namespace {

double time_graph_ms(cudaStream_t s, cudaGraphExec_t g, std::int32_t reps) {
  cudaEvent_t a = nullptr, b = nullptr;
  ENGINE_CUDA(cudaEventCreate(&a));
  ENGINE_CUDA(cudaEventCreate(&b));
  ENGINE_CUDA(cudaEventRecord(a, s));
  for (std::int32_t i = 0; i < reps; ++i) ENGINE_CUDA(cudaGraphLaunch(g, s));
  ENGINE_CUDA(cudaEventRecord(b, s));
  ENGINE_CUDA(cudaEventSynchronize(b));
  float ms = 0;
  ENGINE_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return static_cast<double>(ms) / reps;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

CudaBenchTiming cuda_bench_time_replays(CudaSession& session, std::span<const std::int32_t> tokens, std::int32_t reps,
                                        std::int32_t trials) {
  CudaSession::Impl& m = session.impl();
  check_tokens(m, tokens, "cuda_bench_time_replays");
  if (reps < 1 || trials < 1) throw Error("cuda_bench_time_replays: reps and trials must be >= 1");
  ENGINE_CUDA(cudaMemcpyAsync(m.tokens.as<void>(), tokens.data(), m.B * 4, cudaMemcpyHostToDevice, m.stream));
  m.run_decode_bench();  // captures restore + step (key 4) and runs it once
  m.sync();
  cudaGraphExec_t step = m.graphs.at(4);
  // The restore alone, timed the same way, is subtracted.
  cudaGraphExec_t restore = nullptr;
  if (m.bench_restore) {
    cudaGraph_t g = nullptr;
    ENGINE_CUDA(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
    m.bench_restore(m.stream);
    ENGINE_CUDA(cudaStreamEndCapture(m.stream, &g));
    const cudaError_t e = cudaGraphInstantiate(&restore, g, 0);
    cudaGraphDestroy(g);
    ENGINE_CUDA(e);
  }
  CudaBenchTiming r;
  r.reps = reps;
  r.trials = trials;
  time_graph_ms(m.stream, step, 3);  // warm-up
  std::vector<double> steps, restores;
  for (std::int32_t i = 0; i < trials; ++i) {
    steps.push_back(time_graph_ms(m.stream, step, reps));
    if (restore != nullptr) restores.push_back(time_graph_ms(m.stream, restore, reps));
  }
  if (restore != nullptr) cudaGraphExecDestroy(restore);
  r.restore_ms = restores.empty() ? 0.0 : median(restores);
  r.step_ms = median(steps) - r.restore_ms;
  // Stats of exactly one step, for the report.
  ENGINE_CUDA(cudaMemsetAsync(m.stats_acc.as<void>(), 0, m.stats_acc.bytes(), m.stream));
  ENGINE_CUDA(cudaGraphLaunch(step, m.stream));
  m.sync();
  for (LayerStats& s : m.layer_stats) s.decode_steps = 1;
  return r;
}

double cuda_bench_time_decode(CudaSession& session, std::span<const std::int32_t> tokens, std::int64_t warmup,
                              std::int64_t steps) {
  CudaSession::Impl& m = session.impl();
  check_tokens(m, tokens, "cuda_bench_time_decode");
  if (steps < 1 || warmup < 0) throw Error("cuda_bench_time_decode: steps must be >= 1 and warmup >= 0");
  for (std::int32_t b = 0; b < m.B; ++b)
    if (m.pos_host[b] + warmup + steps > m.capacity)
      throw Error("cuda_bench_time_decode: sequence " + std::to_string(b) + " would pass max_context " +
                  std::to_string(m.capacity));
  ENGINE_CUDA(cudaMemcpyAsync(m.tokens.as<void>(), tokens.data(), m.B * 4, cudaMemcpyHostToDevice, m.stream));
  for (std::int64_t i = 0; i < warmup; ++i) m.run_decode(true, true);
  m.sync();
  ENGINE_CUDA(cudaMemsetAsync(m.stats_acc.as<void>(), 0, m.stats_acc.bytes(), m.stream));
  cudaEvent_t a = nullptr, b = nullptr;
  ENGINE_CUDA(cudaEventCreate(&a));
  ENGINE_CUDA(cudaEventCreate(&b));
  ENGINE_CUDA(cudaEventRecord(a, m.stream));
  for (std::int64_t i = 0; i < steps; ++i) m.run_decode(true, true);
  ENGINE_CUDA(cudaEventRecord(b, m.stream));
  ENGINE_CUDA(cudaEventSynchronize(b));
  float ms = 0;
  ENGINE_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  for (auto& p : m.pos_host) p += warmup + steps;
  for (LayerStats& s : m.layer_stats) s.decode_steps = steps;
  m.timings.decode_tokens += (warmup + steps) * m.B;
  return static_cast<double>(ms) / static_cast<double>(steps);
}

// ---------------------------------------------------------------------------------------
// The skinny GEMM test hook (cuda_gemv_check.hpp)

namespace {
std::uint16_t host_bf16_bits(float f) {  // round to nearest even (NaN kept quiet), as __float2bfloat16_rn
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
// v rounded to bf16 in a new device buffer, starting `off` elements in (the test's misalignment).
gpu::DeviceBuffer upload_bf16_at(std::span<const float> v, std::size_t off) {
  std::vector<std::uint16_t> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = host_bf16_bits(v[i]);
  gpu::DeviceBuffer d((h.size() + off) * 2);
  ENGINE_CUDA(cudaMemcpy(d.as<bf16>() + off, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return d;
}
float host_bf16_value(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

bool cuda_gemv_check(const GemvCheck& c, std::span<const float> w, std::span<const float> x, std::vector<float>& y,
                     std::span<const float> norm_weight, std::vector<float>* y_bf16) {
  const std::int64_t rows = (c.swiglu ? 2 : 1) * c.out;
  if (c.n < 1 || c.out < 1 || c.in < 1 || c.misalign < 0 || c.misalign > 64)
    throw Error("cuda_gemv_check: bad shape or misalign");
  if (static_cast<std::int64_t>(w.size()) != rows * c.in || static_cast<std::int64_t>(x.size()) != c.n * c.in)
    throw Error("cuda_gemv_check: w or x has the wrong size");
  if (c.swiglu && (c.f32_input || c.accumulate)) throw Error("cuda_gemv_check: SwiGLU takes bf16 input, no accumulate");
  if (c.rms_norm && (c.accumulate || static_cast<std::int64_t>(norm_weight.size()) != c.in))
    throw Error("cuda_gemv_check: the fused RMSNorm needs a norm weight of `in` values and no accumulate");
  const std::size_t ny = static_cast<std::size_t>(c.n * c.out);
  if (c.accumulate && y.size() != ny) throw Error("cuda_gemv_check: y has the wrong size");
  if (y_bf16 != nullptr && (c.swiglu || c.rms_norm))
    throw Error("cuda_gemv_check: the bf16 copy of y is for the plain GEMM");
  y.resize(ny);
  const std::size_t off = static_cast<std::size_t>(c.misalign);

  const gpu::DeviceBuffer dw = upload_bf16_at(w, off);
  const bf16* wp = dw.as<bf16>() + off;
  gpu::DeviceBuffer dx, dy, dact, dg, dyb;
  if (c.rms_norm) dg = upload_bf16_at(norm_weight, off);
  if (c.f32_input) {
    dx = gpu::DeviceBuffer((x.size() + off) * 4);
    ENGINE_CUDA(cudaMemcpy(dx.as<float>() + off, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  } else {
    dx = upload_bf16_at(x, off);
  }
  const gpu::GemvKernel want =
      c.force_scalar ? gpu::GemvKernel::scalar : (c.fma ? gpu::GemvKernel::fma : gpu::GemvKernel::mma);
  gpu::GemvLaunch how;
  how.kernel = want;
  how.narrow = c.narrow;
  gpu::GemvKernel ran = gpu::GemvKernel::scalar;
  if (c.swiglu) {
    dact = gpu::DeviceBuffer(ny * 2);
    ENGINE_CUDA(cudaMemset(dact.as<void>(), 0xff, ny * 2));  // NaN: an unwritten output shows
    if (c.rms_norm)
      ran = gpu::skinny_gemm_swiglu_rms_norm(dx.as<bf16>() + off, c.n, dg.as<bf16>() + off, c.eps, wp, c.out, c.in,
                                             dact.as<bf16>(), nullptr, how);
    else
      ran = gpu::skinny_gemm_swiglu(dx.as<bf16>() + off, c.n, wp, c.out, c.in, dact.as<bf16>(), nullptr, how);
  } else {
    dy = gpu::DeviceBuffer(ny * 4);
    if (c.accumulate)
      ENGINE_CUDA(cudaMemcpy(dy.as<float>(), y.data(), ny * 4, cudaMemcpyHostToDevice));
    else
      ENGINE_CUDA(cudaMemset(dy.as<void>(), 0xff, ny * 4));  // NaN: an unwritten output shows
    if (y_bf16 != nullptr) {
      dyb = gpu::DeviceBuffer(ny * 2);
      ENGINE_CUDA(cudaMemset(dyb.as<void>(), 0xff, ny * 2));  // NaN: an unwritten output shows
    }
    bf16* yb = y_bf16 != nullptr ? dyb.as<bf16>() : nullptr;
    if (c.rms_norm)
      ran = gpu::skinny_gemm_rms_norm(dx.as<bf16>() + off, c.n, dg.as<bf16>() + off, c.eps, wp, c.out, c.in,
                                      dy.as<float>(), nullptr, how);
    else if (c.f32_input)
      ran = gpu::skinny_gemm(dx.as<float>() + off, c.n, wp, c.out, c.in, dy.as<float>(), c.accumulate, nullptr, how,
                             yb);
    else
      ran = gpu::skinny_gemm(dx.as<bf16>() + off, c.n, wp, c.out, c.in, dy.as<float>(), c.accumulate, nullptr, how,
                             yb);
  }
  ENGINE_CUDA(cudaDeviceSynchronize());
  if (c.swiglu) {
    std::vector<std::uint16_t> a(ny);
    ENGINE_CUDA(cudaMemcpy(a.data(), dact.as<void>(), ny * 2, cudaMemcpyDeviceToHost));
    for (std::size_t i = 0; i < ny; ++i) y[i] = host_bf16_value(a[i]);
  } else {
    ENGINE_CUDA(cudaMemcpy(y.data(), dy.as<void>(), ny * 4, cudaMemcpyDeviceToHost));
    if (y_bf16 != nullptr) {
      std::vector<std::uint16_t> b(ny);
      ENGINE_CUDA(cudaMemcpy(b.data(), dyb.as<void>(), ny * 2, cudaMemcpyDeviceToHost));
      y_bf16->resize(ny);
      for (std::size_t i = 0; i < ny; ++i) (*y_bf16)[i] = host_bf16_value(b[i]);
    }
  }
  if (ran != gpu::GemvKernel::scalar && ran != want) throw Error("cuda_gemv_check: another 16-byte kernel ran");
  return ran != gpu::GemvKernel::scalar;
}

namespace {
template <typename T>
gpu::DeviceBuffer upload_raw(std::span<const T> v) {
  gpu::DeviceBuffer d(std::max<std::size_t>(v.size(), 1) * sizeof(T));
  if (!v.empty()) ENGINE_CUDA(cudaMemcpy(d.as<void>(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
gpu::DeviceBuffer ones_bits(std::size_t bytes) {  // all bits set: NaN as fp32 and as bf16
  gpu::DeviceBuffer d(bytes);
  ENGINE_CUDA(cudaMemset(d.as<void>(), 0xff, bytes));
  return d;
}
std::vector<float> download_f32(const gpu::DeviceBuffer& d, std::size_t n) {
  std::vector<float> h(n);
  ENGINE_CUDA(cudaMemcpy(h.data(), d.as<void>(), n * 4, cudaMemcpyDeviceToHost));
  return h;
}
std::vector<float> download_bf16(const gpu::DeviceBuffer& d, std::size_t n) {
  std::vector<std::uint16_t> b(n);
  ENGINE_CUDA(cudaMemcpy(b.data(), d.as<void>(), n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> h(n);
  for (std::size_t i = 0; i < n; ++i) h[i] = host_bf16_value(b[i]);
  return h;
}
}  // namespace

QkvRopeResult cuda_qkv_rope_check(const QkvRopeCheck& c, std::span<const float> w, std::span<const float> x,
                                  std::span<const float> norm_weight, std::span<const float> bias,
                                  std::span<const float> inv_freq, std::span<const std::int64_t> pos,
                                  std::span<const std::int32_t> seq) {
  if (c.n < 1 || c.in < 1 || c.num_q_heads < 1 || c.num_kv_heads < 1 || c.head_dim < 2 || c.page_size < 1 ||
      c.pages_per_seq < 1 || c.num_seqs < 1 || c.misalign < 0 || c.misalign > 64)
    throw Error("cuda_qkv_rope_check: bad shape");
  const std::int64_t out = static_cast<std::int64_t>(c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim;
  const auto n = static_cast<std::size_t>(c.n);
  if (static_cast<std::int64_t>(w.size()) != out * c.in || static_cast<std::int64_t>(x.size()) != c.n * c.in ||
      static_cast<std::int64_t>(norm_weight.size()) != c.in ||
      (!bias.empty() && static_cast<std::int64_t>(bias.size()) != out) ||
      static_cast<std::int32_t>(inv_freq.size()) != c.head_dim / 2 || pos.size() != n || seq.size() != n)
    throw Error("cuda_qkv_rope_check: an input has the wrong size");
  for (std::size_t r = 0; r < n; ++r)
    if (pos[r] < 0 || pos[r] >= c.pages_per_seq * c.page_size || seq[r] < 0 || seq[r] >= c.num_seqs)
      throw Error("cuda_qkv_rope_check: row " + std::to_string(r) + " position or sequence out of range");
  const std::size_t off = static_cast<std::size_t>(c.misalign);
  const gpu::DeviceBuffer dw = upload_bf16_at(w, off), dx = upload_bf16_at(x, off);
  const gpu::DeviceBuffer dg = upload_bf16_at(norm_weight, off);
  const gpu::DeviceBuffer dbias = upload_raw(bias), dfreq = upload_raw(inv_freq), dpos = upload_raw(pos),
                          dseq = upload_raw(seq);
  const std::size_t qd = n * static_cast<std::size_t>(c.num_q_heads * c.head_dim);
  const std::size_t kv = static_cast<std::size_t>(c.num_seqs * c.pages_per_seq * c.page_size) *
                         static_cast<std::size_t>(c.num_kv_heads * c.head_dim);
  const std::size_t nqkv = n * static_cast<std::size_t>(out);
  gpu::DeviceBuffer dqkv = ones_bits(nqkv * 4), dq = ones_bits(qd * 4), dqpre = ones_bits(qd * 4),
                    dk = ones_bits(kv * 2), dv = ones_bits(kv * 2);
  gpu::QkvParams p;
  p.num_q_heads = c.num_q_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.bias = bias.empty() ? nullptr : dbias.as<float>();
  p.eps = c.eps;
  p.inv_freq = dfreq.as<float>();
  p.k_pages = dk.as<bf16>();
  p.v_pages = dv.as<bf16>();
  p.page_size = c.page_size;
  p.pages_per_seq = c.pages_per_seq;
  gpu::GemvLaunch how;
  how.kernel = gpu::GemvKernel::fma;
  const bf16* xp = dx.as<bf16>() + off;
  const bf16* wp = dw.as<bf16>() + off;
  const bf16* gp = dg.as<bf16>() + off;
  QkvRopeResult res;
  if (c.fused) {
    res.fused = gpu::skinny_gemm_rms_norm_qkv_rope(xp, c.n, gp, c.eps, wp, c.in, dqkv.as<float>(),
                                                   dpos.as<std::int64_t>(), dseq.as<std::int32_t>(), p, dq.as<float>(),
                                                   dqpre.as<float>(), nullptr, how);
  } else {
    gpu::skinny_gemm_rms_norm(xp, c.n, gp, c.eps, wp, out, c.in, dqkv.as<float>(), nullptr, how);
    gpu::qkv_rope_append(dqkv.as<float>(), c.n, dpos.as<std::int64_t>(), dseq.as<std::int32_t>(), p, dq.as<float>(),
                         dqpre.as<float>(), nullptr);
  }
  ENGINE_CUDA(cudaDeviceSynchronize());
  res.qkv = download_f32(dqkv, nqkv);
  res.q = download_f32(dq, qd);
  res.q_pre = download_f32(dqpre, qd);
  res.k_pages = download_bf16(dk, kv);
  res.v_pages = download_bf16(dv, kv);
  return res;
}

ArgmaxCheckResult cuda_argmax_check(std::int64_t n, std::int64_t out, std::int64_t in, std::span<const float> w,
                                    std::span<const float> x, std::span<const float> norm_weight, float eps,
                                    std::int64_t misalign) {
  if (n < 1 || n > 32 || out < 1 || in < 1 || misalign < 0 || misalign > 64)
    throw Error("cuda_argmax_check: bad shape or misalign");
  if (static_cast<std::int64_t>(w.size()) != out * in || static_cast<std::int64_t>(x.size()) != n * in ||
      static_cast<std::int64_t>(norm_weight.size()) != in)
    throw Error("cuda_argmax_check: an input has the wrong size");
  const std::size_t off = static_cast<std::size_t>(misalign), ny = static_cast<std::size_t>(n * out);
  const auto nn = static_cast<std::size_t>(n);
  const gpu::DeviceBuffer dw = upload_bf16_at(w, off), dx = upload_bf16_at(x, off);
  const gpu::DeviceBuffer dg = upload_bf16_at(norm_weight, off);
  gpu::DeviceBuffer dy = ones_bits(ny * 4), dy2 = ones_bits(ny * 4), dbest(nn * 8), dtok = ones_bits(nn * 4),
                    dtok2 = ones_bits(nn * 4), dtok3 = ones_bits(nn * 4), dfeed = ones_bits(nn * 4);
  ENGINE_CUDA(cudaMemset(dbest.as<void>(), 0, nn * 8));
  gpu::GemvLaunch how;
  how.kernel = gpu::GemvKernel::fma;
  const bf16* xp = dx.as<bf16>() + off;
  const bf16* wp = dw.as<bf16>() + off;
  const bf16* gp = dg.as<bf16>() + off;
  auto* best = dbest.as<unsigned long long>();
  ArgmaxCheckResult res;
  res.fused = gpu::skinny_gemm_rms_norm_argmax(xp, n, gp, eps, wp, out, in, dy.as<float>(), best,
                                               dtok.as<std::int32_t>(), dfeed.as<std::int32_t>(), nullptr, how);
  gpu::skinny_gemm_rms_norm_argmax(xp, n, gp, eps, wp, out, in, dy.as<float>(), best, dtok2.as<std::int32_t>(),
                                   nullptr, nullptr, how);
  gpu::skinny_gemm_rms_norm(xp, n, gp, eps, wp, out, in, dy2.as<float>(), nullptr, how);
  gpu::argmax_rows(dy2.as<float>(), n, out, dtok3.as<std::int32_t>(), nullptr, nullptr);
  ENGINE_CUDA(cudaDeviceSynchronize());
  res.logits = download_f32(dy, ny);
  res.logits_separate = download_f32(dy2, ny);
  const auto ints = [&](const gpu::DeviceBuffer& d) {
    std::vector<std::int32_t> h(nn);
    ENGINE_CUDA(cudaMemcpy(h.data(), d.as<void>(), nn * 4, cudaMemcpyDeviceToHost));
    return h;
  };
  res.tokens = ints(dtok);
  res.tokens_again = ints(dtok2);
  res.tokens_separate = ints(dtok3);
  res.feed = ints(dfeed);
  return res;
}

}  // namespace macattn::engine
