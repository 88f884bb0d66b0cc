// macattn/mac_state.hpp: the per-sequence, per-layer MAC ring (MAC_ATTENTION.md §4).
//
// One MacState belongs to one sequence in one attention layer; an engine holds
// num_layers of them per sequence. It owns its memory (host); MacStateView is the
// non-owning view the entry points take, so other owners (a device allocator, an engine
// arena) can hand in their own memory.
#pragma once

#include <cstdint>
#include <vector>

#include "macattn/config.hpp"
#include "macattn/dtype.hpp"
#include "macattn/host_memory.hpp"

namespace macattn {

/// Non-owning view of one ring. Slot s holds the position p in [position-W, position) with
/// p mod W == s. Layouts (row-major):
///   qring: [W, Hq, D] of ring_dtype  — pre-RoPE query of the slot's position
///   oring: [W, Hq, D] of ring_dtype  — normalised output o of the slot's entry state
///   lring: [W, Hq]    of fp32        — natural-log LSE of the entry state; -inf = unusable
/// position: the number of tokens the ring has seen = the next decode position t it expects.
/// ready: false after invalidate(); a step that finds the ring not ready or at another
/// position than its t wipes it (all lring = -inf) first, so it only misses until the ring
/// has refilled.
struct MacStateView {
  void* qring = nullptr;
  void* oring = nullptr;
  float* lring = nullptr;
  std::int64_t* position = nullptr;
  std::uint8_t* ready = nullptr;
  DType ring_dtype = DType::bf16;
  std::int32_t window = 0;
  std::int32_t num_q_heads = 0;
  std::int32_t head_dim = 0;
};

class MacState {
 public:
  /// Allocates a ring for `shape` and `config.window`, wiped and not ready. ring_dtype is the
  /// element type of qring and oring (bf16 as in the reference implementation halves the
  /// scan's bytes; f32 is exact). Throws macattn::Error on a bad shape, config or dtype.
  MacState(const AttentionShape& shape, const MacConfig& config, DType ring_dtype = DType::bf16);

  /// Every slot unusable (lring = -inf, qring = oring = 0), position 0, not ready.
  void reset();
  /// Marks the ring stale (ready = false). The next decode or prefill step wipes it.
  void invalidate();

  bool ready() const { return ready_ != 0; }
  std::int64_t position() const { return position_; }
  DType ring_dtype() const { return view_.ring_dtype; }
  std::int32_t window() const { return view_.window; }
  std::int32_t num_q_heads() const { return view_.num_q_heads; }
  std::int32_t head_dim() const { return view_.head_dim; }
  /// Host bytes owned (qring + oring + lring).
  std::size_t bytes() const { return storage_.size() + lring_.size() * sizeof(float); }

  /// Element accessors for inspection and tests: the ring row of `slot`, head h.
  float q_at(std::int32_t slot, std::int32_t h, std::int32_t i) const;
  float o_at(std::int32_t slot, std::int32_t h, std::int32_t i) const;
  float lse_at(std::int32_t slot, std::int32_t h) const;

  /// The view; valid until this object is moved or destroyed.
  MacStateView view();

  MacState(const MacState& other);
  MacState& operator=(const MacState& other);
  MacState(MacState&& other) noexcept;
  MacState& operator=(MacState&& other) noexcept;
  ~MacState() = default;

 private:
  void rebind();
  std::vector<unsigned char, HugePageAllocator<unsigned char>> storage_;  // qring then oring (scanned every step)
  std::vector<float> lring_;
  std::int64_t position_ = 0;
  std::uint8_t ready_ = 0;
  MacStateView view_;
};

/// Wipes a ring through its view: all lring = -inf, qring = oring = 0, position = new_position,
/// ready = 1. Used by backends when a step finds the ring stale.
void mac_state_wipe(const MacStateView& state, std::int64_t new_position);
/// Checks a view against the shape and config; throws macattn::Error naming `what`.
void mac_state_validate(const MacStateView& state, const AttentionShape& shape, const MacConfig& config,
                        const char* what);

}  // namespace macattn
