// Model::load: config, then the safetensors file(s), then every expected weight checked
// against the config (name, dtype, shape, bounds) and pointed at the mapping.
#include "engine/model.hpp"

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/mapped_file.hpp"
#include "engine/io/safetensors.hpp"
#include "macattn/error.hpp"

namespace macattn::engine {

struct Model::Storage {
  std::vector<MappedFile> files;
  std::vector<std::unique_ptr<float[]>> f32_buffers;    // vectors (norms, biases) as f32
  std::vector<std::unique_ptr<std::uint8_t[]>> copies;  // converted or realigned matrices
};

namespace {

struct Located {
  const SafetensorsEntry* entry = nullptr;
  const MappedFile* file = nullptr;
};

// Every tensor name of the checkpoint -> where its bytes are.
class TensorIndex {
 public:
  void add_file(MappedFile file) { files_.push_back(std::move(file)); }
  void parse_all() {
    headers_.reserve(files_.size());
    for (const MappedFile& f : files_) headers_.push_back(parse_safetensors(f.data(), f.size(), f.path().string()));
    for (std::size_t i = 0; i < files_.size(); ++i)
      for (const auto& [name, e] : headers_[i].tensors) by_name_[name] = Located{&e, &files_[i]};
  }
  const Located* find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &it->second;
  }
  std::vector<MappedFile> take_files() { return std::move(files_); }
  std::size_t file_count() const { return files_.size(); }

 private:
  std::vector<MappedFile> files_;
  std::vector<SafetensorsHeader> headers_;
  std::map<std::string, Located> by_name_;
};

std::vector<std::filesystem::path> shard_paths(const std::filesystem::path& dir) {
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  std::error_code ec;
  if (std::filesystem::exists(single, ec)) return {single};
  if (!std::filesystem::exists(index, ec))
    throw Error(dir.string() + ": neither model.safetensors nor model.safetensors.index.json exists");
  const std::string text = read_text_file(index, 64u << 20);
  const auto j = nlohmann::json::parse(text, nullptr, false);
  const std::string src = index.string();
  if (j.is_discarded() || !j.is_object()) throw Error(src + ": not a JSON object");
  const auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object() || wm->empty()) throw Error(src + ": missing or empty object 'weight_map'");
  std::vector<std::filesystem::path> out;
  for (const auto& [name, file] : wm->items()) {
    if (!file.is_string()) throw Error(src + ": weight_map['" + name + "'] = " + file.dump() + " is not a file name");
    const std::string f = file.get<std::string>();
    // Shards must be plain names inside the model directory (no paths out of it).
    if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
      throw Error(src + ": weight_map['" + name + "'] = '" + f + "' is not a plain file name");
    const auto p = dir / f;
    bool seen = false;
    for (const auto& q : out) seen = seen || q == p;
    if (!seen) out.push_back(p);
  }
  return out;
}

}  // namespace

class ModelLoader {
 public:
  ModelLoader(Model& m, TensorIndex& index, const LoadOptions& opt) : m_(m), index_(index), opt_(opt) {}

  void run() {
    const ModelConfig& c = m_.config_;
    const std::int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size, V = c.vocab_size;
    m_.embed_ = matrix("model.embed_tokens.weight", V, H);
    m_.final_norm_ = vector("model.norm.weight", H);
    m_.lm_head_ = c.tie_word_embeddings ? m_.embed_ : matrix("lm_head.weight", V, H);
    m_.layers_.resize(c.num_layers);
    for (std::int32_t i = 0; i < c.num_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LayerWeights& L = m_.layers_[i];
      L.input_norm = vector(p + "input_layernorm.weight", H);
      L.post_attention_norm = vector(p + "post_attention_layernorm.weight", H);
      L.q_proj = matrix(p + "self_attn.q_proj.weight", c.num_q_heads * D, H);
      L.k_proj = matrix(p + "self_attn.k_proj.weight", c.num_kv_heads * D, H);
      L.v_proj = matrix(p + "self_attn.v_proj.weight", c.num_kv_heads * D, H);
      L.o_proj = matrix(p + "self_attn.o_proj.weight", H, c.num_q_heads * D);
      if (c.attention_bias) {
        L.q_bias = vector(p + "self_attn.q_proj.bias", c.num_q_heads * D);
        L.k_bias = vector(p + "self_attn.k_proj.bias", c.num_kv_heads * D);
        L.v_bias = vector(p + "self_attn.v_proj.bias", c.num_kv_heads * D);
      }
      if (c.o_proj_bias) L.o_bias = vector(p + "self_attn.o_proj.bias", H);
      if (c.qk_norm) {
        L.q_norm = vector(p + "self_attn.q_norm.weight", D);
        L.k_norm = vector(p + "self_attn.k_norm.weight", D);
      }
      L.gate_proj = matrix(p + "mlp.gate_proj.weight", I, H);
      L.up_proj = matrix(p + "mlp.up_proj.weight", I, H);
      L.down_proj = matrix(p + "mlp.down_proj.weight", H, I);
    }
    m_.q_dtype_ = m_.layers_[0].q_proj.dtype;
  }

