// tools/macattn/bench_cuda.cu: `macattn bench --backend cuda`, the decode benchmark on the GPU.
//
// Per (shape, batch, context): a paged bf16/f16 K/V cache (page size 16, NHD, pages in order by
// default: --page-size, --kv-layout, --page-order) with random values, copied R times so that
// the inputs of consecutive timed runs rotate through more than 4x the L2 cache; exact decode
// timed by CUDA-graph replay (the headline) and eagerly; then MAC at each hit rate and miss
// pattern. Hit rates are forced honestly: the rings are filled so that
// the real device scan finds the intended matches (a hit head's ring holds its own q_pre at
// position t-1, every other row lies far away), and the decisions the scan made are counted
// back from the per-head stats. A MAC step writes its ring and advances its position, so each
// timed MAC replay is a graph [restore slot t mod W and the position, MAC step]; the restore
// graph alone is timed too and its median subtracted (both are reported).
// Before timing: exact decode is checked against a naive fp32 kernel, MAC at hit rate 0 against
// exact decode. The streaming-read bandwidth of the GPU is measured in the same run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "git_commit.hpp"
#include "macattn/cuda.hpp"

namespace macattn_tool {
namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

struct DevBuf {
  void* p = nullptr;
  std::size_t n = 0;
  explicit DevBuf(std::size_t bytes = 0) : n(bytes) {
    if (bytes) ck(cudaMalloc(&p, bytes), "cudaMalloc");
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  template <typename T> T* as() const { return static_cast<T*>(p); }
};

__device__ __forceinline__ float hash_unit(unsigned long long i, unsigned long long seed) {
  unsigned long long x = i * 0x9E3779B97F4A7C15ull + seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f;  // uniform [-1, 1)
}

__global__ void fill_kernel(void* p, int dtype, std::size_t n, unsigned long long seed, float scale) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const float v = hash_unit(i, seed) * scale;
    if (dtype == 2) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else if (dtype == 1) static_cast<__half*>(p)[i] = __float2half_rn(v);
    else static_cast<float*>(p)[i] = v;
  }
}

__global__ void stream_read_kernel(const uint4* p, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads
}

