// Exact decode: every query head attends to all t+1 keys of its sequence.
#include "cpu/reference/attend.hpp"
#include "cpu/reference/reference.hpp"

namespace macattn::reference {

void exact_decode(const AttentionShape& shape, const KVCacheView& kv, ConstTensor q_post, Tensor out, float* lse) {
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, group = shape.group_size();
  std::vector<float> q(static_cast<std::size_t>(d));
  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    const std::int64_t n = kv.seq_len(b);
    for (std::int32_t h = 0; h < hq; ++h) {
      const std::size_t row = static_cast<std::size_t>(b) * static_cast<std::size_t>(hq) + static_cast<std::size_t>(h);
      load_row(q_post.data, q_post.dtype, row, d, q.data());
      const State st = attend(kv, b, h / group, q.data(), shape.scale(), 0, n);
      store_row(out.data, out.dtype, row, d, st.o.data());
      if (lse) lse[row] = st.lse;
    }
  }
}

}  // namespace macattn::reference
