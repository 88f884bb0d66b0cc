// tests/cuda/test_cuda_backend.cpp: the CUDA backend against the CPU reference backend on
// fresh random inputs every run (the seed is printed; MACATTN_TEST_SEED=N replays one).
// Outputs are poisoned with NaN before each call and every element is checked; MAC decisions
// (hit, matched position, distance bits) and ring contents must equal the reference's.
// Without a GPU every test skips and says why.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fixture.hpp"
#include "late_writer.hpp"
#include "macattn/cuda.hpp"
#include "macattn/macattn.hpp"

namespace {

using macattn::AttentionShape;
using macattn::Backend;
using macattn::DType;
using macattn::HeadStats;
using macattn::KVLayout;
using macattn::MacConfig;
namespace mc = macattn::cuda;

#define SKIP_WITHOUT_GPU() \
  if (!mc::available()) GTEST_SKIP() << "CUDA backend not tested: " << mc::device_description()

/// MACATTN_TEST_VERBOSE=1 prints each stage (to find where a device run stops).
void trace(const char* what, int step) {
  static const bool on = std::getenv("MACATTN_TEST_VERBOSE") != nullptr;
  if (on) std::fprintf(stderr, "[ trace    ] %s %d\n", what, step);
}

void ck(cudaError_t e, const char* what) { ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e); }

