#include <cmath>
#include <utility>

#include "core/check.hpp"
#include "core/merge.hpp"
#include "macattn/attention.hpp"

namespace macattn {

using detail::require;

void merge_states(std::int64_t n, std::int32_t head_dim, const float* o1, const float* lse1, const float* o2,
                  const float* lse2, float* out, float* lse_out) {
  constexpr const char* fn = "merge_states";
  require(n >= 0, fn, ": n = ", n, " < 0");
  require(head_dim >= 1, fn, ": head_dim = ", head_dim, ", must be >= 1");
  if (n == 0) return;
  const std::pair<const void*, const char*> args[] = {{o1, "o1"},   {lse1, "lse1"}, {o2, "o2"},
                                                      {lse2, "lse2"}, {out, "out"},   {lse_out, "lse_out"}};
  for (const auto& [ptr, name] : args) require(ptr != nullptr, fn, ": ", name, " is null");
  for (std::int64_t i = 0; i < n; ++i) {
    require(!std::isnan(lse1[i]) && !std::isnan(lse2[i]), fn, ": state ", i, " has a NaN LSE (lse1 = ", lse1[i],
            ", lse2 = ", lse2[i], ")");
  }
  const auto d = static_cast<std::size_t>(head_dim);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto off = static_cast<std::size_t>(i) * d;
    detail::merge_state(head_dim, o1 + off, lse1[i], o2 + off, lse2[i], out + off, lse_out + i);
  }
}

}  // namespace macattn