 private:
  const Located& locate(const std::string& name, std::vector<std::int64_t> shape) {
    const Located* t = index_.find(name);
    if (t == nullptr) throw Error(m_.dir_.string() + ": tensor '" + name + "' is missing from the checkpoint");
    const SafetensorsEntry& e = *t->entry;
    const std::string src = t->file->path().string();
    if (!e.dtype)
      throw Error(src + ": tensor '" + name + "' dtype = " + e.dtype_name + " is not supported (F32, F16, BF16)");
    if (e.shape != shape) {
      auto fmt = [](const std::vector<std::int64_t>& s) {
        std::string r = "[";
        for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
        return r + "]";
      };
      throw Error(src + ": tensor '" + name + "' shape = " + fmt(e.shape) + ", config needs " + fmt(shape));
    }
    return *t;
  }

  // A 1-D weight, always converted to f32 (small; keeps the kernels to one type for vectors).
  WeightTensor vector(const std::string& name, std::int64_t n) {
    const Located& t = locate(name, {n});
    auto buf = std::make_unique<float[]>(n);
    const std::uint8_t* src = t.file->data() + t.entry->offset;
    const std::size_t es = dtype_size(*t.entry->dtype);
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint8_t tmp[4];
      std::memcpy(tmp, src + i * es, es);  // the mapping may be unaligned
      buf[i] = load_as_float(tmp, *t.entry->dtype, 0);
    }
    WeightTensor w{buf.get(), DType::f32, 1, n};
    add_bytes(w);
    storage().f32_buffers.push_back(std::move(buf));
    return w;
  }

  // A 2-D weight, in place when its dtype is wanted and its address aligned; else a copy.
  WeightTensor matrix(const std::string& name, std::int64_t rows, std::int64_t cols) {
    const Located& t = locate(name, {rows, cols});
    const DType from = *t.entry->dtype;
    const DType to = opt_.weight_dtype.value_or(from);
    const std::uint8_t* src = t.file->data() + t.entry->offset;
    WeightTensor w{src, to, rows, cols};
    const bool aligned = reinterpret_cast<std::uintptr_t>(src) % dtype_size(from) == 0;
    if (to != from || !aligned) {
      const std::size_t n = static_cast<std::size_t>(rows * cols);
      auto buf = std::make_unique<std::uint8_t[]>(n * dtype_size(to));
      if (to == from) {
        std::memcpy(buf.get(), src, n * dtype_size(to));
      } else {
        const std::size_t es = dtype_size(from);
        for (std::size_t i = 0; i < n; ++i) {
          std::uint8_t tmp[4];
          std::memcpy(tmp, src + i * es, es);
          store_from_float(buf.get(), to, i, load_as_float(tmp, from, 0));
        }
      }
      w.data = buf.get();
      storage().copies.push_back(std::move(buf));
    }
    add_bytes(w);
    return w;
  }

  void add_bytes(const WeightTensor& w) {
    m_.weight_bytes_ += static_cast<std::size_t>(w.rows * w.cols) * dtype_size(w.dtype);
    m_.parameter_count_ += w.rows * w.cols;
  }
  Model::Storage& storage() { return *m_.storage_; }

  Model& m_;
  TensorIndex& index_;
  const LoadOptions& opt_;
};

Model::Model() : storage_(std::make_unique<Storage>()) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::filesystem::path& dir, const LoadOptions& options) {
  if (options.weight_dtype && !dtype_valid(*options.weight_dtype))
    throw Error("Model::load: options.weight_dtype is not a valid dtype");
  Model m;
  m.dir_ = dir;
  m.config_ = ModelConfig::load(dir);
  TensorIndex index;
  for (const auto& p : shard_paths(dir)) index.add_file(MappedFile::open(p, options.prefetch));
  index.parse_all();
  ModelLoader(m, index, options).run();
  m.storage_->files = index.take_files();  // moving the vector keeps the mappings' addresses
  return m;
}

const LayerWeights& Model::layer(std::int32_t i) const {
  if (i < 0 || i >= static_cast<std::int32_t>(layers_.size()))
    throw Error("Model::layer: i = " + std::to_string(i) + " out of range [0, " + std::to_string(layers_.size()) + ")");
  return layers_[i];
}

std::string Model::summary() const {
  std::ostringstream s;
  s << config_.to_string() << " weights=" << dtype_name(q_dtype_) << " params=" << parameter_count_
    << " bytes=" << weight_bytes_;
  return s.str();
}

}  // namespace macattn::engine