std::uint64_t fresh_seed() {
  if (const char* env = std::getenv("MACATTN_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  const std::uint64_t s = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  std::printf("[ seed     ] MACATTN_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
  std::fflush(stdout);
  return s;
}

/// A device buffer owning n bytes.
struct Dev {
  void* p = nullptr;
  std::size_t n = 0;
  Dev() = default;
  explicit Dev(std::size_t bytes) : n(bytes) {
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) p = nullptr;
  }
  Dev(const void* host, std::size_t bytes) : Dev(bytes) { cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  Dev(Dev&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  Dev& operator=(Dev&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
  void upload(const void* host, std::size_t bytes) { cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice); }
  std::vector<unsigned char> download() const {
    std::vector<unsigned char> h(n);
    cudaMemcpy(h.data(), p, n, cudaMemcpyDeviceToHost);
    return h;
  }
  void poison() { cudaMemset(p, 0xff, n); }  // NaN in f32, f16 and bf16
};

/// A paged batch on the device mirroring a host PagedBuf.
struct DevPaged {
  Dev k, v, indptr, indices, last;
  mc::PagedKVDevice view;
  DevPaged(const fx::PagedBuf& pb, std::int64_t max_len)
      : k(pb.k.data(), pb.k.size()),
        v(pb.v.data(), pb.v.size()),
        indptr(pb.indptr.data(), pb.indptr.size() * 4),
        indices(pb.indices.data(), pb.indices.size() * 4),
        last(pb.last_page_len.data(), pb.last_page_len.size() * 4) {
    view.k_pages = k.p;
    view.v_pages = v.p;
    view.num_pages = pb.pk.num_pages;
    view.page_size = pb.pk.page_size;
    view.layout = pb.pk.layout;
    view.indptr = indptr.as<std::int32_t>();
    view.indices = indices.as<std::int32_t>();
    view.last_page_len = last.as<std::int32_t>();
    view.batch_size = pb.batch;
    view.num_kv_heads = pb.hkv;
    view.head_dim = pb.d;
    view.dtype = pb.dtype;
    view.max_seq_len = max_len;
  }
};

/// Device rings for B sequences, and conversion to/from host MacStates.
struct DevRings {
  Dev q, o, l, pos, ready;
  mc::MacRingsDevice view;
  int b = 0, w = 0, hq = 0, d = 0;
  DType dt = DType::bf16;
  DevRings(int batch, int window, int heads, int dim, DType dtype)
      : q(std::size_t(batch) * window * heads * dim * macattn::dtype_size(dtype)),
        o(q.n),
        l(std::size_t(batch) * window * heads * 4),
        pos(std::size_t(batch) * 8),
        ready(std::size_t(batch)),
        b(batch), w(window), hq(heads), d(dim), dt(dtype) {
    view = {q.p, o.p, l.as<float>(), pos.as<std::int64_t>(), ready.as<std::uint8_t>(), dtype, window, heads, dim, batch};
    mc::mac_rings_reset(view);
  }
  /// Compares ring b with a host MacState: q bitwise, lse -inf pattern exact and values close,
  /// o close (ring dtype rounding of fp32 results), position and ready equal.
  ::testing::AssertionResult matches(int seq, const macattn::MacState& st) const {
    const auto hq_ = q.download(), ho = o.download(), hl = l.download(), hp = pos.download(), hr = ready.download();
    std::int64_t p;
    std::memcpy(&p, hp.data() + seq * 8, 8);
    if (p != st.position()) return ::testing::AssertionFailure() << "position " << p << " vs " << st.position();
    if ((hr[seq] != 0) != st.ready()) return ::testing::AssertionFailure() << "ready differs";
    const std::size_t es = macattn::dtype_size(dt);
    double err = 0, ref = 0;
    for (int slot = 0; slot < w; ++slot)
      for (int h = 0; h < hq; ++h) {
        const std::size_t row = (std::size_t(seq) * w + slot) * hq + h;
        float lg;
        std::memcpy(&lg, hl.data() + row * 4, 4);
        const float lh = st.lse_at(slot, h);
        if (std::isinf(lh) != std::isinf(lg) || (std::isinf(lh) && lh != lg))
          return ::testing::AssertionFailure() << "lring slot " << slot << " head " << h << ": " << lg << " vs " << lh;
        if (!std::isinf(lh) && std::fabs(lg - lh) > 2e-2 * (1 + std::fabs(lh)))
          return ::testing::AssertionFailure() << "lring slot " << slot << " head " << h << ": " << lg << " vs " << lh;
        for (int i = 0; i < d; ++i) {
          const float qg = macattn::load_as_float(hq_.data() + row * d * es, dt, i);
          if (!(qg == st.q_at(slot, h, i)))
            return ::testing::AssertionFailure() << "qring slot " << slot << " head " << h << " dim " << i << ": " << qg
                                                 << " vs " << st.q_at(slot, h, i);
          const float og = macattn::load_as_float(ho.data() + row * d * es, dt, i), oh = st.o_at(slot, h, i);
          if (std::isnan(og)) return ::testing::AssertionFailure() << "oring NaN at slot " << slot;
          err += (og - oh) * double(og - oh);
          ref += double(oh) * oh;
        }
      }
    if (std::sqrt(err) > 1e-2 * std::sqrt(ref) + 1e-6)
      return ::testing::AssertionFailure() << "oring relative L2 " << std::sqrt(err / std::max(ref, 1e-30));
    return ::testing::AssertionSuccess();
  }
};

/// Relative L2 of a device output ([rows, D] of dtype) against a host one, and a NaN check
/// (the device buffer was poisoned: a NaN means an element was never written).
::testing::AssertionResult close(const std::vector<unsigned char>& got, const fx::Buf& want, std::size_t rows, int d,
                                 double tol) {
  double err = 0, ref = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    double re = 0, rr = 0;
    for (int i = 0; i < d; ++i) {
      const float g = macattn::load_as_float(got.data(), want.dtype, r * d + i);
      const float w = want.get(r * d + i);
      if (std::isnan(g)) return ::testing::AssertionFailure() << "row " << r << " dim " << i << " not written (NaN)";
      re += (g - w) * double(g - w);
      rr += double(w) * w;
    }
    if (std::sqrt(re) > 3 * tol * std::sqrt(rr) + 1e-4)
      return ::testing::AssertionFailure() << "row " << r << " relative L2 " << std::sqrt(re / std::max(rr, 1e-30));
    err += re;
    ref += rr;
  }
  if (std::sqrt(err) > tol * std::sqrt(ref)) return ::testing::AssertionFailure() << "relative L2 " << std::sqrt(err / ref);
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult lse_close(const std::vector<unsigned char>& got, const std::vector<float>& want) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    float g;
    std::memcpy(&g, got.data() + i * 4, 4);
    if (std::isinf(want[i]) ? g != want[i] : !(std::fabs(g - want[i]) <= 1e-2 * (1 + std::fabs(want[i]))))
      return ::testing::AssertionFailure() << "lse[" << i << "] = " << g << " vs " << want[i];
  }
  return ::testing::AssertionSuccess();
}

struct Case {
  int hq, hkv, d;
  DType kv_dtype;
  int page_size;
  KVLayout layout;
};
std::string case_text(const Case& c) {
  return "hq" + std::to_string(c.hq) + "_hkv" + std::to_string(c.hkv) + "_d" + std::to_string(c.d) + "_" +
         macattn::dtype_name(c.kv_dtype) + "_page" + std::to_string(c.page_size) + "_" + macattn::kv_layout_name(c.layout);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return case_text(info.param); }
// gtest prints the parameter of a failing or skipped test with this (not as raw bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << case_text(c); }

class CudaBackend : public ::testing::TestWithParam<Case> {};

TEST_P(CudaBackend, ExactDecodeMatchesReference) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  std::mt19937_64 rng(fresh_seed());
  const AttentionShape shape{c.hq, c.hkv, c.d, 0.0f};
  // Odd lengths, one empty sequence, one longer than a split, one of a single token.
  const std::vector<std::int64_t> lens{1, 0, 777, 5000 + static_cast<std::int64_t>(rng() % 3000), 63};
  fx::KVBatch kv = fx::random_kv(c.hkv, c.d, c.kv_dtype, lens, rng);
  const fx::PagedBuf pb = fx::make_paged(kv, lens, c.page_size, c.layout, rng);
  for (DType qdt : {DType::bf16, DType::f32}) {
    const fx::Buf q = fx::random_buf(qdt, lens.size() * c.hq * c.d, rng);
    fx::Buf want(qdt, q.size());
    std::vector<float> want_lse(lens.size() * c.hq);
    macattn::exact_decode(shape, pb.view(), q.ctensor(), want.tensor(), want_lse.data(), Backend::reference);

    DevPaged dk(pb, 8192);
    Dev dq(q.data(), q.raw.size()), dout(q.raw.size()), dlse(want_lse.size() * 4);
    dout.poison();
    dlse.poison();
    mc::Workspace ws;
    ws.reserve(shape, static_cast<int>(lens.size()), 8192);
    mc::exact_decode(shape, dk.view, {dq.p, qdt}, {dout.p, qdt}, dlse.as<float>(), ws);
    ck(cudaDeviceSynchronize(), "exact_decode");
    EXPECT_TRUE(close(dout.download(), want, lens.size() * c.hq, c.d, 1e-2)) << "q dtype " << macattn::dtype_name(qdt);
    EXPECT_TRUE(lse_close(dlse.download(), want_lse));
  }
}

