#include "engine/cpu/prefill_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/cpu/aligned_buffer.hpp"
#include "engine/cpu/gemm.hpp"
#include "macattn/error.hpp"

namespace macattn::engine::cpu {

namespace {

constexpr std::int64_t kQueryBlock = 64;  // query positions per task (x group size rows)
constexpr std::int64_t kKeyBlock = 64;    // keys per block: two packed panels

void check(const AttentionShape& shape, const KVCacheView& kv, std::int64_t p0, std::int64_t n, const float* q,
           const float* out) {
  shape.validate();
  if (q == nullptr || out == nullptr) throw Error("prefill_attention: q or out is null");
  if (kv.batch_size() != 1)
    throw Error("prefill_attention: kv batch = " + std::to_string(kv.batch_size()) + ", must be 1");
  if (kv.num_kv_heads() != shape.num_kv_heads || kv.head_dim() != shape.head_dim)
    throw Error("prefill_attention: kv heads/head_dim do not match the shape " + shape.to_string());
  if (p0 < 0 || n < 1 || kv.seq_len(0) != p0 + n)
    throw Error("prefill_attention: p0 = " + std::to_string(p0) + ", n = " + std::to_string(n) +
                " but kv.seq_len(0) = " + std::to_string(kv.seq_len(0)));
}

}  // namespace

void prefill_attention(const AttentionShape& shape, const KVCacheView& kv, std::int64_t p0, std::int64_t n,
                       const float* q, float* out) {
  check(shape, kv, p0, n, q, out);
  const GemmKernels& kern = gemm_kernels();
  const std::int32_t Hq = shape.num_q_heads, Hkv = shape.num_kv_heads, D = shape.head_dim, G = shape.group_size();
  const float scale = shape.scale();
  const std::int64_t qblocks = (n + kQueryBlock - 1) / kQueryBlock;
  const std::int64_t tasks = qblocks * Hkv;
  const std::int64_t M = kQueryBlock * G;  // rows of a task: row r = query (r / G), head (r % G)
  const DType kvt = kv.dtype();

#pragma omp parallel
  {
    AlignedFloats qs(M * D), s(M * kKeyBlock), o(M * D), packed(std::max<std::int64_t>(D, kKeyBlock) * kPanel);
    std::vector<float> row_max(M), row_sum(M);
    const void* ptrs[kKeyBlock];
    // Later query blocks see more keys: hand them out first so the tail of the loop balances.
#pragma omp for schedule(dynamic)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t qb = qblocks - 1 - t / Hkv;
      const std::int32_t g = static_cast<std::int32_t>(t % Hkv);
      const std::int64_t i0 = qb * kQueryBlock;
      const std::int64_t nq = std::min(kQueryBlock, n - i0);
      const std::int64_t rows = nq * G;
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* src = q + ((i0 + r / G) * Hq + g * G + r % G) * D;
        for (std::int32_t d = 0; d < D; ++d) qs.data()[r * D + d] = src[d] * scale;
      }
      std::fill(row_max.begin(), row_max.begin() + rows, -std::numeric_limits<float>::infinity());
      std::fill(row_sum.begin(), row_sum.begin() + rows, 0.0f);
      std::fill(o.data(), o.data() + rows * D, 0.0f);
      const std::int64_t last_pos = p0 + i0 + nq - 1;  // keys beyond it are masked for every row
      for (std::int64_t k0 = 0; k0 <= last_pos; k0 += kKeyBlock) {
        const std::int64_t nk = std::min(kKeyBlock, last_pos + 1 - k0);
        // S = Qs K^T over this key block, one panel of 32 keys at a time.
        for (std::int64_t j0 = 0; j0 < nk; j0 += kPanel) {
          const int nb = static_cast<int>(std::min<std::int64_t>(kPanel, nk - j0));
          for (int j = 0; j < nb; ++j) ptrs[j] = kv.k_row(0, k0 + j0 + j, g);
          kern.pack(ptrs, kvt, /*transposed=*/true, D, nb, 0, packed.data());
          kern.gemm(qs.data(), D, rows, D, packed.data(), nb, s.data() + j0, kKeyBlock, false);
        }
        // Causal mask, online softmax: rescale the running output by exp(old max - new max).
        for (std::int64_t r = 0; r < rows; ++r) {
          float* sr = s.data() + r * kKeyBlock;
          const std::int64_t pos = p0 + i0 + r / G;
          const std::int64_t visible = std::clamp<std::int64_t>(pos - k0 + 1, 0, nk);
          for (std::int64_t j = visible; j < nk; ++j) sr[j] = -std::numeric_limits<float>::infinity();
          for (std::int64_t j = nk; j < kKeyBlock; ++j) sr[j] = -std::numeric_limits<float>::infinity();
          if (visible == 0) {  // a row before this whole block: contributes nothing
            std::fill(sr, sr + kKeyBlock, 0.0f);
            continue;
          }
          float bmax = sr[0];
          for (std::int64_t j = 1; j < visible; ++j) bmax = std::max(bmax, sr[j]);
          const float new_max = std::max(row_max[r], bmax);
          const float alpha = std::exp(row_max[r] - new_max);  // exp(-inf) = 0 on the first block
          row_sum[r] = row_sum[r] * alpha + kern.exp_shift_sum(sr, kKeyBlock, new_max);
          row_max[r] = new_max;
          if (alpha != 1.0f) {
            float* orow = o.data() + r * D;
            for (std::int32_t d = 0; d < D; ++d) orow[d] *= alpha;
          }
        }
        // O += P V over this key block, 32 output columns at a time.
        for (std::int64_t j = 0; j < nk; ++j) ptrs[j] = kv.v_row(0, k0 + j, g);
        for (std::int32_t d0 = 0; d0 < D; d0 += kPanel) {
          const int nb = std::min<std::int32_t>(kPanel, D - d0);
          kern.pack(ptrs, kvt, /*transposed=*/false, nk, nb, d0, packed.data());
          kern.gemm(s.data(), kKeyBlock, rows, nk, packed.data(), nb, o.data() + d0, D, true);
        }
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        float* dst = out + ((i0 + r / G) * Hq + g * G + r % G) * D;
        const float inv = 1.0f / row_sum[r];
        for (std::int32_t d = 0; d < D; ++d) dst[d] = o.data()[r * D + d] * inv;
      }
    }
  }
}

