// src/cuda/block_profile.cu: the host side of block_profile.cuh.
#include "cuda/block_profile.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cuda/launch.cuh"

namespace macattn::cuda::detail {
namespace {

constexpr std::size_t kCapacityStamps = std::size_t(1) << 22;  // 32 MiB of stamps per call

struct Pending {
  std::string key;
  std::vector<std::string> phases;
  std::size_t blocks = 0, offset = 0;  // offset in stamps
};

struct Sums {
  std::vector<std::string> phases;
  double calls = 0, span = 0, gap = 0, gaps = 0, life = 0, lives = 0, life_max = 0;
  double start = 0, end = 0;  // first and last stamp after the call's first stamp (any kernel)
  double phase[kMaxStamps - 1] = {}, phase_n[kMaxStamps - 1] = {}, phase_max[kMaxStamps - 1] = {};
};

/// Per kernel and grid: sums over calls, in first-seen order.
struct Table {
  std::map<std::string, Sums> sums;
  std::vector<std::string> order;
};

struct State {
  unsigned long long* dev = nullptr;
  std::size_t used = 0;  // stamps handed out in the current eager call
  bool warned = false;
  std::vector<Pending> pending;
  std::vector<unsigned long long> host;
  Table eager;
  // Calls captured into CUDA graphs: each kernel keeps its own range of graph_dev for good (the
  // pointer is baked into the graph), zeroed once at allocation; every replay overwrites it, so
  // at exit the ranges hold each graph's last replay.
  unsigned long long* graph_dev = nullptr;
  std::size_t graph_used = 0;
  bool graph_warned = false;
  std::vector<std::vector<Pending>> graph_calls;
};

void print_sums();

bool requested() {
  static const bool r = [] {
    const char* env = std::getenv("MACATTN_CUDA_PROFILE");
    return env != nullptr && std::atoi(env) == 1;
  }();
  return r;
}

State* created = nullptr;  // the buffers, once made
bool tried = false;        // whether make_state() ran (successfully or not)

State* make_state() {
  auto* st = new State;
  constexpr std::size_t bytes = kCapacityStamps * sizeof(unsigned long long);
  if (cudaMalloc(&st->dev, bytes) != cudaSuccess || cudaMalloc(&st->graph_dev, bytes) != cudaSuccess ||
      cudaMemset(st->graph_dev, 0, bytes) != cudaSuccess) {
    std::fprintf(stderr, "MACATTN_CUDA_PROFILE: cudaMalloc of the stamp buffers failed; profiling off\n");
    cudaFree(st->dev);
    cudaFree(st->graph_dev);
    delete st;
    return nullptr;
  }
  std::atexit(print_sums);
  return st;
}

/// The profiler's state, made at the first call (which must not be inside a stream capture:
/// cudaMalloc there would invalidate the capture); null when profiling is off or failed.
State* state() {
  if (!tried) {
    tried = true;
    if (requested()) created = make_state();
  }
  return created;
}

void accumulate(const std::vector<Pending>& pending, const unsigned long long* stamps, Table& table);

void print_table(const Table& t, const char* what) {
  if (t.order.empty()) return;
  std::fprintf(stderr, "MACATTN_CUDA_PROFILE: per kernel and grid, means over %s (us):\n", what);
  for (const std::string& key : t.order) {
    const Sums& v = t.sums.at(key);
    if (v.calls == 0) continue;  // no block of this kernel ever stamped
    std::fprintf(stderr,
                 "  %s: %.0f calls, from %.2f to %.2f of the call, span %.2f, gap after the previous kernel %.2f, "
                 "block lifetime %.2f (max %.2f)",
                 key.c_str(), v.calls, v.start / v.calls / 1e3, v.end / v.calls / 1e3, v.span / v.calls / 1e3,
                 v.gaps > 0 ? v.gap / v.gaps / 1e3 : 0.0,
                 v.lives > 0 ? v.life / v.lives / 1e3 : 0.0, v.life_max / 1e3);
    for (std::size_t k = 0; k < v.phases.size(); ++k)
      if (v.phase_n[k] > 0)
        std::fprintf(stderr, ", %s %.2f (max %.2f)", v.phases[k].c_str(), v.phase[k] / v.phase_n[k] / 1e3,
                     v.phase_max[k] / 1e3);
    std::fprintf(stderr, "\n");
  }
}

void print_sums() {
  State* s = created;
  if (s == nullptr) return;
  print_table(s->eager, "eager calls");
  if (s->graph_calls.empty()) return;
  // The graphs' last replays: wait for any still in flight, then read every captured range.
  std::vector<unsigned long long> host(s->graph_used * kMaxStamps);
  if (cudaDeviceSynchronize() != cudaSuccess ||
      cudaMemcpy(host.data(), s->graph_dev, host.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost) !=
          cudaSuccess) {
    std::fprintf(stderr, "MACATTN_CUDA_PROFILE: reading the graphs' stamps failed\n");
    return;
  }
  Table graphs;
  for (const std::vector<Pending>& call : s->graph_calls) accumulate(call, host.data(), graphs);
  print_table(graphs, "calls captured in CUDA graphs, each graph's last replay");
}

/// Adds one call's kernels (`pending`, stamps at `stamps` + offset) to `table`.
void accumulate(const std::vector<Pending>& pending, const unsigned long long* stamps, Table& table) {
  unsigned long long prev_end = 0, call_first = ~0ull;
  for (const Pending& p : pending)
    for (std::size_t b = 0; b < p.blocks; ++b) {
      const unsigned long long t0 = stamps[p.offset + b * kMaxStamps];
      if (t0 != 0) call_first = std::min(call_first, t0);
    }
  for (const Pending& p : pending) {
    auto [it, fresh] = table.sums.try_emplace(p.key);
    Sums& v = it->second;
    if (fresh) {
      v.phases = p.phases;
      table.order.push_back(p.key);
    }
    unsigned long long first = ~0ull, last = 0;
    for (std::size_t b = 0; b < p.blocks; ++b) {
      const unsigned long long* st = stamps + p.offset + b * kMaxStamps;
      if (st[0] == 0) continue;  // the block never ran its first stamp
      first = std::min(first, st[0]);
      unsigned long long end = st[0];
      for (int k = 1; k < kMaxStamps; ++k)
        if (st[k] != 0) {
          end = std::max(end, st[k]);
          if (st[k - 1] != 0 && static_cast<std::size_t>(k - 1) < v.phases.size()) {
            v.phase[k - 1] += static_cast<double>(st[k] - st[k - 1]);
            v.phase_n[k - 1] += 1;
            v.phase_max[k - 1] = std::max(v.phase_max[k - 1], static_cast<double>(st[k] - st[k - 1]));
          }
        }
      last = std::max(last, end);
      v.life += static_cast<double>(end - st[0]);
      v.life_max = std::max(v.life_max, static_cast<double>(end - st[0]));
      v.lives += 1;
    }
    if (last == 0) continue;
    v.calls += 1;
    v.span += static_cast<double>(last - first);
    v.start += static_cast<double>(first - call_first);
    v.end += static_cast<double>(last - call_first);
    if (prev_end != 0) {
      v.gap += static_cast<double>(first) - static_cast<double>(prev_end);
      v.gaps += 1;
    }
    prev_end = last;
  }
}

}  // namespace

ProfileScope::ProfileScope(cudaStream_t stream) : stream_(stream) {
  if (!requested()) return;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) return;
  const bool capturing = status != cudaStreamCaptureStatusNone;
  if (capturing && !tried) {
    static bool warned = false;
    if (!warned)
      std::fprintf(stderr,
                   "MACATTN_CUDA_PROFILE: a call was captured into a CUDA graph before any eager call; the stamp "
                   "buffers cannot be made during a capture, so calls are stamped only after an eager one\n");
    warned = true;
    return;
  }
  State* s = state();
  if (s == nullptr) return;
  active_ = true;
  graph_ = capturing;
  if (graph_) {
    s->graph_calls.emplace_back();
  } else {
    s->used = 0;
    s->pending.clear();
  }
}

