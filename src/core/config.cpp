#include "macattn/config.hpp"

#include <cmath>
#include <sstream>

#include "core/check.hpp"

namespace macattn {

using detail::require;

float AttentionShape::scale() const {
  return softmax_scale != 0.0f ? softmax_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

void AttentionShape::validate() const {
  require(num_q_heads >= 1, "AttentionShape: num_q_heads = ", num_q_heads, ", must be >= 1");
  require(num_kv_heads >= 1, "AttentionShape: num_kv_heads = ", num_kv_heads, ", must be >= 1");
  require(num_q_heads % num_kv_heads == 0, "AttentionShape: num_q_heads = ", num_q_heads,
          " is not a multiple of num_kv_heads = ", num_kv_heads);
  require(head_dim >= 1 && head_dim <= 1024, "AttentionShape: head_dim = ", head_dim, ", must be in [1, 1024]");
  require(std::isfinite(softmax_scale) && softmax_scale >= 0.0f, "AttentionShape: softmax_scale = ", softmax_scale,
          ", must be finite and >= 0 (0 = 1/sqrt(head_dim))");
}

std::string AttentionShape::to_string() const {
  std::ostringstream s;
  s << "Hq=" << num_q_heads << " Hkv=" << num_kv_heads << " D=" << head_dim << " scale=" << scale();
  return s.str();
}

float MacConfig::threshold(std::int32_t head_dim) const {
  const float m = 1.0f - tau;
  return 2.0f * static_cast<float>(head_dim) * m * m;
}

void MacConfig::validate() const {
  require(window >= 1, "MacConfig: window (W) = ", window, ", must be >= 1");
  require(rect_offset >= 1, "MacConfig: rect_offset (S) = ", rect_offset, ", must be >= 1");
  require(std::isfinite(tau) && tau >= 0.0f && tau < 1.0f, "MacConfig: tau = ", tau, ", must be in [0, 1)");
  require(front_sinks >= 0, "MacConfig: front_sinks (F) = ", front_sinks, ", must be >= 0");
  require(min_context >= 0, "MacConfig: min_context = ", min_context, ", must be >= 0");
}

std::string MacConfig::to_string() const {
  std::ostringstream s;
  s << "W=" << window << " S=" << rect_offset << " tau=" << tau << " F=" << front_sinks
    << " min_context=" << min_context;
  if (!report_miss_matches) s << " report_miss_matches=false";
  return s.str();
}

}  // namespace macattn