__device__ float to_f(const void* p, int dtype, std::size_t i) {
  if (dtype == 2) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  if (dtype == 1) return __half2float(static_cast<const __half*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

/// n elements of a device buffer of dtype t, as floats on the host.
std::vector<float> host_floats(const DevBuf& buf, std::size_t n, macattn::DType t) {
  std::vector<unsigned char> raw(n * macattn::dtype_size(t));
  ck(cudaMemcpy(raw.data(), buf.p, raw.size(), cudaMemcpyDeviceToHost), "copy");
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = macattn::load_as_float(raw.data(), t, i);
  return v;
}

/// Naive exact attention, one block of D threads per (b, h), fp32, through the page table
/// (sequence b's pages are indices[b * pages_per_seq ...]; NHD or HND): an independent check of
/// the timed kernel.
__global__ void naive_attention_kernel(const void* k, const void* v, int kv_dtype, const void* q, int q_dtype, int hq,
                                       int hkv, int d, long long len, const std::int32_t* indices,
                                       long long pages_per_seq, int page_size, int hnd, float scale, float* out) {
  const int b = blockIdx.x / hq, h = blockIdx.x % hq, g = h / (hq / hkv), i = threadIdx.x;
  __shared__ float part[8];
  __shared__ float score;
  const float qi = to_f(q, q_dtype, (std::size_t(b) * hq + h) * d + i);
  float m = -INFINITY, l = 0.f, o = 0.f;
  for (long long j = 0; j < len; ++j) {
    const std::size_t page = static_cast<std::size_t>(indices[b * pages_per_seq + j / page_size]);
    const std::size_t in = static_cast<std::size_t>(j % page_size);
    const std::size_t row = (hnd ? (page * hkv + g) * page_size + in : (page * page_size + in) * hkv + g) * d;
    float x = qi * to_f(k, kv_dtype, row + i);
    for (int off = 16; off >= 1; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    if ((i & 31) == 0) part[i >> 5] = x;
    __syncthreads();
    if (i == 0) {
      float s = 0.f;
      for (int w = 0; w < d / 32; ++w) s += part[w];
      score = s * scale;
    }
    __syncthreads();
    const float s = score;
    const float nm = fmaxf(m, s);
    const float c = expf(m - nm), p = expf(s - nm);
    l = l * c + p;
    o = o * c + p * to_f(v, kv_dtype, row + i);
    m = nm;
    __syncthreads();
  }
  out[(std::size_t(b) * hq + h) * d + i] = o / l;
}

/// Ring contents that make the real scan decide as `hit` says: row (b, slot, h) is q_pre(b,h)
/// exactly for a hit head's position t-1. Every other row is either near (far = 0: q_pre +/-
/// sqrt(2) in every dim, signs from a hash of the position: distance 2 per dim, as between two
/// unrelated unit-variance queries (the CPU bench's random rows) but exactly, so never an
/// accidental hit; at tau 0.45 (threshold 0.605 per dim) a row passes the scan's 32-dim bound
/// at D = 128 and fails after 64 dims) or far (far = 1: q_pre + 3 in every dim, distance 9D:
/// every row falls at the first bound; the construction of the results before 2026-11-29's
/// fourth session). The measured hit rate is counted back from the scan's own decisions. lring
/// finite, oring a fixed pattern. slot_only >= 0 rebuilds only that slot (the restore before each
/// timed MAC replay); the signs hash the position, so a rebuilt slot equals the first build.
__global__ void build_rings_kernel(macattn::cuda::MacRingsDevice r, const void* q_pre, int q_dtype,
                                   const unsigned char* hit, long long t, int slot_only, int far) {
  const int w = r.window, hq = r.num_q_heads, d = r.head_dim;
  const std::size_t slots = slot_only >= 0 ? 1 : std::size_t(w);
  const std::size_t n = std::size_t(r.batch_size) * slots * hq * d;
  for (std::size_t e = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; e < n; e += std::size_t(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(e % d);
    const int h = static_cast<int>((e / d) % hq);
    const std::size_t rest = e / (std::size_t(d) * hq);
    const int slot = slot_only >= 0 ? slot_only : static_cast<int>(rest % slots);
    const int b = static_cast<int>(rest / slots);
    long long p = t - w + ((slot - (t - w)) % w + w) % w;  // the position in [t-W, t) of this slot
    const std::size_t row = (std::size_t(b) * w + slot) * hq + h;
    const float qv = to_f(q_pre, q_dtype, (std::size_t(b) * hq + h) * d + i);
    const bool same = hit[std::size_t(b) * hq + h] && p == t - 1;
    const float sign = hash_unit(row * d + i, 0x5eedull) < 0.f ? -1.f : 1.f;
    const float qr = same ? qv : far ? qv + 3.0f : qv + sign * 1.41421356f;
    const float orow = 0.01f * static_cast<float>((i * 7 + h) % 13) - 0.06f;
    if (r.ring_dtype == macattn::DType::bf16) {
      static_cast<__nv_bfloat16*>(r.qring)[row * d + i] = __float2bfloat16_rn(qr);
      static_cast<__nv_bfloat16*>(r.oring)[row * d + i] = __float2bfloat16_rn(orow);
    } else if (r.ring_dtype == macattn::DType::f16) {
      static_cast<__half*>(r.qring)[row * d + i] = __float2half_rn(qr);
      static_cast<__half*>(r.oring)[row * d + i] = __float2half_rn(orow);
    } else {
      static_cast<float*>(r.qring)[row * d + i] = qr;
      static_cast<float*>(r.oring)[row * d + i] = orow;
    }
    if (i == 0) r.lring[row] = 2.0f;
    if (i == 0 && h == 0 && slot == (slot_only >= 0 ? slot_only : 0)) {
      r.position[b] = t;
      r.ready[b] = 1;
    }
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

/// Times `launch(rep)` with CUDA events per run (after 3 warm-up runs); median microseconds.
/// `before` runs before each run, outside the events (the cache flush of --flush on).
template <typename F, typename B>
double time_us(cudaStream_t s, int min_reps, double min_seconds, F&& launch, B&& before) {
  for (int i = 0; i < 3; ++i) {
    before();
    launch(i);
  }
  ck(cudaStreamSynchronize(s), "warm-up");
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (int rep = 0;; ++rep) {
    before();
    ck(cudaEventRecord(e0, s), "record");
    launch(rep);
    ck(cudaEventRecord(e1, s), "record");
    ck(cudaEventSynchronize(e1), "sync");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    times.push_back(ms * 1000.0);
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep + 1 >= min_reps && el >= min_seconds) break;
    if (rep > 20000) break;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return median(times);
}
template <typename F>
double time_us(cudaStream_t s, int min_reps, double min_seconds, F&& launch) {
  return time_us(s, min_reps, min_seconds, launch, [] {});
}

template <typename F>
cudaGraphExec_t capture(cudaStream_t s, F&& body) {
  cudaGraph_t g;
  ck(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  body();
  ck(cudaStreamEndCapture(s, &g), "end capture");
  cudaGraphExec_t e;
  ck(cudaGraphInstantiate(&e, g, 0), "instantiate");
  cudaGraphDestroy(g);
  return e;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e += (a[i] - b[i]) * double(a[i] - b[i]);
    r += double(b[i]) * b[i];
  }
  return std::isfinite(e) ? std::sqrt(e / std::max(r, 1e-30)) : INFINITY;
}

struct CudaRow {
  std::string shape;
  int batch;
  long long context;
  double hit_rate;
  std::string pattern;
  double measured_hit_rate, all_hit_groups;
  double exact_graph_us, exact_eager_us, exact_gbps, exact_bw_fraction;
  double mac_graph_us, mac_eager_us, restore_us, speedup;
  double check_rel_l2;
  int splits, copies;
  // --graph-steps N > 1: N consecutive layer-steps (rotating input copies) in one graph, per step.
  double exact_steps_us = 0, mac_steps_us = 0, restore_steps_us = 0, speedup_steps = 0;
  std::string dtype;  // K/V dtype
};

}  // namespace

int run_cuda_bench(const BenchOptions& o) {
  namespace mc = macattn::cuda;
  if (!mc::available()) {
    std::fprintf(stderr, "macattn bench --backend cuda: %s\n", mc::device_description().c_str());
    return 1;
  }
  cudaStream_t s;
  ck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "properties");
  const std::size_t l2 = static_cast<std::size_t>(prop.l2CacheSize);

  // Streaming-read bandwidth: 4 GiB read with 16-byte loads, median of 20.
  double stream_gbps = 0;
  {
    const std::size_t bytes = std::size_t(4) << 30;
    DevBuf buf(bytes), sink(4);
    fill_kernel<<<1024, 256, 0, s>>>(buf.p, 0, bytes / 4, 7, 1.f);
    const double us = time_us(s, 20, 0.0, [&](int) {
      stream_read_kernel<<<prop.multiProcessorCount * 8, 512, 0, s>>>(buf.as<uint4>(), bytes / 16, sink.as<unsigned>());
    });
    stream_gbps = bytes / us / 1e3;
  }
  std::printf("device: %s\nstreaming read: %.0f GB/s\n", mc::device_description().c_str(), stream_gbps);

  // --flush on (the default): before every timed run, outside its events, read a buffer of 4x
  // the L2 cache, so that no run finds the previous run's data in L2. Rotating input copies
  // alone does not do it for MAC: at long contexts there is one copy, and an all-hit step
  // touches only its rings, tail and page table, which would stay in L2 from run to run (in a
  // model the other layers evict them between two steps of a layer).
  const std::size_t flush_bytes = (4 * l2 + 15) / 16 * 16;
  DevBuf flush_buf(o.flush ? flush_bytes : 16), flush_sink(4);
  if (o.flush) fill_kernel<<<1024, 256, 0, s>>>(flush_buf.p, 0, flush_bytes / 4, 3, 1.f);
  auto flush = [&] {
    if (o.flush)
      stream_read_kernel<<<prop.multiProcessorCount * 8, 512, 0, s>>>(flush_buf.as<uint4>(), flush_bytes / 16,
                                                                       flush_sink.as<unsigned>());
  };

  std::vector<CudaRow> rows;
  std::mt19937_64 rng(o.seed);
  const macattn::DType qdt = o.query_dtype;  // q_post, q_pre and out (--queries)
  const int qcode = static_cast<int>(qdt);
  for (const BenchShape& bs : o.shapes)
    for (macattn::DType dt : o.dtypes)
      for (std::int32_t batch : o.batches)
        for (std::int64_t ctx : o.contexts) {
          const macattn::AttentionShape& sh = bs.shape;
          const int hq = sh.num_q_heads, hkv = sh.num_kv_heads, d = sh.head_dim, page = o.page_size;
          const long long pages_per_seq = (ctx + page - 1) / page;
          const std::size_t kv_elems = std::size_t(batch) * pages_per_seq * page * hkv * d;
          const std::size_t kv_bytes = kv_elems * 2;
          const int copies = static_cast<int>(std::clamp<std::size_t>((4 * l2 + 2 * kv_bytes - 1) / (2 * kv_bytes), 1, 8));
          // Page table: sequence b owns pages [b*pages, (b+1)*pages) in order (as a fresh pool hands them out),
          // or (--page-order shuffled) the pool's pages in a random order.
          std::vector<std::int32_t> indptr(batch + 1), indices(std::size_t(batch) * pages_per_seq), last(batch);
          for (int b = 0; b <= batch; ++b) indptr[b] = static_cast<std::int32_t>(b * pages_per_seq);
          for (std::size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<std::int32_t>(i);
          if (o.shuffled_pages) std::shuffle(indices.begin(), indices.end(), rng);
          for (int b = 0; b < batch; ++b) last[b] = static_cast<std::int32_t>(ctx - (pages_per_seq - 1) * page);
          DevBuf dindptr(indptr.size() * 4), dindices(indices.size() * 4), dlast(last.size() * 4);
          ck(cudaMemcpy(dindptr.p, indptr.data(), dindptr.n, cudaMemcpyHostToDevice), "copy");
          ck(cudaMemcpy(dindices.p, indices.data(), dindices.n, cudaMemcpyHostToDevice), "copy");
          ck(cudaMemcpy(dlast.p, last.data(), dlast.n, cudaMemcpyHostToDevice), "copy");
          std::vector<DevBuf> ks, vs;
          std::vector<mc::PagedKVDevice> kvs;
          for (int c = 0; c < copies; ++c) {
            ks.emplace_back(kv_bytes);
            vs.emplace_back(kv_bytes);
            fill_kernel<<<2048, 256, 0, s>>>(ks.back().p, static_cast<int>(dt), kv_elems, rng(), 1.f);
            fill_kernel<<<2048, 256, 0, s>>>(vs.back().p, static_cast<int>(dt), kv_elems, rng(), 1.f);
            mc::PagedKVDevice kv;
            kv.k_pages = ks.back().p;
            kv.v_pages = vs.back().p;
            kv.num_pages = static_cast<std::int64_t>(indices.size());
            kv.page_size = page;
            kv.layout = o.hnd ? macattn::KVLayout::HND : macattn::KVLayout::NHD;
            kv.indptr = dindptr.as<std::int32_t>();
            kv.indices = dindices.as<std::int32_t>();
            kv.last_page_len = dlast.as<std::int32_t>();
            kv.batch_size = batch;
            kv.num_kv_heads = hkv;
            kv.head_dim = d;
            kv.dtype = dt;
            kv.max_seq_len = ctx;
            kvs.push_back(kv);
          }
          const std::size_t qn = std::size_t(batch) * hq * d;
          const std::size_t qes = macattn::dtype_size(qdt);
          DevBuf qpost(qn * qes), qpre(qn * qes), out(qn * qes), out_exact(qn * qes), naive(qn * 4);
          fill_kernel<<<256, 256, 0, s>>>(qpost.p, qcode, qn, rng(), 2.f);
          fill_kernel<<<256, 256, 0, s>>>(qpre.p, qcode, qn, rng(), 2.f);
          mc::Workspace ws;
          ws.reserve(sh, batch, ctx, o.config.window);
          const int splits = mc::planned_splits(sh, batch, ctx);

          // Check exact decode against the naive kernel (copy 0), then time it.
          mc::exact_decode(sh, kvs[0], {qpost.p, qdt}, {out_exact.p, qdt}, nullptr, ws, s);
          naive_attention_kernel<<<batch * hq, d, 0, s>>>(ks[0].p, vs[0].p, static_cast<int>(dt), qpost.p, qcode, hq, hkv, d,
                                                          ctx, dindices.as<std::int32_t>(), pages_per_seq, page,
                                                          o.hnd ? 1 : 0, sh.scale(), naive.as<float>());
          ck(cudaStreamSynchronize(s), "check");
          std::vector<float> got = host_floats(out_exact, qn, qdt), want(qn);
          ck(cudaMemcpy(want.data(), naive.p, qn * 4, cudaMemcpyDeviceToHost), "copy");
          const double exact_err = rel_l2(got, want);
          if (!(exact_err < 2e-2)) {
            std::fprintf(stderr, "exact decode check FAILED: relative L2 %.3g vs the naive kernel\n", exact_err);
            return 1;
          }
          std::vector<cudaGraphExec_t> exact_graphs;
          for (int c = 0; c < copies; ++c)
            exact_graphs.push_back(capture(s, [&] {
              mc::exact_decode(sh, kvs[c], {qpost.p, qdt}, {out.p, qdt}, nullptr, ws, s);
            }));
          const double exact_graph = time_us(s, o.min_reps, o.min_seconds,
                                             [&](int r) { ck(cudaGraphLaunch(exact_graphs[r % copies], s), "launch"); }, flush);
          const double exact_eager = time_us(s, o.min_reps, o.min_seconds, [&](int r) {
            mc::exact_decode(sh, kvs[r % copies], {qpost.p, qdt}, {out.p, qdt}, nullptr,
                             ws, s);
          }, flush);
          for (auto g : exact_graphs) cudaGraphExecDestroy(g);
          // N layer-steps per graph, as a model's decode graph runs them (one launch per token for
          // all layers): the per-graph launch latency is paid once per N steps.
          const int steps = o.graph_steps;
          double exact_steps = 0;
          if (steps > 1) {
            std::vector<cudaGraphExec_t> gs;
            for (int c = 0; c < copies; ++c)
              gs.push_back(capture(s, [&] {
                for (int k = 0; k < steps; ++k)
                  mc::exact_decode(sh, kvs[(c + k) % copies], {qpost.p, qdt},
                                   {out.p, qdt}, nullptr, ws, s);
              }));
            exact_steps = time_us(s, o.min_reps, o.min_seconds,
                                  [&](int r) { ck(cudaGraphLaunch(gs[r % copies], s), "launch"); }, flush) / steps;
            for (auto g : gs) cudaGraphExecDestroy(g);
          }
          const double gbps = static_cast<double>(kv_bytes) * 2 / exact_graph / 1e3;
          std::printf("%-10s %s batch %3d ctx %7lld: exact %9.1f us graph, %9.1f us eager, %6.0f GB/s (%.0f%% of stream), "
                      "%d splits, %d copies, check %.1e\n",
                      bs.name.c_str(), macattn::dtype_name(dt), batch, static_cast<long long>(ctx), exact_graph,
                      exact_eager, gbps, 100 * gbps / stream_gbps, splits, copies, exact_err);
          std::fflush(stdout);
          CudaRow base{bs.name, batch, static_cast<long long>(ctx), -1, "-", 0, 0, exact_graph, exact_eager, gbps,
                       gbps / stream_gbps, 0, 0, 0, 0, exact_err, splits, copies};
          base.exact_steps_us = exact_steps;
          base.dtype = macattn::dtype_name(dt);
          rows.push_back(base);

          // MAC rings, one set per copy.
          const std::size_t ring_rows = std::size_t(batch) * o.config.window * hq;
          const std::size_t rs = macattn::dtype_size(o.ring_dtype);
          std::vector<DevBuf> rq, ro, rl, rp, rr;
          std::vector<mc::MacRingsDevice> rings;
          for (int c = 0; c < copies; ++c) {
            rq.emplace_back(ring_rows * d * rs);
            ro.emplace_back(ring_rows * d * rs);
            rl.emplace_back(ring_rows * 4);
            rp.emplace_back(std::size_t(batch) * 8);
            rr.emplace_back(std::size_t(batch));
            rings.push_back({rq.back().p, ro.back().p, rl.back().as<float>(), rp.back().as<std::int64_t>(),
                             rr.back().as<std::uint8_t>(), o.ring_dtype, o.config.window, hq, d, batch});
          }
          DevBuf dhit(std::size_t(batch) * hq), dstats(std::size_t(batch) * hq * sizeof(macattn::HeadStats));
          const long long t = ctx - 1;
          const int tslot = static_cast<int>(t % o.config.window);
          for (MissPattern pat : o.patterns)
            for (double hr : o.hit_rates) {
              if ((hr == 0.0 || hr == 1.0) && pat != o.patterns.front()) continue;  // the same for both patterns
              // Which heads hit: packed = whole groups miss; independent = a random subset of heads.
              const int heads = batch * hq, groups = batch * hkv, gs = hq / hkv;
              std::vector<unsigned char> hit(heads, 1);
              if (pat == MissPattern::packed) {
                const int miss_groups = static_cast<int>(std::lround((1 - hr) * groups));
                std::vector<int> gi(groups);
                for (int i = 0; i < groups; ++i) gi[i] = i;
                std::shuffle(gi.begin(), gi.end(), rng);
                for (int i = 0; i < miss_groups; ++i)
                  for (int r = 0; r < gs; ++r) hit[gi[i] * gs + r] = 0;
              } else {
                const int misses = static_cast<int>(std::lround((1 - hr) * heads));
                std::vector<int> hi(heads);
                for (int i = 0; i < heads; ++i) hi[i] = i;
                std::shuffle(hi.begin(), hi.end(), rng);
                for (int i = 0; i < misses; ++i) hit[hi[i]] = 0;
              }
              ck(cudaMemcpy(dhit.p, hit.data(), hit.size(), cudaMemcpyHostToDevice), "copy");
              for (int c = 0; c < copies; ++c)
                build_rings_kernel<<<1024, 256, 0, s>>>(rings[c], qpre.p, qcode, dhit.as<unsigned char>(), t, -1,
                                                        o.far_miss_rows ? 1 : 0);
              // One eager step with stats: the decisions the real scan made.
              mc::mac_decode(sh, o.config, kvs[0], {qpost.p, qdt}, {qpre.p, qdt},
                             rings[0], {out.p, qdt}, nullptr, dstats.as<macattn::HeadStats>(), ws, s);
              ck(cudaStreamSynchronize(s), "mac step");
              std::vector<macattn::HeadStats> st(heads);
              ck(cudaMemcpy(st.data(), dstats.p, st.size() * sizeof(macattn::HeadStats), cudaMemcpyDeviceToHost), "copy");
              int nh = 0, all_hit = 0;
              for (int g = 0; g < groups; ++g) {
                int gh = 0;
                for (int r = 0; r < gs; ++r) gh += st[g * gs + r].hit;
                nh += gh;
                all_hit += gh == gs;
              }
              double check = -1;
              if (hr == 0.0) {  // all miss: MAC must equal exact decode
                const std::vector<float> m = host_floats(out, qn, qdt);
                check = rel_l2(m, got);
                if (!(check < 1e-2)) {
                  std::fprintf(stderr, "MAC at hit rate 0 differs from exact decode: relative L2 %.3g\n", check);
                  return 1;
                }
              }
              // Per-head stats in the timed steps only with --head-stats on, as the engine's decode steps
              // write them: without the best row of a miss, so the scan still drops rows.
              macattn::HeadStats* timed_stats = o.head_stats ? dstats.as<macattn::HeadStats>() : nullptr;
              macattn::MacConfig timed_config = o.config;
              if (o.head_stats) timed_config.report_miss_matches = false;
              std::vector<cudaGraphExec_t> mac_graphs, restore_graphs;
              auto restore = [&](int c) {
                build_rings_kernel<<<64, 256, 0, s>>>(rings[c], qpre.p, qcode, dhit.as<unsigned char>(), t, tslot,
                                                      o.far_miss_rows ? 1 : 0);
              };
              for (int c = 0; c < copies; ++c) {
                restore(c);
                mac_graphs.push_back(capture(s, [&] {
                  restore(c);
                  mc::mac_decode(sh, timed_config, kvs[c], {qpost.p, qdt}, {qpre.p, qdt},
                                 rings[c], {out.p, qdt}, nullptr, timed_stats, ws, s);
                }));
                restore_graphs.push_back(capture(s, [&] { restore(c); }));
              }
              const double mac_graph = time_us(s, o.min_reps, o.min_seconds,
                                               [&](int r) { ck(cudaGraphLaunch(mac_graphs[r % copies], s), "launch"); }, flush);
              const double rest = time_us(s, o.min_reps, std::min(o.min_seconds, 0.2),
                                          [&](int r) { ck(cudaGraphLaunch(restore_graphs[r % copies], s), "launch"); }, flush);
              const double mac_eager = time_us(s, o.min_reps, o.min_seconds, [&](int r) {
                restore(r % copies);
                mc::mac_decode(sh, timed_config, kvs[r % copies], {qpost.p, qdt},
                               {qpre.p, qdt}, rings[r % copies], {out.p, qdt}, nullptr,
                               timed_stats, ws, s);
              }, flush);
              for (auto g : mac_graphs) cudaGraphExecDestroy(g);
              for (auto g : restore_graphs) cudaGraphExecDestroy(g);
              double mac_steps = 0, rest_steps = 0;
              if (steps > 1) {  // N x [restore, MAC step] per graph, minus N x restore, per step
                std::vector<cudaGraphExec_t> ms, rs;
                for (int c = 0; c < copies; ++c) {
                  ms.push_back(capture(s, [&] {
                    for (int k = 0; k < steps; ++k) {
                      const int cc = (c + k) % copies;
                      restore(cc);
                      mc::mac_decode(sh, timed_config, kvs[cc], {qpost.p, qdt},
                                     {qpre.p, qdt}, rings[cc], {out.p, qdt}, nullptr,
                                     timed_stats, ws, s);
                    }
                  }));
                  rs.push_back(capture(s, [&] {
                    for (int k = 0; k < steps; ++k) restore((c + k) % copies);
                  }));
                }
                mac_steps = time_us(s, o.min_reps, o.min_seconds,
                                    [&](int r) { ck(cudaGraphLaunch(ms[r % copies], s), "launch"); }, flush) / steps;
                rest_steps = time_us(s, o.min_reps, std::min(o.min_seconds, 0.2),
                                     [&](int r) { ck(cudaGraphLaunch(rs[r % copies], s), "launch"); }, flush) / steps;
                for (auto g : ms) cudaGraphExecDestroy(g);
                for (auto g : rs) cudaGraphExecDestroy(g);
              }
              const double net = std::max(mac_graph - rest, 0.01);
              CudaRow row{bs.name, batch, static_cast<long long>(ctx), hr, miss_pattern_name(pat),
                          double(nh) / heads, double(all_hit) / groups, exact_graph, exact_eager, gbps,
                          gbps / stream_gbps, net, mac_eager - rest, rest, exact_graph / net, check, splits, copies};
              row.dtype = macattn::dtype_name(dt);
              if (steps > 1) {
                row.exact_steps_us = exact_steps;
                row.restore_steps_us = rest_steps;
                row.mac_steps_us = std::max(mac_steps - rest_steps, 0.01);
                row.speedup_steps = exact_steps / row.mac_steps_us;
              }
              rows.push_back(row);
              std::printf("   hit %.2f %-11s measured %.3f (all-hit groups %.3f): MAC %8.1f us graph (restore %.1f "
                          "subtracted), %8.1f us eager, speedup %6.2fx\n",
                          hr, miss_pattern_name(pat), row.measured_hit_rate, row.all_hit_groups, net, rest,
                          row.mac_eager_us, row.speedup);
              std::fflush(stdout);
            }
        }

  // Table.
  std::printf("\nmacattn bench --backend cuda: %s, streaming read %.0f GB/s, commit %s, miss rows %s, pages of %d "
              "tokens, %s, %s, %s queries, head stats %s\n",
              macattn::cuda::device_description().c_str(), stream_gbps, MACATTN_GIT_COMMIT,
              o.far_miss_rows ? "far" : "near", o.page_size, o.hnd ? "HND" : "NHD",
              o.shuffled_pages ? "shuffled" : "in order", macattn::dtype_name(o.query_dtype), o.head_stats ? "on" : "off");
  // Columns: one layer-step per graph (exact_us, mac_us, speedup), and with --graph-steps N > 1
  // the per-step time of N steps in one graph (exact/N, mac/N, speedup/N).
  const bool multi = o.graph_steps > 1;
  if (multi) std::printf("(/N columns: %d layer-steps per graph, time per step)\n", o.graph_steps);
  std::printf("%-10s %5s %7s %6s %-11s %8s %10s %7s %10s %8s", "shape", "batch", "context", "hit", "pattern",
              "measured", "exact_us", "bw%", "mac_us", "speedup");
  if (multi) std::printf(" %9s %9s %10s", "exact/N", "mac/N", "speedup/N");
  std::printf("\n");
  for (const CudaRow& r : rows) {
    if (r.hit_rate < 0) {
      std::printf("%-10s %5d %7lld %6s %-11s %8s %10.1f %6.0f%% %10s %8s", r.shape.c_str(), r.batch, r.context, "exact",
                  "-", "-", r.exact_graph_us, 100 * r.exact_bw_fraction, "-", "-");
      if (multi) std::printf(" %9.1f %9s %10s", r.exact_steps_us, "-", "-");
    } else {
      std::printf("%-10s %5d %7lld %6.2f %-11s %8.3f %10.1f %6.0f%% %10.1f %7.2fx", r.shape.c_str(), r.batch,
                  r.context, r.hit_rate, r.pattern.c_str(), r.measured_hit_rate, r.exact_graph_us,
                  100 * r.exact_bw_fraction, r.mac_graph_us, r.speedup);
      if (multi) std::printf(" %9.1f %9.1f %9.2fx", r.exact_steps_us, r.mac_steps_us, r.speedup_steps);
    }
    std::printf("\n");
  }
  if (!o.json_path.empty()) {
    nlohmann::json j;
    j["device"] = macattn::cuda::device_description();
    j["commit"] = MACATTN_GIT_COMMIT;
    j["stream_read_gbps"] = stream_gbps;
    j["config"] = {{"window", o.config.window}, {"rect_offset", o.config.rect_offset}, {"tau", o.config.tau},
                   {"ring_dtype", macattn::dtype_name(o.ring_dtype)}, {"page_size", o.page_size}, {"layout", o.hnd ? "HND" : "NHD"},
                   {"page_order", o.shuffled_pages ? "shuffled" : "in"},
                   {"timing", "CUDA events per replay, median; MAC graph time minus the restore graph's median"},
                   {"graph_steps", o.graph_steps},
                   {"miss_rows", o.far_miss_rows ? "far" : "near"},
                   {"queries", macattn::dtype_name(o.query_dtype)},
                   {"head_stats", o.head_stats},
                   {"flush", o.flush ? "L2 flushed (a read of 4x L2) before every timed run, outside the events"
                                     : "off"}};
    for (const CudaRow& r : rows)
      j["rows"].push_back({{"shape", r.shape}, {"dtype", r.dtype}, {"batch", r.batch}, {"context", r.context}, {"hit_rate", r.hit_rate},
                           {"pattern", r.pattern}, {"measured_hit_rate", r.measured_hit_rate},
                           {"all_hit_group_fraction", r.all_hit_groups}, {"exact_graph_us", r.exact_graph_us},
                           {"exact_eager_us", r.exact_eager_us}, {"exact_gbps", r.exact_gbps},
                           {"exact_bw_fraction", r.exact_bw_fraction}, {"mac_graph_us", r.mac_graph_us},
                           {"mac_eager_us", r.mac_eager_us}, {"restore_us", r.restore_us}, {"speedup", r.speedup},
                           {"check_rel_l2", r.check_rel_l2}, {"splits", r.splits}, {"copies", r.copies},
                           {"exact_steps_us", r.exact_steps_us}, {"mac_steps_us", r.mac_steps_us},
                           {"restore_steps_us", r.restore_steps_us}, {"speedup_steps", r.speedup_steps}});
    std::ofstream(o.json_path) << j.dump(1) << "\n";
    std::printf("results written to %s\n", o.json_path.c_str());
  }
  cudaStreamDestroy(s);
  return 0;
}

}  // namespace macattn_tool
