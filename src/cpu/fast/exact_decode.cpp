// Fast exact decode: one work per (sequence, KV head) with all G query heads of the group,
// so each K/V row is read once per group; long sequences are split into key chunks.
#include <vector>

#include "cpu/fast/attend_groups.hpp"
#include "cpu/fast/fast.hpp"
#include "cpu/fast/isa.hpp"
#include "cpu/fast/queries.hpp"
#include "cpu/reference/reference.hpp"

namespace macattn::cpu {

void exact_decode(const AttentionShape& shape, const KVCacheView& kv, ConstTensor q_post, Tensor out, float* lse) {
  const KernelTable& kernels = active_kernels();
  if (!kernels.supports(kv.dtype(), shape.head_dim)) return reference::exact_decode(shape, kv, q_post, out, lse);
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, group = shape.group_size();
  const auto batch = static_cast<std::size_t>(kv.batch_size());
  const std::vector<float> q = widen(q_post, batch * static_cast<std::size_t>(hq) * static_cast<std::size_t>(d));

  std::vector<std::int64_t> begin(batch * static_cast<std::size_t>(hq), 0), end(begin.size());
  std::vector<GroupWork> works;
  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    for (std::int32_t g = 0; g < shape.num_kv_heads; ++g) {
      const std::size_t first = static_cast<std::size_t>(b) * static_cast<std::size_t>(hq) + static_cast<std::size_t>(g * group);
      for (std::int32_t i = 0; i < group; ++i) end[first + static_cast<std::size_t>(i)] = kv.seq_len(b);
      works.push_back({b, g, q.data() + first * static_cast<std::size_t>(d), group, begin.data() + first,
                       end.data() + first, 0, kv.seq_len(b), first});
    }
  }
  Partials acc(begin.size(), d);
  attend_groups(kernels, kv, works, shape.scale(), acc);

  std::vector<float> row(static_cast<std::size_t>(d));
  for (std::size_t i = 0; i < begin.size(); ++i) {
    float row_lse;
    finish_partial(d, acc.m[i], acc.l[i], acc.o_at(i), row.data(), &row_lse);
    narrow(out, i * static_cast<std::size_t>(d), row.data(), row.size());
    if (lse) lse[i] = row_lse;
  }
}

}  // namespace macattn::cpu
