// CudaSession: the CUDA forward pass (see cuda_session.hpp). Prefill runs chunk by chunk
// eagerly; the decode step of all layers is one function (decode_step) that reads every
// per-step value from device memory, so it is captured once into a CUDA graph and replayed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/cpu/ops.hpp"
#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/cuda_session_impl.cuh"
#include "macattn/error.hpp"

namespace macattn::engine {

namespace gpu {

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&p_, bytes);
  if (e != cudaSuccess) {
    p_ = nullptr;
    std::size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    throw Error("CUDA engine: cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(e) +
                " (" + std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB)");
  }
}
DeviceBuffer::~DeviceBuffer() {
  if (p_ != nullptr) cudaFree(p_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_ != nullptr) cudaFree(p_);
    p_ = o.p_;
    bytes_ = o.bytes_;
    o.p_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

}  // namespace gpu

namespace {

using gpu::bf16;
using gpu::DeviceBuffer;
using gpu::StepKind;
using Clock = std::chrono::steady_clock;

template <typename T>
DeviceBuffer device_array(std::size_t count) {
  return DeviceBuffer(count * sizeof(T));
}

std::uint16_t to_bf16_bits(float f) {  // round to nearest even (NaN kept quiet)
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

// Appends a host weight (any dtype) as bf16 to `dst` at element offset `at` (rows x cols).
void upload_bf16(const WeightTensor& t, bf16* dst, std::int64_t at, cudaStream_t s) {
  const std::int64_t n = t.rows * t.cols;
  std::vector<std::uint16_t> host(static_cast<std::size_t>(n));
  const auto* src = static_cast<const std::uint8_t*>(t.data);
  const std::size_t es = dtype_size(t.dtype);
  if (t.dtype == DType::bf16) {
    std::memcpy(host.data(), src, static_cast<std::size_t>(n) * 2);
  } else {
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint8_t tmp[4];
      std::memcpy(tmp, src + static_cast<std::size_t>(i) * es, es);
      host[static_cast<std::size_t>(i)] = to_bf16_bits(load_as_float(tmp, t.dtype, 0));
    }
  }
  ENGINE_CUDA(cudaMemcpyAsync(dst + at, host.data(), static_cast<std::size_t>(n) * 2, cudaMemcpyHostToDevice, s));
  ENGINE_CUDA(cudaStreamSynchronize(s));  // `host` dies here
}

DeviceBuffer upload_f32(const WeightTensor& t, cudaStream_t s) {
  if (t.empty()) return {};
  DeviceBuffer b(static_cast<std::size_t>(t.rows * t.cols) * 4);
  ENGINE_CUDA(cudaMemcpyAsync(b.as<float>(), t.data, b.bytes(), cudaMemcpyHostToDevice, s));
  ENGINE_CUDA(cudaStreamSynchronize(s));
  return b;
}

void validate(const ModelConfig& c, const CudaSessionOptions& o) {
  const SessionOptions& so = o.session;
  if (o.batch < 1 || o.batch > 64)
    throw Error("CudaSession: batch = " + std::to_string(o.batch) + " must be in [1, 64]");
  if (o.max_prefill_chunk < 1)
    throw Error("CudaSession: max_prefill_chunk = " + std::to_string(o.max_prefill_chunk) + " must be >= 1");
  if (so.max_context < 0 || so.max_context > (std::int64_t{1} << 31) - 1)
    throw Error("CudaSession: max_context = " + std::to_string(so.max_context) + " must be in [0, 2^31)");
  if (so.kv_page_size < 1)
    throw Error("CudaSession: kv_page_size = " + std::to_string(so.kv_page_size) + " must be >= 1");
  if (so.kv_dtype != DType::bf16) throw Error("CudaSession: kv_dtype must be bf16 on the GPU");
  const AttentionOptions& a = so.attention;
  if (!a.mac_layers.empty() && static_cast<std::int32_t>(a.mac_layers.size()) != c.num_layers)
    throw Error("CudaSession: attention.mac_layers has " + std::to_string(a.mac_layers.size()) +
                " entries, the model has " + std::to_string(c.num_layers) + " layers");
  if (a.mode == AttentionMode::mac) {
    a.mac.validate();
    if (!dtype_valid(a.ring_dtype)) throw Error("CudaSession: attention.ring_dtype is not f32, f16 or bf16");
  }
  if (c.head_dim > 256 || c.head_dim % 2 != 0)
    throw Error("CudaSession: head_dim " + std::to_string(c.head_dim) + " is not supported (even, <= 256)");
}

// MACATTN_ENGINE_MATMUL: the most decode rows (batch) whose matmuls use the engine's skinny
// GEMM instead of cuBLAS. Unset, empty or "auto": 4 (on the H200, whole llama3-8b steps at 4K,
// the FMA kernel beats cuBLAS at 1-3 rows and ties at 4; at 5-7 rows cuBLAS beats the
// tensor-core kernel by 2-3%, at 8 the tensor-core kernel beats cuBLAS by 4%); "gemv": every
// decode of <= 8 rows; "cublas": none (cuBLAS everywhere, the previous path).
std::int64_t skinny_rows_from_env() {
  const char* v = std::getenv("MACATTN_ENGINE_MATMUL");
  const std::string s = v == nullptr ? std::string() : std::string(v);
  if (s.empty() || s == "auto") return 4;
  if (s == "gemv") return gpu::kSkinnyGemmMaxRows;
  if (s == "cublas") return 0;
  throw Error("CudaSession: MACATTN_ENGINE_MATMUL = '" + s + "' is not one of auto, gemv, cublas");
}

// MACATTN_ENGINE_GEMV: the skinny GEMM's kernel. Unset, empty or "auto": fp32 FMAs up to 4 rows,
// tensor cores above (where the device has them); "mma" or "fma": that kernel at every n.
// MACATTN_ENGINE_PDL: unset, empty or "auto": the matmuls launch with programmatic dependent
// launch where the device has it (compute capability 9.0); "1" insists, "0" turns it off.
gpu::GemvLaunch gemv_launch_from_env() {
  gpu::GemvLaunch how;
  const char* v = std::getenv("MACATTN_ENGINE_GEMV");
  const std::string k = v == nullptr ? std::string() : std::string(v);
  if (k.empty() || k == "auto") how.kernel = gpu::GemvKernel::automatic;
  else if (k == "fma") how.kernel = gpu::GemvKernel::fma;
  else if (k == "mma") {
    if (!gpu::skinny_gemm_mma_supported())
      throw Error("CudaSession: MACATTN_ENGINE_GEMV = 'mma' needs compute capability 8.0 or later");
    how.kernel = gpu::GemvKernel::mma;
  } else {
    throw Error("CudaSession: MACATTN_ENGINE_GEMV = '" + k + "' is not one of auto, mma, fma");
  }
  const char* pv = std::getenv("MACATTN_ENGINE_PDL");
  const std::string p = pv == nullptr ? std::string() : std::string(pv);
  if (p.empty() || p == "auto") how.pdl = gpu::skinny_gemm_pdl_supported();
  else if (p == "0") how.pdl = false;
  else if (p == "1") {
    if (!gpu::skinny_gemm_pdl_supported())
      throw Error("CudaSession: MACATTN_ENGINE_PDL = '1' needs compute capability 9.0 or later");
    how.pdl = true;
  } else {
    throw Error("CudaSession: MACATTN_ENGINE_PDL = '" + p + "' is not one of auto, 0, 1");
  }
  // MACATTN_ENGINE_GEMV_CARVEOUT: unset, empty or "auto": 0 (GemvLaunch::carveout: the most L1);
  // an integer in -1..100 (-1: the driver's choice). Measured on the H200 (llama3-8b, 128K, batch
  // 1; docs/benchmarks/e2e_cuda.md, twenty-sixth session), with no idle point: MAC all-hit steps
  // 4.014-4.027 -> 3.985-3.986 ms, all-miss 8.037-8.038 -> 7.986-7.987, exact unchanged.
  const char* cv = std::getenv("MACATTN_ENGINE_GEMV_CARVEOUT");
  const std::string c = cv == nullptr ? std::string() : std::string(cv);
  if (c.empty() || c == "auto") {
    how.carveout = 0;
  } else {
    std::size_t used = 0;
    int value = -2;
    try {
      value = std::stoi(c, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != c.size() || value < -1 || value > 100)
      throw Error("CudaSession: MACATTN_ENGINE_GEMV_CARVEOUT = '" + c + "' is not auto or an integer in -1..100");
    how.carveout = value;
  }
  return how;
}

// An on/off switch in environment variable `name`: unset, empty or "auto" give `fallback`, "1"
// on, "0" off; any other value is refused, naming it.
bool env_switch(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  const std::string s = v == nullptr ? std::string() : std::string(v);
  if (s.empty() || s == "auto") return fallback;
  if (s == "1") return true;
  if (s == "0") return false;
  throw Error(std::string("CudaSession: ") + name + " = '" + s + "' is not one of auto, 0, 1");
}

// MACATTN_ENGINE_EARLY_SCAN: "1": a MAC layer's ring scan starts on a second stream as soon as
// the q|k|v projection has written the pre-RoPE queries, beside the RoPE kernel
// (macattn::cuda::mac_scan), where the model has no q bias and no q-norm (its q_pre is then the
// projection's output). Unset, empty, "auto" or "0": mac_decode runs the scan itself after the
// RoPE kernel. Off by default: on the H200 (llama3-8b, 128K, batch 1) it took all-hit steps 1.3%
// shorter but all-miss steps 2.4% longer (0.94x of exact, under issue 7's 0.95x); with
// MACATTN_CUDA_PDL_ATTEND=0 as well, hit-rate-0.9 steps 1% shorter, all-hit ones the same, and
// all-miss ones 0.5% longer (docs/benchmarks/e2e_cuda.md, twenty-first session).
bool early_scan_from_env() { return env_switch("MACATTN_ENGINE_EARLY_SCAN", false); }

// MACATTN_ENGINE_FUSED_NORM: unset, empty, "auto" or "1": a decode step's RMSNorms are computed
// inside the matmul that reads them (q|k|v, gate|up, lm_head) where that matmul is the skinny
// GEMM's FMA kernel (<= 4 rows); "0": rms_norm_bf16 writes the bf16 normalised rows first, as
// before (and as prefill and larger batches always do); "input": only the input norms (before
// q|k|v, and the final norm), "post": only the post-attention norms (before gate|up).
unsigned fused_norm_from_env() {
  const char* v = std::getenv("MACATTN_ENGINE_FUSED_NORM");
  const std::string s = v == nullptr ? std::string() : std::string(v);
  if (s.empty() || s == "auto" || s == "1") return kFuseInputNorm | kFusePostNorm;
  if (s == "0") return 0;
  if (s == "input") return kFuseInputNorm;
  if (s == "post") return kFusePostNorm;
  throw Error("CudaSession: MACATTN_ENGINE_FUSED_NORM = '" + s + "' is not one of auto, 0, 1, input, post");
}

// MACATTN_ENGINE_FUSED_ROPE: unset, empty, "auto" or "1": where the q|k|v matmul computes its
// input norm (MACATTN_ENGINE_FUSED_NORM) and the model has no q/k-norm, the same kernel applies
// RoPE and appends K/V (gpu::skinny_gemm_rms_norm_qkv_rope), so the attention starts one kernel
// earlier; the outputs are the same bits. "0": the RoPE kernel runs after the matmul.
bool fused_rope_from_env() { return env_switch("MACATTN_ENGINE_FUSED_ROPE", true); }

// MACATTN_ENGINE_FUSED_ARGMAX: unset, empty, "auto" or "1": where the lm_head matmul computes the
// final norm (MACATTN_ENGINE_FUSED_NORM), it also folds the greedy token into its blocks
// (gpu::skinny_gemm_rms_norm_argmax) instead of argmax_rows reading the logits again afterwards
// (20 us a step at llama3's vocabulary on the H200); the tokens and logits are the same. "0": the
// argmax kernel after the matmul.
bool fused_argmax_from_env() { return env_switch("MACATTN_ENGINE_FUSED_ARGMAX", true); }

// MACATTN_ENGINE_MAC_IDLE_POINT: where a decode step lets every SM go idle after a MAC layer
// whose post-attention norm the gate|up matmul computes (norm_fused). MAC's kernels ask for the
// most shared memory, and an SM changes its split between L1 and shared memory only while idle;
// with 28 KB of L1 the MLP matmuls are slow (the down matmul's blocks each re-read a 28 KB
// activation row). The matmuls' preferred carveout (gpu::GemvLaunch::carveout, default 0: the
// most L1) keeps their blocks off SMs still split for MAC, so by default no idle point is needed.
// Unset, empty or "auto": "none" where the matmuls prefer a carveout (0..100), "o_proj" where
// they leave it to the driver (MACATTN_ENGINE_GEMV_CARVEOUT=-1). "o_proj": the o_proj matmul
// launches without programmatic dependent launch; "gate_up": the gate|up matmul does; "none":
// neither. Measured on the H200 (llama3-8b, 128K, batch 1, twenty-sixth session): with the
// driver's carveout "none" cost 0.25 ms per all-hit step; with carveout 0 "none" saved 0.03-0.05
// ms against "o_proj".
IdlePoint idle_point_from_env(const gpu::GemvLaunch& how) {
  const char* v = std::getenv("MACATTN_ENGINE_MAC_IDLE_POINT");
  const std::string s = v == nullptr ? std::string() : std::string(v);
  if (s.empty() || s == "auto") return how.carveout >= 0 ? IdlePoint::none : IdlePoint::o_proj;
  if (s == "o_proj") return IdlePoint::o_proj;
  if (s == "gate_up") return IdlePoint::gate_up;
  if (s == "none") return IdlePoint::none;
  throw Error("CudaSession: MACATTN_ENGINE_MAC_IDLE_POINT = '" + s + "' is not one of auto, o_proj, gate_up, none");
}

// MACATTN_ENGINE_GEMV_NARROW: which decode matmuls launch 128-thread blocks instead of 256
// (GemvLaunch::narrow, 1-2 rows): "o_proj", "down", "both" or "none"; unset, empty or "auto":
// both at 1 row, none at 2 (not measured there). The two have llama3-8b's 4096 outputs, 512
// blocks of 8 rows: about two waves of 256-thread blocks on 132 SMs, one of 128-thread blocks.
// Measured on the H200 (llama3-8b, 128K, batch 1, two runs each): exact 7.708 -> 7.666 ms, MAC
// hit 1.0 4.079-4.084 -> 4.045-4.053 ms, hit 0 8.081-8.084 -> 8.036-8.048 ms.
unsigned narrow_from_env() {
  const char* v = std::getenv("MACATTN_ENGINE_GEMV_NARROW");
  const std::string s = v == nullptr ? std::string() : std::string(v);
  if (s.empty() || s == "auto") return kNarrowAuto;
  if (s == "none") return 0;
  if (s == "o_proj") return kNarrowOProj;
  if (s == "down") return kNarrowDown;
  if (s == "both") return kNarrowOProj | kNarrowDown;
  throw Error("CudaSession: MACATTN_ENGINE_GEMV_NARROW = '" + s + "' is not one of auto, none, o_proj, down, both");
}

bool library_supports(std::int32_t D, std::int32_t Hq, std::int32_t Hkv) {
  return (D == 64 || D == 128 || D == 256) && Hq / Hkv >= 1 && Hq / Hkv <= 16;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Construction

CudaSession::Impl::Impl(const ModelConfig& c, const CudaSessionOptions& o) : config(c), options(o) {
  validate(c, o);
  if (!macattn::cuda::available())
    throw Error("CudaSession: no usable CUDA device: " + macattn::cuda::device_description());
  B = o.batch;
  L = c.num_layers;
  H = c.hidden_size;
  Hq = c.num_q_heads;
  Hkv = c.num_kv_heads;
  D = c.head_dim;
  I = c.intermediate_size;
  V = c.vocab_size;
  QD = Hq * D;
  KD = Hkv * D;
  QKV = QD + 2 * KD;
  shape = AttentionShape{Hq, Hkv, D, 0.0f};
  capacity = o.session.max_context > 0 ? o.session.max_context : c.max_position_embeddings;
  page_size = o.session.kv_page_size;
  pages_per_seq = (capacity + page_size - 1) / page_size;
  library_attention = library_supports(D, Hq, Hkv);
  const AttentionOptions& a = o.session.attention;
  mac_layer.assign(L, false);
  if (a.mode == AttentionMode::mac) {
    if (!library_attention)
      throw Error(
          "CudaSession: MAC attention on the GPU needs head_dim 64, 128 or 256 and at most 16 query heads "
          "per KV head (the library's CUDA kernels); this model has head_dim " +
          std::to_string(D));
    for (std::int32_t l = 0; l < L; ++l) mac_layer[l] = a.mac_layers.empty() || a.mac_layers[l];
  }
  window = a.mac.window;
  ring_dtype = a.ring_dtype;
  skinny_max_rows = skinny_rows_from_env();
  gemv = gemv_launch_from_env();
  early_scan = early_scan_from_env();
  fused_norm = fused_norm_from_env();
  fused_rope = fused_rope_from_env();
  fused_argmax = fused_argmax_from_env();
  idle_point = idle_point_from_env(gemv);
  narrow = narrow_from_env();
  ENGINE_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ENGINE_CUDA(cudaStreamCreateWithFlags(&scan_stream, cudaStreamNonBlocking));
  ENGINE_CUDA(cudaEventCreateWithFlags(&scan_fork, cudaEventDisableTiming));
  ENGINE_CUBLAS(cublasCreate(&cublas));
  ENGINE_CUBLAS(cublasSetStream(cublas, stream));
  // A fixed workspace: cuBLAS then allocates nothing during graph capture.
  cublas_workspace = DeviceBuffer(std::size_t{32} << 20);
  ENGINE_CUBLAS(cublasSetWorkspace(cublas, cublas_workspace.as<void>(), cublas_workspace.bytes()));
  layer_stats.resize(L);
  for (std::int32_t l = 0; l < L; ++l) layer_stats[l].mac_enabled = mac_layer[l];
  pos_host.assign(B, 0);
}

CudaSession::Impl::~Impl() {
  clear_graphs();
  if (cublas != nullptr) cublasDestroy(cublas);
  if (scan_fork != nullptr) cudaEventDestroy(scan_fork);
  if (scan_stream != nullptr) cudaStreamDestroy(scan_stream);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

void CudaSession::Impl::clear_graphs() {
  for (auto& [key, g] : graphs) cudaGraphExecDestroy(g);
  graphs.clear();
}

void CudaSession::Impl::upload(const Model& model) {
  const auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n) * 2; };
  w.embed = DeviceBuffer(sz(std::int64_t{V} * H));
  upload_bf16(model.embed_tokens(), w.embed.as<bf16>(), 0, stream);
  if (!config.tie_word_embeddings) {
    w.lm_head = DeviceBuffer(sz(std::int64_t{V} * H));
    upload_bf16(model.lm_head(), w.lm_head.as<bf16>(), 0, stream);
  }
  w.final_norm = upload_f32(model.final_norm(), stream);
  w.layers.resize(L);
  for (std::int32_t l = 0; l < L; ++l) {
    const LayerWeights& src = model.layer(l);
    gpu::DeviceLayer& d = w.layers[l];
    d.input_norm = upload_f32(src.input_norm, stream);
    d.post_norm = upload_f32(src.post_attention_norm, stream);
    d.w_qkv = DeviceBuffer(sz(std::int64_t{QKV} * H));
    upload_bf16(src.q_proj, d.w_qkv.as<bf16>(), 0, stream);
    upload_bf16(src.k_proj, d.w_qkv.as<bf16>(), std::int64_t{QD} * H, stream);
    upload_bf16(src.v_proj, d.w_qkv.as<bf16>(), std::int64_t{QD + KD} * H, stream);
    if (!src.q_bias.empty()) {
      std::vector<float> b(QKV);
      std::memcpy(b.data(), src.q_bias.data, QD * 4);
      std::memcpy(b.data() + QD, src.k_bias.data, KD * 4);
      std::memcpy(b.data() + QD + KD, src.v_bias.data, KD * 4);
      d.b_qkv = upload_f32(WeightTensor{b.data(), DType::f32, 1, QKV}, stream);
    }
    d.q_norm = upload_f32(src.q_norm, stream);
    d.k_norm = upload_f32(src.k_norm, stream);
    d.w_o = DeviceBuffer(sz(std::int64_t{H} * QD));
    upload_bf16(src.o_proj, d.w_o.as<bf16>(), 0, stream);
    d.b_o = upload_f32(src.o_bias, stream);
    d.w_gate_up = DeviceBuffer(sz(std::int64_t{2} * I * H));
    upload_bf16(src.gate_proj, d.w_gate_up.as<bf16>(), 0, stream);
    upload_bf16(src.up_proj, d.w_gate_up.as<bf16>(), std::int64_t{I} * H, stream);
    d.w_down = DeviceBuffer(sz(std::int64_t{H} * I));
    upload_bf16(src.down_proj, d.w_down.as<bf16>(), 0, stream);
  }
  bf16_norms();
}

void CudaSession::Impl::bf16_norms() {
  const auto copy = [&](const DeviceBuffer& f32) {
    DeviceBuffer b(static_cast<std::size_t>(H) * 2);
    gpu::to_bf16(f32.as<float>(), H, b.as<bf16>(), stream);
    return b;
  };
  w.final_norm_bf16 = copy(w.final_norm);
  for (gpu::DeviceLayer& d : w.layers) {
    d.input_norm_bf16 = copy(d.input_norm);
    d.post_norm_bf16 = copy(d.post_norm);
  }
}

void CudaSession::Impl::randomize(std::uint64_t seed) {
  // Uniform(-a, a) with a = sqrt(3 / fan_in): unit-variance outputs for unit-variance inputs,
  // so activations stay finite through the layers. Norm weights 1, no biases.
  const auto mat = [&](std::int64_t rows_, std::int64_t cols_, std::uint64_t tag) {
    DeviceBuffer b(static_cast<std::size_t>(rows_ * cols_) * 2);
    gpu::fill_random_bf16(b.as<bf16>(), rows_ * cols_, seed * 1000003ull + tag, std::sqrt(3.0f / cols_), stream);
    return b;
  };
  const auto ones = [&](std::int64_t n) {
    DeviceBuffer b(static_cast<std::size_t>(n) * 4);
    gpu::fill_f32(b.as<float>(), n, 1.0f, stream);
    return b;
  };
  w.embed = mat(V, H, 1);
  if (!config.tie_word_embeddings) w.lm_head = mat(V, H, 2);
  w.final_norm = ones(H);
  w.layers.resize(L);
  for (std::int32_t l = 0; l < L; ++l) {
    gpu::DeviceLayer& d = w.layers[l];
    const std::uint64_t t = 16 + 8 * static_cast<std::uint64_t>(l);
    d.input_norm = ones(H);
    d.post_norm = ones(H);
    d.w_qkv = mat(QKV, H, t);
    d.w_o = mat(H, QD, t + 1);
    d.w_gate_up = mat(2 * std::int64_t{I}, H, t + 2);
    d.w_down = mat(H, I, t + 3);
    if (config.qk_norm) {
      d.q_norm = ones(D);
      d.k_norm = ones(D);
    }
  }
  bf16_norms();
  ENGINE_CUDA(cudaStreamSynchronize(stream));
}

void CudaSession::Impl::allocate() {
  // Sizes first: fail with one clear message instead of deep inside the allocations.
  const std::size_t kv_bytes = static_cast<std::size_t>(L) * 2 * B * pages_per_seq * page_size * KD * 2;
  const bool mac = options.session.attention.mode == AttentionMode::mac;
  const std::size_t ring_bytes =
      mac ? static_cast<std::size_t>(L) * B * window * Hq * (2 * D * dtype_size(ring_dtype) + 4) : 0;
  rows = std::max<std::int64_t>(options.max_prefill_chunk, B);
  const std::size_t act_bytes =
      static_cast<std::size_t>(rows) * (H * 4 + H * 2 + QKV * 4 + 3 * QD * 4 + QD * 2 + 2 * I * 4 + I * 2);
  std::size_t free_b = 0, total_b = 0;
  ENGINE_CUDA(cudaMemGetInfo(&free_b, &total_b));
  const std::size_t need = kv_bytes + ring_bytes + act_bytes + (std::size_t{256} << 20);
  if (need > free_b)
    throw Error("CudaSession: needs " + std::to_string(need >> 20) + " MiB of device memory (K/V " +
                std::to_string(kv_bytes >> 20) + " MiB for " + std::to_string(B) + " x " + std::to_string(capacity) +
                " tokens, rings " + std::to_string(ring_bytes >> 20) + " MiB, activations " +
                std::to_string(act_bytes >> 20) + " MiB) but only " + std::to_string(free_b >> 20) +
                " MiB are free after the weights");

  for (std::int32_t l = 0; l < L; ++l) {
    k_pages.emplace_back(kv_bytes / L / 2);
    v_pages.emplace_back(kv_bytes / L / 2);
  }
  indptr = device_array<std::int32_t>(B + 1);
  indices = device_array<std::int32_t>(static_cast<std::size_t>(B * pages_per_seq));
  last_page_len = device_array<std::int32_t>(B);
  s_indptr = device_array<std::int32_t>(2);
  s_last_page_len = device_array<std::int32_t>(1);
  iota = device_array<std::int32_t>(static_cast<std::size_t>(B * pages_per_seq));
  {
    std::vector<std::int32_t> h(static_cast<std::size_t>(B * pages_per_seq));
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::int32_t>(i);
    ENGINE_CUDA(cudaMemcpy(iota.as<void>(), h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    std::vector<std::int32_t> seqs(B);
    for (std::int32_t b = 0; b < B; ++b) seqs[b] = b;
    batch_seq = device_array<std::int32_t>(B);
    ENGINE_CUDA(cudaMemcpy(batch_seq.as<void>(), seqs.data(), B * 4, cudaMemcpyHostToDevice));
  }
  pos = device_array<std::int64_t>(B);
  ENGINE_CUDA(cudaMemsetAsync(pos.as<void>(), 0, B * 8, stream));

  if (mac) {
    const std::size_t cells = static_cast<std::size_t>(L) * B * window * Hq;
    qring = DeviceBuffer(cells * D * dtype_size(ring_dtype));
    oring = DeviceBuffer(cells * D * dtype_size(ring_dtype));
    lring = device_array<float>(cells);
    ring_position = device_array<std::int64_t>(static_cast<std::size_t>(L) * B);
    ring_ready = device_array<std::uint8_t>(static_cast<std::size_t>(L) * B);
    for (std::int32_t l = 0; l < L; ++l)
      if (mac_layer[l]) macattn::cuda::mac_rings_reset(rings(l), stream);
  }
  head_stats = device_array<HeadStats>(static_cast<std::size_t>(L) * B * Hq);
  ENGINE_CUDA(cudaMemsetAsync(head_stats.as<void>(), 0, head_stats.bytes(), stream));
  {
    std::vector<std::uint8_t> f(L);
    for (std::int32_t l = 0; l < L; ++l) f[l] = mac_layer[l] ? 1 : 0;
    mac_flags = device_array<std::uint8_t>(L);
    ENGINE_CUDA(cudaMemcpy(mac_flags.as<void>(), f.data(), L, cudaMemcpyHostToDevice));
  }
  stats_acc = device_array<std::int64_t>(static_cast<std::size_t>(L) * 6);
  ENGINE_CUDA(cudaMemsetAsync(stats_acc.as<void>(), 0, stats_acc.bytes(), stream));

  const auto R = static_cast<std::size_t>(rows);
  x = device_array<float>(R * H);
  hb = device_array<bf16>(R * H);
  x_bf16 = device_array<bf16>(static_cast<std::size_t>(B) * H);
  qkv = device_array<float>(R * QKV);
  q = device_array<float>(R * QD);
  q_pre = device_array<float>(R * QD);
  q_pre_layers = device_array<float>(static_cast<std::size_t>(L) * B * QD);
  attn = device_array<float>(R * QD);
  attn_b = device_array<bf16>(R * QD);
  gu = device_array<float>(R * 2 * I);
  act = device_array<bf16>(R * I);
  exact_out = device_array<float>(static_cast<std::size_t>(B) * QD);
  audit_sums = device_array<double>(static_cast<std::size_t>(L) * 2);
  tokens = device_array<std::int32_t>(R);
  row_pos = device_array<std::int64_t>(R);
  row_seq = device_array<std::int32_t>(R);
  greedy = device_array<std::int32_t>(B);
  argmax_best = device_array<unsigned long long>(B);  // zero between steps (skinny_gemm_rms_norm_argmax)
  ENGINE_CUDA(cudaMemset(argmax_best.as<void>(), 0, argmax_best.bytes()));
  row_indptr = device_array<std::int32_t>(2);
  ensure_logits_rows(B);

  {
    cpu::Rope rope(config);
    inv_freq = device_array<float>(rope.inv_freq().size());
    ENGINE_CUDA(cudaMemcpy(inv_freq.as<void>(), rope.inv_freq().data(), inv_freq.bytes(), cudaMemcpyHostToDevice));
  }
  if (library_attention) workspace.reserve(shape, std::max<std::int32_t>(B, 1), capacity, std::max(window, 1));

  decode_weight_bytes = 0;
  for (const auto& d : w.layers)
    decode_weight_bytes += d.w_qkv.bytes() + d.w_o.bytes() + d.w_gate_up.bytes() + d.w_down.bytes() +
                           d.input_norm.bytes() + d.post_norm.bytes() + d.b_qkv.bytes() + d.b_o.bytes() +
                           d.q_norm.bytes() + d.k_norm.bytes();
  decode_weight_bytes +=
      static_cast<std::size_t>(V) * H * 2 + w.final_norm.bytes() + static_cast<std::size_t>(B) * H * 2;
  w.bytes = w.embed.bytes() + w.lm_head.bytes() + w.final_norm.bytes();
  for (const auto& d : w.layers)
    w.bytes += d.w_qkv.bytes() + d.w_o.bytes() + d.w_gate_up.bytes() + d.w_down.bytes() + d.input_norm.bytes() +
               d.post_norm.bytes() + d.b_qkv.bytes() + d.b_o.bytes() + d.q_norm.bytes() + d.k_norm.bytes();
  // Everything above (copies and sets on the legacy stream, the library's own set-up, the
  // ring resets on `stream`) is done before the first step: `stream` does not wait for the
  // legacy default stream by itself (non-blocking).
  ENGINE_CUDA(cudaDeviceSynchronize());
}

void CudaSession::Impl::ensure_logits_rows(std::int64_t n) {
  if (n <= logits_rows) return;
  logits = device_array<float>(static_cast<std::size_t>(n) * V);
  logits_rows = n;
  clear_graphs();  // captured graphs point at the old buffer
}

// ---------------------------------------------------------------------------------------
// Views handed to the library

macattn::cuda::PagedKVDevice CudaSession::Impl::batch_kv(std::int32_t l) const {
  macattn::cuda::PagedKVDevice kv;
  kv.k_pages = k_pages[l].as<void>();
  kv.v_pages = v_pages[l].as<void>();
  kv.num_pages = B * pages_per_seq;
  kv.page_size = page_size;
  kv.layout = KVLayout::NHD;
  kv.indptr = indptr.as<std::int32_t>();
  kv.indices = indices.as<std::int32_t>();
  kv.last_page_len = last_page_len.as<std::int32_t>();
  kv.batch_size = B;
  kv.num_kv_heads = Hkv;
  kv.head_dim = D;
  kv.dtype = DType::bf16;
  kv.max_seq_len = capacity;
  return kv;
}

macattn::cuda::MacRingsDevice CudaSession::Impl::rings(std::int32_t l, std::int32_t seq) const {
  macattn::cuda::MacRingsDevice r;
  const std::size_t es = dtype_size(ring_dtype);
  const std::int64_t first = static_cast<std::int64_t>(l) * B + (seq < 0 ? 0 : seq);
  const std::size_t cells = static_cast<std::size_t>(first) * window * Hq;
  r.qring = qring.as<std::uint8_t>() + cells * D * es;
  r.oring = oring.as<std::uint8_t>() + cells * D * es;
  r.lring = lring.as<float>() + cells;
  r.position = ring_position.as<std::int64_t>() + first;
  r.ready = ring_ready.as<std::uint8_t>() + first;
  r.ring_dtype = ring_dtype;
  r.window = window;
  r.num_q_heads = Hq;
  r.head_dim = D;
  r.batch_size = seq < 0 ? B : 1;
  return r;
}

// ---------------------------------------------------------------------------------------
// The forward pass

void CudaSession::Impl::gemm(const bf16* xin, std::int64_t n, const bf16* wt, std::int64_t out, std::int64_t in,
                             float* y, float beta) {
  // Row-major y[n, out] = x[n, in] W^T (+ beta y): column-major y^T = W^T... as cuBLAS sees it,
  // W row-major [out, in] is column-major [in, out], so op(A) = A^T with lda = in.
  const float alpha = 1.0f;
  ENGINE_CUBLAS(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(n),
                             static_cast<int>(in), &alpha, wt, CUDA_R_16BF, static_cast<int>(in), xin, CUDA_R_16BF,
                             static_cast<int>(in), &beta, y, CUDA_R_32F, static_cast<int>(out), CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
}

void CudaSession::Impl::layer(std::int32_t l, std::int64_t n, StepKind kind, bool init_rings, bool audit,
                              std::int32_t seq) {
  const gpu::DeviceLayer& d = w.layers[l];
  const float eps = config.rms_norm_eps;
  const bool decode = kind != StepKind::prefill;
  const std::int64_t* rpos = decode ? pos.as<std::int64_t>() : row_pos.as<std::int64_t>();
  const std::int32_t* rseq = decode ? batch_seq.as<std::int32_t>() : row_seq.as<std::int32_t>();

  const bool sk = skinny(n, decode);
  const bool fuse = norm_fused(n, decode, kFuseInputNorm);
  const bool fuse_post = norm_fused(n, decode, kFusePostNorm);

  gpu::QkvParams qp;
  qp.num_q_heads = Hq;
  qp.num_kv_heads = Hkv;
  qp.head_dim = D;
  qp.bias = d.b_qkv.bytes() ? d.b_qkv.as<float>() : nullptr;
  qp.q_norm = d.q_norm.bytes() ? d.q_norm.as<float>() : nullptr;
  qp.k_norm = d.k_norm.bytes() ? d.k_norm.as<float>() : nullptr;
  qp.eps = eps;
  qp.inv_freq = inv_freq.as<float>();
  qp.k_pages = k_pages[l].as<bf16>();
  qp.v_pages = v_pages[l].as<bf16>();
  qp.page_size = page_size;
  qp.pages_per_seq = pages_per_seq;
  // Decode keeps each layer's pre-RoPE queries (the benchmark reads them to force hits).
  float* qpre = decode ? q_pre_layers.as<float>() + static_cast<std::size_t>(l) * B * QD : q_pre.as<float>();
  // q|k|v = the projection of the normed rows; with fused_rope the same kernel applies RoPE and
  // appends K/V where it can (skinny_gemm_rms_norm_qkv_rope launches the RoPE kernel itself where
  // it cannot); otherwise qkv_rope_append below.
  bool rope_done = false;
  if (fuse && fused_rope) {
    gpu::skinny_gemm_rms_norm_qkv_rope(x_bf16.as<bf16>(), n, d.input_norm_bf16.as<bf16>(), eps, d.w_qkv.as<bf16>(),
                                       H, qkv.as<float>(), rpos, rseq, qp, q.as<float>(), qpre, stream, gemv);
    rope_done = true;
  } else if (fuse) {
    gpu::skinny_gemm_rms_norm(x_bf16.as<bf16>(), n, d.input_norm_bf16.as<bf16>(), eps, d.w_qkv.as<bf16>(), QKV, H,
                              qkv.as<float>(), stream, gemv);
  } else {
    gpu::rms_norm_bf16(x.as<float>(), n, H, d.input_norm.as<float>(), eps, hb.as<bf16>(), stream);
    if (sk)
      gpu::skinny_gemm(hb.as<bf16>(), n, d.w_qkv.as<bf16>(), QKV, H, qkv.as<float>(), false, stream, gemv);
    else
      gemm(hb.as<bf16>(), n, d.w_qkv.as<bf16>(), QKV, H, qkv.as<float>(), 0.0f);
  }
  const bool mac_step = decode && library_attention && kind != StepKind::decode_exact && mac_layer[l];
  // MAC's scan needs only q_pre. Without a q bias or q-norm, q_pre is the projection's q columns,
  // so the scan can start now on the scan stream, beside the RoPE kernel (or, with the fused RoPE,
  // beside the attention's first kernels); mac_decode below waits
  // for it (an event edge in the captured graph) before its attend kernel.
  MacConfig mac = options.session.attention.mac;
  // The step's stats read only hit and kv_tokens_read, so the scan may drop rows that cannot be
  // hits after their first dims (MacConfig::report_miss_matches).
  mac.report_miss_matches = false;
  if (mac_step && early_scan && qp.bias == nullptr && qp.q_norm == nullptr) {
    ENGINE_CUDA(cudaEventRecord(scan_fork, stream));
    ENGINE_CUDA(cudaStreamWaitEvent(scan_stream, scan_fork, 0));
    macattn::cuda::mac_scan(shape, mac, batch_kv(l), ConstTensor(qkv.as<float>(), DType::f32), QKV, rings(l), false,
                            workspace, scan_stream);
  }
  if (!rope_done) gpu::qkv_rope_append(qkv.as<float>(), n, rpos, rseq, qp, q.as<float>(), qpre, stream);

  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const ConstTensor q_post_t(q.as<float>(), DType::f32);
  const Tensor out_t{attn.as<float>(), DType::f32};
  if (!decode) {
    gpu::causal_attention(q.as<float>(), n, rpos, rseq, k_pages[l].as<bf16>(), v_pages[l].as<bf16>(), page_size,
                          pages_per_seq, Hq, Hkv, D, scale, true, attn.as<float>(), stream);
    if (mac_layer[l] && init_rings) {
      macattn::cuda::PagedKVDevice kv = batch_kv(l);
      kv.indptr = s_indptr.as<std::int32_t>();
      kv.indices = iota.as<std::int32_t>() + static_cast<std::int64_t>(seq) * pages_per_seq;
      kv.last_page_len = s_last_page_len.as<std::int32_t>();
      kv.batch_size = 1;
      macattn::cuda::mac_prefill_init(shape, options.session.attention.mac, kv, q_post_t,
                                      ConstTensor(q_pre.as<float>(), DType::f32), row_indptr.as<std::int32_t>(),
                                      static_cast<std::int32_t>(n), rings(l, seq), workspace, stream);
    }
  } else if (!library_attention) {
    gpu::causal_attention(q.as<float>(), n, rpos, rseq, k_pages[l].as<bf16>(), v_pages[l].as<bf16>(), page_size,
                          pages_per_seq, Hq, Hkv, D, scale, false, attn.as<float>(), stream);
  } else if (!mac_step) {
    macattn::cuda::exact_decode(shape, batch_kv(l), q_post_t, out_t, nullptr, workspace, stream);
  } else {
    HeadStats* hs = head_stats.as<HeadStats>() + static_cast<std::size_t>(l) * B * Hq;
    macattn::cuda::mac_decode(shape, mac, batch_kv(l), q_post_t,
                              ConstTensor(qpre, DType::f32), rings(l), out_t, nullptr, hs, workspace, stream);
    if (audit) {
      macattn::cuda::exact_decode(shape, batch_kv(l), q_post_t, Tensor{exact_out.as<float>(), DType::f32}, nullptr,
                                  workspace, stream);
      gpu::diff_norms(attn.as<float>(), exact_out.as<float>(), static_cast<std::int64_t>(B) * QD,
                      audit_sums.as<double>() + 2 * l, stream);
    }
  }

  // After a MAC layer, one MLP-side matmul may launch without PDL so that the SMs go idle and
  // re-split L1 and shared memory (MACATTN_ENGINE_MAC_IDLE_POINT).
  const bool idle_after_mac = mac_step && fuse_post;
  gpu::GemvLaunch gemv_o = gemv, gemv_gu = gemv, gemv_down = gemv;
  const unsigned nw = narrow == kNarrowAuto ? (n == 1 ? kNarrowOProj | kNarrowDown : 0u) : narrow;
  gemv_o.narrow = (nw & kNarrowOProj) != 0;
  gemv_down.narrow = (nw & kNarrowDown) != 0;
  if (idle_after_mac && idle_point == IdlePoint::o_proj) gemv_o.pdl = false;
  if (idle_after_mac && idle_point == IdlePoint::gate_up) gemv_gu.pdl = false;
  if (sk) {
    // x += o_proj(attn): the skinny GEMM rounds the fp32 attention output to bf16 as it loads
    // it (what to_bf16 did), so no separate conversion.
    gpu::skinny_gemm(attn.as<float>(), n, d.w_o.as<bf16>(), H, QD, x.as<float>(), true, stream, gemv_o,
                     fuse_post && !d.b_o.bytes() ? x_bf16.as<bf16>() : nullptr);
  } else {
    gpu::to_bf16(attn.as<float>(), n * QD, attn_b.as<bf16>(), stream);
    gemm(attn_b.as<bf16>(), n, d.w_o.as<bf16>(), H, QD, x.as<float>(), 1.0f);  // x += o_proj(attn)
  }
  if (d.b_o.bytes())
    gpu::add_bias_rows(x.as<float>(), n, H, d.b_o.as<float>(), stream, fuse_post ? x_bf16.as<bf16>() : nullptr);
  if (!fuse_post) gpu::rms_norm_bf16(x.as<float>(), n, H, d.post_norm.as<float>(), eps, hb.as<bf16>(), stream);
  if (sk) {
    // gate|up with SwiGLU in the epilogue: act = bf16(silu(gate) * up), no gu round trip.
    if (fuse_post)
      gpu::skinny_gemm_swiglu_rms_norm(x_bf16.as<bf16>(), n, d.post_norm_bf16.as<bf16>(), eps, d.w_gate_up.as<bf16>(),
                                       I, H, act.as<bf16>(), stream, gemv_gu);
    else
      gpu::skinny_gemm_swiglu(hb.as<bf16>(), n, d.w_gate_up.as<bf16>(), I, H, act.as<bf16>(), stream, gemv);
    // x += down(act); the next layer's (or the final) norm reads bf16(x) when fused.
    gpu::skinny_gemm(act.as<bf16>(), n, d.w_down.as<bf16>(), H, I, x.as<float>(), true, stream, gemv_down,
                     fuse ? x_bf16.as<bf16>() : nullptr);
  } else {
    gemm(hb.as<bf16>(), n, d.w_gate_up.as<bf16>(), 2 * std::int64_t{I}, H, gu.as<float>(), 0.0f);
    gpu::silu_mul_bf16(gu.as<float>(), n, I, act.as<bf16>(), stream);
    gemm(act.as<bf16>(), n, d.w_down.as<bf16>(), H, I, x.as<float>(), 1.0f);  // x += down(act)
  }
}

void CudaSession::Impl::decode_step(StepKind kind, bool advance, bool feed_greedy, bool audit) {
  gpu::build_page_table(pos.as<std::int64_t>(), B, page_size, pages_per_seq, indptr.as<std::int32_t>(),
                        indices.as<std::int32_t>(), last_page_len.as<std::int32_t>(), stream);
  const bool fuse = norm_fused(B, true, kFuseInputNorm);
  gpu::embed_rows(tokens.as<std::int32_t>(), B, w.embed.as<bf16>(), V, H, x.as<float>(), stream,
                  fuse ? x_bf16.as<bf16>() : nullptr);
  for (std::int32_t l = 0; l < L; ++l) layer(l, B, kind, false, audit, -1);
  std::int32_t* feed = feed_greedy ? tokens.as<std::int32_t>() : nullptr;
  bool argmax_done = false;
  if (fuse && fused_argmax) {
    // The greedy tokens folded into the lm_head matmul (argmax_rows' pass over the logits saved).
    gpu::skinny_gemm_rms_norm_argmax(x_bf16.as<bf16>(), B, w.final_norm_bf16.as<bf16>(), config.rms_norm_eps,
                                     w.lm_head_ptr(), V, H, logits.as<float>(), argmax_best.as<unsigned long long>(),
                                     greedy.as<std::int32_t>(), feed, stream, gemv);
    argmax_done = true;
  } else if (fuse) {
    gpu::skinny_gemm_rms_norm(x_bf16.as<bf16>(), B, w.final_norm_bf16.as<bf16>(), config.rms_norm_eps, w.lm_head_ptr(),
                              V, H, logits.as<float>(), stream, gemv);
  } else {
    gpu::rms_norm_bf16(x.as<float>(), B, H, w.final_norm.as<float>(), config.rms_norm_eps, hb.as<bf16>(), stream);
    if (skinny(B, true))
      gpu::skinny_gemm(hb.as<bf16>(), B, w.lm_head_ptr(), V, H, logits.as<float>(), false, stream, gemv);
    else
      gemm(hb.as<bf16>(), B, w.lm_head_ptr(), V, H, logits.as<float>(), 0.0f);
  }
  if (!argmax_done) gpu::argmax_rows(logits.as<float>(), B, V, greedy.as<std::int32_t>(), feed, stream);
  if (kind == StepKind::decode)
    gpu::accumulate_stats(head_stats.as<HeadStats>(), mac_flags.as<std::uint8_t>(), pos.as<std::int64_t>(), L, B, Hq,
                          Hkv, stats_acc.as<std::int64_t>(), stream);
  if (advance) gpu::advance_positions(pos.as<std::int64_t>(), B, stream);
}

void CudaSession::Impl::launch_graph(int key, const std::function<void()>& record) {
  auto it = graphs.find(key);
  if (it == graphs.end()) {  // first use of this variant: capture it once
    cudaGraph_t g = nullptr;
    ENGINE_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      record();
    } catch (...) {
      cudaStreamEndCapture(stream, &g);
      if (g != nullptr) cudaGraphDestroy(g);
      throw;
    }
    ENGINE_CUDA(cudaStreamEndCapture(stream, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    ENGINE_CUDA(e);
    it = graphs.emplace(key, exec).first;
  }
  ENGINE_CUDA(cudaGraphLaunch(it->second, stream));
}

void CudaSession::Impl::run_decode(bool advance, bool feed_greedy) {
  if (!options.use_graph) {
    decode_step(StepKind::decode, advance, feed_greedy, false);
    return;
  }
  launch_graph((advance ? 1 : 0) | (feed_greedy ? 2 : 0),
               [&] { decode_step(StepKind::decode, advance, feed_greedy, false); });
}

void CudaSession::Impl::run_decode_bench() {
  launch_graph(4, [&] {
    if (bench_restore) bench_restore(stream);
    decode_step(StepKind::decode, false, false, false);
  });
}

void CudaSession::Impl::prefill_chunk(std::int32_t seq, const std::int32_t* toks, std::int64_t n, bool all_logits,
                                      bool init_rings) {
  const std::int64_t p0 = pos_host[seq];
  std::vector<std::int64_t> rp(static_cast<std::size_t>(n));
  std::vector<std::int32_t> rs(static_cast<std::size_t>(n), seq);
  for (std::int64_t i = 0; i < n; ++i) rp[static_cast<std::size_t>(i)] = p0 + i;
  const std::int64_t end = p0 + n;
  const std::int32_t table[2] = {0, static_cast<std::int32_t>((end + page_size - 1) / page_size)};
  const std::int32_t last = static_cast<std::int32_t>((end - 1) % page_size + 1);
  const std::int32_t rip[2] = {0, static_cast<std::int32_t>(n)};
  ENGINE_CUDA(cudaMemcpyAsync(tokens.as<void>(), toks, n * 4, cudaMemcpyHostToDevice, stream));
  ENGINE_CUDA(cudaMemcpyAsync(row_pos.as<void>(), rp.data(), n * 8, cudaMemcpyHostToDevice, stream));
  ENGINE_CUDA(cudaMemcpyAsync(row_seq.as<void>(), rs.data(), n * 4, cudaMemcpyHostToDevice, stream));
  ENGINE_CUDA(cudaMemcpyAsync(s_indptr.as<void>(), table, 8, cudaMemcpyHostToDevice, stream));
  ENGINE_CUDA(cudaMemcpyAsync(s_last_page_len.as<void>(), &last, 4, cudaMemcpyHostToDevice, stream));
  ENGINE_CUDA(cudaMemcpyAsync(row_indptr.as<void>(), rip, 8, cudaMemcpyHostToDevice, stream));
  gpu::embed_rows(tokens.as<std::int32_t>(), n, w.embed.as<bf16>(), V, H, x.as<float>(), stream);
  for (std::int32_t l = 0; l < L; ++l) layer(l, n, StepKind::prefill, init_rings, false, seq);
  const std::int64_t first = all_logits ? 0 : n - 1, m = n - first;
  ensure_logits_rows(m);
  gpu::rms_norm_bf16(x.as<float>() + first * H, m, H, w.final_norm.as<float>(), config.rms_norm_eps, hb.as<bf16>(),
                     stream);
  gemm(hb.as<bf16>(), m, w.lm_head_ptr(), V, H, logits.as<float>(), 0.0f);
  logits_host.resize(static_cast<std::size_t>(m) * V);
  ENGINE_CUDA(
      cudaMemcpyAsync(logits_host.data(), logits.as<void>(), logits_host.size() * 4, cudaMemcpyDeviceToHost, stream));
  pos_host[seq] = end;
  ENGINE_CUDA(cudaMemcpyAsync(pos.as<std::int64_t>() + seq, &pos_host[seq], 8, cudaMemcpyHostToDevice, stream));
  ENGINE_CUDA(cudaStreamSynchronize(stream));  // the host vectors above die here
}

void CudaSession::Impl::sync() const {
  ENGINE_CUDA(cudaStreamSynchronize(stream));
}

void CudaSession::Impl::read_stats() const {
  std::vector<std::int64_t> acc(static_cast<std::size_t>(L) * 6);
  ENGINE_CUDA(cudaMemcpyAsync(acc.data(), stats_acc.as<void>(), acc.size() * 8, cudaMemcpyDeviceToHost, stream));
  ENGINE_CUDA(cudaStreamSynchronize(stream));
  stats_view = layer_stats;
  const std::int64_t row_bytes = 2LL * D * 2;
  for (std::int32_t l = 0; l < L; ++l) {
    LayerStats& s = stats_view[l];
    const std::int64_t* a = acc.data() + 6 * l;
    s.attention.heads = a[0];
    s.attention.heads_hit = a[1];
    s.attention.groups = a[2];
    s.attention.groups_all_hit = a[3];
    s.attention.kv_tokens_read = a[4];
    s.attention.kv_tokens_exact = a[5];
    s.kv_bytes_read = a[4] * row_bytes;
    s.kv_bytes_exact = a[5] * row_bytes;
  }
}

// ---------------------------------------------------------------------------------------
// CudaSession

bool cuda_engine_available() {
  return macattn::cuda::available();
}
std::string cuda_engine_device() {
  return macattn::cuda::device_description();
}

CudaSession::CudaSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CudaSession::CudaSession(const Model& model, const CudaSessionOptions& options)
    : impl_(std::make_unique<Impl>(model.config(), options)) {
  impl_->upload(model);
  impl_->allocate();
}

CudaSession CudaSession::synthetic(const ModelConfig& config, const CudaSessionOptions& options, std::uint64_t seed) {
  auto impl = std::make_unique<Impl>(config, options);
  impl->randomize(seed);
  impl->allocate();
  return CudaSession(std::move(impl));
}

CudaSession::CudaSession(CudaSession&&) noexcept = default;
CudaSession& CudaSession::operator=(CudaSession&&) noexcept = default;
CudaSession::~CudaSession() = default;

namespace {
void check_token(std::int32_t token, std::int32_t vocab, const char* fn, std::size_t i) {
  if (token < 0 || token >= vocab)
    throw Error(std::string(fn) + ": tokens[" + std::to_string(i) + "] = " + std::to_string(token) +
                " is out of range [0, " + std::to_string(vocab) + ")");
}
// Mistral-style sliding-window attention is not implemented (as in Session): refuse positions past it.
void check_window(const CudaSession::Impl& m, std::int64_t end, const char* fn) {
  if (m.config.sliding_window && end > *m.config.sliding_window)
    throw Error(std::string(fn) + ": " + std::to_string(end) + " tokens exceed the model's sliding_window " +
                std::to_string(*m.config.sliding_window) + " (sliding-window attention is not supported)");
}
}  // namespace

std::span<const float> CudaSession::prefill(std::int32_t seq, std::span<const std::int32_t> toks,
                                            std::int32_t chunk_size, const PrefillProgress& progress) {
  Impl& m = *impl_;
  if (seq < 0 || seq >= m.B)
    throw Error("CudaSession::prefill: sequence " + std::to_string(seq) + " is out of range [0, " +
                std::to_string(m.B) + ")");
  if (toks.empty()) throw Error("CudaSession::prefill: no tokens");
  if (chunk_size < 1) throw Error("CudaSession::prefill: chunk_size = " + std::to_string(chunk_size) + " must be >= 1");
  for (std::size_t i = 0; i < toks.size(); ++i) check_token(toks[i], m.V, "CudaSession::prefill", i);
  const std::int64_t total = static_cast<std::int64_t>(toks.size());
  if (m.pos_host[seq] + total > m.capacity)
    throw Error("CudaSession::prefill: position " + std::to_string(m.pos_host[seq]) + " + " + std::to_string(total) +
                " tokens exceeds the session's max_context " + std::to_string(m.capacity));
  check_window(m, m.pos_host[seq] + total, "CudaSession::prefill");
  const auto t0 = Clock::now();
  const std::int64_t chunk = std::min<std::int64_t>(chunk_size, m.rows);
  const std::int32_t W = m.options.session.attention.mac.window;
  for (std::int64_t done = 0; done < total;) {
    const std::int64_t n = std::min(chunk, total - done);
    m.prefill_chunk(seq, toks.data() + done, n, false, done + n > total - W);
    done += n;
    m.timings.prefill_tokens += n;
    if (progress) progress(done, total);
  }
  m.timings.prefill_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  return m.logits_host;
}

void CudaSession::prefill_all_logits(std::int32_t seq, std::span<const std::int32_t> toks, std::int32_t chunk_size,
                                     std::vector<float>& all_logits) {
  Impl& m = *impl_;
  if (seq < 0 || seq >= m.B) throw Error("CudaSession::prefill_all_logits: sequence out of range");
  if (toks.empty() || chunk_size < 1) throw Error("CudaSession::prefill_all_logits: no tokens or chunk_size < 1");
  for (std::size_t i = 0; i < toks.size(); ++i) check_token(toks[i], m.V, "CudaSession::prefill_all_logits", i);
  const std::int64_t total = static_cast<std::int64_t>(toks.size());
  if (m.pos_host[seq] + total > m.capacity) throw Error("CudaSession::prefill_all_logits: exceeds max_context");
  check_window(m, m.pos_host[seq] + total, "CudaSession::prefill_all_logits");
  all_logits.resize(static_cast<std::size_t>(total) * m.V);
  const std::int64_t chunk = std::min<std::int64_t>(chunk_size, m.rows);
  const std::int32_t W = m.options.session.attention.mac.window;
  for (std::int64_t done = 0; done < total;) {
    const std::int64_t n = std::min(chunk, total - done);
    m.prefill_chunk(seq, toks.data() + done, n, true, done + n > total - W);
    std::copy(m.logits_host.begin(), m.logits_host.end(), all_logits.begin() + done * m.V);
    done += n;
    m.timings.prefill_tokens += n;
  }
  m.logits_host.assign(all_logits.end() - m.V, all_logits.end());
}

namespace {
std::int32_t host_argmax(const float* v, std::int64_t n) {
  return static_cast<std::int32_t>(std::max_element(v, v + n) - v);
}
}  // namespace

std::span<const float> CudaSession::decode(std::span<const std::int32_t> toks) {
  Impl& m = *impl_;
  if (static_cast<std::int32_t>(toks.size()) != m.B)
    throw Error("CudaSession::decode: " + std::to_string(toks.size()) + " tokens for a batch of " +
                std::to_string(m.B));
  for (std::size_t i = 0; i < toks.size(); ++i) check_token(toks[i], m.V, "CudaSession::decode", i);
  for (std::int32_t b = 0; b < m.B; ++b)
    if (m.pos_host[b] + 1 > m.capacity)
      throw Error("CudaSession::decode: sequence " + std::to_string(b) + " at position " +
                  std::to_string(m.pos_host[b]) + " has no room left in max_context " + std::to_string(m.capacity));
  for (std::int32_t b = 0; b < m.B; ++b) check_window(m, m.pos_host[b] + 1, "CudaSession::decode");
  const auto t0 = Clock::now();
  ENGINE_CUDA(cudaMemcpyAsync(m.tokens.as<void>(), toks.data(), m.B * 4, cudaMemcpyHostToDevice, m.stream));
  const bool audit = m.options.session.attention.audit && m.options.session.attention.mode == AttentionMode::mac;
  std::int32_t greedy_exact = -1;
  if (audit) {
    if (m.B != 1) throw Error("CudaSession::decode: the audit runs at batch 1 only");
    // The exact step first (no advance, rings untouched), then the MAC step overwrites this
    // position's K/V: the cache follows the MAC trajectory, as Session does.
    m.decode_step(gpu::StepKind::decode_exact, false, false, false);
    m.logits_host.resize(static_cast<std::size_t>(m.V));
    ENGINE_CUDA(cudaMemcpyAsync(m.logits_host.data(), m.logits.as<void>(), m.V * 4, cudaMemcpyDeviceToHost, m.stream));
    m.sync();
    greedy_exact = host_argmax(m.logits_host.data(), m.V);
    ENGINE_CUDA(cudaMemsetAsync(m.audit_sums.as<void>(), 0, m.audit_sums.bytes(), m.stream));
    m.decode_step(gpu::StepKind::decode, true, false, true);
  } else {
    m.run_decode(true, false);
  }
  m.logits_host.resize(static_cast<std::size_t>(m.B) * m.V);
  ENGINE_CUDA(cudaMemcpyAsync(m.logits_host.data(), m.logits.as<void>(), m.logits_host.size() * 4,
                              cudaMemcpyDeviceToHost, m.stream));
  m.sync();
  for (auto& p : m.pos_host) p += 1;
  if (audit) {
    std::vector<double> sums(static_cast<std::size_t>(m.L) * 2);
    ENGINE_CUDA(
        cudaMemcpyAsync(sums.data(), m.audit_sums.as<void>(), sums.size() * 8, cudaMemcpyDeviceToHost, m.stream));
    m.sync();
    AuditStep a;
    a.rel_l2.assign(m.L, 0.0);
    for (std::int32_t l = 0; l < m.L; ++l) {
      if (!m.mac_layer[l]) continue;
      const double diff = sums[2 * l], ref = sums[2 * l + 1];
      a.rel_l2[l] = ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
      LayerStats& s = m.layer_stats[l];
      s.audit_steps += 1;
      s.audit_rel_l2_sum += a.rel_l2[l];
      s.audit_rel_l2_max = std::max(s.audit_rel_l2_max, a.rel_l2[l]);
    }
    a.greedy_mac = host_argmax(m.logits_host.data(), m.V);
    a.greedy_exact = greedy_exact;
    if (a.greedy_changed()) m.timings.audit_greedy_changes += 1;
    m.last_audit = std::move(a);
  }
  for (LayerStats& s : m.layer_stats) s.decode_steps += 1;
  m.timings.decode_tokens += m.B;
  m.timings.decode_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  return m.logits_host;
}

std::span<const std::int32_t> CudaSession::decode_greedy(std::span<const std::int32_t> toks) {
  Impl& m = *impl_;
  if (static_cast<std::int32_t>(toks.size()) != m.B)
    throw Error("CudaSession::decode_greedy: " + std::to_string(toks.size()) + " tokens for a batch of " +
                std::to_string(m.B));
  for (std::size_t i = 0; i < toks.size(); ++i) check_token(toks[i], m.V, "CudaSession::decode_greedy", i);
  for (std::int32_t b = 0; b < m.B; ++b)
    if (m.pos_host[b] + 1 > m.capacity) throw Error("CudaSession::decode_greedy: no room left in max_context");
  for (std::int32_t b = 0; b < m.B; ++b) check_window(m, m.pos_host[b] + 1, "CudaSession::decode_greedy");
  const auto t0 = Clock::now();
  ENGINE_CUDA(cudaMemcpyAsync(m.tokens.as<void>(), toks.data(), m.B * 4, cudaMemcpyHostToDevice, m.stream));
  m.run_decode(true, false);
  m.greedy_host.resize(m.B);
  ENGINE_CUDA(cudaMemcpyAsync(m.greedy_host.data(), m.greedy.as<void>(), m.B * 4, cudaMemcpyDeviceToHost, m.stream));
  m.sync();
  for (auto& p : m.pos_host) p += 1;
  for (LayerStats& s : m.layer_stats) s.decode_steps += 1;
  m.timings.decode_tokens += m.B;
  m.timings.decode_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  return m.greedy_host;
}

std::int32_t CudaSession::batch() const {
  return impl_->B;
}
std::int64_t CudaSession::position(std::int32_t seq) const {
  if (seq < 0 || seq >= impl_->B)
    throw Error("CudaSession::position: sequence " + std::to_string(seq) + " out of range");
  return impl_->pos_host[seq];
}
std::int64_t CudaSession::capacity() const {
  return impl_->capacity;
}

void CudaSession::reset() {
  Impl& m = *impl_;
  m.sync();
  std::fill(m.pos_host.begin(), m.pos_host.end(), 0);
  ENGINE_CUDA(cudaMemsetAsync(m.pos.as<void>(), 0, m.pos.bytes(), m.stream));
  ENGINE_CUDA(cudaMemsetAsync(m.stats_acc.as<void>(), 0, m.stats_acc.bytes(), m.stream));
  for (std::int32_t l = 0; l < m.L; ++l)
    if (m.mac_layer[l]) macattn::cuda::mac_rings_reset(m.rings(l), m.stream);
  for (LayerStats& s : m.layer_stats) {
    const bool mac = s.mac_enabled;
    s = LayerStats{};
    s.mac_enabled = mac;
  }
  m.timings = Timings{};
  m.last_audit.reset();
  m.sync();
}

const ModelConfig& CudaSession::config() const {
  return impl_->config;
}
const CudaSessionOptions& CudaSession::options() const {
  return impl_->options;
}
const std::vector<LayerStats>& CudaSession::layer_stats() const {
  impl_->read_stats();
  return impl_->stats_view;
}
StepStats CudaSession::total_attention_stats() const {
  StepStats t;
  for (const LayerStats& s : layer_stats()) t.add(s.attention);
  return t;
}
const Timings& CudaSession::timings() const {
  return impl_->timings;
}
const std::optional<AuditStep>& CudaSession::last_audit() const {
  return impl_->last_audit;
}
std::size_t CudaSession::kv_cache_bytes() const {
  std::size_t n = 0;
  for (const std::int64_t p : impl_->pos_host) n += static_cast<std::size_t>(p);
  return n * impl_->L * 2 * impl_->KD * 2;
}
std::size_t CudaSession::ring_bytes() const {
  return impl_->qring.bytes() + impl_->oring.bytes() + impl_->lring.bytes();
}
std::size_t CudaSession::weight_bytes() const {
  return impl_->w.bytes;
}
std::size_t CudaSession::decode_weight_bytes() const {
  return impl_->decode_weight_bytes;
}
bool CudaSession::library_attention() const {
  return impl_->library_attention;
}

}  // namespace macattn::engine
