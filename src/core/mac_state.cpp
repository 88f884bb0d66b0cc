#include "macattn/mac_state.hpp"

#include <cstring>
#include <limits>
#include <utility>

#include "core/check.hpp"

namespace macattn {

using detail::require;

namespace {
std::size_t ring_elems(const MacStateView& v) {
  return static_cast<std::size_t>(v.window) * static_cast<std::size_t>(v.num_q_heads) *
         static_cast<std::size_t>(v.head_dim);
}
}  // namespace

MacState::MacState(const AttentionShape& shape, const MacConfig& config, DType ring_dtype) {
  shape.validate();
  config.validate();
  require(dtype_valid(ring_dtype), "MacState: ring_dtype value ", static_cast<int>(ring_dtype),
          " is not f32, f16 or bf16");
  view_.ring_dtype = ring_dtype;
  view_.window = config.window;
  view_.num_q_heads = shape.num_q_heads;
  view_.head_dim = shape.head_dim;
  storage_.resize(2 * ring_elems(view_) * dtype_size(ring_dtype));
  lring_.resize(static_cast<std::size_t>(config.window) * static_cast<std::size_t>(shape.num_q_heads));
  rebind();
  reset();
}

void MacState::rebind() {
  view_.qring = storage_.data();
  view_.oring = storage_.data() + storage_.size() / 2;
  view_.lring = lring_.data();
  view_.position = &position_;
  view_.ready = &ready_;
}

void MacState::reset() {
  mac_state_wipe(view_, 0);
  ready_ = 0;
}

void MacState::invalidate() { ready_ = 0; }

MacStateView MacState::view() { return view_; }

float MacState::q_at(std::int32_t slot, std::int32_t h, std::int32_t i) const {
  require(slot >= 0 && slot < view_.window && h >= 0 && h < view_.num_q_heads && i >= 0 && i < view_.head_dim,
          "MacState::q_at: (slot, head, i) = (", slot, ", ", h, ", ", i, ") out of range");
  return load_as_float(view_.qring, view_.ring_dtype,
                       (static_cast<std::size_t>(slot) * view_.num_q_heads + h) * view_.head_dim + i);
}

float MacState::o_at(std::int32_t slot, std::int32_t h, std::int32_t i) const {
  require(slot >= 0 && slot < view_.window && h >= 0 && h < view_.num_q_heads && i >= 0 && i < view_.head_dim,
          "MacState::o_at: (slot, head, i) = (", slot, ", ", h, ", ", i, ") out of range");
  return load_as_float(view_.oring, view_.ring_dtype,
                       (static_cast<std::size_t>(slot) * view_.num_q_heads + h) * view_.head_dim + i);
}

float MacState::lse_at(std::int32_t slot, std::int32_t h) const {
  require(slot >= 0 && slot < view_.window && h >= 0 && h < view_.num_q_heads, "MacState::lse_at: (slot, head) = (",
          slot, ", ", h, ") out of range");
  return lring_[static_cast<std::size_t>(slot) * view_.num_q_heads + h];
}

MacState::MacState(const MacState& other)
    : storage_(other.storage_),
      lring_(other.lring_),
      position_(other.position_),
      ready_(other.ready_),
      view_(other.view_) {
  rebind();
}

MacState& MacState::operator=(const MacState& other) {
  if (this != &other) {
    storage_ = other.storage_;
    lring_ = other.lring_;
    position_ = other.position_;
    ready_ = other.ready_;
    view_ = other.view_;
    rebind();
  }
  return *this;
}

MacState::MacState(MacState&& other) noexcept
    : storage_(std::move(other.storage_)),
      lring_(std::move(other.lring_)),
      position_(other.position_),
      ready_(other.ready_),
      view_(other.view_) {
  rebind();
  other.rebind();
}

MacState& MacState::operator=(MacState&& other) noexcept {
  if (this != &other) {
    storage_ = std::move(other.storage_);
    lring_ = std::move(other.lring_);
    position_ = other.position_;
    ready_ = other.ready_;
    view_ = other.view_;
    rebind();
    other.rebind();
  }
  return *this;
}

void mac_state_wipe(const MacStateView& state, std::int64_t new_position) {
  const std::size_t bytes = ring_elems(state) * dtype_size(state.ring_dtype);
  std::memset(state.qring, 0, bytes);
  std::memset(state.oring, 0, bytes);
  const std::size_t n = static_cast<std::size_t>(state.window) * static_cast<std::size_t>(state.num_q_heads);
  for (std::size_t i = 0; i < n; ++i) state.lring[i] = -std::numeric_limits<float>::infinity();
  *state.position = new_position;
  *state.ready = 1;
}

void mac_state_validate(const MacStateView& state, const AttentionShape& shape, const MacConfig& config,
                        const char* what) {
  const std::pair<const void*, const char*> pointers[] = {{state.qring, "qring"},
                                                          {state.oring, "oring"},
                                                          {state.lring, "lring"},
                                                          {state.position, "position"},
                                                          {state.ready, "ready"}};
  for (const auto& [ptr, name] : pointers) require(ptr != nullptr, what, ": ", name, " is null");
  require(dtype_valid(state.ring_dtype), what, ": ring_dtype value ", static_cast<int>(state.ring_dtype),
          " is not f32, f16 or bf16");
  require(state.window == config.window, what, ": ring window = ", state.window, " but config.window = ",
          config.window);
  require(state.num_q_heads == shape.num_q_heads, what, ": ring num_q_heads = ", state.num_q_heads,
          " but shape.num_q_heads = ", shape.num_q_heads);
  require(state.head_dim == shape.head_dim, what, ": ring head_dim = ", state.head_dim, " but shape.head_dim = ",
          shape.head_dim);
}

}  // namespace macattn