BlockStamps ProfileScope::kernel(const char* name, dim3 grid, std::initializer_list<const char*> phases) {
  if (!active_) return {};
  State* s = state();
  const std::size_t blocks = static_cast<std::size_t>(grid.x) * grid.y * grid.z;
  std::size_t& used = graph_ ? s->graph_used : s->used;
  bool& warned = graph_ ? s->graph_warned : s->warned;
  if ((used + blocks) * kMaxStamps > kCapacityStamps) {
    if (!warned)
      std::fprintf(stderr, "MACATTN_CUDA_PROFILE: %s; skipped\n",
                   graph_ ? "the graphs' stamp buffer is full" : "a call has too many blocks to stamp");
    warned = true;
    return {};
  }
  Pending p;
  p.key = std::string(name) + " (" + std::to_string(blocks) + " blocks)";
  for (const char* ph : phases) p.phases.emplace_back(ph);
  p.blocks = blocks;
  p.offset = used * kMaxStamps;
  BlockStamps out{(graph_ ? s->graph_dev : s->dev) + p.offset};
  // A graph's range was zeroed at allocation (no memset node joins the captured graph).
  if (!graph_)
    MACATTN_CUDA_CHECK(cudaMemsetAsync(out.p, 0, blocks * kMaxStamps * sizeof(unsigned long long), stream_));
  used += blocks;
  (graph_ ? s->graph_calls.back() : s->pending).push_back(std::move(p));
  ++count_;
  return out;
}

void ProfileScope::finish() {
  if (!active_ || count_ == 0 || graph_) return;  // graphs are read at exit
  State* s = state();
  MACATTN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  s->host.resize(s->used * kMaxStamps);
  MACATTN_CUDA_CHECK(
      cudaMemcpy(s->host.data(), s->dev, s->host.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  accumulate(s->pending, s->host.data(), s->eager);
  s->pending.clear();
  s->used = 0;
}

}  // namespace macattn::cuda::detail
