// macattn/cuda.hpp: the CUDA backend (NVIDIA Hopper first; any sm_80+ GPU the library was
// built for). No CUDA header is needed to include this file: streams are passed as `void*`
// (a cudaStream_t; null = the legacy default stream).
//
// Everything here works on DEVICE memory, and nothing reads device memory on the host: the
// page table, sequence lengths, ring positions and MAC decisions stay on the GPU, so a decode
// step can be captured once in a CUDA graph and replayed (no host synchronisation, no host
// planning per step). What the host must know to size the launch grid is passed explicitly
// (`max_seq_len`, `max_rows_per_seq`); the device never reads past it.
//
// Conventions (as in attention.hpp): B sequences, Hq query heads, Hkv KV heads, D = head_dim;
// query head h reads KV head h / (Hq/Hkv); decode position t_b = seq_len(b) - 1; LSE natural log.
// Supported: K/V bf16 or f16; D = 64, 128, 256; group size Hq/Hkv in 1..16; paged KV with any
// page size in FlashInfer's layout (NHD or HND); queries/outputs f32, f16 or bf16; ring dtype
// f32, f16 or bf16. Decisions (hits, matched positions) are identical to the CPU backends on
// the same inputs; outputs differ by rounding (scores and softmax in fp32, P and K/V in the
// K/V dtype on the tensor cores).
#pragma once

#include <cstdint>
#include <string>

#include "macattn/attention.hpp"
#include "macattn/config.hpp"
#include "macattn/dtype.hpp"
#include "macattn/kv_cache.hpp"

namespace macattn::cuda {

/// True when the library was built with CUDA and a usable GPU is present.
bool available();
/// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" or why CUDA is unavailable.
std::string device_description();

/// A paged K/V cache in device memory, FlashInfer's page table (see PagedKV in kv_cache.hpp):
/// every pointer is a device pointer. seq_len(b) = (indptr[b+1]-indptr[b]-1)*page_size +
/// last_page_len[b]. The caller guarantees seq_len(b) <= max_seq_len for every b and that the
/// table is valid (the device cannot throw; indices out of range are undefined behaviour, as
/// in FlashInfer). k_pages/v_pages must be 16-byte aligned.
struct PagedKVDevice {
  const void* k_pages = nullptr;
  const void* v_pages = nullptr;
  std::int64_t num_pages = 0;
  std::int32_t page_size = 0;
  KVLayout layout = KVLayout::NHD;
  const std::int32_t* indptr = nullptr;         ///< [batch_size + 1]
  const std::int32_t* indices = nullptr;        ///< [indptr[batch_size]]
  const std::int32_t* last_page_len = nullptr;  ///< [batch_size]
  std::int32_t batch_size = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::bf16;
  std::int64_t max_seq_len = 0;  ///< host-known bound on every seq_len (sizes the split grid)
};

/// The MAC rings of `batch_size` sequences of one layer, in device memory (the batched form
/// of MacStateView). Row-major layouts:
///   qring, oring: [batch_size, W, Hq, D] of ring_dtype;  lring: [batch_size, W, Hq] fp32;
///   qring must be 16-byte aligned (the scan copies its rows with 16-byte async copies).
///   position: [batch_size] int64;  ready: [batch_size] uint8.
/// Semantics per sequence as MacStateView's (mac_state.hpp): a step that finds a ring not
/// ready or at another position than its t wipes it on the device and misses.
struct MacRingsDevice {
  void* qring = nullptr;
  void* oring = nullptr;
  float* lring = nullptr;
  std::int64_t* position = nullptr;
  std::uint8_t* ready = nullptr;
  DType ring_dtype = DType::bf16;
  std::int32_t window = 0;
  std::int32_t num_q_heads = 0;
  std::int32_t head_dim = 0;
  std::int32_t batch_size = 0;
};

/// Device scratch (split partials, match results). Allocate it, reserve() for the largest
/// call, then reuse it for every call, including inside graph capture (it never allocates
/// during a call; a call that needs more than reserved throws). One workspace per stream.
class Workspace {
 public:
  Workspace() = default;
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  /// Makes room for decode calls of up to `batch` sequences of up to `max_seq_len` tokens of
  /// `shape`, and prefill-init calls of up to `batch` sequences (at most W rows each kept).
  /// `window` (W, >= 1) is checked but sizes nothing today (the scratch of the current kernels
  /// does not depend on it); it stays so that callers need not change if a kernel's does.
  /// Allocates device memory (not capturable). Throws macattn::Error on bad arguments or
  /// when the allocation fails.
  void reserve(const AttentionShape& shape, std::int32_t batch, std::int64_t max_seq_len,
               std::int32_t window = 512);
  std::size_t bytes() const { return bytes_; }

  // Internal (used by the backend): device buffers and their capacities.
  struct Buffers {
    float* part_o = nullptr;           ///< [capacity_rows * capacity_splits * D] split outputs
    float* part_lse = nullptr;         ///< [capacity_rows * capacity_splits]
    unsigned long long* best = nullptr;  ///< [capacity_heads] packed (distance, age) minima
    std::uint8_t* seq_flags = nullptr;   ///< [capacity_batch] per-step flags (stale ring)
    std::int32_t* group_parts = nullptr;  ///< [capacity_heads] MAC amend partials per group (spread plan)
    std::int64_t capacity_rows = 0;      ///< (query row, head) pairs of partials
    std::int32_t capacity_splits = 0;
    std::int64_t capacity_heads = 0;
    std::int32_t capacity_batch = 0;
    std::int32_t head_dim = 0;
    void* side_stream = nullptr;  ///< cudaStream_t: MAC's complete kernel beside the scan (MACATTN_CUDA_COMPLETE=side)
    void* fork_event = nullptr;   ///< cudaEvent_t: the side stream waits for the caller's stream
    void* join_event = nullptr;   ///< cudaEvent_t: the caller's stream waits for the side stream
    void* scan_event = nullptr;   ///< cudaEvent_t: recorded after mac_scan's kernel; mac_decode waits for it
  };
  const Buffers& buffers() const { return buffers_; }