/// Sets an environment variable for one scope (the CUDA backend reads MACATTN_CUDA_SCAN on
/// every call), restoring the previous value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    had_ = std::getenv(name) != nullptr;
    if (value) setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

/// How run_mac_session runs a session (designated initializers at the call sites).
struct SessionRun {
  int steps = 16;
  bool use_graph = false;          ///< capture one step in a CUDA graph and replay it every step
  bool invalidate_midway = false;  ///< sequence 1's ring goes stale at step steps / 2
  /// Without stats the device scan drops rows at or over the threshold after their first dims
  /// (mac_scan.cuh): the outputs and rings, which follow from the decisions, are compared.
  bool with_stats = true;
  const char* scan_mode = nullptr;  ///< MACATTN_CUDA_SCAN
  DType ring_dtype = DType::bf16;   ///< the rings' element type on both backends
  /// When given, receives the most amend partials the spread plan gave one group in any step
  /// (read back from the workspace; only with the spread plan on).
  int* max_group_parts = nullptr;
  const std::vector<std::int64_t>* prompt_lens = nullptr;  ///< default: three random lengths
  bool expect_hits = true;  ///< false: the config must let no query hit
  /// The scan through mac_scan on a second stream (q_pre read from rows with padding between
  /// them, as in a fused q|k|v output), then q_post written on the step's stream by a kernel that
  /// lets its dependents launch at once and writes 50 us later (as an engine's RoPE kernel), then
  /// mac_decode.
  bool split_scan = false;
};

