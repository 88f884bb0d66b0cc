// tools/cuda/kernel_trace.cpp: a kernel timeline for any CUDA program, CUDA graphs included.
//
// nsys is not installed on the project's GPU machine, and ncu runs kernels one at a time, so
// neither shows how the kernels of a replayed graph overlap (programmatic dependent launch, the
// side stream). This library records every kernel's GPU start and end through CUPTI's activity
// API and writes them as CSV when the program exits. It is loaded by the CUDA driver itself:
//
//   export CUDA_INJECTION64_PATH=$PWD/build/tools/libmacattn_kernel_trace.so
//   MACATTN_TRACE_OUT=trace.csv ./build/tools/macattn/macattn bench-e2e --device cuda ...
//   python3 tools/cuda/kernel_timeline.py trace.csv
//
// Columns: start_ns, end_ns (GPU timestamps less the first kernel's start), stream, graph,
// node (CUPTI's graph and graph-node ids; 0 outside graphs), name (demangled; the last column,
// and it may hold commas). MACATTN_TRACE_MAX caps the records kept (default 4M);
// the ones past it are counted and dropped. At exit each kernel's launch shape (grid, block,
// registers, static + dynamic shared memory of its first launch, and its launch count) goes to
// stderr, one "kernel_trace: shape" line per kernel. Tracing adds a little to each kernel; compare the
// program's own timings with and without it before reading absolute times.
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

struct Record {
  std::uint64_t start, end, graph_node;
  std::uint32_t stream, graph, name;
};

std::mutex g_mutex;
std::vector<Record> g_records;
std::vector<std::string> g_names;
std::unordered_map<const char*, std::uint32_t> g_name_ids;  // CUPTI shares one name pointer per kernel
// Launch shape of each kernel's first record (grid, block, registers, shared memory), printed at
// exit: what tells another library's kernels apart (their grids and resources are not otherwise
// visible).
struct Shape {
  std::uint32_t grid[3], block[3], regs, smem_static, smem_dynamic, launches;
};
std::vector<Shape> g_shapes;  // by name id
std::size_t g_max = 4u << 20, g_dropped = 0;
bool g_ok = true;

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, msg != nullptr ? msg : "unknown error");
  g_ok = false;
}

// The demangled name (the mangled one if it does not demangle). kernel_timeline.py shortens it
// for its tables; the CSV keeps template arguments, which tell the forms of a kernel apart.
std::string demangled(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d != nullptr ? d : mangled;
  std::free(d);
  return s;
}

std::uint32_t name_id(const char* name) {
  if (name == nullptr) name = "?";
  const auto it = g_name_ids.find(name);
  if (it != g_name_ids.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(g_names.size());
  g_names.push_back(demangled(name));
  g_shapes.push_back(Shape{});
  g_name_ids.emplace(name, id);
  return id;
}

constexpr std::size_t kBufferBytes = 8u << 20;

void CUPTIAPI buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records) {
  *buffer = static_cast<std::uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, std::uint32_t, std::uint8_t* buffer, std::size_t, std::size_t valid) {
  std::lock_guard<std::mutex> lock(g_mutex);
  CUpti_Activity* rec = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    if (g_records.size() >= g_max) {
      ++g_dropped;
      continue;
    }
    // The record layout of the CUPTI headers this file is compiled with (same toolkit as the
    // library it loads).
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
    const std::uint32_t id = name_id(k->name);
    Shape& sh = g_shapes[id];
    if (sh.launches++ == 0)
      sh = Shape{{static_cast<std::uint32_t>(k->gridX), static_cast<std::uint32_t>(k->gridY),
                  static_cast<std::uint32_t>(k->gridZ)},
                 {static_cast<std::uint32_t>(k->blockX), static_cast<std::uint32_t>(k->blockY),
                  static_cast<std::uint32_t>(k->blockZ)},
                 k->registersPerThread, static_cast<std::uint32_t>(k->staticSharedMemory),
                 static_cast<std::uint32_t>(k->dynamicSharedMemory), 1};
    g_records.push_back(Record{k->start, k->end, k->graphNodeId, k->streamId, k->graphId, id});
  }
  std::free(buffer);
}

void write_trace() {
  check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
  std::lock_guard<std::mutex> lock(g_mutex);
  const char* path = std::getenv("MACATTN_TRACE_OUT");
  if (path == nullptr || *path == '\0') path = "kernel_trace.csv";
  std::FILE* f = std::fopen(path, "w");
  if (f == nullptr) {
    std::fprintf(stderr, "kernel_trace: cannot write %s: %s\n", path, std::strerror(errno));
    return;
  }
  std::sort(g_records.begin(), g_records.end(), [](const Record& a, const Record& b) { return a.start < b.start; });
  const std::uint64_t t0 = g_records.empty() ? 0 : g_records.front().start;
  std::fprintf(f, "start_ns,end_ns,stream,graph,node,name\n");
  for (const Record& r : g_records)
    std::fprintf(f, "%llu,%llu,%u,%u,%llu,%s\n", static_cast<unsigned long long>(r.start - t0),
                 static_cast<unsigned long long>(r.end - t0), r.stream, r.graph,
                 static_cast<unsigned long long>(r.graph_node), g_names[r.name].c_str());
  std::fclose(f);
  for (std::size_t i = 0; i < g_shapes.size(); ++i) {
    const Shape& sh = g_shapes[i];
    std::fprintf(stderr, "kernel_trace: shape x%u grid %u,%u,%u block %u,%u,%u regs %u smem %u+%u %s\n", sh.launches,
                 sh.grid[0], sh.grid[1], sh.grid[2], sh.block[0], sh.block[1], sh.block[2], sh.regs, sh.smem_static,
                 sh.smem_dynamic, g_names[i].substr(0, 160).c_str());
  }
  std::fprintf(stderr, "kernel_trace: %zu kernels written to %s%s\n", g_records.size(), path,
               g_dropped != 0 ? (" (" + std::to_string(g_dropped) + " past MACATTN_TRACE_MAX dropped)").c_str() : "");
}

}  // namespace

// Called by the CUDA driver when CUDA_INJECTION64_PATH names this library.
extern "C" int InitializeInjection(void) {
  if (const char* m = std::getenv("MACATTN_TRACE_MAX")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(m, &end, 10);
    if (end == m || *end != '\0' || v == 0) {
      std::fprintf(stderr, "kernel_trace: MACATTN_TRACE_MAX=%s is not a positive integer; keeping %zu\n", m, g_max);
    } else {
      g_max = static_cast<std::size_t>(v);
    }
  }
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable(CONCURRENT_KERNEL)");
  if (!g_ok) return 0;
  std::atexit(write_trace);
  return 1;
}