void prefill_attention_reference(const AttentionShape& shape, const KVCacheView& kv, std::int64_t p0, std::int64_t n,
                                 const float* q, float* out) {
  check(shape, kv, p0, n, q, out);
  const std::int32_t Hq = shape.num_q_heads, D = shape.head_dim, G = shape.group_size();
  const double scale = shape.scale();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t keys = p0 + i + 1;
    for (std::int32_t h = 0; h < Hq; ++h) {
      const float* qv = q + (i * Hq + h) * D;
      std::vector<double> sc(keys);
      double mx = -std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < keys; ++j) {
        const void* k = kv.k_row(0, j, h / G);
        double dot = 0;
        for (std::int32_t d = 0; d < D; ++d) dot += static_cast<double>(qv[d]) * load_as_float(k, kv.dtype(), d);
        sc[j] = dot * scale;
        mx = std::max(mx, sc[j]);
      }
      std::vector<double> acc(D, 0.0);
      double sum = 0;
      for (std::int64_t j = 0; j < keys; ++j) {
        const double w = std::exp(sc[j] - mx);
        sum += w;
        const void* v = kv.v_row(0, j, h / G);
        for (std::int32_t d = 0; d < D; ++d) acc[d] += w * load_as_float(v, kv.dtype(), d);
      }
      for (std::int32_t d = 0; d < D; ++d) out[(i * Hq + h) * D + d] = static_cast<float>(acc[d] / sum);
    }
  }
}

}  // namespace macattn::engine::cpu