/// Decodes run.steps tokens with MAC on both backends from a prefilled prompt and compares
/// decisions, outputs and rings at every step. Queries drift so that hits, misses and mixed
/// groups all occur; the ring wraps (lengths >> W).
void run_mac_session(const Case& c, const MacConfig& cfg, const SessionRun& run) {
  const ScopedEnv scan_env("MACATTN_CUDA_SCAN", run.scan_mode);
  std::mt19937_64 rng(fresh_seed());
  const AttentionShape shape{c.hq, c.hkv, c.d, 0.0f};
  const std::vector<std::int64_t> prompt =
      run.prompt_lens ? *run.prompt_lens
                      : std::vector<std::int64_t>{333, 1201 + static_cast<std::int64_t>(rng() % 500), 700};
  const int batch = static_cast<int>(prompt.size());
  std::vector<std::int64_t> final_lens;
  for (auto p : prompt) final_lens.push_back(p + run.steps);
  fx::KVBatch kv = fx::random_kv(c.hkv, c.d, c.kv_dtype, final_lens, rng);
  std::vector<fx::QStream> qs;
  for (int b = 0; b < batch; ++b)
    qs.push_back(fx::drifting_queries(DType::bf16, final_lens[b], c.hq, c.d, rng, 0.05, 0.08, 1.0));
  const std::int64_t max_len = 4096;

  // Prefill: the last W prompt rows (two chunks, to exercise the chunked path).
  std::vector<macattn::MacState> host;
  for (int b = 0; b < batch; ++b) host.emplace_back(shape, cfg, run.ring_dtype);
  DevRings rings(batch, cfg.window, c.hq, c.d, run.ring_dtype);
  mc::Workspace ws;
  ws.reserve(shape, batch, max_len, cfg.window);
  for (int chunk = 0; chunk < 2; ++chunk) {
    std::vector<std::int64_t> lens, first, count;
    for (int b = 0; b < batch; ++b) {
      const std::int64_t split = prompt[b] - 40;  // second chunk: the last 40 prompt rows
      lens.push_back(chunk == 0 ? split : prompt[b]);
      first.push_back(chunk == 0 ? 0 : split);
      count.push_back(chunk == 0 ? split : 40);
    }
    const fx::PagedBuf pb = fx::make_paged(kv, lens, c.page_size, c.layout, rng);
    const fx::Buf qpost = fx::gather_rows(qs, first, count, true), qpre = fx::gather_rows(qs, first, count, false);
    std::vector<std::int32_t> indptr{0};
    for (auto n : count) indptr.push_back(indptr.back() + static_cast<std::int32_t>(n));
    auto views = fx::views(host);
    macattn::mac_prefill_init(shape, cfg, pb.view(), qpost.ctensor(), qpre.ctensor(), indptr, views, Backend::reference);
    DevPaged dk(pb, max_len);
    Dev dqpost(qpost.data(), qpost.raw.size()), dqpre(qpre.data(), qpre.raw.size()),
        dindptr(indptr.data(), indptr.size() * 4);
    std::int32_t max_rows = 0;
    for (auto n : count) max_rows = std::max<std::int32_t>(max_rows, static_cast<std::int32_t>(n));
    trace("prefill chunk", chunk);
    mc::mac_prefill_init(shape, cfg, dk.view, {dqpost.p, DType::bf16}, {dqpre.p, DType::bf16},
                         dindptr.as<std::int32_t>(), max_rows, rings.view, ws);
    ck(cudaDeviceSynchronize(), "mac_prefill_init");
    trace("prefill done", chunk);
    for (int b = 0; b < batch; ++b) ASSERT_TRUE(rings.matches(b, host[b])) << "after prefill chunk " << chunk << ", seq " << b;
  }

  // Decode steps. For the graph variant the cache is one page per sequence (page_size =
  // capacity) so only last_page_len changes between replays.
  std::int64_t hits = 0, heads = 0, mixed_groups = 0, short_bands = 0;
  cudaGraphExec_t exec = nullptr;
  cudaStream_t stream, scan_stream;
  ck(cudaStreamCreate(&stream), "stream");
  ck(cudaStreamCreate(&scan_stream), "scan stream");
  cudaEvent_t fork;
  ck(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), "fork event");
  std::vector<std::int64_t> lens = prompt;
  fx::PagedBuf full = fx::make_paged(kv, final_lens, run.use_graph ? 4096 : c.page_size, c.layout, rng);
  DevPaged dfull(full, max_len);
  Dev dqpost(std::size_t(batch) * c.hq * c.d * 2), dqpre(dqpost.n), dout(dqpost.n), dlse(std::size_t(batch) * c.hq * 4),
      dstats(std::size_t(batch) * c.hq * sizeof(HeadStats));
  // split_scan: q_pre rows 3 heads' worth of padding apart (poisoned), as in a q|k|v output.
  const std::int64_t row = std::int64_t{c.hq} * c.d, padded_row = row + 3 * c.d;
  Dev dqpre_rows(std::size_t(batch) * padded_row * 2), dqpost_src(dqpost.n);
  // One MAC step on `s`: with split_scan, the scan forked onto scan_stream first.
  auto mac_step = [&](const mc::PagedKVDevice& view, cudaStream_t s) {
    if (run.split_scan) {
      ck(cudaEventRecord(fork, s), "fork");
      ck(cudaStreamWaitEvent(scan_stream, fork, 0), "fork wait");
      mc::mac_scan(shape, cfg, view, {dqpre_rows.p, DType::bf16}, padded_row, rings.view,
                   run.with_stats && cfg.report_miss_matches, ws, scan_stream);
      ck(launch_late_copy(dqpost_src.p, dqpost.p, dqpost.n, s), "late q_post copy");
    }
    mc::mac_decode(shape, cfg, view, {dqpost.p, DType::bf16}, {dqpre.p, DType::bf16}, rings.view,
                   {dout.p, DType::bf16}, dlse.as<float>(), run.with_stats ? dstats.as<HeadStats>() : nullptr, ws, s);
  };
  for (int step = 0; step < run.steps; ++step) {
    for (auto& l : lens) ++l;
    std::vector<std::int64_t> pos;
    for (auto l : lens) pos.push_back(l - 1);
    if (run.invalidate_midway && step == run.steps / 2) {
      host[1].invalidate();
      const std::uint8_t zero = 0;
      ck(cudaMemcpy(rings.ready.as<std::uint8_t>() + 1, &zero, 1, cudaMemcpyHostToDevice), "invalidate");
    }
    const fx::PagedBuf pb = fx::make_paged(kv, lens, c.page_size, c.layout, rng);
    const fx::Buf qpost = fx::gather(qs, pos, true), qpre = fx::gather(qs, pos, false);
    fx::Buf want(DType::bf16, qpost.size());
    std::vector<float> want_lse(std::size_t(batch) * c.hq);
    std::vector<HeadStats> want_stats(std::size_t(batch) * c.hq);
    auto views = fx::views(host);
    trace("reference step", step);
    macattn::mac_decode(shape, cfg, pb.view(), qpost.ctensor(), qpre.ctensor(), views, want.tensor(), want_lse.data(),
                        want_stats.data(), nullptr, Backend::reference);

    dqpost.upload(qpost.data(), qpost.raw.size());
    dqpre.upload(qpre.data(), qpre.raw.size());
    if (run.split_scan) {
      dqpost_src.upload(qpost.data(), qpost.raw.size());
      dqpost.poison();  // written by the late copy inside the step
      dqpre_rows.poison();
      for (int b = 0; b < batch; ++b)
        ck(cudaMemcpy(static_cast<char*>(dqpre_rows.p) + std::size_t(b) * padded_row * 2,
                      static_cast<const char*>(qpre.data()) + std::size_t(b) * row * 2, std::size_t(row) * 2,
                      cudaMemcpyHostToDevice),
           "q_pre rows");
    }
    dout.poison();
    dlse.poison();
    dstats.poison();
    if (run.use_graph) {
      std::vector<std::int32_t> last;
      for (auto l : lens) last.push_back(static_cast<std::int32_t>(l));
      dfull.last.upload(last.data(), last.size() * 4);
      if (!exec) {  // capture once, replay every step
        cudaGraph_t graph;
        ck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "capture");
        mac_step(dfull.view, stream);
        ck(cudaStreamEndCapture(stream, &graph), "end capture");
        ck(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
        cudaGraphDestroy(graph);
      }
      ck(cudaGraphLaunch(exec, stream), "graph launch");
    } else {
      DevPaged dk(pb, max_len);
      mac_step(dk.view, stream);
      ck(cudaStreamSynchronize(stream), "mac_decode");
    }
    trace("device step issued", step);
    ck(cudaStreamSynchronize(stream), "step");
    trace("device step done", step);
    const auto got_stats_raw = dstats.download();
    for (std::size_t i = 0; i < want_stats.size(); ++i) {
      const HeadStats& w = want_stats[i];
      hits += w.hit;
      short_bands += w.hit && w.band_len <= 8 ? 1 : 0;  // attended by the finish kernel by default
      ++heads;
      if (!run.with_stats) continue;
      HeadStats g;
      std::memcpy(&g, got_stats_raw.data() + i * sizeof(HeadStats), sizeof(HeadStats));
      ASSERT_EQ(g.hit, w.hit) << "step " << step << " head row " << i;
      ASSERT_EQ(g.matched_position, w.matched_position) << "step " << step << " head row " << i;
      ASSERT_EQ(std::memcmp(&g.match_distance, &w.match_distance, 4), 0)
          << "step " << step << " head row " << i << ": distance " << g.match_distance << " vs " << w.match_distance;
      ASSERT_EQ(g.band_len, w.band_len) << "step " << step << " head row " << i;
      ASSERT_EQ(g.kv_tokens_read, w.kv_tokens_read) << "step " << step << " head row " << i;
    }
    for (int b = 0; b < batch; ++b)
      for (int g = 0; g < c.hkv; ++g) {
        int h = 0;
        for (int r = 0; r < c.hq / c.hkv; ++r) h += want_stats[std::size_t(b) * c.hq + g * (c.hq / c.hkv) + r].hit;
        mixed_groups += (h > 0 && h < c.hq / c.hkv) ? 1 : 0;
      }
    ASSERT_TRUE(close(dout.download(), want, std::size_t(batch) * c.hq, c.d, 1e-2)) << "step " << step;
    ASSERT_TRUE(lse_close(dlse.download(), want_lse)) << "step " << step;
    for (int b = 0; b < batch; ++b) ASSERT_TRUE(rings.matches(b, host[b])) << "step " << step << ", seq " << b;
    if (run.max_group_parts) {
      std::vector<std::int32_t> parts(std::size_t(batch) * c.hkv);
      ck(cudaMemcpy(parts.data(), ws.buffers().group_parts, parts.size() * 4, cudaMemcpyDeviceToHost), "group_parts");
      for (auto n : parts) *run.max_group_parts = std::max(*run.max_group_parts, static_cast<int>(n));
    }
  }
  if (exec) cudaGraphExecDestroy(exec);
  cudaEventDestroy(fork);
  cudaStreamDestroy(scan_stream);
  cudaStreamDestroy(stream);
  std::printf(
      "[ info     ] %lld of %lld head decisions were hits (%lld with bands of at most 8 keys), %lld mixed groups\n",
      static_cast<long long>(hits), static_cast<long long>(heads), static_cast<long long>(short_bands),
      static_cast<long long>(mixed_groups));
  if (run.expect_hits) EXPECT_GT(hits, 0) << "the test must exercise hits";
  else EXPECT_EQ(hits, 0) << "the test's threshold must let no query hit";
  EXPECT_LT(hits, heads) << "the test must exercise misses";
}