  // Internal: what the scan launched by mac_scan was launched for, so that the mac_decode that
  // consumes it can refuse a call it does not fit.
  struct PendingScan {
    bool pending = false;
    std::int32_t batch_size = 0, num_q_heads = 0, head_dim = 0, window = 0;
    bool bounded = false;  ///< rows that cannot be hits were dropped after their first dims
  };
  PendingScan& pending_scan() { return pending_; }

 private:
  void release();
  Buffers buffers_;
  PendingScan pending_;
  std::size_t bytes_ = 0;
};

/// Exact decode attention for one layer (flash-decoding: split-KV, all heads of a GQA group
/// share each K/V tile on the tensor cores, LSE merge of the splits on the device).
///   q_post: [B, Hq, D] device;  out: [B, Hq, D] device, dtype of q_post;  lse: [B, Hq] fp32
///   device or null. A sequence with seq_len 0 gets out = 0, lse = -inf.
void exact_decode(const AttentionShape& shape, const PagedKVDevice& kv, ConstTensor q_post, Tensor out,
                  float* lse, Workspace& workspace, void* stream = nullptr);

/// MAC decode for one layer (MAC_ATTENTION.md §5), every decision on the device: ring scan,
/// hit rule, amend (reuse + band, or the exact prefix), ring write, complete (sinks + tail).
/// Three kernels (scan, attend, finish), no host synchronisation. A group with any miss streams its K/V through the
/// same split-KV kernel as exact_decode; an all-hit group reads only its bands, tail and sinks.
///   q_post, q_pre: [B, Hq, D] device, same dtype;  out: [B, Hq, D] device;  lse: [B, Hq] or
///   null;  head_stats: [B, Hq] DEVICE array or null (per-head decisions as in attention.hpp).
/// Every sequence must have seq_len >= 1 (undefined otherwise: the device cannot throw).
/// After mac_scan on this workspace, the call uses that scan (see mac_scan) and throws if its
/// arguments do not fit it.
void mac_decode(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv, ConstTensor q_post,
                ConstTensor q_pre, const MacRingsDevice& rings, Tensor out, float* lse, HeadStats* head_stats,
                Workspace& workspace, void* stream = nullptr);

/// mac_decode's first kernel, the ring scan, launched on its own, for callers that have q_pre
/// before q_post: an engine whose projection writes the pre-RoPE queries one kernel before its
/// RoPE kernel writes q_post can run the scan beside that kernel. The next mac_decode on this
/// workspace then launches everything but the scan, and its stream waits for the scan through
/// an event (a captured graph records that edge; the stream given here must belong to the same
/// capture). That call must pass the same shape, config, kv, rings and q_pre values (its q_pre
/// is read again, contiguous, to write the ring row), and head_stats that are non-null with
/// config.report_miss_matches exactly when `report_miss_matches` is true here (otherwise the
/// scan drops rows that cannot be hits after their first dims, and a miss's best row is not
/// the true best). Results are bit-identical to mac_decode alone.
///   q_pre: sequence b's head h at element b * q_pre_row_stride + h * D of q_pre.data, device;
///   q_pre_row_stride >= Hq * D elements (0: Hq * D, contiguous), e.g. the q columns of a
///   fused q|k|v projection's output rows.
/// Throws macattn::Error on bad arguments, or when a scan is already pending on the workspace.
void mac_scan(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv, ConstTensor q_pre,
              std::int64_t q_pre_row_stride, const MacRingsDevice& rings, bool report_miss_matches,
              Workspace& workspace, void* stream = nullptr);

/// MAC prefill ring initialisation (MAC_ATTENTION.md §6; the semantics of the CPU
/// mac_prefill_init): sequence b passes n_b = row_indptr[b+1] - row_indptr[b] query rows for
/// positions [P_b - n_b, P_b), P_b = seq_len(b); rows below P_b - W are skipped; row p gets
/// qring = q_pre(p) and the exact state over [min(F, E(p)), E(p)) under q_post(p). A ring
/// ready at P_b - n_b keeps its rows (chunked prefill), otherwise it is wiped first.
/// Afterwards position = P_b, ready = 1.
///   q_post, q_pre: [total_rows, Hq, D] device;  row_indptr: [B+1] device int32;
///   max_rows_per_seq: host bound on every n_b.
void mac_prefill_init(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv,
                      ConstTensor q_post, ConstTensor q_pre, const std::int32_t* row_indptr,
                      std::int32_t max_rows_per_seq, const MacRingsDevice& rings, Workspace& workspace,
                      void* stream = nullptr);

/// Wipes every ring (lring = -inf, qring = oring = 0, position = 0, ready = 0), on the device.
void mac_rings_reset(const MacRingsDevice& rings, void* stream = nullptr);

/// The split count the kernels use for this batch/length on this device (for reports).
std::int32_t planned_splits(const AttentionShape& shape, std::int32_t batch, std::int64_t max_seq_len);

}  // namespace macattn::cuda
