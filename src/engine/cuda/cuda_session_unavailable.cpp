// CudaSession in a build without CUDA (MACATTN_WITH_CUDA off): every constructor throws, so
// `--device cuda` fails with a clear message and the CUDA engine tests skip.
#include "engine/cuda/cuda_session.hpp"
#include "macattn/error.hpp"

namespace macattn::engine {

struct CudaSession::Impl {};

namespace {
[[noreturn]] void unavailable() {
  throw Error("the CUDA engine is not available: this build has no CUDA (configure with -DMACATTN_CUDA=ON)");
}
}  // namespace

bool cuda_engine_available() {
  return false;
}
std::string cuda_engine_device() {
  return "this build has no CUDA (MACATTN_WITH_CUDA off)";
}

CudaSession::CudaSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaSession::CudaSession(const Model&, const CudaSessionOptions&) {
  unavailable();
}
CudaSession CudaSession::synthetic(const ModelConfig&, const CudaSessionOptions&, std::uint64_t) {
  unavailable();
}
CudaSession::CudaSession(CudaSession&&) noexcept = default;
CudaSession& CudaSession::operator=(CudaSession&&) noexcept = default;
CudaSession::~CudaSession() = default;

std::span<const float> CudaSession::prefill(std::int32_t, std::span<const std::int32_t>, std::int32_t,
                                            const PrefillProgress&) {
  unavailable();
}
void CudaSession::prefill_all_logits(std::int32_t, std::span<const std::int32_t>, std::int32_t, std::vector<float>&) {
  unavailable();
}
std::span<const float> CudaSession::decode(std::span<const std::int32_t>) {
  unavailable();
}
std::span<const std::int32_t> CudaSession::decode_greedy(std::span<const std::int32_t>) {
  unavailable();
}
std::int32_t CudaSession::batch() const {
  unavailable();
}
std::int64_t CudaSession::position(std::int32_t) const {
  unavailable();
}
std::int64_t CudaSession::capacity() const {
  unavailable();
}
void CudaSession::reset() {
  unavailable();
}
const ModelConfig& CudaSession::config() const {
  unavailable();
}
const CudaSessionOptions& CudaSession::options() const {
  unavailable();
}
const std::vector<LayerStats>& CudaSession::layer_stats() const {
  unavailable();
}
StepStats CudaSession::total_attention_stats() const {
  unavailable();
}
const Timings& CudaSession::timings() const {
  unavailable();
}
const std::optional<AuditStep>& CudaSession::last_audit() const {
  unavailable();
}
std::size_t CudaSession::kv_cache_bytes() const {
  unavailable();
}
std::size_t CudaSession::ring_bytes() const {
  unavailable();
}
std::size_t CudaSession::weight_bytes() const {
  unavailable();
}
std::size_t CudaSession::decode_weight_bytes() const {
  unavailable();
}
bool CudaSession::library_attention() const {
  unavailable();
}

}  // namespace macattn::engine