MacConfig small_config(int sinks) {
  MacConfig cfg;
  cfg.window = 64;
  cfg.rect_offset = 16;
  cfg.tau = 0.2f;
  cfg.front_sinks = sinks;
  cfg.min_context = 300;
  return cfg;
}

/// The two sessions a test of a launch form runs under its switches: with sinks and a stale ring
/// midway (eager), and in a graph.
void run_eager_and_graph_sessions(const Case& c) {
  run_mac_session(c, small_config(5), {.steps = 16, .invalidate_midway = true});
  run_mac_session(c, small_config(3), {.steps = 12, .use_graph = true});
}

TEST_P(CudaBackend, MacDecodeMatchesReference) {
  SKIP_WITHOUT_GPU();
  run_mac_session(GetParam(), small_config(0), {.steps = 40});
}

TEST_P(CudaBackend, MacDecodeWithSinksAndStaleRing) {
  SKIP_WITHOUT_GPU();
  run_mac_session(GetParam(), small_config(5), {.steps = 24, .invalidate_midway = true});
}

// A window of several 64-candidate tiles: the scan is split over blocks whose minima the
// decision combines, and the ring wraps every 256 steps of position.
TEST_P(CudaBackend, MacDecodeWideWindow) {
  SKIP_WITHOUT_GPU();
  MacConfig cfg = small_config(3);
  cfg.window = 256;
  run_mac_session(GetParam(), cfg, {.steps = 16});
}

// Without per-head stats the scan drops rows that cannot be hits after their first dims: whole
// rows through shared memory (scan_staged, forced here), or only their first 64 dims
// (scan_direct, the default; below). A stale ring midway; several blocks per head.
TEST_P(CudaBackend, MacDecodePrunedScanWithoutStats) {
  SKIP_WITHOUT_GPU();
  run_mac_session(GetParam(), small_config(5),
                  {.steps = 24, .invalidate_midway = true, .with_stats = false, .scan_mode = "staged"});
}

// Head stats with report_miss_matches off: the same pruned scans, and the stats must equal
// the reference's with that config (a miss at or over the threshold reports no best row).
TEST_P(CudaBackend, MacDecodeTerseStatsStaged) {
  SKIP_WITHOUT_GPU();
  MacConfig cfg = small_config(2);
  cfg.report_miss_matches = false;
  run_mac_session(GetParam(), cfg, {.steps = 16, .invalidate_midway = true, .scan_mode = "staged"});
}

