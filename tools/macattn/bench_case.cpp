#include "bench_case.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace macattn_tool {

using macattn::DType;

namespace {

std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Uniform on [-sqrt(3), sqrt(3)): mean 0, variance 1, from 24 random bits.
float unit(std::uint64_t bits) {
  return (static_cast<float>(bits & 0xffffffu) * (1.0f / 16777216.0f) - 0.5f) * 3.4641016f;
}

void fill_random(void* data, DType dtype, std::size_t elems, std::uint64_t seed) {
  const std::int64_t blocks = static_cast<std::int64_t>((elems + 4095) / 4096);
#pragma omp parallel for schedule(static)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    std::uint64_t s = seed * 0x100000001b3ull + static_cast<std::uint64_t>(blk);
    const std::size_t lo = static_cast<std::size_t>(blk) * 4096, hi = std::min(elems, lo + 4096);
    for (std::size_t i = lo; i < hi; ++i) macattn::store_from_float(data, dtype, i, unit(splitmix(s)));
  }
}

}  // namespace

std::size_t KVBuffers::bytes() const {
  return 2 * static_cast<std::size_t>(batch) * static_cast<std::size_t>(context) *
         static_cast<std::size_t>(shape.num_kv_heads) * static_cast<std::size_t>(shape.head_dim) *
         macattn::dtype_size(dtype);
}

macattn::KVCacheView KVBuffers::view() const {
  return macattn::KVCacheView::contiguous(seqs, shape.num_kv_heads, shape.head_dim, dtype);
}

KVBuffers make_kv(const macattn::AttentionShape& shape, DType dtype, std::int32_t batch, std::int64_t context,
                  std::uint64_t seed, bool huge_pages) {
  KVBuffers kv{shape, dtype, batch, context, {}, {}, {}};
  const std::size_t elems = static_cast<std::size_t>(context) * static_cast<std::size_t>(shape.num_kv_heads) *
                            static_cast<std::size_t>(shape.head_dim);
  const std::size_t words = elems * macattn::dtype_size(dtype) / sizeof(std::uint16_t);
  for (std::int32_t b = 0; b < batch; ++b) {
    kv.k.emplace_back(words, std::uint16_t{0}, KVAllocator<std::uint16_t>(huge_pages));
    kv.v.emplace_back(words, std::uint16_t{0}, KVAllocator<std::uint16_t>(huge_pages));
    fill_random(kv.k.back().data(), dtype, elems, seed * 1000 + 2 * static_cast<std::uint64_t>(b));
    fill_random(kv.v.back().data(), dtype, elems, seed * 1000 + 2 * static_cast<std::uint64_t>(b) + 1);
  }
  for (std::int32_t b = 0; b < batch; ++b)
    kv.seqs.push_back({kv.k[static_cast<std::size_t>(b)].data(), kv.v[static_cast<std::size_t>(b)].data(), context});
  return kv;
}

MacInputs make_mac_inputs(const KVBuffers& kv, const macattn::MacConfig& config, DType ring_dtype, double hit_rate,
                          MissPattern pattern, std::int32_t match_age, std::uint64_t seed) {
  const macattn::AttentionShape& shape = kv.shape;
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, w = config.window, group = shape.group_size();
  const std::int64_t t = kv.context - 1;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.7320508f, 1.7320508f);
  std::uniform_real_distribution<float> noise(-0.01f, 0.01f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);

  MacInputs in;
  const std::size_t n_heads = static_cast<std::size_t>(kv.batch) * static_cast<std::size_t>(hq);
  in.q_post.resize(n_heads * static_cast<std::size_t>(d));
  in.q_pre.resize(in.q_post.size());
  for (float& x : in.q_post) x = u(rng);

  // Which heads hit.
  in.intended_hit.assign(n_heads, 1);
  const std::size_t n_groups = static_cast<std::size_t>(kv.batch) * static_cast<std::size_t>(shape.num_kv_heads);
  if (pattern == MissPattern::packed) {
    std::vector<std::size_t> order(n_groups);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const auto misses = static_cast<std::size_t>(std::llround((1.0 - hit_rate) * static_cast<double>(n_groups)));
    for (std::size_t i = 0; i < misses; ++i)
      for (std::int32_t j = 0; j < group; ++j) in.intended_hit[order[i] * static_cast<std::size_t>(group) + static_cast<std::size_t>(j)] = 0;
  } else {
    for (auto& h : in.intended_hit) h = coin(rng) < hit_rate ? 1 : 0;
  }
  in.intended_hits = std::accumulate(in.intended_hit.begin(), in.intended_hit.end(), std::int64_t{0});

  // Rings: random rows far apart, finite entries, ready at t.
  for (std::int32_t b = 0; b < kv.batch; ++b) {
    macattn::MacState ring(shape, config, ring_dtype);
    macattn::MacStateView v = ring.view();
    const std::size_t rows = static_cast<std::size_t>(w) * static_cast<std::size_t>(hq);
    for (std::size_t i = 0; i < rows * static_cast<std::size_t>(d); ++i) {
      macattn::store_from_float(v.qring, ring_dtype, i, u(rng));
      macattn::store_from_float(v.oring, ring_dtype, i, u(rng) * 0.5f);
    }
    for (std::size_t i = 0; i < rows; ++i) v.lring[i] = 5.0f + 5.0f * coin(rng);
    *v.position = t;
    *v.ready = 1;
    const auto m_slot = static_cast<std::size_t>((t - match_age) % w);
    for (std::int32_t h = 0; h < hq; ++h) {
      const std::size_t head = static_cast<std::size_t>(b) * static_cast<std::size_t>(hq) + static_cast<std::size_t>(h);
      float* q = in.q_pre.data() + head * static_cast<std::size_t>(d);
      for (std::int32_t i = 0; i < d; ++i) {
        q[i] = in.intended_hit[head] ? ring.q_at(static_cast<std::int32_t>(m_slot), h, i) + noise(rng) : u(rng);
      }
    }
    in.rings.push_back(std::move(ring));
  }
  return in;
}

const char* miss_pattern_name(MissPattern p) { return p == MissPattern::packed ? "packed" : "independent"; }

}  // namespace macattn_tool
