#include "cpu/fast/attend_groups.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/fast/isa.hpp"

namespace macattn::cpu {

namespace {

/// Below this many K/V rows (summed over KV heads) a call is not worth waking threads for.
constexpr std::int64_t kParallelRows = 2048;

/// One task: keys [lo, hi) of one sequence, for every work of that sequence that meets them.
struct Task {
  std::int32_t b;
  std::int64_t lo, hi;
  std::size_t first_group, num_groups;  // into the flat AttendGroup list
};

}  // namespace

void attend_groups(const KernelTable& kernels, const KVCacheView& kv, std::span<const GroupWork> works, float scale,
                   Partials& out) {
  const int threads = thread_count();
  const std::int32_t d = kv.head_dim();

  // Key range per sequence covering all of its works.
  std::vector<std::int64_t> seq_lo(static_cast<std::size_t>(kv.batch_size()), std::numeric_limits<std::int64_t>::max());
  std::vector<std::int64_t> seq_hi(seq_lo.size(), 0);
  for (const GroupWork& w : works) {
    if (w.hi <= w.lo) continue;
    seq_lo[static_cast<std::size_t>(w.b)] = std::min(seq_lo[static_cast<std::size_t>(w.b)], w.lo);
    seq_hi[static_cast<std::size_t>(w.b)] = std::max(seq_hi[static_cast<std::size_t>(w.b)], w.hi);
  }
  // Chunk length: about 8 tasks per thread over all keys, never below 256 keys (a chunk's fixed
  // cost is one partial merge per query, about a key's worth of work).
  std::int64_t total = 0;
  for (std::size_t b = 0; b < seq_lo.size(); ++b) total += std::max<std::int64_t>(0, seq_hi[b] - seq_lo[b]);
  const std::int64_t len = std::max<std::int64_t>(256, total / (static_cast<std::int64_t>(threads) * 8) + 1);

  // Tasks and, per task, the clipped groups; each group gets its own scratch partial states.
  std::vector<Task> tasks;
  std::vector<AttendGroup> groups;
  std::vector<std::size_t> group_work;  // which work each group belongs to (for the combine)
  std::vector<std::size_t> group_state;
  std::size_t states = 0;
  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    const auto bu = static_cast<std::size_t>(b);
    for (std::int64_t lo = seq_lo[bu]; lo < seq_hi[bu]; lo += len) {
      const std::int64_t hi = std::min(seq_hi[bu], lo + len);
      Task task{b, lo, hi, groups.size(), 0};
      for (std::size_t i = 0; i < works.size(); ++i) {
        const GroupWork& w = works[i];
        if (w.b != b || w.hi <= lo || w.lo >= hi) continue;
        groups.push_back({w.g, w.q, w.nq, w.begin, w.end, std::max(lo, w.lo), std::min(hi, w.hi), nullptr, nullptr, nullptr});
        group_work.push_back(i);
        group_state.push_back(states);
        states += static_cast<std::size_t>(w.nq);
        ++task.num_groups;
      }
      if (task.num_groups > 0) tasks.push_back(task);
    }
  }
  // Kept per calling thread and reused: a fresh buffer of this size comes from new pages on
  // every call, and faulting them in cost several percent of a decode step.
  // (Bound to a reference here: inside the parallel regions each thread would otherwise
  // name its own, empty, thread_local instance.)
  thread_local Partials workspace(0, 0);
  Partials& scratch = workspace;
  scratch.reset(states, d);
  for (std::size_t k = 0; k < groups.size(); ++k) {
    groups[k].m = scratch.m.data() + group_state[k];
    groups[k].l = scratch.l.data() + group_state[k];
    groups[k].o = scratch.o_at(group_state[k]);
  }

  // Small calls run on the calling thread: a parallel region costs microseconds when the cores
  // are free and whole scheduler ticks when they are not.
  std::int64_t rows = 0;
  for (const AttendGroup& grp : groups) rows += grp.hi - grp.lo;
  const bool parallel = threads > 1 && tasks.size() > 1 && rows >= kParallelRows;
  const auto n_tasks = static_cast<std::int64_t>(tasks.size());
  const bool bf16_products = products_bf16();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (std::int64_t t = 0; t < n_tasks; ++t) {
    const Task& task = tasks[static_cast<std::size_t>(t)];
    kernels.attend({&kv, task.b, groups.data() + task.first_group, static_cast<std::int32_t>(task.num_groups), task.lo,
                    task.hi, scale, bf16_products});
  }

  // Combine in key order (groups were created chunk by chunk), so results do not depend on
  // the thread count. Each work's states are touched by one thread only.
  std::vector<std::vector<std::size_t>> of_work(works.size());
  for (std::size_t k = 0; k < groups.size(); ++k) of_work[group_work[k]].push_back(k);
  const auto n_works = static_cast<std::int64_t>(works.size());
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (std::int64_t i = 0; i < n_works; ++i) {
    const GroupWork& w = works[static_cast<std::size_t>(i)];
    for (const std::size_t k : of_work[static_cast<std::size_t>(i)]) {
      for (std::int32_t q = 0; q < w.nq; ++q) {
        const std::size_t src = group_state[k] + static_cast<std::size_t>(q);
        const std::size_t dst = w.out + static_cast<std::size_t>(q);
        combine_partial(d, out.m[dst], out.l[dst], out.o_at(dst), scratch.m[src], scratch.l[src], scratch.o_at(src));
      }
    }
  }
}

}  // namespace macattn::cpu