// The register-only form (scan_direct: eight lanes per candidate's first 64 dims, no shared
// memory): several blocks per head, the last partly empty; a stale ring midway; in a graph; and
// with terse stats (a miss at or over the threshold reports no best row).
TEST_P(CudaBackend, MacDecodeDirectScanWithoutStats) {
  SKIP_WITHOUT_GPU();
  MacConfig cfg = small_config(3);
  cfg.window = 600;
  run_mac_session(GetParam(), cfg, {.steps = 8, .invalidate_midway = true, .with_stats = false, .scan_mode = "direct"});
}

TEST_P(CudaBackend, MacDecodeDirectScanInCudaGraph) {
  SKIP_WITHOUT_GPU();
  run_mac_session(GetParam(), small_config(0),
                  {.steps = 12, .use_graph = true, .with_stats = false, .scan_mode = "direct"});
}

// f32 rings: 16 lanes per candidate (256 bytes of 64 dims); f16 rings: 8, as bf16.
TEST_P(CudaBackend, MacDecodeDirectScanF32AndF16Rings) {
  SKIP_WITHOUT_GPU();
  MacConfig cfg = small_config(0);
  cfg.window = 300;
  run_mac_session(
      GetParam(), cfg,
      {.steps = 5, .invalidate_midway = true, .with_stats = false, .scan_mode = "direct", .ring_dtype = DType::f32});
  run_mac_session(GetParam(), cfg, {.steps = 5, .with_stats = false, .scan_mode = "direct", .ring_dtype = DType::f16});
}

TEST_P(CudaBackend, MacDecodeTerseStatsDirect) {
  SKIP_WITHOUT_GPU();
  MacConfig cfg = small_config(2);
  cfg.window = 300;
  cfg.report_miss_matches = false;
  run_mac_session(GetParam(), cfg, {.steps = 10, .invalidate_midway = true, .scan_mode = "direct"});
}

// The complete state (sinks + tail) computed by the attend kernel's blocks with the least amend
// work (MACATTN_CUDA_COMPLETE=attend; the default for large grids, while these tests' small
// batches get the side-stream kernel by default): with sinks and a stale ring, with stats; and
// in a graph with the direct scan.
TEST_P(CudaBackend, MacDecodeAttendCompleteWithSinks) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv complete_env("MACATTN_CUDA_COMPLETE", "attend");
  run_mac_session(GetParam(), small_config(5), {.steps = 16, .invalidate_midway = true});
}

TEST_P(CudaBackend, MacDecodeAttendCompleteInCudaGraph) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv complete_env("MACATTN_CUDA_COMPLETE", "attend");
  MacConfig cfg = small_config(3);
  cfg.window = 600;
  run_mac_session(GetParam(), cfg, {.steps = 12, .use_graph = true, .with_stats = false, .scan_mode = "direct"});
}

// Every hit's band through the attend kernel (MACATTN_CUDA_FINISH_BAND=0; by default the finish
// kernel attends bands of at most kFinishBandMax keys itself, mac_band.cuh), and the reverse
// case's graph form: the default, with sinks, in a graph. The sessions have short and long bands.
TEST_P(CudaBackend, MacDecodeBandsThroughAttendKernel) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv band_env("MACATTN_CUDA_FINISH_BAND", "0");
  run_mac_session(GetParam(), small_config(5), {.steps = 16, .invalidate_midway = true});
}

TEST_P(CudaBackend, MacDecodeShortBandsInFinishInCudaGraph) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv band_env("MACATTN_CUDA_FINISH_BAND", "8");
  run_mac_session(GetParam(), small_config(3), {.steps = 16, .use_graph = true});
}

TEST_P(CudaBackend, MacDecodeInCudaGraph) {
  SKIP_WITHOUT_GPU();
  run_mac_session(GetParam(), small_config(0), {.steps = 24, .use_graph = true});
}

// The attend kernel launched with programmatic dependent launch (MACATTN_CUDA_PDL_ATTEND=1, also
// where its default is off: its query loads overlap the scan): with sinks and a stale ring, and
// in a graph.
TEST_P(CudaBackend, MacDecodeAttendWithPdl) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv pdl_env("MACATTN_CUDA_PDL_ATTEND", "1");
  run_eager_and_graph_sessions(GetParam());
}

// The finish kernel launched without programmatic dependent launch (MACATTN_CUDA_PDL_FINISH=0;
// on Hopper it is launched with it by default, its first part overlapping the attend kernel).
TEST_P(CudaBackend, MacDecodeFinishWithoutPdl) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv pdl_env("MACATTN_CUDA_PDL_FINISH", "0");
  run_eager_and_graph_sessions(GetParam());
}

// The attend kernel's two forms, each forced (by default the form follows the grid: two blocks
// per SM with PDL for few groups, attend_two_per_sm): two blocks per SM with fewer splits than
// planned (MACATTN_CUDA_MAC_SPLITS, so that some splits hold more tiles and the complete
// parts land elsewhere), and three per SM without PDL. With sinks and a stale ring, and in a graph.
TEST_P(CudaBackend, MacDecodeTwoBlocksPerSmFewerSplits) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv per_sm_env("MACATTN_CUDA_ATTEND_PER_SM", "2");
  const ScopedEnv splits_env("MACATTN_CUDA_MAC_SPLITS", "2");
  run_eager_and_graph_sessions(GetParam());
}

// More MAC splits than planned (MACATTN_CUDA_MAC_SPLIT_FACTOR=4, an experiment that applies
// with three attend blocks per SM): each group's span over four times as many blocks, and more
// partials per head than the finish kernel prefetches. With sinks and a stale ring, and in a graph.
TEST_P(CudaBackend, MacDecodeMoreSplitsThanPlanned) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv per_sm_env("MACATTN_CUDA_ATTEND_PER_SM", "3");
  const ScopedEnv factor_env("MACATTN_CUDA_MAC_SPLIT_FACTOR", "4");
  run_eager_and_graph_sessions(GetParam());
}

// Both plans of the attend kernel forced (by default the spread plan, mac_spread.cuh, runs only
// for steps that read at least 1.5 GiB of K/V over spans of at least 64K keys, far larger than
// these tests'): the static plan (every group on its own splits), and the spread plan with the
// complete parts in the side kernel and in the attend kernel's blocks (which then stage their own
// group's queries again after amending another group's). With sinks and a stale ring, and in a
// graph.
TEST_P(CudaBackend, MacDecodeStaticPlan) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv spread_env("MACATTN_CUDA_MAC_SPREAD", "0");
  run_eager_and_graph_sessions(GetParam());
}

TEST_P(CudaBackend, MacDecodeSpreadPlan) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv spread_env("MACATTN_CUDA_MAC_SPREAD", "1");
  run_eager_and_graph_sessions(GetParam());
}

// The spread plan with every group missing on equal spans (sequences of one length, a threshold
// no query meets): the plan must then be the static one (SplitPlan.SpreadOfEqualMissesIsTheStaticPlan
// checks the arithmetic on the CPU). Both complete forms, eager and in a graph. (A shortcut that
// took the static plan after one barrier instead of the block scan, c258113, passed this test and
// made spread steps 0.4-1.4 us slower on the H200: reverted.)
TEST_P(CudaBackend, MacDecodeSpreadPlanAllMissOnEqualSpans) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv spread_env("MACATTN_CUDA_MAC_SPREAD", "1");
  MacConfig cfg = small_config(5);
  cfg.tau = 0.999f;  // threshold 2D(1-tau)^2: far under any two drifting queries' distance
  const std::vector<std::int64_t> lens{900, 900};
  for (const char* complete : {"side", "attend"}) {
    const ScopedEnv complete_env("MACATTN_CUDA_COMPLETE", complete);
    run_mac_session(GetParam(), cfg, {.steps = 6, .prompt_lens = &lens, .expect_hits = false});
    run_mac_session(GetParam(), cfg, {.steps = 6, .use_graph = true, .prompt_lens = &lens, .expect_hits = false});
  }
}

TEST_P(CudaBackend, MacDecodeSpreadPlanWithCompleteInAttend) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv spread_env("MACATTN_CUDA_MAC_SPREAD", "1");
  const ScopedEnv complete_env("MACATTN_CUDA_COMPLETE", "attend");
  run_eager_and_graph_sessions(GetParam());
}

// The spread plan must give a group more blocks than its own splits when few groups have amend
// keys (the point of it), and the results must still match the reference: with three attend
// blocks per SM MAC's splits are the plan's, and some steps of this session miss in few groups.
TEST_P(CudaBackend, MacDecodeSpreadGivesFewMissesMoreBlocks) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv spread_env("MACATTN_CUDA_MAC_SPREAD", "1");
  const ScopedEnv per_sm_env("MACATTN_CUDA_ATTEND_PER_SM", "3");
  const Case& c = GetParam();
  int max_parts = 0;
  run_mac_session(c, small_config(0), {.steps = 40, .max_group_parts = &max_parts});
  const int planned = mc::planned_splits(AttentionShape{c.hq, c.hkv, c.d, 0.0f}, 3, 4096);
  std::printf("[ info     ] the spread plan gave one group up to %d partials; MAC's splits: %d\n", max_parts, planned);
  EXPECT_GT(max_parts, planned);
}

// mac_scan then mac_decode (the engine's early scan): the scan on a second stream, reading q_pre
// from padded rows, decides as mac_decode's own scan does. With sinks and a stale ring, in a
// graph (the second stream joins the capture), and with the pruned direct scan without stats.
TEST_P(CudaBackend, MacDecodeAfterSplitScan) {
  SKIP_WITHOUT_GPU();
  run_mac_session(GetParam(), small_config(5), {.steps = 16, .invalidate_midway = true, .split_scan = true});
  run_mac_session(GetParam(), small_config(3), {.steps = 12, .use_graph = true, .split_scan = true});
  run_mac_session(GetParam(), small_config(0),
                  {.steps = 8, .with_stats = false, .scan_mode = "direct", .split_scan = true});
}

TEST_P(CudaBackend, MacDecodeThreeBlocksPerSmWithoutAttendPdl) {
  SKIP_WITHOUT_GPU();
  const ScopedEnv per_sm_env("MACATTN_CUDA_ATTEND_PER_SM", "3");
  const ScopedEnv pdl_env("MACATTN_CUDA_PDL_ATTEND", "0");
  run_eager_and_graph_sessions(GetParam());
}

// The shared-memory carveout preference of MAC's kernels (mac_carveout: the most shared memory
// by default for few groups, as these tests' batches are) forced to the driver's choice and to
// the least shared memory (MACATTN_CUDA_CARVEOUT): a hint about where blocks fit, which must not
// change a result. With sinks and a stale ring, and in a graph.
TEST_P(CudaBackend, MacDecodeUnderOtherCarveouts) {
  SKIP_WITHOUT_GPU();
  for (const char* carveout : {"-1", "0"}) {
    SCOPED_TRACE(std::string("MACATTN_CUDA_CARVEOUT=") + carveout);
    const ScopedEnv env("MACATTN_CUDA_CARVEOUT", carveout);
    run_eager_and_graph_sessions(GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaBackend,
    ::testing::Values(Case{32, 8, 128, DType::bf16, 16, KVLayout::NHD}, Case{32, 8, 128, DType::f16, 7, KVLayout::HND},
                      Case{8, 8, 64, DType::bf16, 1, KVLayout::NHD}, Case{16, 1, 256, DType::bf16, 32, KVLayout::HND},
                      Case{12, 4, 64, DType::f16, 64, KVLayout::NHD}, Case{16, 2, 128, DType::bf16, 5, KVLayout::NHD}),
    case_name);

TEST(CudaBackendValidation, BadInputsNameTheValue) {
  SKIP_WITHOUT_GPU();
  const AttentionShape shape{32, 8, 96, 0.0f};
  mc::PagedKVDevice kv;
  kv.batch_size = 1;
  kv.num_kv_heads = 8;
  kv.head_dim = 96;
  mc::Workspace ws;
  int dummy = 0;
  try {
    mc::exact_decode(shape, kv, {&dummy, DType::bf16}, {&dummy, DType::bf16}, nullptr, ws);
    FAIL() << "head_dim 96 accepted";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim = 96"), std::string::npos) << e.what();
  }
  const AttentionShape ok{32, 8, 128, 0.0f};
  kv.head_dim = 128;
  kv.dtype = DType::f32;
  try {
    mc::exact_decode(ok, kv, {&dummy, DType::bf16}, {&dummy, DType::bf16}, nullptr, ws);
    FAIL() << "f32 K/V accepted";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv.dtype = f32"), std::string::npos) << e.what();
  }
}

// mac_scan's misuse fails with a message that names it: a row stride shorter than a row, a
// second scan before mac_decode, a mac_decode whose stats need the rows the scan dropped
// (which consumes the scan: the next plain mac_decode runs), and an unknown MACATTN_CUDA_SCAN.
TEST(CudaBackendValidation, MacScanMisuseNamesTheProblem) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  const Case c{32, 8, 128, DType::bf16, 16, KVLayout::NHD};
  const AttentionShape shape{c.hq, c.hkv, c.d, 0.0f};
  const MacConfig cfg = small_config(0);  // report_miss_matches: true
  const std::vector<std::int64_t> lens{500};
  const fx::KVBatch kv = fx::random_kv(c.hkv, c.d, c.kv_dtype, lens, rng);
  const fx::PagedBuf pb = fx::make_paged(kv, lens, c.page_size, c.layout, rng);
  DevPaged dk(pb, 4096);
  DevRings rings(1, cfg.window, c.hq, c.d, DType::bf16);
  mc::Workspace ws;
  ws.reserve(shape, 1, 4096, cfg.window);
  Dev q(std::size_t(c.hq) * c.d * 2), out(q.n), stats(std::size_t(c.hq) * sizeof(HeadStats));
  ck(cudaMemset(q.p, 0, q.n), "q");
  auto expect_error = [](const std::function<void()>& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "no error; expected one naming '" << needle << "'";
    } catch (const macattn::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const macattn::ConstTensor qt{q.p, DType::bf16};
  expect_error([&] { mc::mac_scan(shape, cfg, dk.view, qt, 100, rings.view, false, ws); }, "q_pre_row_stride = 100");
  mc::mac_scan(shape, cfg, dk.view, qt, 0, rings.view, false, ws);
  expect_error([&] { mc::mac_scan(shape, cfg, dk.view, qt, 0, rings.view, false, ws); }, "already pending");
  expect_error(
      [&] {
        mc::mac_decode(shape, cfg, dk.view, qt, qt, rings.view, {out.p, DType::bf16}, nullptr,
                       stats.as<HeadStats>(), ws);
      },
      "report_miss_matches = false");
  mc::mac_decode(shape, cfg, dk.view, qt, qt, rings.view, {out.p, DType::bf16}, nullptr, stats.as<HeadStats>(), ws);
  ck(cudaDeviceSynchronize(), "mac_decode after the refused call");
  // An unknown scan form is refused by name, before anything is launched or left pending.
  {
    const ScopedEnv bad_form("MACATTN_CUDA_SCAN", "fast");
    expect_error([&] { mc::mac_scan(shape, cfg, dk.view, qt, 0, rings.view, false, ws); }, "MACATTN_CUDA_SCAN = 'fast'");
  }
  mc::mac_scan(shape, cfg, dk.view, qt, 0, rings.view, false, ws);
  mc::mac_decode(shape, cfg, dk.view, qt, qt, rings.view, {out.p, DType::bf16}, nullptr, nullptr, ws);
  ck(cudaDeviceSynchronize(), "mac_scan and mac_decode after the refused form");
}

}  // namespace
